"""A template compiled once into the function that decodes its data sets.

Decoding is the hot path (Open vSwitch sends one ~60-field record per message, a busy
bridge thousands per second), so nothing is interpreted per field at run time: when a
template arrives, its fields become straight-line Python, generated and compiled once,
as the stacks' ``run`` is (core/stack.py). A template of fixed-length fields decodes a
data set with one ``struct.iter_unpack`` over the set, the fields landing in local
names through the ``for`` target; a template with variable-length fields (every Open
vSwitch template: interface names) reads each run of fixed fields with one
``unpack_from`` and each variable field by its length prefix, checking every length
against the end of the set; the fast decoder first tries the whole record with one
``unpack_from`` made for the lengths of the record it read before (an exporter sends the
same interface names record after record), taken when the record's length bytes are the
same (:func:`_emit_guess`). The function then builds the record's value list in key
order (``keys.py``) as one list display, time arithmetic inlined. Compiled functions are
shared by every template with the same layout (Open vSwitch uses the same 88 templates in
every domain and every exporter), in a bounded cache.

The generated text holds only numbers, names of our own making and registry names that
passed :data:`~pyulogd.codec.ipfixin.iana.SAFE_NAME`: nothing from the network.

How an element becomes a key is decided here, per template, not per record:

* a field one of the keys takes (``NAMED``), in the order of preference listed there
  (``packetDeltaCount`` over ``packetTotalCount``: Open vSwitch's totals are of the whole
  exporter); a field whose length does not fit the key (a 2-byte IPv4 address) is not taken;
* the flow's start and end from the best time element present (``START_TIMES``,
  ``END_TIMES``): absolute seconds, milliseconds, NTP micro/nanoseconds, sysUpTime
  (relative to systemInitTimeMilliseconds, or to the NetFlow header's uptime) taken
  modulo 2^32 closest to the export time (the 49.7-day wrap, softflowd's replay), or
  microseconds before the export time (Open vSwitch);
* ``paddingOctets`` (210) is dropped, having no value;
* everything else goes into ``ipfix.extra``, converted by its abstract data type
  (addresses and MACs as text, strings decoded, unknown types as hex).
"""

from __future__ import annotations

import re
import socket
import struct
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from pyulogd.codec.ipfixin import keys as K
from pyulogd.codec.ipfixin.iana import PEN_IANA, PEN_REVERSE, PEN_VMWARE, SAFE_NAME, ie_info
from pyulogd.core.errors import DecodeError
from pyulogd.core.keys import KeyType

VARLEN = 65535
NTP_EPOCH = 2208988800  # seconds from 1900-01-01 (NTP) to 1970-01-01
WRAP = 1 << 32  # sysUpTime is a 32-bit count of milliseconds: it wraps after 49.7 days
MAX_FIELDS = 1024  # more than any exporter sends; bounds the code generated per template
CACHE_SIZE = 2048


class Field(NamedTuple):
    pen: int
    ie: int
    length: int


# A compiled decoder: (message, set body start, set end, exporter, domain, export time,
# boot time in ms or None[, the list to append the records to]) -> that list (a new one when
# none is given). On a field past the end of the set it raises, the records of the set read
# before it already appended (the collector's fast path takes them back).
Decoder = Callable[..., list[list[Any]]]

