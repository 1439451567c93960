"""XML: packets, flows and counters as XML lines (ulogd2 ``ulogd_output_XML.so``).

Inputs are the raw netlink objects (optional RAW keys): ``ct`` (NFCT's, or NFLOG's with
``attach_conntrack=1``), ``raw`` (NFLOG's whole message), ``sum`` (NFACCT's whole message).
Each record is one line: the first valid of ``ct``, ``raw``, ``sum`` written as the
netfilter libraries write it for 2.0.8 (spec 6.6), then ``\\n``:

* ``raw``: ``nflog_snprintf_xml(NFLOG_XML_ALL)`` (libnetfilter_log 1.0.2): ``<log>``,
  ``<when>`` (local time of writing), ``<prefix>``, ``<hook>``, ``<hw><proto>`` (+ ``<src>``
  with the hardware address), ``<mark>``, ``<indev>``, ``<outdev>``, ``<physindev>``,
  ``<physoutdev>`` (each only when non-zero), ``<payload>`` (hex), ``</log>``;
* ``ct``: ``nfct_snprintf(NFCT_O_XML, SHOW_LAYER3|ID|TIME)`` (libnetfilter_conntrack 1.0.9):
  ``<flow>``, a ``<meta direction="original">`` and a ``"reply"`` one with ``<layer3>``,
  ``<layer4>`` and ``<counters>``, the ``"independent"`` one (state, timeout, mark, secmark,
  zone, use, id, ``<assured/>``, ``<unreplied/>``, ``<deltatime>``), ``<when>``, ``</flow>``;
* ``sum``: ``nfacct_snprintf(XML, TIME)`` (libnetfilter_acct 1.0.3): ``<obj><name>``,
  ``<pkts>``/``<bytes>`` (20 digits), the time fields, ``</obj>``.

A record with none of the three valid is an error ("error during propagate_results"),
as in 2.0.8.

File: ``<directory>/ulogd-<pkt|flow|sum>-DDMMYYYY-HHMMSS.xml`` (local time of opening; the
infix from the stack's input: ``pkt`` when ``raw`` comes from upstream, else ``flow`` when
``ct`` does, else ``sum`` when ``sum`` does), opened for appending; header
``<?xml version="1.0" encoding="utf-8"?>`` and ``<packet>`` (``<conntrack>``, ``<sum>``),
closing tag at stop. SIGHUP: closing tag, close, then a new timestamped file with a new
header. ``stdout=1`` writes to standard output instead.

Differences from 2.0.8 (docs/compat.md): texts from outside (``<prefix>``, ``<secctx>``,
``<name>``) are escaped (pyulogd.core.escape, then ``&<>`` as entities); a record longer
than 4095 bytes (a packet of more than about 1950 bytes) is written, where 2.0.8 drops it
with "error during propagate_results"; when the new file cannot be opened on SIGHUP, the old one is kept
(2.0.8 goes on writing to a closed stream); with ``stdout=1`` SIGHUP writes the closing tag
and a new header to standard output (2.0.8 switches to a file in ``directory``).

``chain_key`` (tamper evidence, ``io/chain.py``): each line ends in a processing instruction
``<?pyulogd-chain <seq>:<tag>?>`` (the header's two lines are one record, ``<seq>/2:<tag>``;
the closing tag is one too), an HMAC chained to the record before, across the files of one
run (give ``pyulogd-audit verify`` the files oldest first). The files stay well-formed XML.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from typing import TYPE_CHECKING, Any

from pyulogd.codec import netlink as nl
from pyulogd.codec import nfct
from pyulogd.core import safefile
from pyulogd.core.errors import ConfigError, PluginError
from pyulogd.core.escape import escape_bytes
from pyulogd.core.options import Bool, Path
from pyulogd.core.plugin import ERR, OK, DataType, Key, KeyType, Option
from pyulogd.core.ratelimit import Burst
from pyulogd.io.chain import LineChain, chain_options, line_chain
from pyulogd.io.filesink import FileSink, StdoutSink
from pyulogd.io.output import Output

if TYPE_CHECKING:
    from pyulogd.core.context import Context

_U16 = struct.Struct("!H").unpack_from
_U32 = struct.Struct("!I").unpack_from
_U64 = struct.Struct("!Q").unpack_from
_NLMSG_LEN = struct.Struct("=I").unpack_from
HEADER = '<?xml version="1.0" encoding="utf-8"?>\n'

# -- time

_WDAY = (2, 3, 4, 5, 6, 7, 1)  # struct tm's tm_wday + 1 (Sunday = 1) from Python's tm_wday


def time_fields(sec: float) -> str:
    """``<hour>…</year>`` as the three libraries write the local time."""
    tm = time.localtime(sec)
    return (
        f"<hour>{tm.tm_hour}</hour><min>{tm.tm_min:02d}</min><sec>{tm.tm_sec:02d}</sec>"
        f"<wday>{_WDAY[tm.tm_wday]}</wday><day>{tm.tm_mday}</day><month>{tm.tm_mon}</month>"
        f"<year>{tm.tm_year}</year>"
    )


def file_name(infix: str, sec: float) -> str:
    tm = time.localtime(sec)
    return (
        f"ulogd-{infix}-{tm.tm_mday:02d}{tm.tm_mon:02d}{tm.tm_year:04d}-"
        f"{tm.tm_hour:02d}{tm.tm_min:02d}{tm.tm_sec:02d}.xml"
    )


def xml_text(raw: bytes) -> str:
    """Outside bytes (a prefix, a security context, a counter's name) as element text: escaped
    as every outside string (pyulogd.core.escape: XML 1.0 cannot carry C0 controls, and a
    newline would split the record's line), and ``&``, ``<``, ``>`` as entities, so that a
    name cannot close the element and forge others (the libraries write them raw)."""
    text = escape_bytes(raw)
    if "&" in text or "<" in text or ">" in text:
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text


# -- packets: nflog_snprintf_xml

NFULA_PACKET_HDR = 1
NFULA_MARK = 2
NFULA_IFINDEX_INDEV = 4
NFULA_IFINDEX_OUTDEV = 5
NFULA_IFINDEX_PHYSINDEV = 6
NFULA_IFINDEX_PHYSOUTDEV = 7
NFULA_HWADDR = 8
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10


def _attrs(buf: Any, start: int, end: int, problems: list[str]) -> dict[int, tuple[int, int]]:
    """Type -> (payload start, end); a repeated attribute keeps its last copy, as libnfnetlink does.
    Attributes after a broken length are lost; why goes to ``problems``."""
    items, why = nl.well_formed(buf, start, end, _NO_POLICY)
    if why is not None:
        problems.append(why)
    return {t: (p, q) for t, p, q in items}


_NO_POLICY: nl.Policy = {}  # NFLOG and NFACCT attributes: the renderers check each length themselves


def _u32(buf: Any, span: tuple[int, int] | None) -> int:
    if span is None or span[1] - span[0] < 4:
        return 0
    return int(_U32(buf, span[0])[0])


def packet_xml(msg: Any, when: str, problems: list[str] | None = None) -> str:
    """The ``<log>`` element of one NFLOG message (nlmsghdr and nfgenmsg included); what cannot
    be read of a malformed one is left out and said in ``problems``."""
    end = len(msg)
    if end >= 4:
        end = min(end, _NLMSG_LEN(msg, 0)[0])
    tb = _attrs(msg, 20, end, [] if problems is None else problems)
    out = ["<log><when>", when, "</when>"]
    span = tb.get(NFULA_PREFIX)
    if span is not None:
        p, q = span
        n = bytes(msg[p:q]).find(b"\0")
        out.append(f"<prefix>{xml_text(bytes(msg[p : q if n < 0 else p + n]))}</prefix>")
    span = tb.get(NFULA_PACKET_HDR)
    if span is not None and span[1] - span[0] >= 3:
        proto, hook = struct.unpack_from("!HB", msg, span[0])
        out.append(f"<hook>{hook}</hook><hw><proto>{proto:04x}</proto>")
        hw = tb.get(NFULA_HWADDR)
        if hw is not None and hw[1] - hw[0] >= 2:
            hlen = _U16(msg, hw[0])[0]
            out.append(f"<src>{bytes(msg[hw[0] + 4 : hw[0] + 4 + hlen]).hex()}</src>")
        out.append("</hw>")
    for attr, tag in (
        (NFULA_MARK, "mark"),
        (NFULA_IFINDEX_INDEV, "indev"),
        (NFULA_IFINDEX_OUTDEV, "outdev"),
        (NFULA_IFINDEX_PHYSINDEV, "physindev"),
        (NFULA_IFINDEX_PHYSOUTDEV, "physoutdev"),
    ):
        v = _u32(msg, tb.get(attr))
        if v:
            out.append(f"<{tag}>{v}</{tag}>")
    span = tb.get(NFULA_PAYLOAD)
    if span is not None:
        out.append(f"<payload>{bytes(msg[span[0] : span[1]]).hex()}</payload>")
    out.append("</log>")
    return "".join(out)


# -- flows: nfct_snprintf(NFCT_O_XML)

CTA_TUPLE_ORIG = 1
CTA_TUPLE_REPLY = 2
CTA_STATUS = 3
CTA_PROTOINFO = 4
CTA_TIMEOUT = 7
CTA_MARK = 8
CTA_COUNTERS_ORIG = 9
CTA_COUNTERS_REPLY = 10
CTA_USE = 11
CTA_ID = 12
CTA_SECMARK = 17
CTA_ZONE = 18
CTA_SECCTX = 19
CTA_TIMESTAMP = 20

IPS_SEEN_REPLY = 1 << 1
IPS_ASSURED = 1 << 2

_L3NAMES: dict[int, str] = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}
_L4NAMES = {1: "icmp", 6: "tcp", 17: "udp", 33: "dccp", 47: "gre", 58: "icmpv6", 132: "sctp", 136: "udplite"}
_PORTS = frozenset({6, 17, 33, 132, 136})
_STATES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK",
           "TIME_WAIT", "CLOSE", "SYN_SENT2")  # fmt: skip


class _Tuple:
    __slots__ = ("src", "dst", "v6", "proto", "sport", "dport")

    def __init__(self) -> None:
        self.src = self.dst = b""
        self.v6: bool | None = None
        self.proto = self.sport = self.dport = 0


class _Ct:
    """One conntrack entry's attributes, read by :data:`nfct.CT_POLICY` (the NFCT decoder's own
    definition of a well-formed attribute): what breaks it is left out and noted in ``problems``."""

    __slots__ = ("buf", "problems")

    def __init__(self, buf: Any, problems: list[str]) -> None:
        self.buf = buf
        self.problems = problems

    def nest(self, p: int, q: int, policy: nl.Policy) -> list[tuple[int, int, int]]:
        items, why = nl.well_formed(self.buf, p, q, policy)
        if why is not None:
            self.problems.append(why)
        return items

    def tuple_at(self, p: int, q: int) -> _Tuple:
        buf = self.buf
        t = _Tuple()
        for at, p2, q2 in self.nest(p, q, nfct.TUPLE_POLICY):
            if at == nfct.CTA_TUPLE_IP:
                for a3, p3, _q3 in self.nest(p2, q2, nfct.IP_POLICY):
                    if a3 == nfct.CTA_IP_V4_SRC or a3 == nfct.CTA_IP_V4_DST:
                        t.v6 = False
                        addr = bytes(buf[p3 : p3 + 4])
                    elif a3 == nfct.CTA_IP_V6_SRC or a3 == nfct.CTA_IP_V6_DST:
                        t.v6 = True
                        addr = bytes(buf[p3 : p3 + 16])
                    else:
                        continue
                    if a3 == nfct.CTA_IP_V4_SRC or a3 == nfct.CTA_IP_V6_SRC:
                        t.src = addr
                    else:
                        t.dst = addr
            elif at == nfct.CTA_TUPLE_PROTO:
                for a3, p3, _q3 in self.nest(p2, q2, nfct.PROTO_POLICY):
                    if a3 == nfct.CTA_PROTO_NUM:
                        t.proto = buf[p3]
                    elif a3 == nfct.CTA_PROTO_SRC_PORT:
                        t.sport = _U16(buf, p3)[0]
                    elif a3 == nfct.CTA_PROTO_DST_PORT:
                        t.dport = _U16(buf, p3)[0]
        return t

    def counters(self, p: int, q: int) -> tuple[int | None, int | None]:
        buf = self.buf
        pkts = nbytes = None
        for at, p2, _q2 in self.nest(p, q, nfct.COUNTERS_POLICY):
            if at == nfct.CTA_COUNTERS_PACKETS:
                pkts = _U64(buf, p2)[0]
            elif at == nfct.CTA_COUNTERS_BYTES:
                nbytes = _U64(buf, p2)[0]
            elif at == nfct.CTA_COUNTERS32_PACKETS:
                pkts = _U32(buf, p2)[0]
            elif at == nfct.CTA_COUNTERS32_BYTES:
                nbytes = _U32(buf, p2)[0]
        return pkts, nbytes


def _addr(family: int, addr: bytes) -> str:
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, addr if len(addr) == 4 else bytes(4))
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, addr if len(addr) == 16 else bytes(16))
    return ""


def _meta(direction: str, family: int, t: _Tuple, counters: tuple[int, int] | None) -> str:
    l3 = _L3NAMES.get(family, "unknown")
    out = [
        f'<meta direction="{direction}"><layer3 protonum="{family}" protoname="{l3}">'
        f"<src>{_addr(family, t.src)}</src><dst>{_addr(family, t.dst)}</dst></layer3>"
        f'<layer4 protonum="{t.proto}" protoname="{_L4NAMES.get(t.proto, "unknown")}">'
    ]
    if t.proto in _PORTS:
        out.append(f"<sport>{t.sport}</sport><dport>{t.dport}</dport>")
    elif t.proto == 47:
        out.append(f"<srckey>0x{t.sport:x}</srckey><dstkey>0x{t.dport:x}</dstkey>")
    out.append("</layer4>")
    if counters is not None:
        out.append(f"<counters><packets>{counters[0]}</packets><bytes>{counters[1]}</bytes></counters>")
    out.append("</meta>")
    return "".join(out)


_U32_ATTRS = frozenset({CTA_STATUS, CTA_TIMEOUT, CTA_MARK, CTA_USE, CTA_ID, CTA_SECMARK})


def flow_xml(ct: Any, now: float, when: str, problems: list[str] | None = None) -> str:
    """The ``<flow>`` element of a conntrack entry's ``CTA_*`` attributes. ``now``: the wall
    clock (``<deltatime>`` of an entry without a stop time); ``when``: its time fields.

    Attributes are read as :data:`nfct.CT_POLICY` defines them, so an entry the NFCT decoder
    accepted is rendered whole. Of any other (NFLOG's ``ct`` is not checked by its decoder),
    what breaks the policy is left out and the reasons appended to ``problems``.
    """
    r = _Ct(ct, [] if problems is None else problems)
    orig = reply = _Tuple()
    counters: dict[int, tuple[int | None, int | None]] = {}
    states: dict[int, int] = {}  # CTA_PROTOINFO_TCP/DCCP/SCTP -> state
    u32: dict[int, int] = {}
    zone = start = stop = secctx = None
    for at, p, q in r.nest(0, len(ct), nfct.CT_POLICY):
        if at == CTA_TUPLE_ORIG:
            orig = r.tuple_at(p, q)
        elif at == CTA_TUPLE_REPLY:
            reply = r.tuple_at(p, q)
        elif at in (CTA_COUNTERS_ORIG, CTA_COUNTERS_REPLY):
            counters[at] = r.counters(p, q)
        elif at in _U32_ATTRS:
            u32[at] = _U32(ct, p)[0]
        elif at == CTA_ZONE:
            zone = _U16(ct, p)[0]
        elif at == CTA_PROTOINFO:
            for a2, p2, q2 in r.nest(p, q, nfct.PROTOINFO_POLICY):
                sub = nfct.PROTOINFO_POLICY.get(a2)
                if not isinstance(sub, dict):
                    continue  # another protocol's: the policy says nothing of its content
                for a3, p3, _q3 in r.nest(p2, q2, sub):
                    if a3 == nfct.CTA_PROTOINFO_TCP_STATE:  # CTA_PROTOINFO_{TCP,DCCP,SCTP}_STATE
                        states[a2] = ct[p3]
        elif at == CTA_TIMESTAMP:
            for a2, p2, _q2 in r.nest(p, q, nfct.TIMESTAMP_POLICY):
                if a2 == nfct.CTA_TIMESTAMP_START:
                    start = _U64(ct, p2)[0]
                elif a2 == nfct.CTA_TIMESTAMP_STOP:
                    stop = _U64(ct, p2)[0]
        elif at == CTA_SECCTX:
            policy = nfct.CT_POLICY[CTA_SECCTX]
            assert isinstance(policy, dict)
            for a2, p2, q2 in r.nest(p, q, policy):
                if a2 == nfct.CTA_SECCTX_NAME:
                    secctx = xml_text(bytes(ct[p2:q2]).split(b"\0", 1)[0])
    # libnetfilter_conntrack takes the layer 3 protocol of both tuples from the message's
    # family; the attributes carry it as the kind of address.
    v6 = orig.v6 if orig.v6 is not None else reply.v6
    family = 0 if v6 is None else socket.AF_INET6 if v6 else socket.AF_INET
    co = counters.get(CTA_COUNTERS_ORIG)
    cr = counters.get(CTA_COUNTERS_REPLY, (None, None))
    with_counters = co is not None and co[0] is not None and co[1] is not None
    out = ["<flow>"]
    out.append(_meta("original", family, orig, (co[0] or 0, co[1] or 0) if with_counters and co else None))
    out.append(_meta("reply", family, reply, (cr[0] or 0, cr[1] or 0) if with_counters else None))
    independent = bool(states or u32 or zone is not None or start is not None or stop is not None)
    if independent:
        out.append('<meta direction="independent">')
    for kind in (1, 3, 2):  # TCP, SCTP, DCCP
        state = states.get(kind)
        if state is not None:
            out.append(f"<state>{_STATES[state] if state < len(_STATES) else 'NONE'}</state>")
    for attr, tag in ((CTA_TIMEOUT, "timeout"), (CTA_MARK, "mark"), (CTA_SECMARK, "secmark")):
        if attr in u32:
            out.append(f"<{tag}>{u32[attr]}</{tag}>")
    if secctx is not None:
        out.append(f"<secctx>{secctx}</secctx>")
    if zone is not None:
        out.append(f"<zone>{zone}</zone>")
    for attr, tag in ((CTA_USE, "use"), (CTA_ID, "id")):
        if attr in u32:
            out.append(f"<{tag}>{u32[attr]}</{tag}>")
    status = u32.get(CTA_STATUS)
    if status is not None:
        if status & IPS_ASSURED:
            out.append("<assured/>")
        if not status & IPS_SEEN_REPLY:
            out.append("<unreplied/>")
    if start is not None:
        if stop is not None:
            delta = ((stop - start) % (1 << 64)) // 1_000_000_000
        else:
            delta = int(now) - start // 1_000_000_000
        out.append(f"<deltatime>{delta % (1 << 64)}</deltatime>")
    if independent:
        out.append("</meta>")
    out.append(f"<when>{when}</when></flow>")
    return "".join(out)


# -- counters: nfacct_snprintf(NFACCT_SNPRINTF_T_XML, NFACCT_SNPRINTF_F_TIME)


def sum_xml(msg: Any, when: str, problems: list[str] | None = None) -> str:
    """The ``<obj>`` element of one nfacct message (nlmsghdr and nfgenmsg included); what cannot
    be read of a malformed one is left out and said in ``problems``."""
    tb = _attrs(msg, 20, len(msg), [] if problems is None else problems)
    name = ""
    span = tb.get(1)  # NFACCT_NAME
    if span is not None:
        name = xml_text(bytes(msg[span[0] : span[1]]).split(b"\0", 1)[0])
    pkts = _U64(msg, tb[2][0])[0] if 2 in tb and tb[2][1] - tb[2][0] >= 8 else 0
    nbytes = _U64(msg, tb[3][0])[0] if 3 in tb and tb[3][1] - tb[3][0] >= 8 else 0
    return f"<obj><name>{name}</name><pkts>{pkts:020d}</pkts><bytes>{nbytes:020d}</bytes>{when}</obj>"


# -- the plugin

_TAGS = {"pkt": "packet", "flow": "conntrack", "sum": "sum"}


class XmlOutput(Output[str]):
    name = "XML"
    so_name = "ulogd_output_XML.so"
    description = "Packets, flows and counters as XML, one timestamped file per start and SIGHUP"
    input_type = DataType.RAW | DataType.PACKET | DataType.FLOW | DataType.SUM
    options = (
        Option("directory", Path(), "/var/log/", help="where the ulogd-*.xml files are created"),
        Option("sync", Bool(), 0, help="accepted; records are written before the daemon waits"),
        Option("stdout", Bool(), 0, help="1: write to standard output instead of a file"),
        *chain_options(),
    )
    input_keys = (
        Key("ct", KeyType.RAW, optional=True, help="conntrack entry (NFCT, or NFLOG with attach_conntrack=1)"),
        Key("raw", KeyType.RAW, optional=True, help="NFLOG netlink message"),
        Key("sum", KeyType.RAW, optional=True, help="NFACCT netlink message"),
    )

    reopen_notice = "XML: reopening logfile"

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.infix = "pkt"
        self._sec = -1
        self._tm = ""
        self._burst = Burst()
        self._chain: LineChain | None = None

    def configure(self) -> None:
        """Nothing to open yet: the file's name says what the stack's input is (known at start).
        The chain (``chain_key``) is one for all the files of this output: it goes on in the
        next file after SIGHUP."""
        if self.config["stdout"] and self.config["chain_key"]:
            raise ConfigError("XML: chain_key (tamper evidence) needs a file (stdout=0)")
        self._chain = line_chain(self.ctx, self.config, "xml", f"XML '{self.id}'")

    def make_sink(self) -> FileSink[str]:
        """Standard output, or a new file named after the input and the time (start, SIGHUP)."""
        if self.config["stdout"]:
            return StdoutSink(self.ctx, f"xml.{self.id}", "XML")
        path = f"{self.config['directory']}/{file_name(self.infix, self.ctx.clock.wall())}"
        return FileSink(self.ctx, path, f"xml.{self.id}", "XML", chain=self._chain)

    def start(self) -> None:
        self._s_ct, self._s_raw, self._s_sum = self.in_slots
        self.infix = "pkt" if self._s_raw else "flow" if self._s_ct else "sum" if self._s_sum else "pkt"
        if not self.config["stdout"]:
            try:  # every SIGHUP creates a file: after -u, the user does (docs/security.md)
                safefile.require_writable(self.config["directory"], self.ctx.run_as,
                                          "creates a new XML file in it on every SIGHUP", os.W_OK | os.X_OK)
            except OSError as e:
                raise PluginError(f"XML: can't use directory: {e.strerror}") from None
        out = self.make_sink()
        out.open()  # PluginError "XML: can't open log file '<path>': <reason>" stops the daemon
        self.attach(out)
        self._add(self._header())

    def _header(self) -> str:
        return f"{HEADER}<{_TAGS[self.infix]}>\n"

    def _footer(self) -> str:
        return f"</{_TAGS[self.infix]}>\n"

    def stop(self) -> None:
        if self.out is not None:
            self._add(self._footer())
            self.out.close()
            self.out = None

    def reopen(self) -> None:
        """SIGHUP: the closing tag ends the file, a new one begins with a header; standard
        output gets both. When the new file cannot be opened the old one stays in use."""
        old = self.out
        assert isinstance(old, FileSink)
        if isinstance(old, StdoutSink):
            self._add(self._footer())
            self._add(self._header())
            old.flush()
            return
        new = self.make_sink()
        try:
            new.open()
        except PluginError as e:
            self.ctx.log.error(f"XML: can't open a new file, going on with {old.path!r}: {e}")
            return
        self._add(self._footer())
        old.close()
        self.attach(new)
        self._add(self._header())

    def _when(self) -> tuple[float, str]:
        now = self.ctx.clock.wall()
        sec = int(now)
        if sec != self._sec:
            self._tm = time_fields(sec)
            self._sec = sec
        return now, self._tm

    def interp(self, rec: list[Any]) -> int:
        # A record none of whose three inputs is valid is an error, as in 2.0.8.
        if self.out is None:
            return ERR
        problems: list[str] = []
        made = self._xml(rec, problems)
        if made is None:
            return ERR
        text, what = made
        self._add(text)
        if problems:
            self._partial(what, problems[0])
        return OK

    def render(self, rec: list[Any]) -> str | None:
        made = self._xml(rec, [])
        return None if made is None else made[0]

    def _xml(self, rec: list[Any], problems: list[str]) -> tuple[str, str] | None:
        """The line of the first valid of ``ct``, ``raw``, ``sum`` and which it was; None:
        none is valid. What a malformed one made unreadable is said in ``problems``."""
        v = rec[self._s_ct]
        if v is not None:
            now, when = self._when()
            text = flow_xml(v, now, when, problems)
            what = "ct"
        else:
            v = rec[self._s_raw]
            if v is not None:
                text = packet_xml(v, self._when()[1], problems)
                what = "raw"
            else:
                v = rec[self._s_sum]
                if v is None:
                    return None
                text = sum_xml(v, self._when()[1], problems)
                what = "sum"
        return text + "\n", what

    def _partial(self, what: str, why: str) -> None:
        """A record written without what its malformed ``what`` key made unreadable: counted in
        ``xml.<id>.<what>_malformed``, logged once per burst (the text comes from the bytes'
        lengths and types, numbers only)."""
        self.ctx.stats.incr(f"xml.{self.id}.{what}_malformed")
        n = self._burst.due(self.ctx.clock.monotonic())
        if n:
            self.ctx.log.notice(f"XML: {n} record(s) written in part, malformed '{what}' key: {why}")
