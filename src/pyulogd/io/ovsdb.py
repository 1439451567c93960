"""A small OVSDB client on the daemon's loop: one ``monitor`` of the Interface table, kept
current, reconnected with back-off. Never blocks: the socket is non-blocking and read when
the loop says it is readable; a server that is down costs a connect attempt per back-off
step (1 s doubling to 60 s by default, on the injected clock), nothing more.

The protocol is in :mod:`pyulogd.codec.ovsdb`. Only a local unix socket is spoken to
(``/run/openvswitch/db.sock``, the ``punix:`` remote ovsdb-server always has): the
daemon reads it as root, and nothing needs to cross the network for it.

What the table held is kept while the server is away (ports do not change because OVSDB
restarted) and replaced as a whole by the reply of the next monitor, so nothing learned
before a restart lingers after it. Every failure is counted (``<prefix>.ovsdb_*``) and
logged once per burst (:class:`~pyulogd.core.ratelimit.Burst`); coming back is logged with
the number of attempts it took.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyulogd.codec import ovsdb
from pyulogd.core.backoff import Backoff
from pyulogd.core.errors import DecodeError
from pyulogd.core.ratelimit import Burst

if TYPE_CHECKING:
    from pyulogd.core.context import Context, TimerHandle

READ_SIZE = 1 << 20
MONITOR_ID = "pyulogd-interfaces"
STAT_NAMES = ("ovsdb_connects", "ovsdb_connect_failures", "ovsdb_disconnects", "ovsdb_protocol_errors",
              "ovsdb_updates", "ovsdb_resyncs")  # fmt: skip


def socket_path(spec: str) -> str:
    """The socket path of ``unix:PATH`` or ``PATH`` (absolute); ValueError otherwise."""
    path = spec[5:] if spec.startswith("unix:") else spec
    if not path.startswith("/") or "\0" in path:
        raise ValueError(f"'{spec}' is not a unix socket (unix:/run/openvswitch/db.sock)")
    return path


class OvsdbMonitor:
    """Keeps :attr:`table` (an :class:`~pyulogd.codec.ovsdb.InterfaceTable`) in step with the
    ovsdb-server at ``path``; ``on_change(names)`` is called from the loop with the device
    names whose entry changed."""

    def __init__(self, ctx: Context, path: str, on_change: Callable[[set[str]], None], label: str,
                 stat_prefix: str, *, first: float = 1.0, cap: float = 60.0,
                 rand: Callable[[], float] | None = None) -> None:  # fmt: skip
        self.ctx = ctx
        self.path = path
        self.on_change = on_change
        self.label = label
        self.table = ovsdb.InterfaceTable()
        self.sock: socket.socket | None = None
        self.synced = False  # the current connection's monitor reply was applied
        self.backoff = Backoff(first, cap, jitter=0.25, rand=rand)
        self._timer: TimerHandle | None = None
        self._framer = ovsdb.Framer()
        self._req = 0
        self._stopped = True
        self._burst = Burst()
        self._down_since_log = False  # a failure was logged and the return is not yet
        self.stat = {n: f"{stat_prefix}.{n}" for n in STAT_NAMES}

    # -- life cycle

    def start(self) -> None:
        self._stopped = False
        self._connect()

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._close()

    def reconnect_now(self) -> None:
        """Try at once (SIGHUP: the operator may just have started the server)."""
        if self._stopped or self.sock is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._connect()

    # -- connecting

    def _connect(self) -> None:
        self._timer = None
        if self._stopped:
            return
        self.backoff.begin(self.ctx.clock.monotonic())
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.path)
            self._req += 1
            self._send_on(sock, ovsdb.monitor_request(self._req, MONITOR_ID,
                                                      {"Interface": list(ovsdb.InterfaceTable.COLUMNS)}))  # fmt: skip
        except OSError as e:
            sock.close()
            self._failed(_why(e))
            return
        self.sock = sock
        self.synced = False
        self._framer = ovsdb.Framer()
        self.ctx.stats.incr(self.stat["ovsdb_connects"])
        self.ctx.loop.add_reader(sock.fileno(), self._readable)

    def _failed(self, why: str) -> None:
        """An attempt failed, or a connection broke: count, log once per burst, retry later."""
        self.ctx.stats.incr(self.stat["ovsdb_connect_failures"])
        wait = self.backoff.failed()
        n = self._burst.due(self.ctx.clock.monotonic())
        if n:
            self.ctx.log.error(f"{self.label}: cannot use ovsdb-server at {self.path}: {why} ({n} attempt(s) "
                               f"failed); port ids come from the mapping file meanwhile, next try in {wait:.0f} s")
            self._down_since_log = True
        self._schedule()

    def _schedule(self) -> None:
        if self._stopped:
            return
        delay = self.backoff.remaining(self.ctx.clock.monotonic())
        self._timer = self.ctx.loop.call_later(delay, self._connect)

    def _close(self) -> None:
        if self.sock is not None:
            self.ctx.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        self.synced = False

    def _lost(self, why: str) -> None:
        """The connection broke (or spoke nonsense): close, count, reconnect after a wait."""
        self._close()
        self.ctx.stats.incr(self.stat["ovsdb_disconnects"])
        self.backoff.broke(self.ctx.clock.monotonic())
        self.ctx.log.error(f"{self.label}: lost ovsdb-server at {self.path}: {why}; keeping the "
                           f"{len(self.table)} interface(s) known, reconnecting")  # fmt: skip
        self._down_since_log = True
        self._schedule()

    # -- reading

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            data = sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._lost(_why(e))
            return
        if not data:
            self._lost("the server closed the connection")
            return
        try:
            messages = self._framer.feed(data)
            for msg in messages:
                self._handle(msg)
        except DecodeError as e:
            self.ctx.stats.incr(self.stat["ovsdb_protocol_errors"])
            self._lost(str(e))
        except OSError as e:
            self._lost(_why(e))

    def _handle(self, msg: dict[str, Any]) -> None:
        method = msg.get("method")
        if method == "echo":
            self._send(ovsdb.echo_reply(msg))
        elif method == "update":
            params = msg.get("params")
            if not isinstance(params, list) or len(params) != 2 or params[0] != MONITOR_ID:
                return  # not our monitor's
            changed = self.table.apply(params[1])
            self.ctx.stats.incr(self.stat["ovsdb_updates"])
            if changed:
                self.on_change(changed)
        elif method is None and msg.get("id") == self._req:
            if msg.get("error") is not None:
                raise DecodeError(f"the server refused the monitor: {_short(msg.get('error'))}")
            changed = self.table.replace(msg.get("result"))
            self.synced = True
            self.ctx.stats.incr(self.stat["ovsdb_resyncs"])
            failures = self.backoff.reset()
            if self._down_since_log:
                self._down_since_log = False
                self.ctx.log.notice(f"{self.label}: ovsdb-server at {self.path} answers again after {failures} "
                                    f"failed attempt(s); {len(self.table)} interface(s)")  # fmt: skip
            if changed:
                self.on_change(changed)

    def _send(self, data: bytes) -> None:
        assert self.sock is not None
        self._send_on(self.sock, data)

    @staticmethod
    def _send_on(sock: socket.socket, data: bytes) -> None:
        """Our messages are a few hundred bytes: a socket that takes less than all of one is
        broken for our purpose (OSError, so the connection is dropped and retried)."""
        try:
            n = sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        if n != len(data):
            raise OSError(errno.EAGAIN, "the server does not take our request")


def _why(e: OSError) -> str:
    return e.strerror or os.strerror(e.errno or 0) or str(e)


def _short(v: Any) -> str:
    text = str(v)
    return text if len(text) <= 200 else text[:200] + "..."