# Which key takes which element: (key, kind, candidates in order of preference), each
# candidate (pen, element, its registry name: tests/unit/test_ipfixin_codec.py checks the names
# against the shipped registry). Kinds: "int" (an integer field, any width), "a4"/"a6" (4/16
# bytes, kept as bytes: IPADDR), "mac", "str" (UTF-8 text, NULs stripped; empty is invalid),
# "ip4s" (IPv4 as text), "bint" (bytes of any length as an integer).
NAMED: list[tuple[str, str, list[tuple[int, int, str]]]] = [
    ("orig.ip.saddr", "a4", [(0, 8, "sourceIPv4Address")]),
    ("orig.ip.daddr", "a4", [(0, 12, "destinationIPv4Address")]),
    ("orig.ip.protocol", "int", [(0, 4, "protocolIdentifier")]),
    ("orig.l4.sport", "int", [(0, 7, "sourceTransportPort")]),
    ("orig.l4.dport", "int", [(0, 11, "destinationTransportPort")]),
    ("orig.raw.pktlen", "int", [(0, 1, "octetDeltaCount"), (0, 85, "octetTotalCount")]),
    ("orig.raw.pktcount", "int", [(0, 2, "packetDeltaCount"), (0, 86, "packetTotalCount")]),
    ("reply.raw.pktlen", "int", [(PEN_REVERSE, 1, "reverseOctetDeltaCount"),
                                 (PEN_REVERSE, 85, "reverseOctetTotalCount")]),
    ("reply.raw.pktcount", "int", [(PEN_REVERSE, 2, "reversePacketDeltaCount"),
                                   (PEN_REVERSE, 86, "reversePacketTotalCount")]),
    ("ipfix.obs_point_id", "int", [(0, 138, "observationPointId")]),
    ("ipfix.direction", "int", [(0, 61, "flowDirection")]),
    ("ipfix.end_reason", "int", [(0, 136, "flowEndReason")]),
    ("ipfix.tcp_flags", "int", [(0, 6, "tcpControlBits")]),
    ("ipfix.in_ifindex", "int", [(0, 10, "ingressInterface")]),
    ("ipfix.out_ifindex", "int", [(0, 14, "egressInterface")]),
    ("ipfix.vlan", "int", [(0, 58, "vlanId"), (0, 243, "dot1qVlanId")]),
    ("mac.saddr.str", "mac", [(0, 56, "sourceMacAddress")]),
    ("mac.daddr.str", "mac", [(0, 80, "destinationMacAddress")]),
    ("ipfix.tunnel.type", "int", [(PEN_VMWARE, 891, "tunnelType")]),
    ("ipfix.tunnel.key", "bint", [(PEN_VMWARE, 892, "tunnelKey")]),
    ("ipfix.tunnel.saddr", "ip4s", [(PEN_VMWARE, 893, "tunnelSourceIPv4Address")]),
    ("ipfix.tunnel.daddr", "ip4s", [(PEN_VMWARE, 894, "tunnelDestinationIPv4Address")]),
    ("ipfix.tunnel.protocol", "int", [(PEN_VMWARE, 895, "tunnelProtocolIdentifier")]),
    ("ipfix.tunnel.sport", "int", [(PEN_VMWARE, 896, "tunnelSourceTransportPort")]),
    ("ipfix.tunnel.dport", "int", [(PEN_VMWARE, 897, "tunnelDestinationTransportPort")]),
    ("ipfix.virtual_obs_id", "str", [(PEN_VMWARE, 898, "virtualObsID")]),
    # IPv6 addresses are looked for only when there is no IPv4 one.
    ("orig.ip.saddr", "a6", [(0, 27, "sourceIPv6Address")]),
    ("orig.ip.daddr", "a6", [(0, 28, "destinationIPv6Address")]),
    # interfaceName: the first occurrence is the ingress port, a second one (Open vSwitch's
    # egress templates) the egress port.
    ("ipfix.in_ifname", "str", [(0, 82, "interfaceName")]),
    ("ipfix.out_ifname", "str", [(0, 82, "interfaceName")]),
    # ICMP: single-byte elements (Open vSwitch) before the 16-bit type * 256 + code ones.
    ("icmp.type", "int", [(0, 176, "icmpTypeIPv4")]),
    ("icmp.code", "int", [(0, 177, "icmpCodeIPv4")]),
    ("icmpv6.type", "int", [(0, 178, "icmpTypeIPv6")]),
    ("icmpv6.code", "int", [(0, 179, "icmpCodeIPv6")]),
]
ICMP_TYPECODE = {(0, 32, "icmpTypeCodeIPv4"): ("icmp.type", "icmp.code"),
                 (0, 139, "icmpTypeCodeIPv6"): ("icmpv6.type", "icmpv6.code")}  # fmt: skip
# Time elements, best first: (element, its registry name, kind).
START_TIMES = [(156, "flowStartNanoseconds", "ntp_ns"), (154, "flowStartMicroseconds", "ntp_us"),
               (152, "flowStartMilliseconds", "ms"), (150, "flowStartSeconds", "sec"),
               (22, "flowStartSysUpTime", "up"), (158, "flowStartDeltaMicroseconds", "delta"),
               (323, "observationTimeMilliseconds", "ms")]  # fmt: skip
END_TIMES = [(157, "flowEndNanoseconds", "ntp_ns"), (155, "flowEndMicroseconds", "ntp_us"),
             (153, "flowEndMilliseconds", "ms"), (151, "flowEndSeconds", "sec"),
             (21, "flowEndSysUpTime", "up"), (159, "flowEndDeltaMicroseconds", "delta"),
             (323, "observationTimeMilliseconds", "ms")]  # fmt: skip
