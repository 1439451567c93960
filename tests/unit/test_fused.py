"""The fused NFCT → IP2STR → PRINTFLOW → LOGEMU stack (pyulogd.plugins.fused) writes exactly
what the unfused stack writes, for every kind of record, and leaves other stacks alone;
``[global] fusion=0`` turns it off."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyulogd.codec import nfct
from pyulogd.core.clock import FakeClock
from pyulogd.core.config import parse_text
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.daemon.service import Service
from pyulogd.io.loop import Loop
from pyulogd.plugins.filters.printflow import PrintflowFilter
from pyulogd.plugins.fused import FLOW_LINE
from tests.builders.nfct import Tuple, build_ct

T0 = 1795764190.0
VECTORS = Path(__file__).resolve().parents[2] / "tests/vectors/nfct"
STACK = "ct1:NFCT,ip2str1:IP2STR,print1:PRINTFLOW,emu1:LOGEMU"


class Clock(FakeClock):
    """Each reading of the wall clock is 0.37 s after the last: a new second every few
    events, so the head cache is exercised."""

    def __init__(self) -> None:
        super().__init__(wall=T0)

    def wall(self) -> float:
        self.advance(0.37)
        return super().wall()


def service(tmp: str, name: str, fuse: bool, stack: str = STACK, extra: str = "") -> Service:
    text = (f"[global]\nstack={stack}\nfusion={int(fuse)}\n[ct1]\nevent_mask=0x7\nhash_enable=0\n"
            f'[emu1]\nfile="{tmp}/{name}.log"\nsync=1\n{extra}')  # fmt: skip
    ctx = Context(loop=Loop(Clock()), hostname="vm")
    svc = Service(f"{tmp}/{name}.conf", ctx)
    svc.load_config(parse_text(text))
    for inst in svc.stacks[0].instances[1:]:
        inst.start()
        svc.started.append(inst)
    svc.sinks.append(svc.stacks[0].sink)
    return svc


def outputs(recs: list[list[Any]], extra: str = "", netns: str | None = None) -> tuple[str, str]:
    """The file each kind of stack writes for the same records (as the NFCT input emits them)."""
    with tempfile.TemporaryDirectory() as tmp:
        texts = []
        for name, fuse in (("plain", False), ("fused", True)):
            svc = service(tmp, name, fuse, extra=extra)
            src = svc.stacks[0].source
            if netns is not None:
                src.set_trailer([netns, None, None])
            assert svc.stacks[0].fused_by is (FLOW_LINE if fuse else None)
            assert svc.stacks[0].run.__qualname__.startswith("flow_line") == fuse
            for values in recs:
                src.emit(list(values))
            svc.flush()
            svc.stop()
            texts.append(Path(f"{tmp}/{name}.log").read_text())
        return texts[0], texts[1]


def test_golden_buffers_same_lines() -> None:
    recs = []
    for b in (VECTORS / "flow-json.buffers.hex").read_text().split():
        recs += nfct.parse_buffer(bytes.fromhex(b), T0).records
    plain, fused_text = outputs(recs)
    assert plain == fused_text and plain.count("\n") >= 18


ADDR4 = st.sampled_from([socket.inet_aton(a) for a in ("10.0.0.1", "192.0.2.7", "203.0.113.9")])
ADDR6 = st.sampled_from([socket.inet_pton(socket.AF_INET6, a) for a in ("fd00::1", "2001:db8::7")])
ODD = st.sampled_from([None, 0, -1, 2**64, "x", 1.5, b"\x01\x02\x03", True])


@st.composite
def records(draw: st.DrawFn) -> list[Any]:
    """A value list as NFCT emits it, valid or not: the fused path must fall back right."""
    v6 = draw(st.booleans())
    addr = ADDR6 if v6 else ADDR4
    proto = draw(st.sampled_from([6, 17, 6, 17, 1, 58, 132, 50]))
    sport, dport = draw(st.integers(0, 65535)), draw(st.integers(0, 65535))
    orig = Tuple(
        draw(addr),
        draw(addr),
        proto,
        sport if proto in (6, 17, 132) else None,
        dport if proto in (6, 17, 132) else None,
        8 if proto in (1, 58) else None,
        0 if proto in (1, 58) else None,
        7 if proto in (1, 58) else None,
    )
    reply = Tuple(draw(addr), orig.saddr, draw(st.sampled_from([proto, proto, 17])), orig.dport, orig.sport)
    counters = draw(st.none() | st.tuples(*[st.integers(0, 2**40)] * 4))
    msg = build_ct(
        draw(st.sampled_from([nfct.NEW, nfct.UPDATE, nfct.DESTROY])),
        orig,
        reply,
        counters=counters,
        ct_id=draw(st.integers(1, 2**32 - 1)),
    )
    values = nfct.decode(msg, T0)
    for _ in range(draw(st.integers(0, 2))):  # now and then a key invalid or of an odd type
        values[draw(st.integers(1, len(values) - 1))] = draw(ODD)
    return values


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), min_size=1, max_size=12))
def test_random_records_same_lines(recs: list[list[Any]]) -> None:
    plain, fused_text = outputs(recs)
    assert plain == fused_text


def test_netns_prefix_and_bad_address_same_lines() -> None:
    base = nfct.decode(
        build_ct(nfct.NEW, Tuple(socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2"), 6, 1, 2)), T0
    )
    odd = list(base)
    odd[1] = b"\x01\x02\x03"  # an address of no family: IP2STR leaves it without text
    recs = [base, odd, base]
    plain, fused_text = outputs(recs, extra="netns_prefix=1\n", netns="qrouter-1")
    assert plain == fused_text and plain.count("\n") == 3 and plain.count("[qrouter-1] ") == 3


def test_netns_names_are_escaped_as_unfused() -> None:
    base = nfct.decode(
        build_ct(nfct.NEW, Tuple(socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2"), 6, 1, 2)), T0
    )
    forged = "qtest-nl\nDec  7 00:00:00 fakehost FORGED: IN=eth0 SRC=6.6.6.6"
    plain, fused_text = outputs([base, base], extra="netns_prefix=1\n", netns=forged)
    assert plain == fused_text and plain.count("\n") == 2
    assert plain.count("[qtest-nl\\nDec  7 00:00:00 fakehost FORGED: IN=eth0 SRC=6.6.6.6] [NEW] ORIG: ") == 2


def test_other_stacks_are_not_fused() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        svc = service(tmp, "x", True, stack="ct1:NFCT,ip2str1:IP2STR,print1:PRINTFLOW,emu1:GPRINT")
        assert svc.stacks[0].fused_by is None
        assert svc.stacks[0].run.__qualname__ == "run"  # the generated straight-line code
        svc.stop()


def test_declared_by_printflow() -> None:
    """The core knows no plugin: PRINTFLOW declares the fusion, for exactly this stack."""
    assert FLOW_LINE in PrintflowFilter.fusions and FLOW_LINE.plugins == ("NFCT", "IP2STR", "PRINTFLOW", "LOGEMU")


def test_fusion_setting_is_strict() -> None:
    for bad in ("2", "yes", "on"):
        with pytest.raises(ConfigError, match=f"fusion needs 0 or 1, not '{bad}'") as ei:
            text = f"[global]\nstack={STACK}\nfusion={bad}\n"
            Service("t.conf", Context(loop=Loop())).load_config(parse_text(text, "t.conf"))
        assert (ei.value.file, ei.value.line) == ("t.conf", 3)
    with pytest.raises(ConfigError, match="'fusion' occurred more than once") as ei:
        text = f"[global]\nfusion=1\nstack={STACK}\nfusion=1\n"
        Service("t.conf", Context(loop=Loop())).load_config(parse_text(text, "t.conf"))
    assert ei.value.line == 4
