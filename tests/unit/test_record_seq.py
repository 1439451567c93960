"""Every event a source emits gets the next sequence number (``ctx.seq``), read by outputs at
interp time: one counter per daemon, whichever source and however many stacks."""

from __future__ import annotations

from typing import Any

from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.core.plugin import Source
from pyulogd.io.loop import Loop


class _Stack:
    def __init__(self, ctx: Context, seen: list[tuple[str, int]], name: str) -> None:
        self.tail: list[Any] = []
        self.ctx = ctx
        self.seen = seen
        self.name = name

    def run(self, rec: list[Any]) -> None:
        self.seen.append((self.name, self.ctx.seq))


def _source(ctx: Context, seen: list[tuple[str, int]], names: list[str]) -> Source:
    src = Source(ctx, "src", {})
    src.stacks = [_Stack(ctx, seen, n) for n in names]
    return src


def test_emit_and_emit_all_number_every_event_once() -> None:
    ctx = Context(loop=Loop(FakeClock()))
    seen: list[tuple[str, int]] = []
    one = _source(ctx, seen, ["a"])
    two = _source(ctx, seen, ["b", "c"])
    one.emit([None, 1])
    two.emit([None, 2])
    one.emit_all([[None, 3], [None, 4]])
    two.emit_all([[None, 5]])
    assert seen == [("a", 1), ("b", 2), ("c", 2), ("a", 3), ("a", 4), ("b", 5), ("c", 5)]
    assert ctx.seq == 5
