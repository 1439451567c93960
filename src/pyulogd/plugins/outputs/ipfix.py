"""IPFIX: conntrack flows to an IPFIX collector (ulogd2 ``ulogd_output_IPFIX.so``, new in 2.0.8).

Same options and wire format as 2.0.8: ``oid`` (observation domain, required, not 0),
``host``, ``port`` (4739), ``proto`` (``tcp`` or ``udp``), ``mtu`` (largest message, 512),
``send_template`` (``once``: template in the first message only; ``never``; anything else:
in every message). Each flow with a valid ``orig.ip.saddr`` becomes one 33-byte record of
template 256 (pyulogd.codec.ipfix): addresses, packets and bytes of both directions added
(32 bit), flow start/end seconds, ports (0 when the flow has none), protocol, and
``ct.mark`` as applicationId. Messages are sent when the next record would not fit in
``mtu`` bytes, and at least once a second.

Differences from 2.0.8 (docs/compat.md):

* IPv6 flows go out as records of template 257 (IPv6 addresses, same other fields), with
  their own template set the first time one appears; 2.0.8 sends garbage for them.
* The header's sequence number is RFC 7011's (data records sent before this message in
  the domain); 2.0.8 counts the message's own records too, which collectors report as
  sequence errors.
* The partial message is sent every second (2.0.8 arms its one-second timer once, so a
  quiet exporter keeps its last flows until enough new ones fill a message), and at exit.
* Ports are 0 for flows without ports (2.0.8 leaves uninitialised memory there).
* ``host`` may be a name or an IPv6 address (2.0.8: IPv4 literal only).
* The collector may be down at start or go away: messages wait in a bounded queue
  (``queue`` bytes, 1 MiB), then in the on-disk spool (``spool_dir``, ``spool_max``), and go
  out in order after the reconnect (pyulogd.io.sender); a new TCP connection (a new IPFIX
  session) starts with the templates again; spooled messages keep the sequence numbers of
  the session they were made for, so a collector may report a gap or a jump after an
  outage (the records are all there). Over udp a collector that is gone is seen only from
  an ICMP error (docs/security.md).

Each finished message is queued as it is made (``pyulogd.io.streamsink`` over tcp, resent
whole after a broken connection; ``pyulogd.io.dgramsink`` over udp), carrying its records'
count for the counters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyulogd.codec import ipfix as codec
from pyulogd.core.context import TimerHandle
from pyulogd.core.errors import ConfigError
from pyulogd.core.options import Address, Choice, Int, Port, Size, Str
from pyulogd.core.plugin import OK, DataType, Key, KeyType, Option
from pyulogd.io.dgramsink import DgramSink
from pyulogd.io.output import Output
from pyulogd.io.sender import Endpoint, sender_options, spool_settings
from pyulogd.io.streamsink import SenderSink, StreamSink

if TYPE_CHECKING:
    from pyulogd.core.context import Context

FLUSH_INTERVAL = 1.0
# Header + a template set + a data set header + one IPv6 record.
MIN_MTU = codec.HEADER.size + len(codec.template_set(codec.TEMPLATE_V6)) + 4 + codec.RECORD[codec.TEMPLATE_V6].size

T = KeyType
INPUT_KEYS = (
    Key("orig.ip.saddr", T.IPADDR),
    Key("orig.ip.daddr", T.IPADDR),
    Key("orig.raw.pktcount", T.UINT64),
    Key("orig.raw.pktlen", T.UINT64),
    Key("reply.raw.pktcount", T.UINT64),
    Key("reply.raw.pktlen", T.UINT64),
    Key("flow.start.sec", T.UINT32),
    Key("flow.start.usec", T.UINT32),
    Key("flow.end.sec", T.UINT32),
    Key("flow.end.usec", T.UINT32),
    Key("orig.l4.sport", T.UINT16),
    Key("orig.l4.dport", T.UINT16),
    Key("orig.ip.protocol", T.UINT8),
    Key("ct.mark", T.UINT32),
)


class IpfixOutput(Output[bytes]):
    name = "IPFIX"
    so_name = "ulogd_output_IPFIX.so"
    description = "Flows to an IPFIX collector (ulogd2's template 256, plus 257 for IPv6)"
    input_type = DataType.PACKET | DataType.FLOW | DataType.SUM
    options = (
        Option("oid", Int(0, 0xFFFFFFFF), 0, help="observation domain ID (required, not 0)"),
        Option("host", Address(), "", help="collector address (required)"),
        Option("port", Port(), 4739, help="collector port"),
        Option("proto", Choice("tcp", "udp", fold_case=False, what="protocol"), "tcp", help="tcp or udp"),
        Option("mtu", Size(MIN_MTU, 65535), 512, help="largest IPFIX message in bytes"),
        Option("send_template", Str(), "once",
               help="once (first message of a session), never, or anything else: every message"),
        *sender_options(1 << 20),
    )
    input_keys = INPUT_KEYS
    reopen_notice = "IPFIX: reopening connection"

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.collector: SenderSink[bytes] | None = None
        self.oid = 0
        self.mtu = 512
        self.template_mode = "once"
        self.seq = 0  # data records put in messages so far (RFC 7011 sequence)
        self._announced: set[int] = set()  # templates sent in this session
        self._sets: list[bytes] = []  # finished sets of the message being built
        self._set_tid = 0  # template of the open data set
        self._set_records: list[bytes] = []
        self._msg_templates: set[int] = set()
        self._msg_len = codec.HEADER.size
        self._msg_records = 0
        # The commit mark of the message being built when it held records at the last
        # ``committed`` (None: its records came after it): see ``committed``.
        self._msg_mark: int | None = None
        self._timer: TimerHandle | None = None
        self._sessions = 0

    def configure(self) -> None:
        c = self.config
        self.oid = c["oid"]
        if not self.oid:
            raise ConfigError("invalid Observation ID")
        if not c["host"]:
            raise ConfigError("no destination host specified")
        self.mtu = c["mtu"]
        self.template_mode = c["send_template"]
        super().configure()

    def make_sink(self) -> SenderSink[bytes]:
        c = self.config
        kind = DgramSink if c["proto"] == "udp" else StreamSink
        self.collector = kind(self.ctx, "IPFIX", Endpoint(c["host"], c["port"]), f"ipfix.{self.id}",
                         queue_bytes=c["queue"], backoff_max=c["reconnect_max"], batch=False, lines=False,
                         on_connect=self._new_session, spool=spool_settings(self.ctx, c, self.id))  # fmt: skip
        return self.collector

    def prepare(self) -> None:
        self.ctx.log.info(f"IPFIX: using IPFIX Collector at {self.config['host']}:{self.config['port']} "
                          f"(MTU {self.mtu})")  # fmt: skip

    def start(self) -> None:
        super().start()
        self._timer = self.ctx.loop.call_later(FLUSH_INTERVAL, self._tick, repeat=True)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._finish_message()
        super().stop()

    def reopen(self) -> None:
        self._finish_message()
        super().reopen()

    def _tick(self) -> None:
        self._finish_message()
        self.flush()

    # -- sessions and templates
    def _new_session(self) -> list[tuple[bytes, int]]:
        """A (re)connection is a new IPFIX session: the collector must get the templates
        again before the data already queued for it."""
        self._sessions += 1
        if self._sessions == 1 or self.template_mode == "never":
            return []  # the first message of the first session announces them itself
        tids = sorted(self._announced) or [codec.TEMPLATE_V4]
        seq = self.seq
        queue = self.collector.sender.queue if self.collector is not None else None
        if queue:
            seq = codec.HEADER.unpack_from(queue[0][0])[3]
        msg = codec.message([codec.template_set(t) for t in tids], int(self.ctx.clock.wall()), seq, self.oid)
        return [(msg, 0)]

    def _needs_template(self, tid: int) -> bool:
        mode = self.template_mode
        if mode == "never":
            return False
        if mode == "once":
            return tid not in self._announced
        return tid not in self._msg_templates

    # -- message building
    def _close_set(self) -> None:
        if self._set_records:
            self._sets.append(codec.data_set(self._set_tid, self._set_records))
            self._set_records = []
        self._set_tid = 0

    def _finish_message(self) -> None:
        self._close_set()
        if not self._msg_records:
            return
        msg = codec.message(self._sets, int(self.ctx.clock.wall()), self.seq, self.oid)
        self.seq += self._msg_records
        records = self._msg_records
        self._sets = []
        self._msg_templates = set()
        self._msg_len = codec.HEADER.size
        self._msg_records = 0
        assert self.collector is not None
        self.collector.add(msg, records, self._msg_mark)
        self._msg_mark = None

    def committed(self, seq: int) -> int:
        """The sink's cursor (the sender's: io/streamsink.py), held back by the records of the
        message being built, which wait here up to FLUSH_INTERVAL before they go to the sink."""
        before = self.collector.sender.mark if self.collector is not None else seq
        low = super().committed(seq)
        if not self._msg_records:
            self._msg_mark = None
            return low
        if self._msg_mark is None:
            self._msg_mark = before  # its records all came after the last call
        return min(low, self._msg_mark)

    def add(self, tid: int, record: bytes) -> None:
        for _ in range(2):
            need_tmpl = self._needs_template(tid)
            size = len(record)
            if need_tmpl:
                size += 48  # template set of one 10-field template
            if need_tmpl or tid != self._set_tid:
                size += 4  # a new data set header
            if self._msg_len + size <= self.mtu or not self._msg_records:
                break
            self._finish_message()
            self.flush()
        if need_tmpl:
            self._close_set()
            self._sets.append(codec.template_set(tid))
            self._announced.add(tid)
            self._msg_templates.add(tid)
        if tid != self._set_tid:
            self._close_set()
            self._set_tid = tid
        self._set_records.append(record)
        self._msg_len += size
        self._msg_records += 1

    def interp(self, rec: list[Any]) -> int:
        s = self.in_slots
        saddr = rec[s[0]]
        if saddr is None:
            return OK
        daddr = rec[s[1]]
        if len(saddr) == 4:
            tid = codec.TEMPLATE_V4
        elif len(saddr) == 16:
            tid = codec.TEMPLATE_V6
        else:
            return OK
        if daddr is None or len(daddr) != len(saddr):
            daddr = bytes(len(saddr))
        packets = ((rec[s[2]] or 0) + (rec[s[4]] or 0)) & 0xFFFFFFFF
        octets = ((rec[s[3]] or 0) + (rec[s[5]] or 0)) & 0xFFFFFFFF
        sport = rec[s[10]]
        dport = rec[s[11]]
        if sport is None:
            sport = dport = 0
        record = codec.RECORD[tid].pack(
            bytes(saddr), bytes(daddr), packets, octets, (rec[s[6]] or 0) & 0xFFFFFFFF,
            (rec[s[8]] or 0) & 0xFFFFFFFF, sport, dport or 0, rec[s[12]] or 0, (rec[s[13]] or 0) & 0xFFFFFFFF,
        )
        self.add(tid, record)
        return OK
