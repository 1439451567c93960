"""XML: the libraries' XML of packets, flows and counters, files, header and closing tag, SIGHUP.

The renderers are checked against the C functions 2.0.8 calls (``nflog_snprintf_xml``,
``nfct_snprintf``, ``nfacct_snprintf`` from Debian's libnetfilter-log1, libnetfilter-conntrack3,
libnetfilter-acct1, through ctypes) on messages built to cover every branch; those checks are
skipped on a machine without the libraries. The golden files are in tests/compat.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyulogd.codec import netlink as nl
from pyulogd.codec import nfct
from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.core.errors import DecodeError, PluginError
from pyulogd.core.plugin import DataType, Key, KeyType, Source
from pyulogd.io.loop import Loop
from pyulogd.plugins.outputs.xml import XmlOutput, file_name, flow_xml, packet_xml, sum_xml, time_fields
from tests.builders.nfacct import counter_msg
from tests.builders.nfct import Tuple, build_ct, tuple_attr
from tests.builders.nflog import build_packet
from tests.helpers import NflogKeys, make_stack, stop_stack

WHEN = re.compile(r"<when>.*?</when>")
NOW = 1795764137.25  # Fri 2026-11-27 07:22:17 UTC


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


def _lib(name: str) -> Any:
    path = ctypes.util.find_library(name)
    if path is None:
        return None
    try:
        return ctypes.CDLL(path)
    except OSError:
        return None


# -- the C functions, as oracles


def c_nflog_xml(msg: bytes) -> str:
    """nflog_snprintf_xml(NFLOG_XML_ALL) of one NFLOG message."""
    lib = _lib("netfilter_log")
    if lib is None:
        pytest.skip("needs libnetfilter_log (Debian libnetfilter-log1)")
    buf = ctypes.create_string_buffer(msg)
    base = ctypes.addressof(buf)
    tb = (ctypes.c_void_p * 64)()  # struct nfattr *[NFULA_MAX], the last copy of each type
    for at, p, _q in nl.attrs(msg, 20, len(msg)):
        tb[at - 1] = base + p - 4
    data = (ctypes.c_void_p * 1)(ctypes.addressof(tb))  # struct nflog_data { struct nfattr **nfa; }
    out = ctypes.create_string_buffer(65536)
    lib.nflog_snprintf_xml.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_int]
    n = lib.nflog_snprintf_xml(out, len(out), ctypes.addressof(data), -1)
    assert 0 <= n < len(out)
    return out.value.decode("utf-8", "surrogateescape")


def c_nfct_xml(attrs: bytes, family: int) -> str:
    """nfct_snprintf(NFCT_O_XML, SHOW_LAYER3|TIME|ID) of a conntrack entry's attributes."""
    lib = _lib("netfilter_conntrack")
    if lib is None:
        pytest.skip("needs libnetfilter_conntrack (Debian libnetfilter-conntrack3)")
    lib.nfct_new.restype = ctypes.c_void_p
    lib.nfct_payload_parse.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint16, ctypes.c_void_p]
    lib.nfct_snprintf.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_uint,
                                  ctypes.c_uint, ctypes.c_uint]  # fmt: skip
    lib.nfct_destroy.argtypes = [ctypes.c_void_p]
    ct = lib.nfct_new()
    try:
        assert lib.nfct_payload_parse(attrs, len(attrs), family, ct) >= 0
        out = ctypes.create_string_buffer(8192)
        assert 0 <= lib.nfct_snprintf(out, len(out), ct, 0, 1, 1 | 2 | 4) < len(out)
    finally:
        lib.nfct_destroy(ct)
    return out.value.decode()


