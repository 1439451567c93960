"""Small servers on the daemon's own event loop: the metrics endpoint and the control socket.

Both run in the loop that reads the kernel's sockets, so a client must never be able to
hold it: every socket is non-blocking, each wake-up does a bounded amount of work (a few
accepts, one ``recv()`` of at most 4 KiB, one ``send()``), a request is at most
``max_request`` bytes, at most ``max_clients`` connections are served at once (more are
closed at once, with a short "busy" answer), and a connection that has not finished
within ``timeout`` seconds is closed, whatever it was doing (a client that never sends
its request, or never reads the answer). Every client gets one answer and the connection
is closed: no keep-alive, no state. Bad input gets an error answer, never a traceback; what
was refused is counted (``<endpoint>.bad_request``, ``.busy``, ``.timeout``, ``.refused``).

What a request means is the business of ``answer(request) -> bytes | None`` (None: not
complete yet): :func:`http_answer` for the metrics endpoint, the daemon's control handler
for the control socket (daemon/ops.py).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from pyulogd.core import safefile
from pyulogd.core.errors import PluginError

if TYPE_CHECKING:
    from pyulogd.core.context import Context, TimerHandle

ACCEPTS_PER_WAKEUP = 16
ACCEPT_PAUSE = 1.0  # seconds without accepting after accept() failed (out of descriptors)
RECV_SIZE = 4096
# What is read and thrown away after the answer, waiting for the client to close.
DRAIN_MAX = 64 * 1024

Answer = Callable[[bytes], "bytes | None"]


class Endpoint:
    """A listening socket whose every client sends one request and gets one answer."""

    def __init__(
        self,
        ctx: Context,
        name: str,
        sock: socket.socket,
        answer: Answer,
        *,
        max_request: int,
        max_clients: int = 16,
        timeout: float = 10.0,
        busy: bytes = b"",
        too_big: bytes = b"",
        peer_ok: Callable[[socket.socket], bool] | None = None,
    ) -> None:
        self.ctx = ctx
        self.name = name
        self.sock = sock
        self.answer = answer
        self.max_request = max_request
        self.max_clients = max_clients
        self.timeout = timeout
        self.busy = busy
        self.too_big = too_big
        self.peer_ok = peer_ok
        self.clients: set[_Client] = set()
        self._accept_failing = False
        sock.setblocking(False)

    def start(self) -> None:
        self.ctx.loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        for client in list(self.clients):
            client.close()
        if self.sock.fileno() >= 0:
            self.ctx.loop.remove_reader(self.sock.fileno())
            self.sock.close()

    def count(self, what: str) -> None:
        self.ctx.stats.incr(f"{self.name}.{what}")

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # Out of descriptors (EMFILE) and the like: the client waits in the backlog,
                # and the socket is left alone for a second (still readable, it would make
                # the loop spin).
                if not self._accept_failing:
                    self._accept_failing = True
                    self.ctx.log.error(f"{self.name}: accept() failed: {e.strerror or e}; trying again in 1 s")
                self.ctx.loop.remove_reader(self.sock.fileno())
                self.ctx.loop.call_later(ACCEPT_PAUSE, self._resume)
                return
            self._accept_failing = False
            conn.setblocking(False)
            if len(self.clients) >= self.max_clients:
                self._reject(conn, "busy", self.busy)
            elif self.peer_ok is not None and not self.peer_ok(conn):
                self._reject(conn, "refused", b"")
            else:
                self.clients.add(_Client(self, conn))

    def _resume(self) -> None:
        if self.sock.fileno() >= 0:
            self.ctx.loop.add_reader(self.sock.fileno(), self._accept)

    def _reject(self, conn: socket.socket, why: str, reply: bytes) -> None:
        self.count(why)
        if reply:
            try:
                conn.send(reply)  # best effort: never wait for this client
            except OSError:
                pass
        conn.close()


class _Client:
    """One connection: read the request, send the answer, wait for the client to close."""

    def __init__(self, server: Endpoint, conn: socket.socket) -> None:
        self.server = server
        self.conn = conn  # a client's stream socket (TCP or unix)
        self.fd = conn.fileno()
        self.buf = bytearray()
        self.out = memoryview(b"")
        self.phase = "read"  # read, write, drain, closed
        self.waiting = False  # registered for writability
        self.drained = 0
        loop = server.ctx.loop
        loop.add_reader(self.fd, self._readable)
        self.timer: TimerHandle = loop.call_later(server.timeout, self._expired)

    def _readable(self) -> None:
        try:
            data = self.conn.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if self.phase == "drain":
            self.drained += len(data)
            if not data or self.drained > DRAIN_MAX:
                self.close()
            return
        if not data:  # gone before asking anything complete
            self.server.count("bad_request")
            self.close()
            return
        self.buf += data
        if len(self.buf) > self.server.max_request:
            self.server.count("bad_request")
            self._reply(self.server.too_big)
            return
        try:
            reply = self.server.answer(bytes(self.buf))
        except Exception as e:  # a bug answering must not reach the loop
            self.server.ctx.log.error(f"{self.server.name}: answering a request failed: {type(e).__name__}: {e}")
            self.server.count("bad_request")
            self.close()
            return
        if reply is not None:
            self._reply(reply)

    def _reply(self, data: bytes) -> None:
        self.server.ctx.loop.remove_reader(self.fd)
        self.phase = "write"
        self.out = memoryview(data)
        self._write()

    def _write(self) -> None:
        """Send what the socket takes now; wait for it to be writable for the rest."""
        while self.out:
            try:
                n = self.conn.send(self.out)
            except (BlockingIOError, InterruptedError):
                if not self.waiting:
                    self.waiting = True
                    self.server.ctx.loop.add_writer(self.fd, self._write)
                return
            except OSError:
                self.close()
                return
            self.out = self.out[n:]
        if self.waiting:
            self.waiting = False
            self.server.ctx.loop.remove_writer(self.fd)
        self._finish()

    def _finish(self) -> None:
        """Answer sent: say so (FIN), and read what the client may still send until it
        closes, so that closing does not reset the connection under an answer in flight."""
        if self.phase != "write":
            return
        try:
            self.conn.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self.phase = "drain"
        self.server.ctx.loop.add_reader(self.fd, self._readable)

    def _expired(self) -> None:
        if self.phase in ("read", "write"):
            self.server.count("timeout")
        self.close()

    def close(self) -> None:
        if self.phase == "closed":
            return
        self.phase = "closed"
        self.timer.cancel()
        self.server.ctx.loop.remove_reader(self.fd)  # reader or writer: one registration
        self.conn.close()
        self.server.clients.discard(self)


# -- HTTP (the metrics endpoint)

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}  # fmt: skip


def http_response(code: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
                  head: bool = False, extra: str = "") -> bytes:  # fmt: skip
    """A whole HTTP/1.1 response that closes the connection."""
    lines = (f"HTTP/1.1 {code} {_REASONS[code]}\r\nContent-Type: {content_type}\r\n"
             f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n")  # fmt: skip
    return lines.encode("ascii") + (b"" if head else body)


BUSY = http_response(503, b"busy\n", extra="Retry-After: 1\r\n")
TOO_BIG = http_response(431, b"request too large\n")


def http_answer(request: bytes, routes: dict[bytes, tuple[str, Callable[[], bytes]]]) -> bytes | None:
    """The answer to an HTTP request once its head is complete (None before): GET or HEAD
    of a path in ``routes`` (path -> (content type, body maker)); 400, 404, 405 otherwise.
    A body the client sends is never read (the connection closes after the answer)."""
    end = request.find(b"\r\n\r\n")
    if end < 0:
        end = request.find(b"\n\n")  # bare newlines, as some hand-typed requests have
        if end < 0:
            return None
    line = request[: request.find(b"\n")].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[1].startswith(b"/"):
        return http_response(400, b"bad request\n")
    method, target = parts[0], parts[1]
    if method not in (b"GET", b"HEAD"):
        return http_response(405, b"only GET and HEAD\n", extra="Allow: GET, HEAD\r\n")
    route = routes.get(target.split(b"?", 1)[0])
    if route is None:
        return http_response(404, b"not found: try /metrics\n", head=method == b"HEAD")
    content_type, make = route
    return http_response(200, make(), content_type, head=method == b"HEAD")


# -- listening sockets

def listen_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host`` (an IP address) and ``port`` (0: any free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart must not wait for TIME_WAIT
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock


def listen_unix(path: str) -> tuple[socket.socket, tuple[int, int]]:
    """The control socket at ``path``, mode 0600, in a directory by core/safefile.py's rules
    (created root's 0755 if missing); a stale socket from a run that died is replaced, a
    live one (another daemon answers there) or anything that is not a socket is refused.
    Returns the socket and its file's (st_dev, st_ino)."""
    head = os.path.dirname(path) or "."
    name = os.path.basename(path)
    if not os.path.isdir(head):
        safefile.make_dir(head, None, 0o755)
    dfd = safefile.open_dir(head, None)
    try:
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise PluginError(f"control socket '{path}': something else is there (not a socket); "
                                  "remove it or choose another control_socket")  # fmt: skip
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                probe.connect(f"/proc/self/fd/{dfd}/{name}")
            except OSError as e:
                if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                    raise
            else:
                raise PluginError(f"control socket '{path}': another daemon answers there")
            finally:
                probe.close()
    finally:
        os.close(dfd)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        ident = safefile.bind_unix(sock, path, None, 0o600)
        sock.listen(16)
    except OSError:
        sock.close()
        raise
    return sock, ident


_UCRED = struct.Struct("3i")


def peer_is_owner(conn: socket.socket) -> bool:
    """Whether the client of a unix socket runs as root or as the daemon's own user: the
    socket's mode already says so; this holds even if someone changes that mode."""
    try:
        _pid, uid, _gid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    except OSError:
        return False
    return uid in (0, os.geteuid())