_TIME_LENGTHS = {"ntp_ns": (8,), "ntp_us": (8,), "ms": (4, 8), "sec": (4, 8), "up": (4, 8), "delta": (4, 8)}
DROPPED = {(0, 210, "paddingOctets")}  # no value to keep
# flowEndReason -> ct.event: an active-timeout report is an UPDATE of a flow that goes on;
# idle timeout, end of flow, forced end and lack of resources end it (DESTROY).
EVENTS = {1: 4, 2: 2, 3: 4, 4: 4, 5: 4}
_INT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}
# Bytes each integer key holds.
_WIDTH = {k.name: {KeyType.UINT8: 1, KeyType.BOOL: 1, KeyType.UINT16: 2, KeyType.UINT32: 4}.get(k.type, 8)
          for k in K.OUTPUT_KEYS}  # fmt: skip
_SINT_CODES = {1: "b", 2: "h", 4: "i", 8: "q"}


def _ntoa4(b: bytes) -> str:
    return socket.inet_ntoa(b) if len(b) == 4 else b.hex()


def _ntoa6(b: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, b) if len(b) == 16 else b.hex()


def _mac(b: bytes) -> str:
    return b.hex(":")


# Decoded strings by their bytes: interface names and the like repeat in every record.
_TEXTS: dict[bytes, str] = {}
_CACHE_MAX = 4096


def _text(b: bytes) -> str:
    t = _TEXTS.get(b)
    if t is None:
        t = b.rstrip(b"\0").decode("utf-8", "surrogateescape")
        if len(b) <= 256:  # (bounded memory: long values are converted each time)
            if len(_TEXTS) >= _CACHE_MAX:
                _TEXTS.clear()
            _TEXTS[b] = t
    return t


def _name(b: bytes) -> str | None:
    """A named string key: empty (Open vSwitch sends empty descriptions as one 0 byte) is invalid."""
    return _text(b) or None


def _uint(b: bytes) -> int:
    return int.from_bytes(b, "big")


def _uint64(b: bytes) -> int | None:
    return int.from_bytes(b, "big") if len(b) <= 8 else None


def _sint(b: bytes) -> int:
    return int.from_bytes(b, "big", signed=True)


def _boolean(v: int) -> bool | int:
    return True if v == 1 else False if v == 2 else v  # RFC 7011 6.1.5: 1 true, 2 false


def _ntp(v: int, mask: int) -> tuple[int, int] | tuple[None, None]:
    """A 64-bit NTP timestamp (RFC 7011 6.1.9/6.1.10; ``mask`` drops the 11 bits micro
    ignores) as (sec, usec) since 1970, rounded: exporters truncate the fraction, so
    truncating again would turn .577862 into .577861. Seconds below 2^31 are NTP era 1
    (from 2036)."""
    sec = v >> 32
    sec = sec - NTP_EPOCH if sec >= 0x80000000 else sec + WRAP - NTP_EPOCH
    usec = ((v & mask) * 1000000 + (1 << 31)) >> 32  # to the nearest microsecond
    if usec == 1000000:
        sec, usec = sec + 1, 0
    if not 0 <= sec < WRAP:
        return None, None
    return sec, usec


def _up(v: int, boot: int | None, ref: int) -> tuple[int, int] | tuple[None, None]:
    """sysUpTime ``v`` (ms, 32 bits) of a device booted at ``boot`` (ms since 1970), as
    (sec, usec): the value modulo 2^32 closest to ``ref`` (the export time, ms)."""
    if boot is None:
        return None, None
    ms = boot + v
    ms += round((ref - ms) / WRAP) * WRAP
    if not 0 <= ms < WRAP * 1000:
        return None, None
    sec, ms = divmod(ms, 1000)
    return sec, ms * 1000


def _ms(v: int) -> tuple[int, int] | tuple[None, None]:
    sec, ms = divmod(v, 1000)
    return (sec, ms * 1000) if sec < WRAP else (None, None)


def _delta(v: int, eus: int) -> tuple[int, int] | tuple[None, None]:
    us = eus - v
    return divmod(us, 1000000) if us >= 0 else (None, None)


def _overrun(tid: int) -> DecodeError:
    return DecodeError(f"a field of template {tid} runs past the end of its set")


_NS: dict[str, Any] = {
    "_ntoa4": _ntoa4, "_ntoa6": _ntoa6, "_mac": _mac, "_text": _text, "_name": _name, "_uint": _uint,
    "_uint64": _uint64, "_sint": _sint, "_boolean": _boolean, "_ntp": _ntp, "_up": _up, "_ms": _ms, "_delta": _delta,
    "_overrun": _overrun, "_EV": EVENTS, "_MV": memoryview,
}  # fmt: skip


class _FieldCode(NamedTuple):
    code: str | None  # struct code of a fixed field; None: variable length
    size: int  # bytes (fixed fields)
    as_int: bool  # the raw value is an int (struct integer code)


