"""PCAP: packets to a classic libpcap file (ulogd2 ``ulogd_output_PCAP.so``), byte-compatible with 2.0.8.

A new or empty file starts with the global header in host byte order: magic 0xa1b2c3d4,
version 2.4, thiszone = libc's ``timezone`` (seconds west of UTC of standard time), sigfigs
0, snaplen 65536, link type 101 (LINKTYPE_RAW: every record starts at the IP header). An
existing non-empty file is appended to without a header. Each record: ts_sec/ts_usec from
``oob.time.sec``/``oob.time.usec`` when both are valid (else the time of writing), caplen =
``raw.pktlen``, len = ``ip.totlen`` (IPv4), ``ip6.payloadlen`` + 40 (IPv6) or caplen, then
``caplen`` bytes of ``raw.pkt``.

Writing is the file sink's (``pyulogd.io.filesink``, binary records): records are collected
and written with one ``os.write`` per batch (after each round of events, or at 64 KiB), like
LOGEMU, so ``sync=1`` costs no extra system call; a reader never sees half a record once a
batch is written. SIGHUP closes and reopens the file (log rotation), writing a header only
if the file is new or empty. A write error is logged once per burst and counted
(``pcap.<id>.write_errors``, ``pcap.<id>.records_lost``); what a short write (disk full) left
of a record is cut off again (pyulogd.core.append), so the file stays readable to its end.

``chain_key`` (tamper evidence, ``io/chain.py``): the pcap file stays as it is (readable by
every tool); the seal of each record (an HMAC of its 16-byte header and data, chained to the
record before) goes to ``<file>.chain``, one line per record, which ``pyulogd-audit verify
--file <file>`` reads beside it.
"""

from __future__ import annotations

import struct
import time
from typing import Any

from pyulogd.core.options import Bool, Path
from pyulogd.core.plugin import DataType, Key, KeyType, Option
from pyulogd.io.chain import chain_options, line_chain
from pyulogd.io.filesink import PCAP_FILE, FileSink
from pyulogd.io.output import Output

PCAP_MAGIC = 0xA1B2C3D4
LINKTYPE_RAW = 101
SNAPLEN = 65536
_GLOBAL = struct.Struct("=IHHiIII")
_RECORD = struct.Struct("=IIII")
AF_INET, AF_INET6 = 2, 10


def global_header(thiszone: int | None = None) -> bytes:
    """The file header ulogd2 writes (``thiszone`` defaults to libc's ``timezone``)."""
    zone = time.timezone if thiszone is None else thiszone
    return _GLOBAL.pack(PCAP_MAGIC, 2, 4, zone, 0, SNAPLEN, LINKTYPE_RAW)


class PcapOutput(Output[bytes]):
    name = "PCAP"
    so_name = "ulogd_output_PCAP.so"
    description = "Packets to a pcap file (link type RAW: from the IP header), readable by tcpdump/wireshark"
    input_type = DataType.PACKET
    options = (
        Option("file", Path(), "/var/log/ulogd.pcap", help="pcap file to append to"),
        Option("sync", Bool(), 0, help="accepted; records are written before the daemon waits"),
        *chain_options(),
    )
    input_keys = (
        Key("raw.pkt", KeyType.RAW),
        Key("raw.pktlen", KeyType.UINT32),
        Key("ip.totlen", KeyType.UINT16),
        Key("oob.time.sec", KeyType.UINT32),
        Key("oob.time.usec", KeyType.UINT32),
        Key("oob.family", KeyType.UINT8),
        Key("ip6.payloadlen", KeyType.UINT16),
    )

    reopen_notice = "PCAP: reopening capture file"

    def make_sink(self) -> FileSink[bytes]:
        # tamper evidence (io/chain.py): one seal per record in <file>.chain, the pcap file unchanged
        chain = line_chain(self.ctx, self.config, "text", f"PCAP '{self.id}'")
        return FileSink(self.ctx, self.config["file"], f"pcap.{self.id}", "PCAP", binary=True, header=global_header,
                        lost_name="records_lost", wording=PCAP_FILE, chain=chain)  # fmt: skip

    def prepare(self) -> None:
        (self._s_pkt, self._s_pktlen, self._s_totlen, self._s_sec, self._s_usec, self._s_family,
         self._s_payloadlen) = self.in_slots

    def render(self, rec: list[Any]) -> bytes | None:
        pkt = rec[self._s_pkt]
        caplen = rec[self._s_pktlen]
        if pkt is None:
            return None
        if caplen is None:
            caplen = len(pkt)
        family = rec[self._s_family]
        length = None
        if family == AF_INET:
            length = rec[self._s_totlen]
        elif family == AF_INET6:
            payload = rec[self._s_payloadlen]
            if payload is not None:
                length = payload + 40
        if length is None:
            length = caplen
        sec = rec[self._s_sec]
        usec = rec[self._s_usec]
        if sec is None or usec is None:
            now = self.ctx.clock.wall()
            sec = int(now)
            usec = int((now - sec) * 1_000_000)
        data = bytes(pkt[:caplen])
        return _RECORD.pack(sec & 0xFFFFFFFF, usec & 0xFFFFFFFF, len(data), length) + data
