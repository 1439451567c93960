"""Netlink sockets: the only code that opens, configures and reads them.

A :class:`NetlinkSocket` is non-blocking and close-on-exec. :meth:`~NetlinkSocket.request`
sends one request and waits for its ack (NLMSG_ERROR with a matching sequence number), raising
``OSError`` with the kernel's errno on failure; anything else that arrives meanwhile (events)
is kept and handed out first by :meth:`~NetlinkSocket.recv`. Reading never raises ENOBUFS (the
kernel dropped messages because the receive buffer was full): it is returned as an event so the
caller can count it and carry on.

After ``-u`` CAP_NET_ADMIN is permitted but not effective (:mod:`pyulogd.core.caps`); this
module raises it for exactly the calls the kernel checks it in: ``socket()`` and ``bind()``
(nfnetlink checks the credentials the socket was opened with at every request, and binding
multicast groups needs it), every request sent (:meth:`NetlinkSocket.request`,
:meth:`NetlinkSocket.send`) and ``SO_RCVBUFFORCE``. Reading never needs it. Send through
these methods, never through ``.sock`` directly, or the request fails with EPERM after ``-u``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from collections import deque
from collections.abc import Callable

from pyulogd.codec import netlink as nl
from pyulogd.core import caps
from pyulogd.core.clock import Clock, SystemClock
from pyulogd.io import mmsg
from pyulogd.io.netns import NetnsHandle, in_netns

SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26
# recv() result meaning "the kernel dropped messages" (the errno itself).
ENOBUFS = errno.ENOBUFS
MSG_TRUNC = int(socket.MSG_TRUNC)


def force_rcvbuf(sock: socket.socket, size: int) -> None:
    """Ask for a ``size``-byte receive buffer on any socket (NetlinkSocket's, IPFIXIN's UDP one):
    SO_RCVBUFFORCE, past ``net.core.rmem_max``, with CAP_NET_ADMIN raised; SO_RCVBUF, which the
    kernel caps silently, without the capability."""
    try:
        with caps.raised("CAP_NET_ADMIN"):
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


class NetlinkSocket:
    """One AF_NETLINK socket with a reusable receive buffer of ``bufsize`` bytes, created in
    the network namespace ``netns`` (None: the calling thread's; a socket stays in the
    namespace it was created in, whatever the thread does afterwards). ``clock`` bounds
    :meth:`request`'s wait for the kernel (the daemon passes ``ctx.clock``). ``recvmmsg=False``:
    :meth:`read_many` reads one datagram per system call even where recvmmsg works (the
    daemon's ``recvmmsg=0`` setting, to measure it or rule it out)."""

    recvmmsg = True

    def __init__(
        self,
        protocol: int = nl.NETLINK_NETFILTER,
        groups: int = 0,
        bufsize: int = 150000,
        netns: NetnsHandle | None = None,
        recvmmsg: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        with caps.raised("CAP_NET_ADMIN"):
            with in_netns(netns):
                self.sock = socket.socket(
                    socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, protocol
                )
            try:
                self.sock.bind((0, groups))
            except OSError:
                self.sock.close()
                raise
        self.portid: int = self.sock.getsockname()[0]
        self.bufsize = bufsize
        self._buf = bytearray(bufsize)
        self._view = memoryview(self._buf)
        self._many: memoryview | None = None  # read_many()'s buffer without recvmmsg, made at first use
        self.more = False  # read_many() stopped at a limit: more may be waiting
        self.recvmmsg = recvmmsg
        self._seq = 0
        # Buffers that arrived while request() waited for an ack; recv() returns them first.
        self.pending: deque[bytes] = deque()
        self.enobufs = 0  # ENOBUFS seen (in recv() and while waiting for acks)
        self.truncated = 0  # datagrams longer than bufsize (their tail is lost)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()
        self.pending.clear()

    @property
    def closed(self) -> bool:
        return self.sock.fileno() < 0

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    # -- receive buffer (SO_RCVBUF)

    def set_rcvbuf(self, size: int) -> int:
        """Ask for a ``size``-byte receive buffer; returns what the kernel granted (it doubles it).

        SO_RCVBUFFORCE (needs CAP_NET_ADMIN) passes ``net.core.rmem_max``; without the
        capability SO_RCVBUF is used, which the kernel caps silently.
        """
        force_rcvbuf(self.sock, size)
        return self.rcvbuf()

    def rcvbuf(self) -> int:
        return int(self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    def attach_filter(self, program: bytes) -> None:
        """SO_ATTACH_FILTER: a classic BPF program (``struct sock_filter`` array, see
        :mod:`pyulogd.codec.ctbpf`) the kernel runs on every message before queueing it.
        Raises ``OSError`` (the kernel's verdict on the program included)."""
        insns = len(program) // 8
        code = ctypes.create_string_buffer(program, len(program))
        fprog = struct.pack("HL", insns, ctypes.addressof(code))  # struct sock_fprog
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)

    def set_no_enobufs(self, on: bool = True) -> None:
        """NETLINK_NO_ENOBUFS: drop silently instead of reporting (not used by NFLOG: we count)."""
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1 if on else 0)

    # -- requests

    def send(self, msg: bytes) -> None:
        """Send ``msg`` without waiting for an answer (dumps, whose answer the caller reads)."""
        with caps.raised("CAP_NET_ADMIN"):
            self.sock.send(msg)

    def request(self, msg: bytes, timeout: float = 5.0) -> None:
        """Send ``msg`` (built with NLM_F_ACK and a sequence number from :meth:`next_seq`) and
        wait for the kernel's answer. Raises ``OSError(errno)`` if the kernel refused it and
        ``TimeoutError`` if no answer came within ``timeout`` seconds."""
        seq = nl.HDR.unpack_from(msg, 0)[3]
        with caps.raised("CAP_NET_ADMIN"):
            self.sock.send(msg)
        clock = self.clock
        deadline = clock.monotonic() + timeout
        while True:
            n = self._recv_raw()
            if n is None:
                if clock.monotonic() >= deadline:
                    raise TimeoutError(errno.ETIMEDOUT, f"no netlink answer to request {seq}")
                clock.wait_readable(self.sock.fileno(), deadline)
                continue
            if n < 0:
                continue  # ENOBUFS: events were lost; the ack may still come
            data = bytes(self._view[:n])
            err = _find_ack(data, seq, self.portid)
            if err is None:
                self.pending.append(data)
            elif err:
                raise OSError(err, os.strerror(err))
            else:
                return

    # -- reading

    def recv(self) -> bytes | int | None:
        """One datagram: its bytes, :data:`ENOBUFS` (an int) if the kernel dropped messages,
        or None when nothing is waiting. Other socket errors raise ``OSError``."""
        if self.pending:
            return self.pending.popleft()
        n = self._recv_raw()
        if n is None:
            return None
        if n < 0:
            return ENOBUFS
        return bytes(self._view[:n])

    def drain(self, on_data: Callable[[bytes], None], on_overrun: Callable[[], None], limit: int = 64) -> int:
        """Read until nothing is waiting, but at most ``limit`` datagrams, so that one busy socket
        cannot starve the loop (the selector is level-triggered and calls again). Returns the
        number of datagrams and overruns handled."""
        recv = self.recv
        for i in range(limit):
            r = recv()
            if r is None:
                return i
            if r.__class__ is int:
                on_overrun()
            else:
                on_data(r)  # type: ignore[arg-type]
        return limit

    def read_many(self, limit: int = 256) -> tuple[memoryview, list[tuple[int, int]], int]:
        """Read what is waiting, up to ``limit`` datagrams, into one buffer, with as few Python
        calls and system calls as can be: for sockets where a datagram is one small event
        (conntrack), so the fixed cost of a wake-up is shared by every datagram waiting.

        Returns the buffer, the ``(offset, length)`` of each datagram in arrival order, and
        how many ENOBUFS (kernel drops) were seen meanwhile. :attr:`more` says whether the
        read stopped at a limit (more may be waiting). The spans stay valid until the next
        ``read_many`` call on any socket (the buffer of ``recvmmsg`` is the process's). Buffers
        kept by :meth:`request` are not looked at: use :meth:`recv` when :attr:`pending` is
        not empty. A socket error other than ENOBUFS raises ``OSError``, unless datagrams were
        read before it: they are returned, and the error shows next time.
        """
        rx = mmsg.shared() if self.recvmmsg else None
        if rx is not None:
            return self._read_mmsg(rx, limit)
        # Without recvmmsg: one _recv_raw() per datagram, each copied after the previous one.
        many = self._many
        if many is None:
            many = self._many = memoryview(bytearray(self.bufsize * 4))
        spans: list[tuple[int, int]] = []
        pos = overruns = 0
        self.more = True
        while len(spans) < limit and pos + self.bufsize <= len(many):
            try:
                n = self._recv_raw()
            except OSError:
                if spans:
                    break  # the error shows again at the next call
                raise
            if n is None:
                self.more = False
                break
            if n < 0:
                overruns += 1
                continue
            many[pos : pos + n] = self._view[:n]
            spans.append((pos, n))
            pos += (n + 7) & ~7
        return many, spans, overruns

    def _read_mmsg(self, rx: mmsg.Receiver, limit: int) -> tuple[memoryview, list[tuple[int, int]], int]:
        fd = self.sock.fileno()
        overruns = 0
        for _ in range(2):  # a second time after an ENOBUFS: the datagrams after the drop
            try:
                spans, truncated = rx.recv(fd, limit)
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                self.enobufs += 1
                overruns += 1
                continue
            self.truncated += truncated
            self.more = len(spans) >= min(limit, rx.slots)
            return rx.view, spans, overruns
        self.more = True
        return rx.view, [], overruns

    def _recv_raw(self) -> int | None:
        """Bytes received into the buffer, -1 for ENOBUFS, None for nothing waiting."""
        try:
            # MSG_TRUNC makes netlink return the datagram's real length, so truncation shows.
            n = self.sock.recv_into(self._buf, self.bufsize, MSG_TRUNC)
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                self.enobufs += 1
                return -1
            raise
        if n > self.bufsize:
            self.truncated += 1
            n = self.bufsize
        return n


def lay_out(datagrams: list[bytes]) -> tuple[memoryview, list[tuple[int, int]]]:
    """Datagrams in one buffer as :meth:`NetlinkSocket.read_many` gives them (replay tools
    and tests): the buffer and each one's ``(offset, length)``."""
    spans, pos = [], 0
    for d in datagrams:
        spans.append((pos, len(d)))
        pos += (len(d) + 7) & ~7
    many = bytearray(pos)
    for (off, n), d in zip(spans, datagrams, strict=True):
        many[off : off + n] = d
    return memoryview(many), spans


def _find_ack(data: bytes, seq: int, portid: int) -> int | None:
    """The errno (0 for success) of the NLMSG_ERROR in ``data`` answering request ``seq``, else None."""
    msgs, _problem = nl.split(data)
    for off, ln, typ, _flags, mseq, pid in msgs:
        if typ == nl.NLMSG_ERROR and mseq == seq and pid in (portid, 0):
            try:
                err, _ = nl.parse_error(data, off, ln)
            except ValueError:
                continue
            return err
    return None
