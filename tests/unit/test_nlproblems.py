"""io/nlproblems.py: what a netlink buffer held besides records, counted by cause and logged
once per burst (then at most once per 10 s), the same for NFLOG, NFCT and NFTRACE."""

from __future__ import annotations

import errno
import io

from pyulogd.codec.netlink import Batch
from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.io.loop import Loop
from pyulogd.io.nlproblems import BatchProblems


def batch(malformed: int = 0, errors: tuple[int, ...] = (), other: int = 0) -> Batch:
    b = Batch()
    for _ in range(malformed):
        b._bad("attribute 3 too short")
    b.errors.extend(errors)
    b.other = other
    return b


def test_counts_by_cause_and_logs_once_per_burst() -> None:
    ctx = Context(loop=Loop(FakeClock()))
    ctx.log.stream = io.StringIO()
    ctx.log.path = "test"
    p = BatchProblems(ctx, "NFCT 'ct1'", "nfct.ct1.", "ctnetlink")
    p.check(batch(), 100.0)  # nothing skipped: nothing counted, nothing said
    assert ctx.stats.snapshot() == {}
    p.check(batch(malformed=2, errors=(errno.ENOBUFS,), other=3), 100.0)
    p.report(batch(malformed=1, errors=(errno.EPERM, errno.EPERM)), 105.0)  # within 10 s: counted, quiet
    p.report(batch(malformed=4), 111.0)
    stats = ctx.stats
    assert stats.get("nfct.ct1.malformed") == 7 and stats.get("nfct.ct1.netlink_errors") == 3
    assert stats.get("nfct.ct1.unexpected") == 3
    lines = ctx.log.stream.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert "NFCT 'ct1': skipped 2 malformed ctnetlink message(s) (2 in total), e.g.: attribute 3 too short" in lines[0]
    assert "NFCT 'ct1': netlink error message from the kernel: No buffer space available (1 since" in lines[1]
    assert "skipped 5 malformed ctnetlink message(s) (7 in total)" in lines[2]  # the 1 held back, and 4
