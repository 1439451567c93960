"""Test helpers: build a Stack without a config file, and stand-ins for upstream plugins.

``make_stack`` instantiates plugin classes (or takes instances) and wires them with
``core.stack.wire``, as ``build_stack`` does after parsing.
``NflogKeys``/``BaseKeys`` declare the keys of ulogd2's NFLOG and BASE (spec 4.1, 5.1) and
put given values in their slots, so filters and outputs can be tested on exact records.
"""

from __future__ import annotations

import importlib
import json
import re
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyulogd.codec import nflog as nflog_codec
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.core.plugin import OK, DataType, Filter, Key, Plugin, Sink, Source
from pyulogd.core.plugin import KeyType as T
from pyulogd.core.stack import Stack, wire
from pyulogd.io.loop import Loop

PluginSpec = Plugin | type[Plugin] | tuple[type[Plugin], dict[str, Any]]


def make_stack(
    plugins: Sequence[PluginSpec], ctx: Context | None = None, *, start: bool = True, spec: str = "test"
) -> Stack:
    """Instances, :func:`wire` (configure output first, resolve, finish); then start (input first)."""
    ctx = ctx if ctx is not None else Context(loop=Loop())
    instances: list[Plugin] = []
    for n, p in enumerate(plugins):
        if isinstance(p, Plugin):
            instances.append(p)
            continue
        cls, opts = p if isinstance(p, tuple) else (p, {})
        inst_id = f"{cls.name.lower() or 'p'}{n}"
        instances.append(cls(ctx, inst_id, typed_options(cls, opts, inst_id)))
    stack = wire(ctx, instances, spec=spec, path="<test>")
    if start:
        for inst in instances:
            inst.start()
    return stack


def typed_options(cls: type[Plugin], opts: dict[str, Any], inst_id: str = "test") -> dict[str, Any]:
    """The config a ulogd.conf section giving ``opts`` yields: defaults for the rest, each given
    value written as text (``str(v)``) and parsed by its option's kind, as from a file.
    Options the plugin does not declare are passed as they are (test plugins' own settings)."""
    by_name = {o.name: o for o in cls.options}
    values: dict[str, Any] = {o.name: o.default for o in cls.options}
    for name, v in opts.items():
        opt = by_name.get(name)
        try:
            values[name] = v if opt is None else opt.parse(str(v))
        except ValueError as e:
            raise ConfigError(f"option '{name}' of '{inst_id}': {e}") from None
    return values


def stop_stack(stack: Stack) -> None:
    for inst in reversed(stack.instances):
        inst.stop()


def K(name: str, t: T, cim: str | None = None) -> Key:
    return Key(name, t, cim=cim)


NFLOG_KEYS = nflog_codec.OUTPUT_KEYS  # the NFLOG input's own table

_U8 = {"ip.protocol", "ip.tos", "ip.ttl", "ip.ihl", "ip6.priority", "ip6.hoplimit", "ip6.nexthdr",
       "tcp.offset", "tcp.reserved", "icmp.type", "icmp.code", "icmpv6.type", "icmpv6.code"}
_U32 = {"ip6.flowlabel", "ip6.fragid", "tcp.seq", "tcp.ackseq", "sctp.csum", "ahesp.spi", "icmp.gateway"}
_BOOL = {"tcp.urg", "tcp.ack", "tcp.psh", "tcp.rst", "tcp.syn", "tcp.fin", "tcp.res1", "tcp.res2"}
_IPADDR = {"ip.saddr", "ip.daddr", "arp.saddr", "arp.daddr"}
_RAW = {"arp.shwaddr", "arp.dhwaddr"}
_CIM = {"tcp.sport": "src_port", "udp.sport": "src_port", "sctp.sport": "src_port",
        "tcp.dport": "dest_port", "udp.dport": "dest_port", "sctp.dport": "dest_port"}
BASE_NAMES = (
    "ip.saddr ip.daddr ip.protocol ip.tos ip.ttl ip.totlen ip.ihl ip.csum ip.id ip.fragoff "
    "ip6.payloadlen ip6.priority ip6.flowlabel ip6.hoplimit ip6.nexthdr ip6.fragoff ip6.fragid "
    "tcp.sport tcp.dport tcp.seq tcp.ackseq tcp.window tcp.offset tcp.reserved tcp.urg tcp.urgp "
    "tcp.ack tcp.psh tcp.rst tcp.syn tcp.fin tcp.res1 tcp.res2 tcp.csum udp.sport udp.dport "
    "udp.len udp.csum icmp.type icmp.code icmp.echoid icmp.echoseq icmp.gateway icmp.fragmtu "
    "icmp.csum icmpv6.type icmpv6.code icmpv6.echoid icmpv6.echoseq icmpv6.csum ahesp.spi "
    "oob.protocol arp.hwtype arp.protocoltype arp.operation arp.shwaddr arp.saddr arp.dhwaddr "
    "arp.daddr sctp.sport sctp.dport sctp.csum"
).split()


def _base_type(name: str) -> T:
    for names, t in ((_U8, T.UINT8), (_U32, T.UINT32), (_BOOL, T.BOOL), (_IPADDR, T.IPADDR), (_RAW, T.RAW)):
        if name in names:
            return t
    return T.UINT16


BASE_KEYS = tuple(K(n, _base_type(n), _CIM.get(n)) for n in BASE_NAMES)


class NflogKeys(Source):
    """Declares NFLOG's keys; ``emit_dict`` sends one event with the given values."""

    name = "NFLOGKEYS"
    output_type = DataType.RAW
    output_keys = NFLOG_KEYS

    def emit_dict(self, values: dict[str, Any]) -> None:
        self.emit([None] + [values.get(k.name) for k in self.output_keys])