def c_nfacct_xml(msg: bytes) -> str:
    """nfacct_snprintf(NFACCT_SNPRINTF_T_XML, NFACCT_SNPRINTF_F_TIME) of one nfacct message."""
    lib = _lib("netfilter_acct")
    if lib is None:
        pytest.skip("needs libnetfilter_acct (Debian libnetfilter-acct1)")
    lib.nfacct_alloc.restype = ctypes.c_void_p
    lib.nfacct_nlmsg_parse_payload.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    lib.nfacct_snprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_uint16,
                                    ctypes.c_uint16]  # fmt: skip
    lib.nfacct_free.argtypes = [ctypes.c_void_p]
    obj = lib.nfacct_alloc()
    try:
        assert lib.nfacct_nlmsg_parse_payload(msg, obj) == 0
        out = ctypes.create_string_buffer(4096)
        lib.nfacct_snprintf(out, len(out), obj, 1, 1 << 1)  # T_XML; F_TIME
    finally:
        lib.nfacct_free(obj)
    return out.value.decode()


def no_time(text: str) -> str:
    return re.sub(r"<hour>.*?</year>", "", WHEN.sub("", text))


# -- packets

MAC = bytes.fromhex("02000ac90001")
PKT = bytes.fromhex("4500001c000100004011f9c80ac900010ac900029c4b1b5b00080000")
PACKETS = {
    "input": build_packet(prefix=b"gbACCEPT ", indev=2, hwaddr=MAC, hwheader=MAC * 2 + b"\x08\x00",
                          timestamp=(1795764137, 5), payload=PKT),
    "output": build_packet(prefix=b"gbOUT ", hook=3, outdev=2, payload=PKT),
    "mark and uid": build_packet(prefix=b"m", mark=0x1234, indev=1, outdev=3, uid=0, gid=0, payload=PKT),
    "mark 0": build_packet(prefix=b"m0", mark=0, indev=0, payload=PKT),
    "no prefix": build_packet(indev=5, payload=b""),
    "no header": build_packet(hw_protocol=None, prefix=b"x", payload=PKT),
    "ipv6": build_packet(family=10, hw_protocol=0x86DD, prefix=b"v6 ", indev=2, hwaddr=MAC,
                         payload=bytes(40)),  # fmt: skip
    "long hwaddr": build_packet(hwaddr=bytes(range(1, 9)), prefix=b"ib", payload=PKT),
    "no payload": build_packet(prefix=b"meta only", indev=2),
    "quotes": build_packet(prefix=b"a\"c'd", payload=PKT),
}


def _with_physdev(msg: bytes) -> bytes:
    extra = nl.nla(6, struct.pack("!I", 7)) + nl.nla(7, struct.pack("!I", 8))
    out = bytearray(msg + extra)
    struct.pack_into("=I", out, 0, len(out))
    return bytes(out)


PACKETS["physdev"] = _with_physdev(build_packet(prefix=b"br", indev=4, outdev=5, payload=PKT))


def test_packet_xml_layout() -> None:
    when = time_fields(NOW)
    assert when == ("<hour>7</hour><min>22</min><sec>17</sec><wday>6</wday><day>27</day><month>11</month>"
                    "<year>2026</year>")  # fmt: skip
    assert packet_xml(PACKETS["input"], when) == (
        f"<log><when>{when}</when><prefix>gbACCEPT </prefix><hook>1</hook><hw><proto>0800</proto>"
        f"<src>02000ac90001</src></hw><indev>2</indev><payload>{PKT.hex()}</payload></log>"
    )
    assert packet_xml(PACKETS["output"], "T") == (
        f"<log><when>T</when><prefix>gbOUT </prefix><hook>3</hook><hw><proto>0800</proto></hw>"
        f"<outdev>2</outdev><payload>{PKT.hex()}</payload></log>"
    )
    # quotes are text as in the library (no attribute holds an outside string)
    assert "<prefix>a\"c'd</prefix>" in packet_xml(PACKETS["quotes"], "T")


# A prefix that would close <prefix> and forge elements, or split the record's line.
FORGING = build_packet(prefix=b"x</prefix><indev>9</indev><prefix>&\nb\\\xff\x01", indev=2, payload=PKT)


