"""IPFIXIN's fast paths against their generic ones.

* The fast template decoders (``compile_template(fast=True)``: unread fields skipped, lengths
  checked once per record, cached texts, inlined time arithmetic) against the plain ones
  (every field read and checked in turn), on random templates and random sets, well-formed,
  cut short, with bytes of no meaning after the set's end, or cut in a length prefix: the same
  records, or both refuse the set.
* The collector with fast decoders against the collector with plain ones, on every captured
  message of the shared samples (records and counters equal).
* The UDP reader with ``recvmmsg`` (source addresses from the message headers) against the
  reader with one ``recvfrom`` per datagram, on a real loopback socket: the same records,
  from IPv4 and IPv6 exporters, denied sources counted alike.
"""

from __future__ import annotations

import re
import socket
import struct
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyulogd.codec.ipfixin import keys as K
from pyulogd.codec.ipfixin import template as T
from pyulogd.codec.ipfixin.collector import Collector
from pyulogd.codec.ipfixin.iana import PEN_REVERSE, PEN_VMWARE
from pyulogd.codec.ipfixin.template import VARLEN, Field, compile_template
from pyulogd.core.errors import DecodeError
from pyulogd.io import mmsg
from pyulogd.plugins.inputs.ipfixin import IpfixinInput
from tests.clocked import fake_context, loop_until
from tests.helpers import Capture, make_stack, stop_stack

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "ipfix"
REFUSED = (DecodeError, struct.error, IndexError, ValueError, OverflowError)

# Elements worth mixing: every named key with its right length and a wrong one, the time
# encodings, strings, biflow and Open vSwitch elements, padding, signed, float, unknown.
POOL = [
    (0, 8, 4), (0, 12, 4), (0, 8, 2), (0, 27, 16), (0, 28, 16), (0, 4, 1), (0, 7, 2), (0, 11, 2), (0, 11, 4),
    (0, 1, 8), (0, 1, 4), (0, 2, 8), (0, 85, 8), (0, 86, 4), (PEN_REVERSE, 1, 8), (PEN_REVERSE, 2, 4),
    (0, 138, 4), (0, 61, 1), (0, 136, 1), (0, 6, 2), (0, 10, 4), (0, 14, 4), (0, 58, 2), (0, 243, 2),
    (0, 56, 6), (0, 80, 6), (0, 56, 4), (0, 82, VARLEN), (0, 83, VARLEN), (0, 82, 8),
    (PEN_VMWARE, 891, 1), (PEN_VMWARE, 892, VARLEN), (PEN_VMWARE, 892, 3), (PEN_VMWARE, 893, 4),
    (PEN_VMWARE, 894, 4), (PEN_VMWARE, 898, VARLEN), (0, 176, 1), (0, 177, 1), (0, 178, 1), (0, 179, 1),
    (0, 32, 2), (0, 139, 2), (0, 156, 8), (0, 157, 8), (0, 154, 8), (0, 155, 8), (0, 152, 8), (0, 153, 8),
    (0, 152, 4), (0, 150, 4), (0, 151, 8), (0, 22, 4), (0, 21, 4), (0, 158, 4), (0, 159, 4), (0, 323, 8),
    (0, 160, 8), (0, 210, 3), (0, 210, VARLEN), (0, 4, 3), (0, 200, 1), (0, 433, 4), (0, 433, 8),
    (0, 239, 1), (0, 9999, 5), (0, 9999, VARLEN), (12345, 1, 4), (0, 18, 4), (0, 225, 4), (0, 226, 2),
]  # fmt: skip


@st.composite
def templates(draw: Any) -> tuple[int, tuple[Field, ...], bool, bool, bool]:
    fields = tuple(Field(*f) for f in draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=14)))
    version = 10 if any(f.length == VARLEN for f in fields) else draw(st.sampled_from([9, 10]))
    return version, fields, draw(st.booleans()), draw(st.booleans()), draw(st.booleans())