class BaseKeys(Filter):
    """Declares BASE's keys; writes ``self.values`` (set by the test before each event)."""

    name = "BASEKEYS"
    input_type = DataType.RAW
    output_type = DataType.PACKET
    output_keys = BASE_KEYS

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.values: dict[str, Any] = {}

    def interp(self, rec: list[Any]) -> int:
        base = self.out_base
        for i, key in enumerate(self.output_keys):
            rec[base + i] = self.values.get(key.name)
        return OK


class Capture(Sink):
    """Keeps a copy of every record; ``value(rec, name)`` reads an upstream key."""

    name = "CAPTURE"
    wildcard_inputs = True

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.records: list[list[Any]] = []

    def interp(self, rec: list[Any]) -> int:
        self.records.append(list(rec))
        return OK

    def value(self, rec: list[Any], name: str) -> Any:
        for key, slot in zip(self.wildcard_keys, self.in_slots, strict=True):
            if key.name == name:
                return rec[slot]
        raise KeyError(name)


def golden_values(d: dict[str, Any], mac: bytes | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """NFLOG and BASE key values of one golden JSON object (upstream of IFINDEX/IP2STR).

    JSON names ports by their CIM alias and prints addresses only as text; both are turned
    back into BASE keys. ``mac``: the hardware header, from the LOGEMU line (JSON has none).
    """
    nflog = {k.name: d.get(k.name) for k in NFLOG_KEYS}
    nflog["raw.mac"] = mac
    base = {n: d.get(n) for n in BASE_NAMES}
    l4 = {6: "tcp", 17: "udp", 132: "sctp"}.get(d.get("ip.protocol") or d.get("ip6.nexthdr") or -1)
    if l4 is not None and "src_port" in d:
        base[f"{l4}.sport"] = d["src_port"]
        base[f"{l4}.dport"] = d["dest_port"]
    family = socket.AF_INET6 if d.get("oob.family") == 10 else socket.AF_INET
    for text_key, key in (("src_ip", "ip.saddr"), ("dest_ip", "ip.daddr")):
        if text_key in d:
            base[key] = socket.inet_pton(family, d[text_key])
    base["oob.protocol"] = d.get("oob.protocol")
    return nflog, base


# -- golden outputs of ulogd2 2.0.8 (../shared first, else the copies in tests/vectors)
TESTS = Path(__file__).resolve().parent
SHARED_GOLDEN = TESTS.parent.parent / "shared" / "golden"
VECTOR_GOLDEN = TESTS / "vectors" / "golden-2.0.8"
_GOLDEN_FILES = {
    "pkt-json": ("ulogd2-2.0.8/pkt-json/out.json", "pkt-json.out.json"),
    "pkt-logemu": ("ulogd2-2.0.8/pkt-logemu/logemu.log", "pkt-logemu.logemu.log"),
}


def golden_lines(case: str) -> list[str]:
    shared, copy = _GOLDEN_FILES[case]
    path = SHARED_GOLDEN / shared
    if not path.is_file():
        path = VECTOR_GOLDEN / copy
    return path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()


def goldentool() -> Any:
    """shared/golden/goldentool.py (its mask_logemu/mask_json), or a local copy of the rules."""
    if (SHARED_GOLDEN / "goldentool.py").is_file():
        if str(SHARED_GOLDEN) not in sys.path:
            sys.path.insert(0, str(SHARED_GOLDEN))
        return importlib.import_module("goldentool")
    return _FallbackMask


class _FallbackMask:
    """The masking rules of goldentool.py (README "Fields that vary run to run")."""

    JSON_VARY = {"timestamp", "oob.time.sec", "oob.time.usec", "ip.id", "ip.csum", "tcp.seq", "tcp.ackseq",
                 "tcp.csum", "udp.csum", "icmp.csum", "icmpv6.csum", "flow.start.sec", "flow.start.usec",
                 "flow.end.sec", "flow.end.usec", "ct.id", "ip6.fragid"}  # fmt: skip

    @staticmethod
    def mask_logemu(text: str) -> list[str]:
        out = []
        for line in text.splitlines():
            line = re.sub(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ ", "TS HOST ", line)
            line = re.sub(r"\b(TTL=\d+ )ID=\d+", r"\1ID=*", line)
            line = re.sub(r"\b(PROTO=TCP SPT=\d+ DPT=\d+ )SEQ=\d+ ACK=\d+", r"\1SEQ=* ACK=*", line)
            line = re.sub(r"\bID: [0-9a-f]+", "ID: *", line)
            line = re.sub(r"\bUID=\d+ GID=\d+ ", "", line)
            out.append(line)
        return out

    @classmethod
    def mask_json(cls, text: str) -> list[str]:
        rows = []
        for line in text.splitlines():
            d = json.loads(line)
            for k in list(d):
                if k in ("oob.uid", "oob.gid"):
                    del d[k]
                elif k in cls.JSON_VARY:
                    d[k] = "*"
            rows.append(json.dumps(d, sort_keys=True))
        return rows


def golden_packets() -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]]:
    """Per golden packet: (NFLOG values, BASE values, the JSON object, the LOGEMU line)."""
    out = []
    for js, emu in zip(golden_lines("pkt-json"), golden_lines("pkt-logemu"), strict=True):
        m = re.search(r" MAC=(\S*) ", emu)
        mac = bytes.fromhex(m.group(1).replace(":", "")) if m and m.group(1) else None
        d = json.loads(js)
        nflog, base = golden_values(d, mac)
        out.append((nflog, base, d, emu))
    return out