def _field_code(f: Field, dtype: str) -> _FieldCode:
    n = f.length
    if n == VARLEN:
        return _FieldCode(None, 0, False)
    if dtype.startswith(("unsigned", "dateTime")) or dtype == "boolean":
        if n in _INT_CODES:
            return _FieldCode(_INT_CODES[n], n, True)
    elif dtype.startswith("signed"):
        if n in _SINT_CODES:
            return _FieldCode(_SINT_CODES[n], n, True)
    elif dtype.startswith("float"):
        if n in (4, 8):
            return _FieldCode("f" if n == 4 else "d", n, False)
    return _FieldCode(f"{n}s", n, False)


def _src_of(expr: str | None) -> int | None:
    """The field number an address key's expression reads (``f3`` -> 3)."""
    return int(expr[1:]) if expr is not None and expr.startswith("f") and expr[1:].isdigit() else None


def _extra_expr(var: str, dtype: str, fc: _FieldCode, length: int) -> str:
    """The expression giving an element's value in ipfix.extra from its raw value ``var``."""
    if fc.as_int:
        return f"_boolean({var})" if dtype == "boolean" else var
    if fc.code in ("f", "d"):
        return var
    if dtype.startswith(("unsigned", "dateTime")):
        return f"_uint({var})"
    if dtype.startswith("signed"):
        return f"_sint({var})"
    if dtype == "ipv4Address" and length == 4:
        return f"_ntoa4({var})"
    if dtype == "ipv6Address" and length == 16:
        return f"_ntoa6({var})"
    if dtype == "macAddress" and length == 6:
        return f"_mac({var})"
    if dtype == "string":
        return f"_text({var})"
    return f"{var}.hex()"


def _named_expr(var: str, kind: str, fc: _FieldCode, length: int, width: int = 8) -> str | None:
    """The expression giving a key's value, or None when the field cannot be that key (an
    integer wider than the key's ``width`` bytes: an exporter may send fewer bytes than an
    element's type, never more)."""
    if kind == "int":
        if length > width:
            return None
        if fc.as_int:
            return var
        return f"_uint({var})" if fc.code is not None and fc.code.endswith("s") and 0 < length else None
    if kind == "a4":
        return var if length == 4 else None
    if kind == "a6":
        return var if length == 16 else None
    if kind == "mac":
        return f"_mac({var})" if length == 6 else None
    if kind == "str":
        return f"_name({var})" if fc.code is None or fc.code.endswith("s") else None
    if kind == "ip4s":
        return f"_ntoa4({var})" if length == 4 else None
    if kind == "bint":
        if length == VARLEN:
            return f"_uint64({var})"  # longer than 8 bytes: None, and the bytes go to ipfix.extra
        return var if fc.as_int else (f"_uint({var})" if length <= 8 else None)
    raise AssertionError(kind)


class Compiled(NamedTuple):
    decode: Decoder
    min_len: int  # smallest record in bytes (a variable-length field takes at least 1)
    fixed: int  # record size when every field has a fixed length, else 0
    source: str  # the generated text (tests, debugging)
    needs_boot: bool  # times relative to the exporter's boot (sysUpTime)


_cache: OrderedDict[tuple[Any, ...], Compiled] = OrderedDict()


def compile_template(version: int, tid: int, fields: tuple[Field, ...], *, options: bool = False,
                     extra: bool = True, icmp_in_port: bool = False, fast: bool = True) -> Compiled:  # fmt: skip
    """The decoder of template ``tid`` (``fields`` in wire order). ``options``: an options
    template (its records get ``ipfix.options`` = 1). ``extra``: build ``ipfix.extra``.
    ``icmp_in_port``: NetFlow's convention of ICMP type * 256 + code in the destination port,
    applied when the template has no ICMP element. ``fast=False``: the plain decoder (every
    field read and checked in turn, helpers called), which the fast one must equal
    (tests/unit/test_ipfixin_fast.py). Raises DecodeError for a template that cannot describe
    a record (more than MAX_FIELDS fields, records of 0 bytes)."""
    key = (version, tid, fields, options, extra, icmp_in_port, fast)
    found = _cache.get(key)
    if found is not None:
        _cache.move_to_end(key)
        return found
    compiled = _compile(version, tid, fields, options, extra, icmp_in_port, fast)
    _cache[key] = compiled
    if len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return compiled