def test_outside_texts_are_escaped() -> None:
    """Control characters, backslash and bytes that are not UTF-8 as pyulogd.core.escape writes
    them; &, <, > as entities (libnetfilter_log writes them raw: a forged <indev>)."""
    got = packet_xml(FORGING, "T")
    assert "<prefix>x&lt;/prefix&gt;&lt;indev&gt;9&lt;/indev&gt;&lt;prefix&gt;&amp;\\nb\\\\\\xff\\x01</prefix>" in got
    assert got.count("<indev>") == 1 and "\n" not in got
    got.encode("utf-8")  # valid UTF-8: no byte of the prefix passed through raw
    # before and after the prefix, the library's text
    raw = WHEN.sub("", c_nflog_xml(FORGING))
    mine = WHEN.sub("", got)
    assert mine.split("<prefix>")[0] == raw.split("<prefix>")[0]
    assert mine.split("</prefix>")[-1] == raw.split("</prefix>")[-1]


def test_names_of_counters_and_contexts_are_escaped() -> None:
    msg = counter_msg(b"n\nx<y\xfe", 1, 2)
    assert "<name>n\\nx&lt;y\\xfe</name>" in sum_xml(msg, "T")
    ct = _nest(19, nl.nla(1, b"u:r:\x1b[2J<x>\0"))  # CTA_SECCTX, CTA_SECCTX_NAME
    assert "<secctx>u:r:\\x1b[2J&lt;x&gt;</secctx>" in flow_xml(ct, NOW, "T")


@pytest.mark.parametrize("name", sorted(PACKETS))
def test_packet_xml_is_libnetfilter_logs(name: str) -> None:
    msg = PACKETS[name]
    assert WHEN.sub("", packet_xml(msg, "x")) == WHEN.sub("", c_nflog_xml(msg))


# -- flows

V4 = Tuple(bytes([10, 201, 0, 1]), bytes([10, 201, 0, 2]), 6, 40001, 7001)
V6 = Tuple(socket.inet_pton(socket.AF_INET6, "fd00:201::1"),
           socket.inet_pton(socket.AF_INET6, "::ffff:10.1.2.3"), 17, 40007, 7003)  # fmt: skip


def _nest(t: int, *parts: bytes) -> bytes:
    return nl.nla(t | nl.NLA_F_NESTED, b"".join(parts))


def _protoinfo(kind: int, state: int) -> bytes:
    return _nest(nfct.CTA_PROTOINFO, _nest(kind, nl.nla(1, bytes([state]))))


def _flows() -> dict[str, bytes]:
    u32 = struct.Struct("!I").pack
    out: dict[str, bytes] = {
        "new tcp": build_ct(nfct.NEW, V4, status=0x8, extra=[_protoinfo(1, 1)], timeout=120),
        "destroy tcp": build_ct(nfct.DESTROY, V4, status=0x18E, counters=(6, 331, 4, 227),
                                timestamp=(10**18, 10**18 + 3_500_000_000), extra=[_protoinfo(1, 7)]),
        "update v6 32-bit counters": build_ct(nfct.UPDATE, V6, counters=(1, 59, 1, 51), counters32=True),
        "icmp": build_ct(nfct.NEW, Tuple(V4.saddr, V4.daddr, 1, icmp_type=8, icmp_code=0, icmp_id=7)),
        "icmpv6": build_ct(nfct.NEW, Tuple(V6.saddr, V6.daddr, 58, icmp_type=128, icmp_code=0,
                                           icmp_id=7)),
        "mark zone use secmark": build_ct(nfct.DESTROY, V4, mark=7, zone=3, extra=[
            nl.nla(nfct.CTA_USE, u32(2)), nl.nla(17, u32(9))]),  # fmt: skip
        "start only": build_ct(nfct.DESTROY, V4, timestamp=(10**18, None)),
    }
    for proto, name in ((132, "sctp"), (33, "dccp"), (136, "udplite"), (47, "gre"), (50, "esp"), (2, "igmp")):
        ports = proto in (132, 33, 136, 47)
        t = Tuple(V4.saddr, V4.daddr, proto, 0x1234 if ports else None, 0xBEEF if ports else None)
        extra = {132: [_protoinfo(3, 4)], 33: [_protoinfo(2, 9)]}.get(proto, [])
        out[name] = build_ct(nfct.UPDATE, t, extra=extra, counters=(1, 2, 3, 4))
    for state in (0, 3, 9, 10, 13, 255):
        out[f"tcp state {state}"] = build_ct(nfct.UPDATE, V4, extra=[_protoinfo(1, state)])
    # without any attribute of the "independent" part, and with original counters only
    bare = [tuple_attr(nfct.CTA_TUPLE_ORIG, V4), tuple_attr(nfct.CTA_TUPLE_REPLY, V4.reversed())]
    out["nothing independent"] = nl.nfnl_msg(nl.NFNL_SUBSYS_CTNETLINK, 0, 2, 0, bare, 0, 0)
    co = _nest(nfct.CTA_COUNTERS_ORIG, nl.nla(1, struct.pack("!Q", 5)), nl.nla(2, struct.pack("!Q", 500)))
    out["counters orig only"] = nl.nfnl_msg(nl.NFNL_SUBSYS_CTNETLINK, 0, 2, 0, [*bare, co], 0, 0)
    return out


