"""nfnetlink_log (NFLOG) messages, sans-IO: packets in, NFLOG output-key values out; config requests.

A packet message (``NFULNL_MSG_PACKET``) decodes straight into the value list a Source emits:
``[None, v1, ..., v24]`` with the 24 values in the order of :data:`KEYS` (ulogd2's NFLOG output
keys), ``None`` meaning "not valid for this event". Validity follows ulogd2 2.0.8
(``interp_packet`` in ``ulogd_inppkt_NFLOG.c``):

* ``raw.mac``/``raw.mac_len``/``raw.type`` only when ``NFULA_HWLEN`` is non-zero;
* ``raw.pkt``/``raw.pktlen`` when ``NFULA_PAYLOAD`` is present (even empty);
* ``oob.time.*`` from ``NFULA_TIMESTAMP`` when present with non-zero seconds, else ``now``;
* ``oob.mark`` always (0 when absent); ``oob.ifindex_in/out`` only when non-zero;
* ``oob.hook``/``oob.protocol`` with ``NFULA_PACKET_HDR``; ``oob.uid/gid/seq.*`` when present;
* ``raw.pktcount`` = 1, ``oob.family``, ``raw.label`` and ``raw`` always.

Representation: RAW keys are ``bytes`` (copies, so a record may outlive the receive buffer);
``raw.mac.saddr`` is the first ``raw.mac.addrlen`` bytes (at most 8) of the kernel's 8-byte
address field; ``raw`` is the whole netlink message; ``ct`` is the ``NFULA_CT`` payload (the
nested ``CTA_*`` attributes of the conntrack entry, as in a ctnetlink message). ``oob.prefix``
is the prefix up to its NUL, decoded as UTF-8 with ``surrogateescape``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any

from pyulogd.codec import netlink as nl
from pyulogd.core.errors import DecodeError
from pyulogd.core.keys import Key, KeyType

NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
PACKET_TYPE = nl.msg_type(nl.NFNL_SUBSYS_ULOG, NFULNL_MSG_PACKET)
CONFIG_TYPE = nl.msg_type(nl.NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG)

NFULA_PACKET_HDR = 1
NFULA_MARK = 2
NFULA_TIMESTAMP = 3
NFULA_IFINDEX_INDEV = 4
NFULA_IFINDEX_OUTDEV = 5
NFULA_IFINDEX_PHYSINDEV = 6
NFULA_IFINDEX_PHYSOUTDEV = 7
NFULA_HWADDR = 8
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NFULA_UID = 11
NFULA_SEQ = 12
NFULA_SEQ_GLOBAL = 13
NFULA_GID = 14
NFULA_HWTYPE = 15
NFULA_HWHEADER = 16
NFULA_HWLEN = 17
NFULA_CT = 18
NFULA_CT_INFO = 19
NFULA_VLAN = 20
NFULA_L2HDR = 21

NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_NLBUFSIZ = 3
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULA_CFG_FLAGS = 6

NFULNL_CFG_CMD_NONE = 0
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_CFG_CMD_PF_BIND = 3
NFULNL_CFG_CMD_PF_UNBIND = 4

NFULNL_COPY_NONE = 0
NFULNL_COPY_META = 1
NFULNL_COPY_PACKET = 2

NFULNL_CFG_F_SEQ = 0x0001
NFULNL_CFG_F_SEQ_GLOBAL = 0x0002
NFULNL_CFG_F_CONNTRACK = 0x0004

# The NFLOG plugin's output keys (the one table: plugins/inputs/nflog.py and the tests import it),
# in ulogd2's declaration order; value i sits at list index i + 1.
T = KeyType
OUTPUT_KEYS: tuple[Key, ...] = (
    Key("raw.mac", T.RAW, help="hardware (L2) header, when the packet has one (input path)"),
    Key("raw.pkt", T.RAW, help="the packet from the network header on (as copied by the kernel)"),
    Key("raw.pktlen", T.UINT32, help="length of raw.pkt"),
    Key("raw.pktcount", T.UINT32, help="number of packets (always 1)"),
    Key("oob.prefix", T.STRING, help="log prefix of the rule"),
    Key("oob.time.sec", T.UINT32, help="time the packet was logged (kernel timestamp or reception), seconds"),
    Key("oob.time.usec", T.UINT32, help="microseconds of oob.time.sec"),
    Key("oob.mark", T.UINT32, help="packet mark (0 when none)"),
    Key("oob.ifindex_in", T.UINT32, help="index of the input interface"),
    Key("oob.ifindex_out", T.UINT32, help="index of the output interface"),
    Key("oob.hook", T.UINT8,
        help="netfilter hook (0 prerouting, 1 input, 2 forward, 3 output, 4 postrouting)"),
    Key("raw.mac_len", T.UINT16, help="length of raw.mac"),
    Key("oob.seq.local", T.UINT32, help="per-group sequence number (seq_local=1)"),
    Key("oob.seq.global", T.UINT32, help="global sequence number (seq_global=1)"),
    Key("oob.family", T.UINT8, help="protocol family (2 IPv4, 10 IPv6, 7 bridge, 3 ARP)"),
    Key("oob.protocol", T.UINT16, help="layer 3 protocol (ethertype: 2048 IPv4, 34525 IPv6, 2054 ARP)"),
    Key("oob.uid", T.UINT32, help="user id of the local socket the packet belongs to"),
    Key("oob.gid", T.UINT32, help="group id of the local socket the packet belongs to"),
    Key("raw.label", T.UINT8, help="numeric_label of this instance"),
    Key("raw.type", T.UINT16, help="hardware type (ARPHRD_*: 1 Ethernet, 772 loopback)"),
    Key("raw.mac.saddr", T.RAW, help="hardware source address"),
    Key("raw.mac.addrlen", T.UINT16, help="length of raw.mac.saddr"),
    Key("raw", T.RAW, help="the whole NFLOG netlink message"),
    Key("ct", T.RAW, help="attached conntrack entry (ctnetlink attributes; attach_conntrack=1)"),
)
KEYS: tuple[str, ...] = tuple(k.name for k in OUTPUT_KEYS)
# Index of each key in a value list (slot 0 is the reserved None).
IDX: dict[str, int] = {name: i + 1 for i, name in enumerate(KEYS)}
I_SEQ_LOCAL = IDX["oob.seq.local"]
I_SEQ_GLOBAL = IDX["oob.seq.global"]

_unpack_hdr2 = struct.Struct("=IH").unpack_from
_unpack_nla = nl.NLA.unpack_from
_unpack_u32 = struct.Struct("!I").unpack_from
_unpack_u16 = struct.Struct("!H").unpack_from
_unpack_phdr = struct.Struct("!HB").unpack_from
_unpack_ts = struct.Struct("!QQ").unpack_from
_MODE = struct.Struct("!IBx")


def parse_packet(buf: bytes, off: int, end: int, sec: int, usec: int, label: int = 0) -> list[Any]:
    """Values of one NFULNL_MSG_PACKET message at ``buf[off:end]`` (``end`` = off + nlmsg_len).

    ``sec``/``usec`` stand in for a missing kernel timestamp. Raises :class:`DecodeError`.
    This is the hot path: one pass over the attributes, no intermediate objects.
    """
    if end - off < 20:
        raise DecodeError(f"NFLOG packet message of {end - off} bytes has no nfgenmsg header")
    mac = pkt = pktlen = prefix = ifin = ifout = hook = seql = seqg = proto = uid = gid = None
    rtype = saddr = addrlen = ct = None
    mark = hwlen = tsec = tusec = 0
    a = off + 20
    while a + 4 <= end:
        al, at = _unpack_nla(buf, a)
        q = a + al
        if al < 4 or q > end:
            raise DecodeError(f"NFLOG attribute type {at & 0x3FFF} at offset {a - off}: bad length {al}")
        at &= 0x3FFF
        p = a + 4
        # Most frequent first; a fixed-size attribute must be long enough, or the read would
        # run into the next attribute or message.
        if at == NFULA_PAYLOAD:
            pkt = buf[p:q]
            pktlen = al - 4
        elif at == NFULA_PACKET_HDR:
            if al < 7:
                raise DecodeError(f"NFULA_PACKET_HDR of {al} bytes")
            proto, hook = _unpack_phdr(buf, p)
        elif at == NFULA_PREFIX:
            n = buf.find(b"\0", p, q)
            prefix = str(buf[p : q if n < 0 else n], "utf-8", "surrogateescape")
        elif at == NFULA_TIMESTAMP:
            if al < 20:
                raise DecodeError(f"NFULA_TIMESTAMP of {al} bytes")
            tsec, tusec = _unpack_ts(buf, p)
        elif at == NFULA_IFINDEX_INDEV or at == NFULA_IFINDEX_OUTDEV:
            if al < 8:
                raise DecodeError(f"NFULA_IFINDEX of {al} bytes")
            if at == NFULA_IFINDEX_INDEV:
                ifin = _unpack_u32(buf, p)[0] or None
            else:
                ifout = _unpack_u32(buf, p)[0] or None
        elif at == NFULA_HWHEADER:
            mac = buf[p:q]
        elif at == NFULA_HWLEN or at == NFULA_HWTYPE:
            if al < 6:
                raise DecodeError(f"NFULA_HWLEN/HWTYPE of {al} bytes")
            if at == NFULA_HWLEN:
                hwlen = _unpack_u16(buf, p)[0]
            else:
                rtype = _unpack_u16(buf, p)[0]
        elif at == NFULA_HWADDR:
            if al < 16:
                raise DecodeError(f"NFULA_HWADDR of {al} bytes")
            addrlen = _unpack_u16(buf, p)[0]
            saddr = buf[p + 4 : p + 4 + (addrlen if addrlen < 8 else 8)]
        elif at in _U32_ATTRS:
            if al < 8:
                raise DecodeError(f"NFLOG attribute type {at} of {al} bytes")
            v = _unpack_u32(buf, p)[0]
            if at == NFULA_MARK:
                mark = v
            elif at == NFULA_UID:
                uid = v
            elif at == NFULA_GID:
                gid = v
            elif at == NFULA_SEQ:
                seql = v
            else:
                seqg = v
        elif at == NFULA_CT:
            ct = buf[p:q]
        a += (al + 3) & ~3
    if tsec:
        sec = tsec & 0xFFFFFFFF
        usec = tusec & 0xFFFFFFFF
    if hwlen:
        if mac is None:
            mac = b""
        if rtype is None:
            rtype = 0
        maclen: int | None = hwlen
    else:
        mac = rtype = maclen = None
    return [
        None, mac, pkt, pktlen, 1, prefix, sec, usec, mark, ifin, ifout, hook, maclen, seql, seqg,
        buf[off + 16], proto, uid, gid, label, rtype, saddr, addrlen, buf[off:end], ct,
    ]  # fmt: skip


_U32_ATTRS = frozenset({NFULA_MARK, NFULA_UID, NFULA_GID, NFULA_SEQ, NFULA_SEQ_GLOBAL})


Batch = nl.Batch


def split_now(now: float) -> tuple[int, int]:
    """A wall-clock float as (seconds, microseconds)."""
    sec, usec = divmod(int(now * 1_000_000), 1_000_000)
    return sec, usec


# -- shape templates (see Decoder)

_Fast = Callable[[bytes, int, int, int, int, int], "list[Any] | None"]
_MAX_PER_KEY = 4
# Candidate templates are found by message bytes 16-39: nfgenmsg (family, group), NFULA_PACKET_HDR
# (protocol, hook) and the next 12 bytes (the prefix's header and text, or an ifindex), so rules
# rarely share a key. A template only checks the bytes after these.
_KEY_START, _KEY_END = 16, 40
# Compiling costs about as much as 20 generic parses: allow a few freely, then one per 64 packets
# that took a template, so traffic whose layout never repeats stays on the generic parser.
_FREE_COMPILES, _HITS_PER_COMPILE = 64, 64
# Attribute types (with flag bits) a template may hold, and the only length it accepts (None: any).
_TEMPLATE_ATTRS: dict[int, int | None] = {
    NFULA_PACKET_HDR: 8,
    NFULA_MARK: 8,
    NFULA_TIMESTAMP: 20,
    NFULA_IFINDEX_INDEV: 8,
    NFULA_IFINDEX_OUTDEV: 8,
    NFULA_IFINDEX_PHYSINDEV: 8,
    NFULA_IFINDEX_PHYSOUTDEV: 8,
    NFULA_HWADDR: 16,
    NFULA_PREFIX: None,
    NFULA_UID: 8,
    NFULA_GID: 8,
    NFULA_SEQ: 8,
    NFULA_SEQ_GLOBAL: 8,
    NFULA_HWTYPE: 6,
    NFULA_HWLEN: 6,
    NFULA_HWHEADER: None,
}
_U32_NAMES = {
    NFULA_MARK: "mark", NFULA_UID: "uid", NFULA_GID: "gid", NFULA_SEQ: "seql", NFULA_SEQ_GLOBAL: "seqg"
}  # fmt: skip
_IFINDEX_ATTRS = (
    NFULA_IFINDEX_INDEV, NFULA_IFINDEX_OUTDEV, NFULA_IFINDEX_PHYSINDEV, NFULA_IFINDEX_PHYSOUTDEV
)  # fmt: skip


def _compile(buf: bytes, off: int, end: int) -> tuple[bytes, _Fast] | None:
    """A template for the layout of the (already successfully decoded) message at ``buf[off:end]``.

    Returns ``(key, function)``, or None for layouts not worth a template (no payload last,
    repeated or unusual attributes, conntrack attached, too short for a key).
    """
    layout: list[tuple[int, int, int]] = []
    a = off + 20
    while a + 4 <= end:
        al, at = _unpack_nla(buf, a)
        layout.append((a - off, al, at))
        a += (al + 3) & ~3
    if not layout or layout[-1][2] != NFULA_PAYLOAD or layout[-1][0] < _KEY_END:
        return None
    kp = layout[-1][0]
    body = layout[:-1]
    if len({at for _, _, at in body}) != len(body):
        return None
    # Bytes that must equal the learnt message's. Attribute padding is included (the kernel
    # zeroes it; a producer that does not only loses the fast path).
    const: set[int] = set()
    values: list[tuple[int, str, str]] = []  # (offset, struct code, variable names)
    ns: dict[str, Any] = {"PREFIX": None, "IFIN": None, "IFOUT": None, "HOOK": None, "PROTO": None}
    ns.update(FAMILY=buf[off + 16], MACLEN=None, RTYPE=None, ADDRLEN=None)
    hwlen = 0
    have = {at for _, _, at in body}
    for rel, al, at in body:
        if at not in _TEMPLATE_ATTRS or _TEMPLATE_ATTRS[at] not in (None, al):
            return None
        p = off + rel + 4
        pad = (al + 3) & ~3
        const.update(range(rel, rel + 4))
        if at == NFULA_PACKET_HDR:
            const.update(range(rel + 4, rel + 7))  # not the pad byte: older kernels leave it unset
            ns["PROTO"], ns["HOOK"] = _unpack_phdr(buf, p)
        elif at == NFULA_PREFIX:
            const.update(range(rel + 4, rel + pad))
            n = buf.find(b"\0", p, off + rel + al)
            ns["PREFIX"] = str(buf[p : off + rel + al if n < 0 else n], "utf-8", "surrogateescape")
        elif at in _IFINDEX_ATTRS:
            const.update(range(rel + 4, rel + 8))
            v = _unpack_u32(buf, p)[0] or None
            if at == NFULA_IFINDEX_INDEV:
                ns["IFIN"] = v
            elif at == NFULA_IFINDEX_OUTDEV:
                ns["IFOUT"] = v
        elif at == NFULA_HWADDR:
            addrlen = _unpack_u16(buf, p)[0]
            n = min(addrlen, 8)
            const.update(range(rel + 4, rel + 8))  # address length and pad
            const.update(range(rel + 8 + n, rel + 16))  # the unused (zeroed) address bytes
            ns["ADDRLEN"] = addrlen
            values.append((rel + 8, f"{n}s", "saddr"))
        elif at == NFULA_HWTYPE or at == NFULA_HWLEN:
            const.update(range(rel + 4, rel + 8))
            if at == NFULA_HWLEN:
                hwlen = _unpack_u16(buf, p)[0]
            else:
                ns["RTYPE"] = _unpack_u16(buf, p)[0]
        elif at == NFULA_HWHEADER:
            const.update(range(rel + al, rel + pad))
            if NFULA_HWLEN in have:
                values.append((rel + 4, f"{al - 4}s", "mac"))
        elif at == NFULA_TIMESTAMP:
            values.append((rel + 4, "QQ", "tsec, tusec"))
        elif at in _U32_NAMES:
            values.append((rel + 4, "I", _U32_NAMES[at]))
    if hwlen:
        if NFULA_HWHEADER not in have:
            return None
        ns["MACLEN"] = hwlen
        if ns["RTYPE"] is None:
            ns["RTYPE"] = 0
    else:
        ns["RTYPE"] = None
        values = [v for v in values if v[2] != "mac"]
    values.append((kp, "I", "x"))  # the payload attribute's header, big-endian here: see below

    # One struct reads, in memory order, the runs of bytes to check ("Ns") and the values.
    fields: list[tuple[int, str, str]] = list(values)
    run_start = None
    checked = sorted(i for i in const if i >= _KEY_END)
    for j, i in enumerate(checked):
        if run_start is None:
            run_start = i
        if j + 1 == len(checked) or checked[j + 1] != i + 1:
            fields.append((run_start, f"{i + 1 - run_start}s", f"c{len(fields)}"))
            run_start = None
    fmt, pos = ["!"], 0
    for rel, code, _ in sorted(fields):
        if rel < pos:
            return None  # overlapping fields: a layout this compiler does not understand
        if rel > pos:
            fmt.append(f"{rel - pos}x")
        fmt.append(code)
        pos = rel + struct.calcsize("!" + code)
    ns["S"] = unpack = struct.Struct("".join(fmt)).unpack_from
    names = ", ".join(n for _, _, n in sorted(fields))
    got = dict(zip(names.split(", "), unpack(buf, off), strict=True))
    checks = [name for name in got if name.startswith("c")]
    for name in checks:
        ns["E" + name] = got[name]

    def var(name: str, absent: str = "None") -> str:
        return name if name in got else absent

    def lit(name: str) -> str:
        v = ns[name]
        if v is None or type(v) is int:
            return repr(v)
        return name  # the prefix string stays a global of the generated function

    ts = ""
    if "tsec" in got:
        ts = "    if tsec:\n        sec = tsec & 0xFFFFFFFF\n        usec = tusec & 0xFFFFFFFF\n"
    src = (
        "def fast(buf, off, end, sec, usec, label):\n"
        f"    if end - off < {kp + 4}:\n"
        "        return None\n"
        f"    {names}, = S(buf, off)\n"
        f"    if {' or '.join(f'{c} != E{c}' for c in checks) or 'False'}:\n"
        "        return None\n"
        # x holds the little-endian length and type read big-endian: type 9 reads as 0x0900.
        f"    if x & 0xFFFF != {(NFULA_PAYLOAD & 0xFF) << 8 | NFULA_PAYLOAD >> 8}:\n"
        "        return None\n"
        "    al = ((x >> 8) & 0xFF00) | (x >> 24)\n"
        f"    pend = off + {kp} + al\n"
        "    if al < 4 or pend > end or end - pend > 3:\n"
        "        return None\n"
        f"{ts}"
        f"    return [None, {var('mac')}, buf[off + {kp + 4}:pend], al - 4, 1, {lit('PREFIX')}, sec, usec,"
        f" {var('mark', '0')}, {lit('IFIN')}, {lit('IFOUT')}, {lit('HOOK')}, {lit('MACLEN')}, {var('seql')},"
        f" {var('seqg')}, {lit('FAMILY')}, {lit('PROTO')}, {var('uid')}, {var('gid')}, label, {lit('RTYPE')},"
        f" {var('saddr')}, {lit('ADDRLEN')}, buf[off:end], None]\n"
    )
    exec(compile(src, f"<nflog template {len(body)} attrs>", "exec"), ns)  # noqa: S102 - ints only
    return bytes(buf[off + _KEY_START : off + _KEY_END]), ns["fast"]


class Decoder:
    """Decodes ``recv()`` buffers; owns the shape-template cache, so keep one per socket.

    The generic :func:`parse_packet` walks the attributes one by one (about 0.3 µs each on a
    small VM, 8-9 per packet). The kernel writes the attributes of every packet of one rule on
    one path in the same order with the same sizes; only a few values and the payload length
    change. After the generic parser has decoded a message, the decoder compiles its layout into
    a *template*: one ``struct`` that checks every byte that must be equal (attribute headers,
    prefix, ifindexes, hook, ...), one that reads the values, and a small generated function
    that builds the value list. A template that does not match in every checked byte declines,
    and the message goes through :func:`parse_packet`, so results never differ.
    """

    def __init__(self, templates: bool = True, max_templates: int = 256) -> None:
        self.templates = templates
        self.max_templates = max_templates
        self._cands: dict[bytes, list[_Fast]] = {}  # newest first
        # What parse_buffer calls for a key: the one template, or a function trying each in turn.
        self._fast: dict[bytes, _Fast] = {}
        self._ntemplates = 0
        self._hits = 0  # packets decoded by a template
        self._compiles = 0

    def parse_buffer(self, buf: bytes, now: float, label: int = 0) -> Batch:
        """Every packet of a ``recv()`` buffer (NFLOG batches several, then NLMSG_DONE). Never raises.

        ``now`` (a ``time.time()`` float) stamps packets without a kernel timestamp; ``label``
        is the instance's ``numeric_label`` (already truncated to 8 bits by the caller).
        """
        sec, usec = split_now(now)
        batch = Batch()
        recs = batch.records
        append = recs.append
        fast = self._fast
        slow = 0
        end = len(buf)
        off = 0
        while off + 16 <= end:
            ln, typ = _unpack_hdr2(buf, off)
            e = off + ln
            if ln < 16 or e > end:
                batch._bad(f"nlmsg_len {ln} at offset {off} of a {end}-byte buffer")
                return batch
            if typ == PACKET_TYPE:
                f = fast.get(buf[off + 16 : off + 40])
                r = None if f is None else f(buf, off, e, sec, usec, label)
                if r is None:
                    slow += 1
                    try:
                        r = parse_packet(buf, off, e, sec, usec, label)
                    except (ValueError, IndexError, struct.error) as ex:  # DecodeError is a ValueError
                        batch._bad(str(ex))
                    else:
                        self._learn(buf, off, e)
                if r is not None:
                    append(r)
            elif typ == nl.NLMSG_DONE or typ == nl.NLMSG_NOOP:
                pass
            elif typ == nl.NLMSG_ERROR:
                batch.error_message(buf, off, ln)
            else:
                batch.other += 1
            off += (ln + 3) & ~3
        batch.tail(buf, off, end)
        self._hits += len(recs) - slow
        return batch

    def _learn(self, buf: bytes, off: int, end: int) -> None:
        if not self.templates or self._compiles >= _FREE_COMPILES + self._hits // _HITS_PER_COMPILE:
            return
        self._compiles += 1
        try:
            compiled = _compile(buf, off, end)
        except (ValueError, IndexError, struct.error):  # the template must not cost a packet
            return
        if compiled is None:
            return
        key, fn = compiled
        if self._ntemplates >= self.max_templates:
            # Unbounded variety (e.g. a mark per connection in the key): start over.
            self._cands.clear()
            self._fast.clear()
            self._ntemplates = 0
        cands = self._cands.setdefault(key, [])
        if len(cands) >= _MAX_PER_KEY:
            cands.pop()
            self._ntemplates -= 1
        cands.insert(0, fn)
        self._ntemplates += 1
        self._fast[key] = cands[0] if len(cands) == 1 else _first_of(tuple(cands))


def _first_of(cands: tuple[_Fast, ...]) -> _Fast:
    def first(buf: bytes, off: int, end: int, sec: int, usec: int, label: int) -> list[Any] | None:
        for f in cands:
            r = f(buf, off, end, sec, usec, label)
            if r is not None:
                return r
        return None

    return first


def parse_buffer(buf: bytes, now: float, label: int = 0) -> Batch:
    """:meth:`Decoder.parse_buffer` without templates (the generic parser only). Never raises."""
    return Decoder(templates=False).parse_buffer(buf, now, label)


def decode_packet(msg: bytes, now: float = 0.0, label: int = 0) -> list[Any]:
    """Values of a single packet message (convenience for tests and tools). Raises DecodeError."""
    if len(msg) < 16:
        raise DecodeError(f"{len(msg)} bytes is no netlink message")
    ln, typ = _unpack_hdr2(msg, 0)
    if typ != PACKET_TYPE:
        raise DecodeError(f"netlink message type {typ:#x} is not an NFLOG packet")
    if ln < 16 or ln > len(msg):
        raise DecodeError(f"nlmsg_len {ln} for a {len(msg)}-byte message")
    sec, usec = split_now(now)
    return parse_packet(msg, 0, ln, sec, usec, label)


def as_dict(values: list[Any]) -> dict[str, Any]:
    """Key name -> value for the valid keys of a value list (for tests and debugging)."""
    return {name: values[i + 1] for i, name in enumerate(KEYS) if values[i + 1] is not None}


# -- config requests (NFULNL_MSG_CONFIG); each asks for an ack


def config_msg(group: int, attributes: Iterable[bytes], seq: int = 0, family: int = 0) -> bytes:
    return nl.nfnl_msg(nl.NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG, family, group, attributes, seq)


def _cmd(cmd: int) -> bytes:
    return nl.nla(NFULA_CFG_CMD, bytes((cmd,)))


def pf_bind(family: int, seq: int = 0) -> bytes:
    """Make nfnetlink_log the system nf_log backend for ``family`` (the "group 0" mode)."""
    return config_msg(0, [_cmd(NFULNL_CFG_CMD_PF_BIND)], seq, family)


def pf_unbind(family: int, seq: int = 0) -> bytes:
    return config_msg(0, [_cmd(NFULNL_CFG_CMD_PF_UNBIND)], seq, family)


def group_bind(group: int, seq: int = 0) -> bytes:
    return config_msg(group, [_cmd(NFULNL_CFG_CMD_BIND)], seq)


def group_unbind(group: int, seq: int = 0) -> bytes:
    return config_msg(group, [_cmd(NFULNL_CFG_CMD_UNBIND)], seq)


def set_mode(group: int, mode: int = NFULNL_COPY_PACKET, copy_range: int = 0xFFFF, seq: int = 0) -> bytes:
    return config_msg(group, [nl.nla(NFULA_CFG_MODE, _MODE.pack(copy_range, mode))], seq)


def _u32_cfg(attr: int, group: int, value: int, seq: int) -> bytes:
    return config_msg(group, [nl.nla(attr, struct.pack("!I", value))], seq)


def set_nlbufsiz(group: int, size: int, seq: int = 0) -> bytes:
    return _u32_cfg(NFULA_CFG_NLBUFSIZ, group, size, seq)


def set_qthresh(group: int, qthresh: int, seq: int = 0) -> bytes:
    return _u32_cfg(NFULA_CFG_QTHRESH, group, qthresh, seq)


def set_timeout(group: int, timeout: int, seq: int = 0) -> bytes:
    """``timeout`` in 1/100 s."""
    return _u32_cfg(NFULA_CFG_TIMEOUT, group, timeout, seq)


def set_flags(group: int, flags: int, seq: int = 0) -> bytes:
    return config_msg(group, [nl.nla(NFULA_CFG_FLAGS, struct.pack("!H", flags))], seq)


_CFG_U32 = {NFULA_CFG_NLBUFSIZ: "nlbufsiz", NFULA_CFG_TIMEOUT: "timeout", NFULA_CFG_QTHRESH: "qthresh"}


def parse_config(msg: bytes) -> dict[str, Any]:
    """Decode a config request (what the kernel would see); for tests and tracing."""
    msgs, problem = nl.split(msg)
    if problem is not None or len(msgs) != 1:
        raise DecodeError(problem or f"{len(msgs)} messages, expected one")
    off, ln, typ, flags, seq, _pid = msgs[0]
    if typ != CONFIG_TYPE:
        raise DecodeError(f"netlink message type {typ:#x} is not an NFLOG config request")
    family, _version, group = nl.nfgen(msg, off, ln)
    out: dict[str, Any] = {"family": family, "group": group, "seq": seq, "flags": flags}
    for at, p, q in nl.attrs(msg, off + 20, off + ln):
        size = q - p
        if at == NFULA_CFG_CMD and size >= 1:
            out["cmd"] = msg[p]
        elif at == NFULA_CFG_MODE and size >= 5:
            out["copy_range"], out["mode"] = _MODE.unpack_from(msg, p)
        elif at in _CFG_U32 and size >= 4:
            out[_CFG_U32[at]] = _unpack_u32(msg, p)[0]
        elif at == NFULA_CFG_FLAGS and size >= 2:
            out["cfg_flags"] = _unpack_u16(msg, p)[0]
        else:
            raise DecodeError(f"bad config attribute type {at} of {size} bytes")
    return out