def _compile(version: int, tid: int, fields: tuple[Field, ...], options: bool, extra: bool,
             icmp_in_port: bool, fast: bool = True) -> Compiled:  # fmt: skip
    if not fields:
        raise DecodeError(f"template {tid} has no fields")
    if len(fields) > MAX_FIELDS:
        raise DecodeError(f"template {tid} has {len(fields)} fields (at most {MAX_FIELDS} are accepted)")
    infos = [ie_info(f.pen, f.ie) for f in fields]
    codes = [_field_code(f, dtype) for f, (_name_, dtype) in zip(fields, infos, strict=True)]
    min_len = sum(c.size if c.code is not None else 1 for c in codes)
    if min_len == 0:
        raise DecodeError(f"template {tid} describes records of 0 bytes")
    fixed = min_len if all(c.code is not None for c in codes) else 0

    values: dict[str, str] = {}  # key name -> expression
    used: set[int] = set()  # fields taken by a key, the time or dropped
    pos: dict[tuple[int, int], list[int]] = {}  # (pen, ie) -> positions, in order
    dropped = {(pen, ie) for pen, ie, _n in DROPPED}
    for i, f in enumerate(fields):
        pos.setdefault((f.pen, f.ie), []).append(i)
        if (f.pen, f.ie) in dropped:
            used.add(i)

    for key, kind, cands in NAMED:
        if key in values:
            continue  # an IPv6 address where an IPv4 one was found, say
        for pen, ie, _n in cands:
            for i in pos.get((pen, ie), ()):
                expr = None if i in used else _named_expr(f"f{i}", kind, codes[i], fields[i].length, _WIDTH[key])
                if expr is not None:
                    values[key] = expr
                    used.add(i)
                    break
            if key in values:
                break
    family = None
    for i in (i for k in ("orig.ip.saddr", "orig.ip.daddr") for i in [_src_of(values.get(k))] if i is not None):
        family = 2 if fields[i].ie in (8, 12) else 10
    for (pen, ie, _n), (tkey, ckey) in ICMP_TYPECODE.items():
        if tkey in values:
            continue
        for i in pos.get((pen, ie), ()):
            if codes[i].as_int and codes[i].size <= 2 and i not in used:
                values[tkey] = f"f{i} >> 8"
                values[ckey] = f"f{i} & 255"
                used.add(i)
                break

    lines: list[str] = []  # statements per record, after the fields are read
    times: dict[str, str] = {}
    for which, table in (("s", START_TIMES), ("e", END_TIMES)):
        for ie, _n, kind in table:
            # (observationTimeMilliseconds, a time of one packet, is both start and end)
            chosen = next((i for i in pos.get((PEN_IANA, ie), ()) if (i not in used or ie == 323)
                           and codes[i].as_int and fields[i].length in _TIME_LENGTHS[kind]), None)  # fmt: skip
            if chosen is None:
                continue
            used.add(chosen)
            v = f"f{chosen}"
            if kind == "sec" and fields[chosen].length == 4:
                lines.append(f"{which}s = {v}; {which}u = 0")
            elif kind == "sec":
                lines.append(f"{which}s, {which}u = _ms({v} * 1000)")
            elif kind == "ms" and fast:  # _ms inlined
                lines.append(f"{which}s, {which}u = _dm({v}, 1000)")
                lines.append(f"if {which}s < {WRAP}: {which}u *= 1000")
                lines.append(f"else: {which}s = {which}u = None")
            elif kind == "ms":
                lines.append(f"{which}s, {which}u = _ms({v})")
            elif kind == "ntp_us":
                lines.append(f"{which}s, {which}u = _ntp({v}, 0xFFFFF800)")
            elif kind == "ntp_ns":
                lines.append(f"{which}s, {which}u = _ntp({v}, 0xFFFFFFFF)")
            elif kind == "up":
                lines.append(f"{which}s, {which}u = _up({v}, boot, ems)")
            elif fast:  # _delta inlined
                lines.append(f"{which}u = eus - {v}")
                lines.append(f"if {which}u >= 0: {which}s, {which}u = _dm({which}u, 1000000)")
                lines.append(f"else: {which}s = {which}u = None")
            else:
                lines.append(f"{which}s, {which}u = _delta({v}, eus)")
            times[which] = kind
            break
    if "s" in times:
        values["flow.start.sec"], values["flow.start.usec"] = "ss", "su"
    if "e" in times:
        values["flow.end.sec"], values["flow.end.usec"] = "es", "eu"

    if icmp_in_port and "orig.ip.protocol" in values and "orig.l4.dport" in values \
            and "icmp.type" not in values and "icmpv6.type" not in values:  # fmt: skip
        # NetFlow v5/v9: ICMP type * 256 + code in the destination port, no ports.
        lines.append(f"p_ = {values['orig.ip.protocol']}")
        lines.append(f"sp_ = {values.get('orig.l4.sport', 'None')}; dp_ = {values['orig.l4.dport']}")
        lines.append("it_ = ic_ = i6t_ = i6c_ = None")
        lines.append("if p_ == 1: it_ = dp_ >> 8; ic_ = dp_ & 255; sp_ = dp_ = None")
        lines.append("elif p_ == 58: i6t_ = dp_ >> 8; i6c_ = dp_ & 255; sp_ = dp_ = None")
        values.update({"orig.ip.protocol": "p_", "orig.l4.sport": "sp_", "orig.l4.dport": "dp_",
                       "icmp.type": "it_", "icmp.code": "ic_", "icmpv6.type": "i6t_", "icmpv6.code": "i6c_"})

    biflow = any(f.pen == PEN_REVERSE for f in fields)
    if biflow:
        for frm, dst in (("orig.ip.daddr", "reply.ip.saddr"), ("orig.ip.saddr", "reply.ip.daddr"),
                         ("orig.ip.protocol", "reply.ip.protocol"), ("orig.l4.dport", "reply.l4.sport"),
                         ("orig.l4.sport", "reply.l4.dport")):  # fmt: skip
            if frm in values:
                var = "r_" + frm.replace(".", "_")
                lines.append(f"{var} = {values[frm]}")
                values[frm] = var
                values[dst] = var
    if "ipfix.end_reason" in values:
        var = "er_"
        lines.append(f"{var} = {values['ipfix.end_reason']}")
        values["ipfix.end_reason"] = var
        values["ct.event"] = f"_EV.get({var})"
    if family is not None:
        values["oob.family"] = str(family)
        values["oob.protocol"] = "2048" if family == 2 else "34525"
    values["ipfix.exporter"] = "exp"
    values["ipfix.version"] = str(version)
    values["ipfix.odid"] = "odid"
    if version != 5:
        values["ipfix.template_id"] = str(tid)
    values["ipfix.export_time"] = "etime"
    if options:
        values["ipfix.options"] = "1"

    if extra:
        entries: dict[str, list[str]] = {}
        for i, f in enumerate(fields):
            if i in used:
                continue
            name, dtype = infos[i]
            if not SAFE_NAME.match(name):  # never true for our registry; kept as a guard
                name = f"{f.pen}.{f.ie}"
            entries.setdefault(name, []).append(_extra_expr(f"f{i}", dtype, codes[i], f.length))
        items = [f"{name!r}: {exprs[0] if len(exprs) == 1 else '[' + ', '.join(exprs) + ']'}"
                 for name, exprs in entries.items()]  # fmt: skip
        values["ipfix.extra"] = "{" + ", ".join(items) + "}"
        # A variable-length integer key too long for its type (a 300-byte tunnelKey) keeps its
        # bytes here instead.
        spilled = [i for i in sorted(used) if fields[i].length == VARLEN and fields[i].pen == PEN_VMWARE
                   and fields[i].ie == 892]  # fmt: skip
        if spilled:
            lines.append(f"ex_ = {values['ipfix.extra']}")
            for i in spilled:
                lines.append(f"if len(f{i}) > 8: ex_[{infos[i][0]!r}] = f{i}.hex()")
            values["ipfix.extra"] = "ex_"

    record = "[None, " + ", ".join(values.get(k, "None") for k in K.KEYS) + "]"
    ns = dict(_NS)
    src = ["def decode(data, off, end, exp, odid, etime, boot, out=None):", "    if out is None: out = []",
           "    ap = out.append"]
    if "up" in times.values():
        src.append("    ems = etime * 1000")
    if "delta" in times.values():
        src.append("    eus = etime * 1000000")
    names = [f"f{i}" for i in range(len(fields))]
    if fast:
        _emit_fast(src, ns, tid, codes, names, lines, record, fixed, min_len)
    else:
        _emit_plain(src, ns, tid, codes, names, lines, record, fixed, min_len)
    src.append("    return out")
    text = "\n".join(src) + "\n"
    exec(compile(text, f"<ipfixin template {tid}>", "exec"), ns)  # noqa: S102 - our own text, see docstring
    return Compiled(ns["decode"], min_len, fixed, text, "up" in times.values())


