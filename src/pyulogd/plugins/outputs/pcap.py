"""PCAP: packets to a classic libpcap file (ulogd2 ``ulogd_output_PCAP.so``), byte-compatible with 2.0.8.

A new or empty file starts with the global header in host byte order: magic 0xa1b2c3d4,
version 2.4, thiszone = libc's ``timezone`` (seconds west of UTC of standard time), sigfigs
0, snaplen 65536, link type 101 (LINKTYPE_RAW: every record starts at the IP header). An
existing non-empty file is appended to without a header. Each record: ts_sec/ts_usec from
``oob.time.sec``/``oob.time.usec`` when both are valid (else the time of writing), caplen =
``raw.pktlen``, len = ``ip.totlen`` (IPv4), ``ip6.payloadlen`` + 40 (IPv6) or caplen, then
``caplen`` bytes of ``raw.pkt``.

Records are collected and written with one ``os.write`` per batch (after each round of
events, or at 64 KiB), like LOGEMU, so ``sync=1`` costs no extra system call; a reader
never sees half a record once a batch is written. SIGHUP closes and reopens the file
(log rotation), writing a header only if the file is new or empty. A write error is
logged once per burst and counted (``pcap.<id>.write_errors``, ``pcap.<id>.records_lost``);
what a short write (disk full) left of a record is cut off again (pyulogd.core.append), so
the file stays readable to its end.
"""

from __future__ import annotations

import itertools
import os
import signal
import struct
import time
from typing import TYPE_CHECKING, Any

from pyulogd.core import safefile
from pyulogd.core.append import AppendError, append
from pyulogd.core.errors import PluginError
from pyulogd.core.options import Bool, Path
from pyulogd.core.plugin import OK, DataType, Key, KeyType, Option, Sink

if TYPE_CHECKING:
    from pyulogd.core.context import Context

PCAP_MAGIC = 0xA1B2C3D4
LINKTYPE_RAW = 101
SNAPLEN = 65536
FLUSH_AT = 64 * 1024
_GLOBAL = struct.Struct("=IHHiIII")
_RECORD = struct.Struct("=IIII")
AF_INET, AF_INET6 = 2, 10


def global_header(thiszone: int | None = None) -> bytes:
    """The file header ulogd2 writes (``thiszone`` defaults to libc's ``timezone``)."""
    zone = time.timezone if thiszone is None else thiszone
    return _GLOBAL.pack(PCAP_MAGIC, 2, 4, zone, 0, SNAPLEN, LINKTYPE_RAW)


class PcapOutput(Sink):
    name = "PCAP"
    so_name = "ulogd_output_PCAP.so"
    description = "Packets to a pcap file (link type RAW: from the IP header), readable by tcpdump/wireshark"
    input_type = DataType.PACKET
    options = (
        Option("file", Path(), "/var/log/ulogd.pcap", help="pcap file to append to"),
        Option("sync", Bool(), 0, help="accepted; records are written before the daemon waits"),
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

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.path: str = config["file"]
        self.fd = -1
        self.pending: list[bytes] = []
        self.size = 0
        self.records = 0
        self._failing = False
        self._errors_name = f"pcap.{instance_id}.write_errors"
        self._lost_name = f"pcap.{instance_id}.records_lost"

    # -- file
    def _open(self) -> int:
        fd = safefile.open_append(self.path, self.ctx.run_as)
        try:
            if os.fstat(fd).st_size == 0:
                header = global_header()
                try:
                    append(fd, header)
                except AppendError as e:
                    e.settle(fd, header, (len(header),))  # half a header is cut off again
                    raise
        except OSError:
            os.close(fd)
            raise
        return fd

    def start(self) -> None:
        (self._s_pkt, self._s_pktlen, self._s_totlen, self._s_sec, self._s_usec, self._s_family,
         self._s_payloadlen) = self.in_slots
        try:
            self.fd = self._open()
        except OSError as e:
            raise PluginError(f"PCAP: can't open pcap file {self.path}: {e.strerror}") from e

    def stop(self) -> None:
        self.flush()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def signal(self, signum: int) -> None:
        if signum != signal.SIGHUP:
            return
        self.ctx.log.notice("PCAP: reopening capture file")
        self.flush()
        try:
            fd = self._open()
        except OSError as e:
            self.ctx.log.error(f"PCAP: can't reopen {self.path!r}: {e.strerror}; keeping the old file")
            return
        old, self.fd = self.fd, fd
        if old >= 0:
            os.close(old)

    def flush(self) -> None:
        pending = self.pending
        if not pending:
            return
        data = b"".join(pending)
        records = self.records
        self.pending = []  # the old list gives the record boundaries if the write fails
        self.size = 0
        self.records = 0
        if self.fd < 0:
            self._lost(records, "file is not open")
            return
        try:
            # A record the filesystem only half took is cut off again: the file stays readable.
            append(self.fd, data)
        except AppendError as e:
            kept, torn = e.settle(self.fd, data, itertools.accumulate(len(r) for r in pending))
            if torn:
                self.ctx.log.error(f"PCAP: {self.path!r} ends in a partial record that could not be cut off")
            self._lost(records - kept, e.strerror)
            return
        if self._failing:
            self._failing = False
            self.ctx.log.notice(f"PCAP: writing to {self.path!r} works again")

    def _lost(self, records: int, reason: str | None) -> None:
        self.ctx.stats.incr(self._errors_name)
        self.ctx.stats.incr(self._lost_name, records)
        if not self._failing:
            self._failing = True
            self.ctx.log.error(f"PCAP: Error during write: {reason}; dropping records")

    # -- hot path
    def interp(self, rec: list[Any]) -> int:
        pkt = rec[self._s_pkt]
        caplen = rec[self._s_pktlen]
        if pkt is None:
            return OK
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
        self.pending.append(_RECORD.pack(sec & 0xFFFFFFFF, usec & 0xFFFFFFFF, len(data), length) + data)
        self.records += 1
        self.size += 16 + len(data)
        if self.size >= FLUSH_AT:
            self.flush()
        return OK
