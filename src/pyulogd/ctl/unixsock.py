"""A UNIXSOCK client: send packets to a running pyulogd (or ulogd2) UNIXSOCK input.

As a program (``pyulogd-unixsock-send`` or ``python -m pyulogd.ctl.unixsock``)::

    pyulogd-unixsock-send -s /run/ulogd/ulogd2.sock --prefix "test " --udp 192.0.2.1 192.0.2.2
    pyulogd-unixsock-send -s /tmp/nuauth_ulogd2.sock --pcap capture.pcap      # as pcap2ulog
    pyulogd-unixsock-send -s SOCK --hex 4500001c...   --user alice --state 1

Each packet is an IPv4 or IPv6 packet (network header first). Packets from a pcap file
(Ethernet, Linux cooked v1/v2 or raw IP captures) keep their capture time as
``oob.time.sec`` unless ``--time`` is given.

As a library::

    with UnixsockClient("/run/ulogd/ulogd2.sock") as c:
        c.send(packet, prefix="web ", indev="eth0")
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import struct
import sys
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from pyulogd.codec import unixsock as codec


class UnixsockClient:
    def __init__(self, path: str, timeout: float | None = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except BaseException:
            self.sock.close()
            raise
        self.sent = 0

    def send(self, payload: bytes, **options: Any) -> None:
        """One packet; ``options`` are :func:`pyulogd.codec.unixsock.encode`'s keywords."""
        self.sock.sendall(codec.encode(payload, **options))
        self.sent += 1

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UnixsockClient:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp_packet(src: str, dst: str, sport: int = 1024, dport: int = 9, data: bytes = b"pyulogd test") -> bytes:
    """A valid IPv4 or IPv6 UDP packet (checksums included)."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version != d.version:
        raise ValueError("source and destination must be of the same IP version")
    ulen = 8 + len(data)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, 17, ulen)
    else:
        pseudo = s.packed + d.packed + struct.pack("!IxxxB", ulen, 17)
    udp = struct.pack("!HHHH", sport, dport, ulen, 0) + data
    csum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    if s.version == 6:
        return struct.pack("!IHBB", 6 << 28, ulen, 17, 64) + s.packed + d.packed + udp
    hdr = struct.pack("!BBHHHBBH", 0x45, 0, 20 + ulen, 0, 0x4000, 64, 17, 0) + s.packed + d.packed
    hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
    return hdr + udp


def read_pcap(path: str) -> Iterator[tuple[int, bytes]]:
    """(capture second, IP packet) of each IPv4/IPv6 packet of a pcap file; others are skipped."""
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24:
            raise ValueError(f"{path}: not a pcap file (too short)")
        magic = head[:4]
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            end = "<"
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            end = ">"
        else:
            raise ValueError(f"{path}: not a pcap file (pcapng is not read; convert it with editcap -F pcap)")
        linktype = struct.unpack(end + "I", head[20:24])[0] & 0x0FFFFFFF
        rec = struct.Struct(end + "IIII")
        while True:
            h = f.read(16)
            if len(h) < 16:
                return
            sec, _usec, incl, _orig = rec.unpack(h)
            frame = f.read(incl)
            pkt = _network_layer(linktype, frame)
            if pkt is not None:
                yield sec, pkt


def _network_layer(linktype: int, frame: bytes) -> bytes | None:
    if linktype == 1:  # Ethernet
        off, proto = 14, frame[12:14]
        while proto in (b"\x81\x00", b"\x88\xa8") and len(frame) >= off + 4:
            proto, off = frame[off + 2 : off + 4], off + 4
    elif linktype == 113:  # Linux cooked v1
        off, proto = 16, frame[14:16]
    elif linktype == 276:  # Linux cooked v2
        off, proto = 20, frame[0:2]
    elif linktype in (12, 14, 101, 228, 229):  # raw IP
        return frame if frame and frame[0] >> 4 in (4, 6) else None
    else:
        raise ValueError(f"pcap link type {linktype} is not supported (Ethernet, Linux cooked, raw IP are)")
    if proto not in (b"\x08\x00", b"\x86\xdd"):
        return None
    return frame[off:]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pyulogd-unixsock-send",
        description="Send packets to the UNIXSOCK input of pyulogd (or ulogd2).",
    )
    p.add_argument("-s", "--socket", default="/var/run/ulogd/ulogd2.sock", help="socket_path of the UNIXSOCK input")
    src = p.add_argument_group("packets (any combination, sent in this order)")
    src.add_argument("--hex", action="append", default=[], metavar="HEX", help="an IP packet in hex")
    src.add_argument("--hex-file", metavar="FILE", help="IP packets in hex, one per line ('-': stdin)")
    src.add_argument("--pcap", metavar="FILE", help="every IPv4/IPv6 packet of a pcap file")
    src.add_argument("--udp", nargs=2, metavar=("SRC", "DST"), help="a small UDP packet from SRC to DST")
    p.add_argument("--sport", type=int, default=1024, help="source port of --udp")
    p.add_argument("--dport", type=int, default=9, help="destination port of --udp")
    p.add_argument("-n", "--count", type=int, default=1, help="send everything this many times")
    opts = p.add_argument_group("options carried with every packet")
    opts.add_argument("--prefix", help="oob.prefix")
    opts.add_argument("--in", dest="indev", help="oob.in (input interface name)")
    opts.add_argument("--out", dest="outdev", help="oob.out (output interface name)")
    opts.add_argument("--time", dest="time_sec", type=int, help="oob.time.sec")
    opts.add_argument("--user", help="nufw.user.name")
    opts.add_argument("--user-id", type=int, help="nufw.user.id")
    opts.add_argument("--os-name", help="nufw.os.name")
    opts.add_argument("--os-release", help="nufw.os.rel")
    opts.add_argument("--os-version", help="nufw.os.vers")
    opts.add_argument("--app", dest="app_name", help="nufw.app.name")
    opts.add_argument("--state", type=int, help="raw.label: 0 drop, 1 open, 2 established, 3 close, 4 unknown")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    packets: list[tuple[int | None, bytes]] = [(None, bytes.fromhex(h)) for h in args.hex]
    try:
        if args.hex_file:
            f = sys.stdin if args.hex_file == "-" else open(args.hex_file)
            with f:
                packets += [(None, bytes.fromhex(line)) for line in f if line.strip() and not line.startswith("#")]
        if args.pcap:
            packets += [(sec, pkt) for sec, pkt in read_pcap(args.pcap)]
        if args.udp:
            packets.append((None, udp_packet(args.udp[0], args.udp[1], args.sport, args.dport)))
    except (OSError, ValueError) as e:
        sys.stderr.write(f"pyulogd-unixsock-send: {e}\n")
        return 1
    if not packets:
        sys.stderr.write("pyulogd-unixsock-send: nothing to send (give --hex, --hex-file, --pcap or --udp)\n")
        return 1
    common = {
        k: getattr(args, k)
        for k in ("prefix", "indev", "outdev", "user", "user_id", "os_name", "os_release", "os_version",
                  "app_name", "state")
        if getattr(args, k) is not None
    }  # fmt: skip
    try:
        with UnixsockClient(args.socket) as client:
            for _ in range(args.count):
                for sec, pkt in packets:
                    when = args.time_sec if args.time_sec is not None else sec
                    client.send(pkt, time_sec=when, **common)
            sent = client.sent
    except (OSError, ValueError) as e:
        sys.stderr.write(f"pyulogd-unixsock-send: {args.socket}: {e}\n")
        return 1
    sys.stderr.write(f"sent {sent} packet(s) to {args.socket}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