def _emit_plain(src: list[str], ns: dict[str, Any], tid: int, codes: list[_FieldCode], names: list[str],
                lines: list[str], record: str, fixed: int, min_len: int) -> None:  # fmt: skip
    """The plain loop: every field unpacked, every length checked where it is read."""
    if fixed:
        st = struct.Struct("!" + "".join(c.code or "" for c in codes))
        ns["_iter"] = st.iter_unpack
        target = ", ".join(names) + ("," if len(names) == 1 else "")
        src.append(f"    n = (end - off) // {fixed}")
        src.append(f"    for {target} in _iter(_MV(data)[off:off + n * {fixed}]):")
        body = "        "
    else:
        src.append(f"    while end - off >= {min_len}:")
        body = "        "
        run: list[int] = []

        def flush_run() -> None:
            if not run:
                return
            st = struct.Struct("!" + "".join(codes[i].code or "" for i in run))
            sname = f"_S{len(ns)}"
            ns[sname] = st.unpack_from
            target = ", ".join(names[i] for i in run) + ("," if len(run) == 1 else "")
            src.append(f"{body}if off + {st.size} > end: raise _overrun({tid})")
            src.append(f"{body}{target} = {sname}(data, off)")
            src.append(f"{body}off += {st.size}")
            run.clear()

        for i, c in enumerate(codes):
            if c.code is not None:
                run.append(i)
                continue
            flush_run()
            src.append(f"{body}if off >= end: raise _overrun({tid})")
            src.append(f"{body}n = data[off]")
            src.append(f"{body}off += 1")
            src.append(f"{body}if n == 255:")
            src.append(f"{body}    if off + 2 > end: raise _overrun({tid})")
            src.append(f"{body}    n = data[off] << 8 | data[off + 1]")
            src.append(f"{body}    off += 2")
            src.append(f"{body}if off + n > end: raise _overrun({tid})")
            src.append(f"{body}{names[i]} = data[off:off + n]")
            src.append(f"{body}off += n")
        flush_run()
    src.extend(body + line for line in lines)
    src.append(f"{body}ap({record})")


