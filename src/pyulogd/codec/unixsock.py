"""The UNIXSOCK wire format (ulogd2 ``ulogd_inppkt_UNIXSOCK.c``, spec 4.5), sans-IO.

A client (NuFW's nuauth, ``contrib/pcap2ulog``, ``pyulogd-unixsock-send``) writes frames
on a ``SOCK_STREAM`` UNIX socket. Integers are big-endian except where noted::

    u32 marker 0x41C90FD4
    u16 total_size       frame length minus the 4 marker bytes
    u32 version:4, reserved:28   (ignored, send 0)
    u16 payload_length
    payload              the IPv4 / IPv6 packet, zero-padded to a multiple of 8
    options              each: u32 id, u32 length, value zero-padded to a multiple of 8

Option ids: 1 prefix, 2 input device name, 3 output device name (strings, NUL-terminated),
4 ``oob.time.sec`` (u32 in the sender's *host* byte order), 200 user name, 201 user id
(u32, host order), 202 OS name, 203 OS release, 204 OS version, 205 application name
(strings), 206 connection state (u8: 0 drop, 1 open, 2 established, 3 close, 4 unknown,
given as ``raw.label``).

:class:`Stream` cuts a byte stream into frames; :func:`decode_frame` turns one frame into the
value list the input emits (``[None]`` + one value per key of :data:`KEYS`); :func:`encode`
builds a frame (the client side).
"""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import Any

from pyulogd.codec import nflog
from pyulogd.core.errors import DecodeError
from pyulogd.core.keys import Key, KeyType

MARKER = 0x41C90FD4
HEADER = struct.Struct(">IHIH")  # marker, total_size, version/reserved, payload_length
OPTION = struct.Struct(">II")
MAX_FRAME = 4 + 0xFFFF  # total_size is 16 bits

OPT_PREFIX = 1
OPT_OOB_IN = 2
OPT_OOB_OUT = 3
OPT_OOB_TIME_SEC = 4
OPT_USER = 200
OPT_USERID = 201
OPT_OSNAME = 202
OPT_OSREL = 203
OPT_OSVERS = 204
OPT_APPNAME = 205
OPT_STATE = 206

# The UNIXSOCK plugin's output keys (the one table: plugins/inputs/unixsock.py imports it), in
# ulogd2's order. The first 22 are NFLOG's packet keys, same names and types, as ulogd2 declares
# them (BASE and the outputs read UNIXSOCK records as they read NFLOG's), except that the
# interfaces come as names (oob.in, oob.out) instead of indexes. Only the help is UNIXSOCK's own:
# a client cannot send most of them.
_PACKET_HELP = {
    "raw.pkt": "the packet (IPv4 or IPv6 header first) as the client sent it",
    "raw.pktlen": "length of raw.pkt",
    "raw.pktcount": "number of packets (always 1)",
    "oob.prefix": "log prefix (option 1)",
    "oob.time.sec": "time of the packet, seconds (option 4)",
    "oob.family": "2 (IPv4) or 10 (IPv6) from the packet's version field, else 0",
    "raw.label": "connection state (option 206: 0 drop, 1 open, 2 established, 3 close, 4 unknown)",
}
T = KeyType
_INTERFACE_NAMES = {
    "oob.ifindex_in": Key("oob.in", T.STRING, help="name of the input interface (option 2)"),
    "oob.ifindex_out": Key("oob.out", T.STRING, help="name of the output interface (option 3)"),
}
OUTPUT_KEYS: tuple[Key, ...] = tuple(
    _INTERFACE_NAMES.get(k.name) or replace(k, help=_PACKET_HELP.get(k.name, "never set"))
    for k in nflog.OUTPUT_KEYS[: nflog.IDX["raw.mac.addrlen"]]  # IDX counts from 1: up to raw.mac.addrlen
) + (
    Key("nufw.user.name", T.STRING, help="user name (option 200)"),
    Key("nufw.user.id", T.UINT32, help="user id (option 201)"),
    Key("nufw.os.name", T.STRING, help="operating system name (option 202)"),
    Key("nufw.os.rel", T.STRING, help="operating system release (option 203)"),
    Key("nufw.os.vers", T.STRING, help="operating system version (option 204)"),
    Key("nufw.app.name", T.STRING, help="application name (option 205)"),
)
KEYS: tuple[str, ...] = tuple(k.name for k in OUTPUT_KEYS)
_I = {name: i + 1 for i, name in enumerate(KEYS)}  # position in the emitted list (slot 0 is None)
I_PKT, I_PKTLEN, I_PKTCOUNT, I_FAMILY = _I["raw.pkt"], _I["raw.pktlen"], _I["raw.pktcount"], _I["oob.family"]