FLOWS = _flows()


def test_flow_xml_layout() -> None:
    msg = FLOWS["destroy tcp"]
    assert flow_xml(msg[20:], NOW, "T") == (
        '<flow><meta direction="original"><layer3 protonum="2" protoname="ipv4"><src>10.201.0.1</src>'
        '<dst>10.201.0.2</dst></layer3><layer4 protonum="6" protoname="tcp"><sport>40001</sport>'
        "<dport>7001</dport></layer4><counters><packets>6</packets><bytes>331</bytes></counters></meta>"
        '<meta direction="reply"><layer3 protonum="2" protoname="ipv4"><src>10.201.0.2</src>'
        '<dst>10.201.0.1</dst></layer3><layer4 protonum="6" protoname="tcp"><sport>7001</sport>'
        "<dport>40001</dport></layer4><counters><packets>4</packets><bytes>227</bytes></counters></meta>"
        '<meta direction="independent"><state>TIME_WAIT</state><timeout>30</timeout><id>1</id><assured/>'
        "<deltatime>3</deltatime></meta><when>T</when></flow>"
    )
    # Only a start time: the age now.
    start_only = flow_xml(FLOWS["start only"][20:], 10**9 + 42.9, "T")
    assert "<deltatime>42</deltatime>" in start_only


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_flow_xml_is_libnetfilter_conntracks(name: str) -> None:
    msg = FLOWS[name]
    if "start only" in name:
        pytest.skip("<deltatime> is the age at the time of the call")
    family = msg[16]
    assert WHEN.sub("", flow_xml(msg[20:], NOW, "x")) == WHEN.sub("", c_nfct_xml(msg[20:], family))


# -- malformed entries: one definition of a well-formed attribute (nfct.CT_POLICY)


def _bad_len(atype: int, claimed: int, payload: bytes) -> bytes:
    """An attribute whose length field says ``claimed`` (more than there is)."""
    return struct.pack("=HH", claimed, atype) + payload + bytes(-len(payload) & 3)


# Entries whose only fault is in an attribute the NFCT decoder reads no key from: before the
# shared policy the decoder took them and XML raised on them, dropping the record.
MALFORMED = {
    "tcp protoinfo: bad nested length": _nest(nfct.CTA_PROTOINFO, _nest(1, _bad_len(1, 40, b"\x03"))),
    "tcp protoinfo: empty state": _nest(nfct.CTA_PROTOINFO, _nest(1, nl.nla(1, b""))),
    "sctp protoinfo: bad length": _nest(nfct.CTA_PROTOINFO, _bad_len(3, 90, b"\x01\0\0\0")),
    "secctx: bad nested length": _nest(nfct.CTA_SECCTX, _bad_len(1, 99, b"ab")),
    "status: 2 bytes": nl.nla(nfct.CTA_STATUS, b"\0\x08"),
    "zone: 1 byte": nl.nla(nfct.CTA_ZONE, b"\x01"),
    "secmark: 3 bytes": nl.nla(nfct.CTA_SECMARK, b"\0\0\x01"),
    "tuple zone: 1 byte": b"",  # built below: inside the original tuple
}