@st.composite
def sets(draw: Any, fields: tuple[Field, ...]) -> bytes:
    """Records of ``fields``, each variable-length field of a drawn length (1- or 3-byte prefix)."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 3))):
        for f in fields:
            if f.length == VARLEN:
                n = draw(st.sampled_from([0, 1, 4, 6, 16, 300]))
                long = n >= 255 or draw(st.booleans())
                out += (b"\xff" + n.to_bytes(2, "big")) if long else bytes([n])
                if n <= 16:
                    out += draw(st.binary(min_size=n, max_size=n))
                else:
                    out += draw(st.binary(min_size=1, max_size=1)) * n
            elif f.length in EDGES and draw(st.booleans()):
                out += draw(st.sampled_from(EDGES[f.length])).to_bytes(f.length, "big")
            else:
                out += draw(st.binary(min_size=f.length, max_size=f.length))
    return bytes(out)


# Values where time arithmetic turns (the 2^32-second limit, NTP eras, sign of a delta).
_W = 1 << 32
EDGES = {
    8: [0, _W * 1000 - 1, _W * 1000, _W * 1000 + 999, _W * 1_000_000, (_W - 1) << 32, 0x80000000 << 32,
        (2208988800 << 32) | 0xFFFFFFFF, 2**64 - 1, 2**63],
    4: [0, 1, _W - 1, 1_700_000_000, 0x80000000, 999_999, 1_000_000],
}  # fmt: skip


def outcome(decode: Any, data: bytes, off: int, end: int, boot: int | None, etime: int) -> str:
    try:
        return repr(decode(data, off, end, "192.0.2.1:4739", 7, etime, boot))  # repr: NaN equals NaN
    except REFUSED:
        return "refused"


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fast_decoders_equal_plain_ones(data: Any) -> None:
    version, fields, options, extra, icmp = data.draw(templates())
    try:
        plain = compile_template(version, 300, fields, options=options, extra=extra, icmp_in_port=icmp, fast=False)
    except DecodeError:
        return
    fast = compile_template(version, 300, fields, options=options, extra=extra, icmp_in_port=icmp)
    body = data.draw(sets(fields))
    head = data.draw(st.binary(max_size=5))
    tail = data.draw(st.binary(max_size=40))  # what follows the set in the message
    cut = data.draw(st.integers(0, 12))  # the set's end, before the records' end
    buf = head + body + tail
    off = len(head)
    boot = data.draw(st.sampled_from([None, 0, 1_700_000_000_000]))
    etime = data.draw(st.sampled_from([0, 1, 1_700_000_000, 0xFFFFFFFF]))
    for end in {off + len(body), max(off, off + len(body) - cut), len(buf)}:
        assert outcome(fast.decode, buf, off, end, boot, etime) == outcome(plain.decode, buf, off, end, boot, etime), (
            fast.source
        )


def test_fast_decoder_reads_only_what_keys_take() -> None:
    """With no ipfix.extra, an Open vSwitch-like template's unread fields are pad bytes."""
    fields = (Field(0, 8, 4), Field(0, 83, VARLEN), Field(0, 160, 8), Field(0, 12, 4), Field(0, 82, VARLEN))
    fast = compile_template(10, 256, fields, extra=False)
    assert not re.search(r"\bf[12]\b", fast.source) and "_NM[f4]" in fast.source  # never read, never named
    rec = b"\x0a\x00\x00\x01" + b"\x03abc" + bytes(8) + b"\x0a\x00\x00\x02" + b"\x03br0"
    [values] = fast.decode(rec, 0, len(rec), "e", 1, 0, None)
    assert values[K.IDX["orig.ip.daddr"]] == b"\x0a\x00\x00\x02" and values[K.IDX["ipfix.in_ifname"]] == "br0"
    try:
        fast.decode(rec, 0, len(rec) - 1, "e", 1, 0, None)
        raise AssertionError("a record cut short must be refused")
    except REFUSED:
        pass



def test_guessed_lengths_equal_plain_reading() -> None:
    """Variable-length templates read a record with one struct when its lengths are those of
    the record read before (the guess): records of the guessed lengths, of others, with a long
    (3-byte) prefix, and the set cut at every byte give what the plain decoder gives."""
    fields = (Field(0, 8, 4), Field(0, 82, VARLEN), Field(0, 2, 8), Field(0, 83, VARLEN), Field(0, 12, 4),
              Field(0, 82, VARLEN), Field(0, 136, 1))  # fmt: skip

    def rec(a: bytes, b: bytes, c: bytes, n: int, long: bool = False) -> bytes:
        pre = (lambda x: b"\xff" + len(x).to_bytes(2, "big")) if long else (lambda x: bytes([len(x)]))
        return (b"\x0a\x00\x00\x01" + pre(a) + a + n.to_bytes(8, "big") + pre(b) + b + b"\x0a\x00\x00\x02"
                + pre(c) + c + bytes([n % 7]))  # fmt: skip

    same = [rec(b"eth0", b"", b"vm1", n) for n in range(3)]
    body = b"".join([*same, rec(b"br-int", b"x", b"", 3), *same, rec(b"eth0", b"", b"vm1", 4, long=True), *same])
    for extra in (True, False):
        T._cache.clear()
        plain = compile_template(10, 301, fields, extra=extra, fast=False)
        fast = compile_template(10, 301, fields, extra=extra)
        assert "gu(data, off)" in fast.source
        whole = fast.decode(body, 0, len(body), "e", 1, 0, None)
        assert len(whole) == 3 * len(same) + 2 and whole == plain.decode(body, 0, len(body), "e", 1, 0, None)
        for end in range(len(body) + 1):
            assert outcome(fast.decode, body, 0, end, None, 0) == outcome(plain.decode, body, 0, end, None, 0), end


