"""NULL: takes every record and writes nothing, counting them (a pyulogd plugin; ulogd2 has none).

For tests and benchmarks: a stack ending in NULL costs its input and filters and no output
(``bench/``: the cost of decoding alone), and a test can end a stack it only wants to feed
(a shared input, a filter under test) without a file or a socket. The records are counted,
``null.<id>.records`` (in the counters at exit), when each round of the loop ends.

Written as docs/plugin-howto.md says, to prove it: one file with the plugin and its sink, a
unit test (tests/unit/test_null.py), a case folder (tests/cases/NULL/), the generated entry of
docs/plugins.md and a CHANGELOG line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyulogd.core.plugin import OK, DataType
from pyulogd.io.output import Output
from pyulogd.io.sink import LineSink, SinkCounters

if TYPE_CHECKING:
    from pyulogd.core.context import Context


class NullSink:
    """A :class:`~pyulogd.io.sink.LineSink` that drops every line: ``add`` only counts, and
    ``flush`` adds the round's count to ``records_name`` and to ``counters.written`` (nowhere
    is a destination that takes everything)."""

    def __init__(self, ctx: Context, records_name: str) -> None:
        self.ctx = ctx
        self.records_name = records_name
        self.counters = SinkCounters()
        self.waiting = 0

    def open(self) -> None:
        """Nothing to open."""

    def add(self, line: Any) -> None:
        self.waiting += 1

    def flush(self) -> None:
        n = self.waiting
        if n:
            self.waiting = 0
            self.counters.received += n
            self.counters.written += n
            self.ctx.stats.incr(self.records_name, n)

    def reopen(self) -> None:
        self.flush()

    def close(self) -> None:
        self.flush()


class NullOutput(Output[Any]):
    name = "NULL"
    description = "Discards every record, counting them (null.<id>.records): for tests and benchmarks"
    input_type = DataType.RAW | DataType.PACKET | DataType.FLOW | DataType.SUM

    def make_sink(self) -> NullSink:
        return NullSink(self.ctx, f"null.{self.id}.records")

    def attach(self, out: LineSink[Any]) -> None:
        super().attach(out)
        assert isinstance(out, NullSink)
        self._sink = out

    def render(self, rec: list[Any]) -> Any:
        """The record itself: nothing is made of it."""
        return rec

    def interp(self, rec: list[Any]) -> int:
        """``add(render(rec))`` as one call: the sink only counts, and NULL stands for "no
        output" in the benchmarks (bench/ipfix_bench.py: the decoding alone), so it should
        cost as near nothing as a plugin can."""
        self._sink.waiting += 1
        return OK