def _malformed(name: str) -> bytes:
    if name == "tuple zone: 1 byte":
        orig = tuple_attr(nfct.CTA_TUPLE_ORIG, V4)
        bad = _nest(nfct.CTA_TUPLE_ORIG, orig[4:] + nl.nla(nfct.CTA_TUPLE_ZONE, b"\x01"))
        return nl.nfnl_msg(nl.NFNL_SUBSYS_CTNETLINK, 0, 2, 0, [bad, tuple_attr(2, V4.reversed())], 0, 0)
    return build_ct(nfct.DESTROY, V4, status=None if name.startswith("status") else 0x8,
                         counters=(6, 331, 4, 227), extra=[MALFORMED[name]])


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_an_entry_that_breaks_the_policy_is_refused_by_nfct_and_written_in_part(name: str) -> None:
    msg = _malformed(name)
    with pytest.raises(DecodeError):
        nfct.decode(msg, NOW)
    batch = nfct.Decoder().parse_buffer(msg, NOW)
    assert batch.malformed == 1 and not batch.records
    # Elsewhere from (NFLOG's ct is not checked by its decoder): what is well-formed is written.
    problems: list[str] = []
    text = flow_xml(msg[20:], NOW, "T", problems)
    assert len(problems) == 1
    assert text.startswith('<flow><meta direction="original"><layer3 protonum="2" protoname="ipv4">'
                           "<src>10.201.0.1</src>")
    assert text.endswith("<when>T</when></flow>")


def test_every_entry_nfct_accepts_is_written_whole() -> None:
    for name, msg in sorted(FLOWS.items()):
        nfct.decode(msg, NOW)
        problems: list[str] = []
        flow_xml(msg[20:], NOW, "T", problems)
        assert problems == [], name


def test_a_malformed_ct_from_nflog_is_written_in_part_and_counted(tmp_path: Path) -> None:
    ctx = clock()
    stack = xml_stack(NflogKeys, tmp_path, ctx)
    src = stack.source
    assert isinstance(src, NflogKeys)
    bad = _malformed("tcp protoinfo: bad nested length")[20:]
    src.emit_dict({"raw": PACKETS["input"], "ct": bad})  # attach_conntrack=1
    src.emit_dict({"raw": PACKETS["input"], "ct": FLOWS["destroy tcp"][20:]})
    stop_stack(stack)
    lines = (tmp_path / "ulogd-pkt-27112026-072217.xml").read_text().splitlines()
    assert len(lines) == 5 and lines[2].startswith("<flow>") and "<state>" not in lines[2]
    assert "<counters><packets>6</packets><bytes>331</bytes></counters>" in lines[2]
    assert "<state>TIME_WAIT</state>" in lines[3]
    assert ctx.stats.get("stack.xml1.errors") == 0
    assert ctx.stats.get("xml.xml1.ct_malformed") == 1


def test_malformed_raw_and_sum_are_written_in_part_and_counted(tmp_path: Path) -> None:
    ctx = clock()
    stack = xml_stack(NflogKeys, tmp_path, ctx)
    src = stack.source
    assert isinstance(src, NflogKeys)
    good = build_packet(prefix=b"cut", indev=2, payload=PKT)
    cut = bytearray(good + _bad_len(2, 200, b"\0\0\0\1"))
    struct.pack_into("=I", cut, 0, len(cut))
    src.emit_dict({"raw": bytes(cut)})
    stop_stack(stack)
    lines = (tmp_path / "ulogd-pkt-27112026-072217.xml").read_text().splitlines()
    assert WHEN.sub("", lines[2]) == WHEN.sub("", packet_xml(good, "T"))
    assert ctx.stats.get("xml.xml1.raw_malformed") == 1 and ctx.stats.get("stack.xml1.errors") == 0
    problems: list[str] = []
    msg = counter_msg("web", 12, 3456)
    assert sum_xml(msg + _bad_len(9, 64, b""), "", problems) == sum_xml(msg, "") and len(problems) == 1


# -- counters