# Fast decoders look values that repeat (interface names, MACs, tunnel addresses) up in
# caches instead of calling the helper: one dict subscript instead of one or two calls.
_MEMO_LEN = 256
_CACHED = {"_name": "_NM", "_text": "_TX", "_mac": "_MC", "_ntoa4": "_A4", "_ntoa6": "_A6"}
_CALL = re.compile(r"\b(" + "|".join(_CACHED) + r")\((f\d+)\)")
_FIELD = re.compile(r"\bf(\d+)\b")


class _Memo(dict[bytes, Any]):
    """``fn(b)`` by ``b``, computed once; cleared when it holds :data:`_CACHE_MAX` values, so
    an exporter sending a new name in every record costs memory for a bounded number, and
    only values of at most :data:`_MEMO_LEN` bytes are kept (a 64 KiB string field is
    converted each time rather than kept 4096 times)."""

    def __init__(self, fn: Callable[[bytes], Any]) -> None:
        super().__init__()
        self.fn = fn

    def __missing__(self, b: bytes) -> Any:
        v = self.fn(b)
        if len(b) <= _MEMO_LEN:
            if len(self) >= _CACHE_MAX:
                self.clear()
            self[b] = v
        return v


_NS.update({"_NM": _Memo(_name), "_TX": _Memo(_text), "_MC": _Memo(_mac), "_A4": _Memo(_ntoa4),
            "_A6": _Memo(_ntoa6), "_dm": divmod, "_EVT": tuple(EVENTS.get(i) for i in range(256))})  # fmt: skip


# The guess (variable-length templates): an exporter sends the same lengths in the variable
# fields of a template record after record (Open vSwitch: the same interface names), so the
# decoder keeps one struct for a record of the lengths of the last record it read field by
# field: the next one is read with that one ``unpack_from`` (its length bytes among the
# values) and taken when its length bytes are the same; else it is read field by field, and
# its lengths become the guess.
GUESS_MAX = 16  # structs kept per decoder (one per set of lengths seen; ~1 KiB each): more clear the memo
_NO_GUESS = 1 << 62  # a record size no set has: the field-by-field reading


def _emit_guess(src: list[str], ns: dict[str, Any], codes: list[_FieldCode], names: list[str], used: set[int],
                min_len: int) -> int:  # fmt: skip
    """The head of a variable-length template's loop: the record read with the guessed
    struct, ``hit`` when its length bytes are the guessed ones (each a one-byte prefix);
    :func:`_emit_fast` writes the field-by-field reading under ``if not hit:``. Returns the
    number of variable-length fields."""
    nvar = sum(1 for c in codes if c.code is None)
    memo: dict[tuple[int, ...], tuple[Any, ...]] = {}

    def guess(lens: tuple[int, ...]) -> tuple[Any, ...]:
        """(unpack_from, size, *lens) for records whose variable fields are ``lens`` bytes
        long; a long (3-byte) length prefix (-1) is never guessed."""
        found = memo.get(lens)
        if found is not None:
            return found
        if min(lens) < 0:
            return (None, _NO_GUESS, *lens)
        parts = []
        k = 0
        for i, c in enumerate(codes):
            if c.code is not None:
                parts.append(c.code if i in used else f"{c.size}x")
            else:
                parts.append("B" + (f"{lens[k]}s" if i in used else f"{lens[k]}x"))
                k += 1
        st = struct.Struct("!" + "".join(parts))
        if len(memo) >= GUESS_MAX:
            memo.clear()
        found = memo[lens] = (st.unpack_from, st.size, *lens)
        return found

    ns["_guess"] = guess
    ns["_G"] = [(None, _NO_GUESS, *([-1] * nvar))]
    got = []
    k = 0
    for i, c in enumerate(codes):
        if c.code is None:
            got.append(f"l{k}")
            k += 1
        if i in used:
            got.append(names[i])
    same = " and ".join(f"l{k} == g{k}" for k in range(nvar))
    src.append(f"    gu, gs, {', '.join(f'g{k}' for k in range(nvar))} = _G[0]")
    src.append(f"    while end - off >= {min_len}:")
    src.append("        hit = False")
    src.append("        if off + gs <= end:")
    src.append(f"            {', '.join(got)}{',' if len(got) == 1 else ''} = gu(data, off)")
    src.append(f"            if {same}: off += gs; hit = True")
    src.append("        if not hit:")
    return nvar


