"""NULL: every record taken, nothing written, each counted once per loop round."""

from __future__ import annotations

import signal
from pathlib import Path

from pyulogd.core import registry
from pyulogd.core.config import parse_text
from pyulogd.core.context import Context
from pyulogd.core.plugin import DataType, Key, KeyType, Source
from pyulogd.daemon.service import Service
from pyulogd.io.loop import Loop
from pyulogd.plugins.outputs.null import NullOutput
from tests.helpers import make_stack, stop_stack


class CountSource(Source):
    name = "COUNTSRC"
    output_type = DataType.PACKET
    output_keys = (Key("oob.prefix", KeyType.STRING),)

    def push(self, prefix: str) -> None:
        self.emit([None, prefix])


def test_declarations() -> None:
    assert NullOutput.name == "NULL" and NullOutput.so_name == ""  # ulogd2 has no NULL
    assert NullOutput.options == () and NullOutput.input_keys == ()


def test_counts_each_record_when_the_round_ends(tmp_path: Path) -> None:
    ctx = Context(loop=Loop())
    stack = make_stack([CountSource, NullOutput], ctx)
    for i in range(5):
        stack.source.push(f"p{i}")
    assert ctx.stats.get("null.null1.records") == 0  # counted at flush, not per record
    stack.sink.flush()
    assert ctx.stats.get("null.null1.records") == 5
    stack.source.push("late")
    stack.sink.signal(signal.SIGHUP)  # nothing to reopen: the round's count goes in
    stack.source.push("last")
    stop_stack(stack)
    assert ctx.stats.get("null.null1.records") == 7
    assert stack.sink.counters.snapshot() == {"received": 7, "written": 7}
    assert stack.errors == 0
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere


def test_stop_without_start() -> None:
    out = NullOutput(Context(loop=Loop()), "null1", {})
    out.stop()
    out.stop()


def test_from_a_config_beside_another_stack(tmp_path: Path) -> None:
    """As a config uses it: a stack sharing an input with a NULL one gets every record, and the
    counters at exit say how many NULL took."""
    text = "[global]\nstack=src1:COUNTSRC,null1:NULL\nstack=src1:COUNTSRC,null2:NULL\n"
    registry.register(CountSource)
    try:
        ctx = Context(loop=Loop())
        ctx.log.set_destination(str(tmp_path / "ulogd.log"))
        svc = Service(str(tmp_path / "u.conf"), ctx)
        svc.load_config(parse_text(text))
        svc.start()
        source = svc.stacks[0].source
        assert isinstance(source, CountSource) and source is svc.stacks[1].source
        for i in range(3):
            source.push(f"p{i}")
        svc.flush()
        svc.stop()
    finally:
        registry.unregister("COUNTSRC")
    assert ctx.stats.get("null.null1.records") == 3 and ctx.stats.get("null.null2.records") == 3
    assert "null.null1.records=3" in (tmp_path / "ulogd.log").read_text()