def test_sum_xml_is_libnetfilter_accts() -> None:
    msg = counter_msg("web", 12, 3456)
    when = time_fields(NOW)
    assert sum_xml(msg, when) == (
        f"<obj><name>web</name><pkts>{12:020d}</pkts><bytes>{3456:020d}</bytes>{when}</obj>"
    )
    assert no_time(sum_xml(msg, "")) == no_time(c_nfacct_xml(msg))
    big = counter_msg("q", 2**64 - 1, 0, flags=1, quota=10)
    assert no_time(sum_xml(big, "")) == no_time(c_nfacct_xml(big))


# -- the plugin


class FlowSource(Source):
    name = "FLOWSRC"
    output_type = DataType.FLOW
    output_keys = (Key("ct.event", KeyType.UINT32), Key("ct", KeyType.RAW))


class SumSource(Source):
    name = "SUMSRC"
    output_type = DataType.SUM
    output_keys = (Key("sum.name", KeyType.STRING), Key("sum", KeyType.RAW))


def clock(t: float = NOW) -> Context:
    return Context(loop=Loop(FakeClock(wall=t)), hostname="vm")


def xml_stack(src: type[Source], tmp_path: Path, ctx: Context, **opts: Any) -> Any:
    return make_stack([src, (XmlOutput, {"directory": f"{tmp_path}/", **opts})], ctx)


def test_file_name_header_records_and_closing_tag(tmp_path: Path) -> None:
    assert file_name("pkt", NOW) == "ulogd-pkt-27112026-072217.xml"
    ctx = clock()
    stack = xml_stack(NflogKeys, tmp_path, ctx, sync=1)
    src = stack.source
    assert isinstance(src, NflogKeys)
    for name in ("input", "output"):
        src.emit_dict({"raw": PACKETS[name], "oob.prefix": "ignored"})
    stack.sink.flush()
    path = tmp_path / "ulogd-pkt-27112026-072217.xml"  # "<dir>/" + "/" + name: a double slash, as 2.0.8
    text = path.read_text()
    when = time_fields(NOW)
    assert text == (
        '<?xml version="1.0" encoding="utf-8"?>\n<packet>\n'
        + packet_xml(PACKETS["input"], when) + "\n" + packet_xml(PACKETS["output"], when) + "\n"
    )
    stop_stack(stack)
    assert path.read_text() == text + "</packet>\n"


def test_flow_and_sum_stacks(tmp_path: Path) -> None:
    ctx = clock()
    flows = xml_stack(FlowSource, tmp_path, ctx)
    flows.source.emit([None, 1, FLOWS["new tcp"][20:]])
    stop_stack(flows)
    text = (tmp_path / "ulogd-flow-27112026-072217.xml").read_text()
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>\n<conntrack>\n<flow><meta ')
    assert text.endswith(f"<when>{time_fields(NOW)}</when></flow>\n</conntrack>\n")
    sums = xml_stack(SumSource, tmp_path, ctx)
    sums.source.emit([None, "web", counter_msg("web", 1, 2)])
    stop_stack(sums)
    text = (tmp_path / "ulogd-sum-27112026-072217.xml").read_text()
    assert text.splitlines()[1:] == ["<sum>", sum_xml(counter_msg("web", 1, 2), time_fields(NOW)), "</sum>"]


def test_ct_first_then_raw_and_nothing_valid_is_an_error(tmp_path: Path) -> None:
    ctx = clock()
    stack = xml_stack(NflogKeys, tmp_path, ctx)
    src = stack.source
    assert isinstance(src, NflogKeys)
    src.emit_dict({"raw": PACKETS["input"], "ct": FLOWS["new tcp"][20:]})  # attach_conntrack=1
    src.emit_dict({"oob.prefix": "no raw"})
    stop_stack(stack)
    lines = (tmp_path / "ulogd-pkt-27112026-072217.xml").read_text().splitlines()
    assert lines[1] == "<packet>" and lines[2].startswith("<flow>") and lines[3] == "</packet>"
    assert ctx.stats.get("stack.xml1.errors") == 1