# option id -> (position, kind): "s" string, "u32" host-order u32, "u8"
OPTIONS: dict[int, tuple[int, str]] = {
    OPT_PREFIX: (_I["oob.prefix"], "s"),
    OPT_OOB_IN: (_I["oob.in"], "s"),
    OPT_OOB_OUT: (_I["oob.out"], "s"),
    OPT_OOB_TIME_SEC: (_I["oob.time.sec"], "u32"),
    OPT_USER: (_I["nufw.user.name"], "s"),
    OPT_USERID: (_I["nufw.user.id"], "u32"),
    OPT_OSNAME: (_I["nufw.os.name"], "s"),
    OPT_OSREL: (_I["nufw.os.rel"], "s"),
    OPT_OSVERS: (_I["nufw.os.vers"], "s"),
    OPT_APPNAME: (_I["nufw.app.name"], "s"),
    OPT_STATE: (_I["raw.label"], "u8"),
}
_FAMILY = {4: 2, 6: 10}  # IP version nibble -> AF_INET / AF_INET6
_HOST_U32 = struct.Struct("=I")


def align8(n: int) -> int:
    return (n + 7) & ~7


class Stream:
    """Frames out of one client's byte stream.

    ``feed`` returns, in order, each complete frame (``bytes``, marker included) and, for a
    frame longer than ``max_frame``, its length (``int``): such a frame is skipped whole, so
    the stream stays in step (2.0.8 dropped the read chunk instead, and lost its place).
    After a wrong marker ``bad_marker`` holds the 4 bytes read (as a number) and the stream
    takes nothing more: the client has to be dropped, as ulogd2 does.
    """

    __slots__ = ("buf", "skip", "max_frame", "bad_marker")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.buf = bytearray()
        self.skip = 0
        self.max_frame = max_frame
        self.bad_marker: int | None = None

    def feed(self, data: bytes) -> list[bytes | int]:
        if self.bad_marker is not None:
            return []
        if self.skip:
            n = min(self.skip, len(data))
            self.skip -= n
            data = data[n:]
        buf = self.buf
        buf += data
        out: list[bytes | int] = []
        pos = 0
        end = len(buf)
        while end - pos >= 6:
            marker, total = struct.unpack_from(">IH", buf, pos)
            if marker != MARKER:
                self.bad_marker = marker
                del buf[:]
                return out
            size = 4 + total
            if size > self.max_frame:
                out.append(size)
                have = end - pos
                if have >= size:
                    pos += size
                    continue
                self.skip = size - have
                pos = end
                break
            if end - pos < size:
                break
            out.append(bytes(buf[pos : pos + size]))
            pos += size
        if pos:
            del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held."""
        return len(self.buf)


def _text(value: bytes) -> str:
    cut = value.find(b"\x00")
    if cut >= 0:
        value = value[:cut]
    return value.decode("utf-8", "surrogateescape")


def decode_frame(frame: bytes, unknown: list[int] | None = None) -> list[Any]:
    """One frame (marker included) to ``[None]`` + the values of :data:`KEYS`.

    Ids of unknown options are appended to ``unknown`` (ulogd2 logs and skips them).
    Raises DecodeError for a frame whose lengths do not fit, where ulogd2 read past it.
    """
    if len(frame) < HEADER.size:
        raise DecodeError(f"frame of {len(frame)} bytes is shorter than its {HEADER.size}-byte header")
    _marker, total, _version, plen = HEADER.unpack_from(frame)
    if 4 + total != len(frame):
        raise DecodeError(f"total_size {total} does not match the frame's {len(frame)} bytes")
    start = HEADER.size
    if start + plen > len(frame):
        raise DecodeError(f"payload_length {plen} is beyond the end of the frame ({len(frame)} bytes)")
    values: list[Any] = [None] * (len(KEYS) + 1)
    payload = frame[start : start + plen]
    values[I_PKT] = payload
    values[I_PKTLEN] = plen
    values[I_PKTCOUNT] = 1
    values[I_FAMILY] = _FAMILY.get(payload[0] >> 4, 0) if payload else 0
    off = start + align8(plen)
    end = len(frame)
    while off + OPTION.size <= end:
        oid, olen = OPTION.unpack_from(frame, off)
        vstart = off + OPTION.size
        if vstart + olen > end:
            raise DecodeError(f"option {oid} of {olen} bytes is beyond the end of the frame")
        value = frame[vstart : vstart + olen]
        off = vstart + align8(olen)
        spec = OPTIONS.get(oid)
        if spec is None:
            if unknown is not None:
                unknown.append(oid)
            continue
        pos, kind = spec
        if kind == "s":
            values[pos] = _text(value)
        elif kind == "u32":
            if olen < 4:
                raise DecodeError(f"option {oid} needs 4 bytes, has {olen}")
            values[pos] = _HOST_U32.unpack_from(value)[0]
        else:
            if olen < 1:
                raise DecodeError(f"option {oid} needs 1 byte, has 0")
            values[pos] = value[0]
    return values


def option(oid: int, value: bytes) -> bytes:
    """One option, padded."""
    return OPTION.pack(oid, len(value)) + value + bytes(align8(len(value)) - len(value))


def string_option(oid: int, text: str) -> bytes:
    return option(oid, text.encode("utf-8", "surrogateescape") + b"\x00")


def encode(
    payload: bytes,
    *,
    prefix: str | None = None,
    indev: str | None = None,
    outdev: str | None = None,
    time_sec: int | None = None,
    user: str | None = None,
    user_id: int | None = None,
    os_name: str | None = None,
    os_release: str | None = None,
    os_version: str | None = None,
    app_name: str | None = None,
    state: int | None = None,
    extra: tuple[tuple[int, bytes], ...] = (),
) -> bytes:
    """A frame carrying ``payload`` (an IP packet) and the given options."""
    opts = b"".join(
        string_option(oid, text)
        for oid, text in (
            (OPT_PREFIX, prefix), (OPT_OOB_IN, indev), (OPT_OOB_OUT, outdev), (OPT_USER, user),
            (OPT_OSNAME, os_name), (OPT_OSREL, os_release), (OPT_OSVERS, os_version), (OPT_APPNAME, app_name),
        )
        if text is not None
    )  # fmt: skip
    if time_sec is not None:
        opts += option(OPT_OOB_TIME_SEC, _HOST_U32.pack(time_sec & 0xFFFFFFFF))
    if user_id is not None:
        opts += option(OPT_USERID, _HOST_U32.pack(user_id & 0xFFFFFFFF))
    if state is not None:
        opts += option(OPT_STATE, bytes([state & 0xFF]))
    opts += b"".join(option(oid, value) for oid, value in extra)
    body = payload + bytes(align8(len(payload)) - len(payload)) + opts
    total = HEADER.size - 4 + len(body)
    if total > 0xFFFF:
        raise ValueError(f"frame too long ({4 + total} bytes; at most {MAX_FRAME})")
    return HEADER.pack(MARKER, total, 0, len(payload)) + body
