"""UNIXSOCK input: packets pushed over a UNIX stream socket (``ulogd_inppkt_UNIXSOCK.so``, spec 4.5).

Written for NuFW's nuauth and ``contrib/pcap2ulog``; ``pyulogd-unixsock-send`` (module
``pyulogd.ctl.unixsock``) is a client for tests and users. Same options, keys and wire
format as ulogd2 2.0.8 (codec/unixsock.py). Differences, each a correction
(docs/compat.md):

* **Several clients at once**, each with its own reassembly buffer (2.0.8 accepted one and
  closed every further connection).
* **A read error drops that client only** (2.0.8 called ``exit(-1)``: one misbehaving
  client stopped the daemon). A wrong frame marker drops the client, as in 2.0.8.
* **Shared input ids work**: every stack using the id gets every packet (2.0.8 fed only the
  first stack built).
* **A frame larger than ``bufsize`` is skipped whole** and counted; 2.0.8 dropped the read
  chunk, losing its place in the stream and then every later frame of that client.
* **A stale socket file is replaced**: when ``socket_path`` exists, is a socket and nobody
  accepts on it (a daemon that died), it is removed and bound again; 2.0.8 failed to start.
  A live socket or a path that is not a socket still refuses the start, with the reason.
* The socket file is removed at stop only if it is still ours.

Counters (``unixsock.<id>.``): ``packets``, ``clients``, ``read_errors``, ``bad_marker``,
``malformed``, ``too_big``, ``unknown_options``.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import socket
import stat
from typing import Any

from pyulogd.codec import unixsock as codec
from pyulogd.core import safefile
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError, DecodeError, PluginError
from pyulogd.core.options import Int, Path, Size, Str
from pyulogd.core.plugin import DataType, Option, Source

DEFAULT_PATH = "/var/run/ulogd/ulogd2.sock"
# Bytes read per recv, and reads per readable event before the loop serves others.
READ_SIZE = 65536
MAX_READS = 16
# Connections beyond this many are refused (file descriptors are finite).
MAX_CLIENTS = 256
_SUN_PATH_MAX = 107
STAT_NAMES = ("packets", "clients", "read_errors", "bad_marker", "malformed", "too_big", "unknown_options")


class _Client:
    __slots__ = ("sock", "fd", "stream", "name")

    def __init__(self, sock: socket.socket | None, stream: codec.Stream, name: str) -> None:
        self.sock = sock
        self.fd = sock.fileno() if sock is not None else -1
        self.stream = stream
        self.name = name


class UnixsockInput(Source):
    name = "UNIXSOCK"
    so_name = "ulogd_inppkt_UNIXSOCK.so"
    output_type = DataType.RAW
    description = (
        "Packets pushed by other programs over a UNIX stream socket (NuFW's nuauth, pcap2ulog, "
        "`pyulogd-unixsock-send`), any number of clients at once."
    )
    options = (
        Option("socket_path", Path(), DEFAULT_PATH, help="the listening socket"),
        Option("bufsize", Size(), 0,
               help="largest frame accepted, in bytes (0: the socket's receive buffer size); "
                    "larger frames are skipped and counted"),
        Option("perms", Int(0, 0o7777, octal=True), 0o600, help="file mode of the socket (in octal: 0660)"),
        Option("owner", Str(), "", help="user owning the socket (empty: unchanged)"),
        Option("group", Str(), "", help="group owning the socket (empty: unchanged)"),
    )  # fmt: skip
    output_keys = codec.OUTPUT_KEYS

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.path: str = config["socket_path"]
        self.server: socket.socket | None = None
        self.clients: dict[int, _Client] = {}
        self.max_frame = codec.MAX_FRAME
        self._ino: tuple[int, int] | None = None
        self._seq = 0
        self._replay: _Client | None = None
        self._unknown_seen: set[int] = set()
        p = f"unixsock.{instance_id}."
        self.stat = {n: p + n for n in STAT_NAMES}

    # -- life cycle

    def configure(self) -> None:
        c = self.config
        if not self.path:
            raise ConfigError(f"UNIXSOCK '{self.id}': socket_path is empty")
        if len(os.fsencode(self.path)) > _SUN_PATH_MAX:
            raise ConfigError(f"UNIXSOCK '{self.id}': socket_path is longer than {_SUN_PATH_MAX} bytes")
        if c["bufsize"]:
            self.max_frame = c["bufsize"]

    def start(self) -> None:
        c, log = self.config, self.ctx.log
        uid = gid = -1
        if c["owner"]:
            try:
                uid = pwd.getpwnam(c["owner"]).pw_uid
            except KeyError:
                raise PluginError(f"Invalid owner specified for unix socket ({c['owner']})") from None
        if c["group"]:
            try:
                gid = grp.getgrnam(c["group"]).gr_gid
            except KeyError:
                raise PluginError(f"Invalid group specified for unix socket ({c['group']})") from None
        try:  # a directory others can write is refused before anything in it is touched
            os.close(safefile.open_dir(os.path.dirname(self.path) or ".", self.ctx.run_as))
        except OSError as e:
            raise PluginError(f"cannot use socket_path '{self.path}': {e.strerror or e}") from None
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            try:
                # Mode and owner are set before the socket gets its name (core/safefile.py):
                # nothing is chmod'ed or chown'ed through a path another user could swap.
                self._ino = safefile.bind_unix(sock, self.path, self.ctx.run_as, c["perms"], uid, gid)
            except OSError as e:
                raise PluginError(f"could not bind to unix socket '{self.path}': {e.strerror or e}") from None
            sock.setblocking(False)
            if not c["bufsize"]:
                self.max_frame = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        except BaseException:
            sock.close()
            self._unlink()
            raise
        self.server = sock
        self.ctx.loop.add_reader(sock.fileno(), self._accept)
        log.info(f"UNIXSOCK '{self.id}': listening on {self.path}")

    def stop(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        if self.server is not None:
            self.ctx.loop.remove_reader(self.server.fileno())
            self.server.close()
            self.server = None
            self._unlink()

    def _remove_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        except OSError as e:
            raise PluginError(f"cannot use socket_path '{self.path}': {e.strerror or e}") from None
        if not stat.S_ISSOCK(st.st_mode):
            raise PluginError(f"unix socket '{self.path}' already exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            probe.settimeout(1.0)
            probe.connect(self.path)
        except (ConnectionRefusedError, FileNotFoundError):
            self.ctx.log.notice(f"UNIXSOCK '{self.id}': removing stale socket '{self.path}' (nobody listens on it)")
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            return
        except OSError as e:
            raise PluginError(f"unix socket '{self.path}' already exists ({e.strerror or e})") from None
        finally:
            probe.close()
        raise PluginError(f"unix socket '{self.path}' already exists and another program listens on it")

    def _unlink(self) -> None:
        if self._ino is None:
            return
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._ino:
                os.unlink(self.path)
        except OSError:
            pass
        self._ino = None

    # -- clients

    def _accept(self) -> None:
        server = self.server
        if server is None:
            return
        while True:
            try:
                conn, _addr = server.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.ctx.log.notice(f"UNIXSOCK '{self.id}': error while accepting a client: {e.strerror or e}")
                return
            if len(self.clients) >= MAX_CLIENTS:
                self.ctx.log.notice(f"UNIXSOCK '{self.id}': {MAX_CLIENTS} clients already, rejecting a new one")
                conn.close()
                continue
            conn.setblocking(False)
            self._seq += 1
            client = _Client(conn, codec.Stream(self.max_frame), f"client {self._seq}")
            self.clients[client.fd] = client
            self.ctx.stats.incr(self.stat["clients"])
            self.ctx.log.debug(f"UNIXSOCK '{self.id}': {client.name} connected")
            self.ctx.loop.add_reader(client.fd, functools.partial(self._read, client))

    def _read(self, client: _Client) -> None:
        sock = client.sock
        assert sock is not None
        for _ in range(MAX_READS):
            try:
                data = sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.ctx.stats.incr(self.stat["read_errors"])
                self.ctx.log.notice(
                    f"UNIXSOCK '{self.id}': read error on {client.name} ({e.strerror or e}), closing that client"
                )
                self._drop(client)
                return
            if not data:
                self.ctx.log.debug(f"UNIXSOCK '{self.id}': {client.name} disconnected")
                if client.stream.pending:
                    self.ctx.stats.incr(self.stat["malformed"])
                    self.ctx.log.notice(
                        f"UNIXSOCK '{self.id}': {client.name} closed in the middle of a frame "
                        f"({client.stream.pending} bytes lost)"
                    )
                self._drop(client)
                return
            if not self._consume(client, data):
                self._drop(client)
                return

    def _drop(self, client: _Client) -> None:
        if self.clients.pop(client.fd, None) is not None:
            self.ctx.loop.remove_reader(client.fd)
        if client.sock is not None:
            client.sock.close()
            client.sock = None

    def feed(self, buf: bytes) -> None:
        """Bytes as a client would write them (captured streams, tests): one replay client,
        which a wrong marker resets."""
        if self._replay is None:
            self._replay = _Client(None, codec.Stream(self.max_frame), "replay")
        if not self._consume(self._replay, buf):
            self._replay = None

    def _consume(self, client: _Client, data: bytes) -> bool:
        """Handle a client's bytes; False when the client must be dropped."""
        stream = client.stream
        items = stream.feed(data)
        stats, log = self.ctx.stats, self.ctx.log
        emit = self.emit
        packets = 0
        for item in items:
            if isinstance(item, int):
                stats.incr(self.stat["too_big"])
                log.notice(
                    f"UNIXSOCK '{self.id}': We are losing events. Please consider using the clause "
                    f"bufsize (a frame of {item} bytes from {client.name} is larger than {self.max_frame})"
                )
                continue
            unknown: list[int] = []
            try:
                values = codec.decode_frame(item, unknown)
            except DecodeError as e:
                stats.incr(self.stat["malformed"])
                log.notice(f"UNIXSOCK '{self.id}': skipped a malformed frame from {client.name}: {e}")
                continue
            if unknown:
                self._unknown(unknown)
            emit(values)
            packets += 1
        if packets:
            stats.incr(self.stat["packets"], packets)
        if stream.bad_marker is not None:
            stats.incr(self.stat["bad_marker"])
            log.error(
                f"ulogd2: invalid packet marked received (read {stream.bad_marker:x}, expected "
                f"{codec.MARKER:x}), closing socket. (UNIXSOCK '{self.id}', {client.name})"
            )
            return False
        return True

    def _unknown(self, ids: list[int]) -> None:
        self.ctx.stats.incr(self.stat["unknown_options"], len(ids))
        for oid in ids:
            if oid not in self._unknown_seen:  # once per id, not once per packet
                self._unknown_seen.add(oid)
                self.ctx.log.notice(f"ulogd2: unknown option {oid} (UNIXSOCK '{self.id}'; skipped, logged once)")