def _emit_fast(src: list[str], ns: dict[str, Any], tid: int, codes: list[_FieldCode], names: list[str],
               lines: list[str], record: str, fixed: int, min_len: int) -> None:  # fmt: skip
    """The fast loop, equal in results to :func:`_emit_plain`: fields no key reads are
    skipped (pad bytes in the struct format, variable-length ones not sliced), offsets
    within a run of fixed fields are constants, and lengths are checked once per record,
    after its last field: a field past the end of the set but inside the message reads
    bytes of no meaning that are then thrown away with the record (``_overrun``), one past
    the message raises ``IndexError``/``struct.error``, which every caller treats as the
    overrun it is. Helpers of repeating values become cache lookups (:class:`_Memo`)."""
    lines = [_CALL.sub(lambda m: f"{_CACHED[m.group(1)]}[{m.group(2)}]", line) for line in lines]
    record = _CALL.sub(lambda m: f"{_CACHED[m.group(1)]}[{m.group(2)}]", record)
    # flowEndReason is one byte (the key is UINT8: a wider field is not taken): a tuple index
    record = record.replace("_EV.get(er_)", "_EVT[er_]")
    used = {int(m) for text in [*lines, record] for m in _FIELD.findall(text)}

    def fmt(idx: list[int]) -> str:
        return "!" + "".join((codes[i].code or "") if i in used else f"{codes[i].size}x" for i in idx)

    def target(idx: list[int]) -> str:
        got = [names[i] for i in idx if i in used]
        return ", ".join(got) + ("," if len(got) == 1 else "") if got else "()"

    body = "        "
    if fixed:
        every = list(range(len(codes)))
        ns["_iter"] = struct.Struct(fmt(every)).iter_unpack
        src.append(f"    n = (end - off) // {fixed}")
        src.append(f"    for {target(every)} in _iter(_MV(data)[off:off + n * {fixed}]):")
    else:
        nvar = _emit_guess(src, ns, codes, names, used, min_len)
        body = "            "  # under ``if not hit:``
        adv = 0  # bytes of fixed fields read since ``off`` was last set
        run: list[int] = []
        k = 0  # variable-length fields read so far

        def at(k: int) -> str:
            return f"off + {k}" if k else "off"

        def flush_run() -> None:
            nonlocal adv
            if not run:
                return
            st = struct.Struct(fmt(run))
            if any(i in used for i in run):
                sname = f"_S{len(ns)}"
                ns[sname] = st.unpack_from
                src.append(f"{body}{target(run)} = {sname}(data, {at(adv)})")
            adv += st.size
            run.clear()

        for i, c in enumerate(codes):
            if c.code is not None:
                run.append(i)
                continue
            flush_run()
            src.append(f"{body}n = data[{at(adv)}]")
            src.append(f"{body}if n < 255: off += {adv + 1}; n{k} = n")
            src.append(f"{body}else: n = data[{at(adv + 1)}] << 8 | data[{at(adv + 2)}]; off += {adv + 3}; n{k} = -1")
            if i in used:
                src.append(f"{body}{names[i]} = data[off:off + n]")
            src.append(f"{body}off += n")
            adv = 0
            k += 1
        flush_run()
        if adv:
            src.append(f"{body}off += {adv}")
        src.append(f"{body}if off > end: raise _overrun({tid})")
        lens = ", ".join(f"n{k}" for k in range(nvar))
        src.append(f"{body}gu, gs, {', '.join(f'g{k}' for k in range(nvar))} = _G[0] = _guess(({lens},))")
        body = "        "
    src.extend(body + line for line in lines)
    src.append(f"{body}ap({record})")
