"""Stack wiring: key resolution to the nearest producer, shared inputs, wildcard outputs, errors;
``wire()`` on its own; fusion declared by a plugin; the generated ``run`` against its loop."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyulogd.core import registry
from pyulogd.core.config import parse_text
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.core.plugin import (
    ERR,
    OK,
    STOP,
    DataType,
    Filter,
    Fusion,
    Key,
    KeyType,
    Option,
    OptionType,
    Plugin,
    Run,
    Sink,
    Source,
)
from pyulogd.core.stack import Stack, wire
from pyulogd.daemon.service import Service
from pyulogd.io.loop import Loop


class TSrc(Source):
    name = "TSRC"
    output_type = DataType.RAW
    options = (Option("value", OptionType.INT, 7),)
    output_keys = (Key("a", KeyType.UINT32), Key("b", KeyType.UINT32), Key("s", KeyType.STRING))

    def push(self, a: int | None, b: int | None, s: str | None = "x") -> None:
        self.emit([None, a, b, s])


class TShadow(Filter):
    """Re-emits ``b`` (shadowing the source's), and adds ``c`` = a + b."""

    name = "TSHADOW"
    input_type = DataType.RAW
    output_type = DataType.PACKET
    input_keys = (Key("a", KeyType.UINT32), Key("b", KeyType.UINT32), Key("zz", KeyType.UINT32, optional=True))
    output_keys = (Key("b", KeyType.UINT32), Key("c", KeyType.UINT32))

    def interp(self, rec: list[Any]) -> int:
        a, b, zz = (rec[s] for s in self.in_slots)
        assert zz is None
        if a is None:
            return ERR
        if a == 0:
            return STOP
        if a == 99:
            raise RuntimeError("plugin bug")
        if b is not None and b > 100:
            rec[self.out_base] = b  # leave it invalid otherwise: the shadow must still win
        rec[self.out_base + 1] = a + (b or 0)
        return OK


class TCollect(Sink):
    name = "TCOLLECT"
    input_type = DataType.PACKET | DataType.RAW
    wildcard_inputs = True
    options = (Option("tag", OptionType.STRING, ""),)

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.rows: list[list[tuple[str, Any]]] = []

    def interp(self, rec: list[Any]) -> int:
        self.rows.append([(k.name, rec[s]) for k, s in zip(self.wildcard_keys, self.in_slots, strict=True)])
        return OK


class TNeed(Sink):
    name = "TNEED"
    input_type = DataType.PACKET
    input_keys = (Key("c", KeyType.UINT32), Key("missing", KeyType.UINT32))

    def interp(self, rec: list[Any]) -> int:
        return OK


@pytest.fixture(autouse=True)
def plugins() -> Iterator[None]:
    for cls in (TSrc, TShadow, TCollect, TNeed):
        registry.register(cls)
    yield
    for cls in (TSrc, TShadow, TCollect, TNeed):
        registry.unregister(cls.name)


def service(text: str) -> Service:
    svc = Service("t.conf", Context(loop=Loop()))
    svc.load_config(parse_text(text, "t.conf"))
    return svc


def test_wildcard_order_and_nearest_producer() -> None:
    svc = service("[global]\nstack=s1:TSRC,f1:TSHADOW,c1:TCOLLECT\n")
    src = svc.stacks[0].source
    sink = svc.stacks[0].sink
    assert isinstance(src, TSrc) and isinstance(sink, TCollect)
    src.push(1, 2)
    src.push(3, 200)
    # Both "b" keys resolve to the filter's b, which it left invalid for the first record.
    assert sink.rows[0] == [("a", 1), ("b", None), ("s", "x"), ("b", None), ("c", 3)]
    assert sink.rows[1] == [("a", 3), ("b", 200), ("s", "x"), ("b", 200), ("c", 203)]


def test_stop_err_and_exception_do_not_escape() -> None:
    svc = service("[global]\nstack=s1:TSRC,f1:TSHADOW,c1:TCOLLECT\n")
    src = svc.stacks[0].source
    sink = svc.stacks[0].sink
    assert isinstance(src, TSrc) and isinstance(sink, TCollect)
    src.push(0, 1)  # STOP: silently dropped for this stack
    src.push(None, 1)  # ERR
    src.push(99, 1)  # exception inside a plugin
    src.push(5, 1)
    assert [r[0] for r in sink.rows] == [("a", 5)]
    assert svc.stacks[0].errors == 2
    assert svc.ctx.stats.get("stack.c1.errors") == 2


def test_shared_input_feeds_every_stack() -> None:
    svc = service(
        "[global]\nstack=s1:TSRC,f1:TSHADOW,c1:TCOLLECT\nstack=s1:TSRC,c2:TCOLLECT\n[c2]\ntag=two\n"
    )
    assert svc.stacks[0].source is svc.stacks[1].source
    src = svc.stacks[0].source
    assert isinstance(src, TSrc)
    src.push(4, 5)
    rows = [s.sink.rows for s in svc.stacks]  # type: ignore[attr-defined]
    assert rows[0][0][-1] == ("c", 9)
    assert rows[1] == [[("a", 4), ("b", 5), ("s", "x")]]
    assert svc.stacks[1].sink.config["tag"] == "two"


def test_missing_key_refused_with_line() -> None:
    with pytest.raises(ConfigError) as ei:
        service("[global]\n\nstack=s1:TSRC,f1:TSHADOW,n1:TNEED\n")
    assert ei.value.line == 3 and "missing" in ei.value.reason


@pytest.mark.parametrize(
    ("stack", "reason"),
    [
        ("f1:TSHADOW,c1:TCOLLECT", "first plugin in stack has to be source"),
        ("s1:TSRC,f1:TSHADOW", "last plugin in stack has to be output"),
        ("s1:TSRC,x1:NOPE,c1:TCOLLECT", "can't find requested plugin NOPE"),
        ("s1:TSRC,c1", "syntax error"),
        ("s1:TSRC", "needs an input and an output"),
        ("s1:TSRC,x:ULOG", "ULOG is not supported"),
    ],
)
def test_bad_stacks(stack: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        service(f"[global]\nstack={stack}\n")


@pytest.mark.parametrize(
    ("stack", "reason"),
    [
        ("s1:TSRC,,c1:TCOLLECT", "stack element 2 is empty"),
        ("s1:TSRC,c1:TCOLLECT,", "stack element 3 is empty"),
        (",s1:TSRC,c1:TCOLLECT", "stack element 1 is empty"),
        ("s1:TSRC,f1:TSHADOW,f1:TSHADOW,c1:TCOLLECT", "instance id 'f1' appears twice"),
        ("s1:TSRC,f1:TSHADOW,f1:TCOLLECT", "instance id 'f1' appears twice"),
        ("s1:TSRC,s1:TCOLLECT", "instance id 's1' appears twice"),
    ],
)
def test_empty_elements_and_repeated_ids_refused_with_file_and_line(stack: str, reason: str) -> None:
    """ulogd2 2.0.8 skips empty elements and builds two instances of a repeated id (both read the
    one [section]); both are typos, refused."""
    with pytest.raises(ConfigError, match=reason) as ei:
        service(f"[global]\nloglevel=5\nstack={stack}\n")
    assert (ei.value.file, ei.value.line) == ("t.conf", 3)
    assert str(ei.value).startswith("t.conf:3: ")


def test_an_id_may_repeat_across_stacks() -> None:
    svc = service("[global]\nstack=s1:TSRC,c1:TCOLLECT\nstack=s1:TSRC,c1:TCOLLECT\n")
    assert len(svc.stacks) == 2 and svc.stacks[0].source is svc.stacks[1].source


def test_global_checks() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'rmem'") as ei:
        service("[global]\nrmem=1\nstack=s1:TSRC,c1:TCOLLECT\n")
    assert ei.value.line == 2
    with pytest.raises(ConfigError, match="not even a single"):
        service("[global]\nloglevel=1\n")
    with pytest.raises(ConfigError, match="unknown plugin file 'ulogd_output_FOO.so'"):
        service('[global]\nplugin="/x/ulogd_output_FOO.so"\nstack=s1:TSRC,c1:TCOLLECT\n')
    with pytest.raises(ConfigError, match="unknown option 'bogus'") as ei:
        service("[global]\nstack=s1:TSRC,c1:TCOLLECT\n[s1]\nbogus=1\n")
    assert ei.value.line == 4


def test_plugin_lines_limit_available_plugins() -> None:
    # A plugin= line for a ulogd2 plugin not implemented yet is accepted (Debian's conf lists them).
    text = '[global]\nplugin="/usr/lib/x86_64-linux-gnu/ulogd/ulogd_output_GRAPHITE.so"\nstack=s1:TSRC,c1:TCOLLECT\n'
    with pytest.raises(ConfigError, match="TSRC is not loaded"):
        service(text)


def test_switches_in_global() -> None:
    svc = service("[global]\nrecvmmsg=0\nstack=s1:TSRC,c1:TCOLLECT\n")
    assert (svc.ctx.fusion, svc.ctx.recvmmsg) == (True, False)
    svc = service("[global]\nfusion=1\nrecvmmsg=1\nstack=s1:TSRC,c1:TCOLLECT\n")
    assert (svc.ctx.fusion, svc.ctx.recvmmsg) == (True, True)
    with pytest.raises(ConfigError, match="recvmmsg needs 0 or 1, not 'no'") as ei:
        service("[global]\nstack=s1:TSRC,c1:TCOLLECT\nrecvmmsg=no\n")
    assert ei.value.line == 3


# -- wire(): what build_stack does after reading the line, on instances of one's own


class TCount(Source):
    """Counts configure() calls (a shared input is configured once)."""

    name = "TCOUNT"
    output_keys = (Key("a", KeyType.UINT32), Key("b", KeyType.UINT32))

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.configured = 0

    def configure(self) -> None:
        self.configured += 1


class TBadOption(Sink):
    name = "TBADOPTION"
    wildcard_inputs = True

    def configure(self) -> None:
        raise ConfigError("no good", line=self.config["line"])

    def interp(self, rec: list[Any]) -> int:
        return OK


def test_wire_shares_an_input_and_resolves_keys() -> None:
    ctx = Context(loop=Loop())
    src = TCount(ctx, "s", {})
    one = wire(ctx, [src, TShadow(ctx, "f", {}), TCollect(ctx, "c", {"tag": ""})], spec="one")
    two = wire(ctx, [src, TCollect(ctx, "c2", {"tag": ""})], spec="two")
    assert src.configured == 1 and src.stacks == [one, two] and (one.spec, two.spec) == ("one", "two")
    shadow = one.instances[1]
    assert shadow.in_slots == [1, 2, 0]  # zz: optional, produced by none
    # The wildcard sink: a and b of the input, b and c of the filter; both b are the filter's.
    assert one.instances[2].in_slots == [1, shadow.out_base, shadow.out_base, shadow.out_base + 1]
    src.emit([None, 5, 1])
    assert one.sink.rows == [[("a", 5), ("b", None), ("b", None), ("c", 6)]]  # type: ignore[attr-defined]
    assert two.sink.rows == [[("a", 5), ("b", 1)]]  # type: ignore[attr-defined]


def test_wire_errors_name_path_and_line() -> None:
    ctx = Context(loop=Loop())
    with pytest.raises(ConfigError, match="cannot find key 'missing' in stack") as ei:
        wire(ctx, [TSrc(ctx, "s", {}), TShadow(ctx, "f", {}), TNeed(ctx, "n", {})], path="x.conf", line=7)
    assert (ei.value.file, ei.value.line) == ("x.conf", 7)
    for own, where in ((None, 7), (12, 12)):  # a plugin's own line (its section) wins
        with pytest.raises(ConfigError, match="no good") as ei:
            wire(ctx, [TSrc(ctx, "s", {}), TBadOption(ctx, "b", {"line": own})], path="x.conf", line=7)
        assert (ei.value.file, ei.value.line) == ("x.conf", where)


# -- fusion: declared by a plugin, applied by the daemon after wiring


def _plus_one(stack: Stack) -> Run | None:
    """A fused run that adds 1 to ``a`` and then runs the plugins' own run."""
    general = stack.run

    def run(rec: list[Any]) -> None:
        rec[1] += 1
        general(rec)

    return run


def _declines(stack: Stack) -> Run | None:
    return None


class TFused(TShadow):
    name = "TFUSED"
    fusions = (
        Fusion(("TSRC", "TFUSED", "TNEED"), _plus_one),  # another stack
        Fusion(("TSRC", "TFUSED", "TCOLLECT"), _declines),  # this one, but it says no
        Fusion(("TSRC", "TFUSED", "TCOLLECT"), _plus_one),
    )


def test_fusion_declared_by_a_plugin() -> None:
    registry.register(TFused)
    try:
        svc = service("[global]\nstack=s1:TSRC,f1:TFUSED,c1:TCOLLECT\nstack=s1:TSRC,f2:TFUSED,f3:TSHADOW,c2:TCOLLECT\n")
        off = service("[global]\nfusion=0\nstack=s1:TSRC,f1:TFUSED,c1:TCOLLECT\n")
    finally:
        registry.unregister(TFused.name)
    fused, other = svc.stacks
    assert fused.fused_by is TFused.fusions[2] and other.fused_by is None and off.stacks[0].fused_by is None
    for s in (svc, off):
        src = s.stacks[0].source
        assert isinstance(src, TSrc)
        src.push(1, 2)
    assert fused.sink.rows[0][0] == ("a", 2)  # type: ignore[attr-defined]
    assert off.stacks[0].sink.rows[0][0] == ("a", 1)  # type: ignore[attr-defined]


# -- the generated run() against the loop it unrolls

ACTIONS = ("ok", "stop", "err", "odd", "raise")


class TPlan(Source):
    name = "TPLAN"
    output_keys = (Key("plan", KeyType.RAW),)


class TStep(Filter):
    """Does what the record's plan says for its position; keeps a trace."""

    name = "TSTEP"
    input_keys = (Key("plan", KeyType.RAW),)

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.pos = int(self.config["pos"])
        self.trace: list[int] = self.config["trace"]

    def interp(self, rec: list[Any]) -> int:
        act = rec[self.in_slots[0]][self.pos]
        self.trace.append(self.pos)
        if act == "raise":
            raise ValueError(self.pos)
        return {"ok": OK, "stop": STOP, "err": ERR, "odd": 7}[act]


class TStepSink(Sink, TStep):  # type: ignore[misc]
    name = "TSTEPSINK"


def _reference(stack: Stack, rec: list[Any]) -> None:
    """The generic propagation loop ``run`` is compiled from."""
    try:
        for interp in stack.chain:
            r = interp(rec)
            if r:
                stack.on_return(r)
                return
    except Exception as e:
        stack.on_exception(e)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5).flatmap(lambda n: st.lists(st.tuples(*[st.sampled_from(ACTIONS)] * n), max_size=20)))
def test_generated_run_is_the_loop(plans: list[tuple[str, ...]]) -> None:
    n = len(plans[0]) if plans else 1
    results = []
    for how in ("generated", "reference"):
        ctx = Context(loop=Loop())
        ctx.log.level = 9  # quiet
        trace: list[int] = []
        steps: list[Plugin] = [TStep(ctx, f"f{i}", {"pos": i, "trace": trace}) for i in range(n - 1)]
        sink = TStepSink(ctx, "out", {"pos": n - 1, "trace": trace})
        stack = wire(ctx, [TPlan(ctx, "in", {}), *steps, sink])
        for plan in plans:
            rec = [None, plan, *stack.tail]
            stack.run(rec) if how == "generated" else _reference(stack, rec)
            trace.append(-1)
        results.append((trace, stack.errors, ctx.stats.snapshot()))
    assert results[0] == results[1]