def _messages() -> list[tuple[str, list[bytes]]]:
    out = []
    for p in sorted(VECTORS.glob("**/*.hexlog")):
        out.append((p.name, [bytes.fromhex(line.split()[3]) for line in p.read_text().splitlines()]))
    return out


def test_collector_fast_and_plain_decoders_agree_on_the_samples(monkeypatch: Any) -> None:
    files = _messages()
    assert len(files) >= 5

    def run(fast: bool) -> list[tuple[str, str, dict[str, int]]]:
        T._cache.clear()
        real = T.compile_template

        def compile_(*a: Any, **kw: Any) -> Any:
            return real(*a, **kw, fast=fast)

        monkeypatch.setattr("pyulogd.codec.ipfixin.collector.compile_template", compile_)
        got = []
        for name, msgs in files:
            for extra in (True, False):
                c = Collector(extra=extra, emit_options=True)
                recs = [r for m in msgs for r in c.feed(m, "192.0.2.9", 4739, 0.0)]
                got.append((name, repr(recs), dict(c.counts)))
        return got

    assert run(True) == run(False)


# -- the socket: recvmmsg against recvfrom


def _read_all(use_mmsg: bool, family: int) -> tuple[str, dict[str, int]]:
    """Open vSwitch's captured export (templates, options, data) with malformed messages among
    it, from one exporter, read by the socket reader with or without recvmmsg."""
    from tests.unit.test_ipfixin_codec import MALFORMED

    ctx = fake_context(wall=1_800_000_000.0)[0]
    ctx.recvmmsg = use_mmsg
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    stack = make_stack([(IpfixinInput, {"port": 0, "host": host}), Capture], ctx)
    src = stack.source
    assert isinstance(src, IpfixinInput) and isinstance(stack.sink, Capture)
    try:
        msgs = [bytes.fromhex(line.split()[3]) for line in
                (VECTORS / "ovs-bridge" / "ovs-bridge.hexlog").read_text().splitlines()]  # fmt: skip
        msgs[40:40] = list(MALFORMED.values())
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
            exporter_port = s.getsockname()[1]
            for m in msgs:
                s.sendto(m, (host, src.port))
        stat = f"ipfixin.{src.id}."
        loop_until(ctx, lambda: ctx.stats.get(stat + "messages") + ctx.stats.get(stat + "malformed") >= len(msgs))
        text = repr(stack.sink.records).replace(f":{exporter_port}'", ":PORT'")  # ports differ between runs
        assert ":PORT'" in text
        counts = {k: v for k, v in ctx.stats.snapshot().items() if k.startswith("ipfixin.")}
        return text, counts
    finally:
        stop_stack(stack)


def test_recvmmsg_reader_equals_recvfrom_reader() -> None:
    if mmsg.shared_udp() is None:
        return  # no recvmmsg here: the plain reader is the only one
    for family in (socket.AF_INET, socket.AF_INET6):
        fast, fast_counts = _read_all(True, family)
        plain, plain_counts = _read_all(False, family)
        assert fast == plain
        assert fast_counts == plain_counts and 5 in [v for k, v in fast_counts.items() if k.endswith(".malformed")]


def test_recvmmsg_reader_counts_denied_sources() -> None:
    if mmsg.shared_udp() is None:
        return
    ctx = fake_context(wall=1_800_000_000.0)[0]
    stack = make_stack([(IpfixinInput, {"port": 0, "exporters": "192.0.2.0/24", "host": "127.0.0.1"}), Capture],
                       ctx)  # fmt: skip
    src = stack.source
    assert isinstance(src, IpfixinInput)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(5):
                s.sendto(b"\x00\x0a\x00\x10" + bytes(12), ("127.0.0.1", src.port))
        loop_until(ctx, lambda: ctx.stats.get(f"ipfixin.{src.id}.denied") == 5)
        assert ctx.stats.get(f"ipfixin.{src.id}.messages") == 0
    finally:
        stop_stack(stack)