def test_long_records_are_written(tmp_path: Path) -> None:
    """2.0.8 drops a record of 4096 bytes or more (docs/compat.md); pyulogd writes it."""
    ctx = clock()
    stack = xml_stack(NflogKeys, tmp_path, ctx)
    src = stack.source
    assert isinstance(src, NflogKeys)
    src.emit_dict({"raw": build_packet(prefix=b"big", payload=bytes(3000))})
    stop_stack(stack)
    lines = (tmp_path / "ulogd-pkt-27112026-072217.xml").read_text().splitlines()
    assert len(lines) == 4 and len(lines[2]) > 6000


def test_sighup_closes_and_starts_a_new_file(tmp_path: Path) -> None:
    clk = FakeClock(wall=NOW)
    ctx = Context(loop=Loop(clk), hostname="vm")
    stack = xml_stack(FlowSource, tmp_path, ctx)
    stack.source.emit([None, 1, FLOWS["new tcp"][20:]])
    clk.advance(61)
    stack.sink.signal(signal.SIGHUP)
    stack.source.emit([None, 4, FLOWS["destroy tcp"][20:]])
    stack.sink.signal(signal.SIGHUP)  # same second: the same file gets a second header, as in 2.0.8
    stop_stack(stack)
    first = (tmp_path / "ulogd-flow-27112026-072217.xml").read_text().splitlines()
    second = (tmp_path / "ulogd-flow-27112026-072318.xml").read_text().splitlines()
    assert first[:2] == ['<?xml version="1.0" encoding="utf-8"?>', "<conntrack>"] and first[3:] == ["</conntrack>"]
    head = ['<?xml version="1.0" encoding="utf-8"?>', "<conntrack>"]
    assert second[:2] == head and second[3] == "</conntrack>" and second[4:] == head + ["</conntrack>"]
    assert "<deltatime>3</deltatime>" in second[2]


def test_sighup_keeps_the_old_file_when_the_new_one_cannot_be_opened(tmp_path: Path) -> None:
    clk = FakeClock(wall=NOW)
    ctx = Context(loop=Loop(clk), hostname="vm")
    d = tmp_path / "d"
    d.mkdir()
    stack = xml_stack(FlowSource, d, ctx)
    d.chmod(0o500)
    try:
        clk.advance(1)
        if os.access(d, os.W_OK):  # root ignores the mode bits: make the name a directory instead
            (d / file_name("flow", clk.wall())).mkdir()
        stack.sink.signal(signal.SIGHUP)
        stack.source.emit([None, 1, FLOWS["new tcp"][20:]])
        stop_stack(stack)
    finally:
        d.chmod(0o700)
    lines = (d / "ulogd-flow-27112026-072217.xml").read_text().splitlines()
    assert len(lines) == 4 and lines[2].startswith("<flow>") and lines[3] == "</conntrack>"


def test_open_failure_at_start(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="XML"):
        xml_stack(FlowSource, tmp_path / "missing", clock())


def test_stdout(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    stack = xml_stack(SumSource, tmp_path, clock(), stdout=1)
    stack.source.emit([None, "web", counter_msg("web", 1, 2)])
    stack.sink.signal(signal.SIGHUP)
    stop_stack(stack)
    out = capfd.readouterr().out.splitlines()
    head = ['<?xml version="1.0" encoding="utf-8"?>', "<sum>"]
    assert out[:2] == head and out[2].startswith("<obj><name>web</name>")
    assert out[3:] == ["</sum>"] + head + ["</sum>"]
    assert list(tmp_path.iterdir()) == []
    assert os.fstat(1)  # standard output is still open


def test_info() -> None:
    assert [o.name for o in XmlOutput.options] == ["directory", "sync", "stdout", "chain_key"]
    assert [o.default for o in XmlOutput.options] == ["/var/log/", 0, 0, ""]
    assert [(k.name, k.type, k.optional) for k in XmlOutput.input_keys] == [
        ("ct", KeyType.RAW, True), ("raw", KeyType.RAW, True), ("sum", KeyType.RAW, True)]
