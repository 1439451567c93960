"""What a netlink receive buffer held besides records, counted and logged the same way by
every netlink input (NFLOG, NFCT, NFTRACE): written once here rather than in each plugin.

Bad input never crashes an input nor loses the other events of the buffer: the decoders
count what they skipped on their batch (``malformed`` with the first ``problem``, the errno
of each NLMSG_ERROR in ``errors``, messages of no interest in ``other``); :class:`BatchProblems`
adds them to ``<prefix>malformed``, ``<prefix>netlink_errors`` and ``<prefix>unexpected`` and
logs the first of a burst (then at most one line per 10 s, core/ratelimit.py).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Protocol

from pyulogd.core.ratelimit import Burst

if TYPE_CHECKING:
    from pyulogd.core.context import Context


class ProblemBatch(Protocol):
    """What a decoder's batch says about the messages it skipped (codec/netlink.py's Batch)."""

    malformed: int
    problem: str | None
    errors: list[int]
    other: int


class BatchProblems:
    """The accounting of one input instance: ``report(batch, now)`` after each buffer (only
    when the batch has a problem: callers test ``batch.malformed or batch.errors or
    batch.other`` first on their hot path, or call :meth:`check`)."""

    __slots__ = ("ctx", "who", "what", "malformed", "netlink_errors", "unexpected", "_bursts")

    def __init__(self, ctx: Context, who: str, prefix: str, what: str = "netlink") -> None:
        """``who``: the input as the log names it (``NFLOG 'log1'``); ``prefix``: of its
        counters (``nflog.log1.``); ``what``: the kind of message (``ctnetlink``)."""
        self.ctx = ctx
        self.who = who
        self.what = what
        self.malformed = prefix + "malformed"
        self.netlink_errors = prefix + "netlink_errors"
        self.unexpected = prefix + "unexpected"
        self._bursts = (Burst(), Burst())

    def check(self, batch: ProblemBatch, now: float) -> None:
        """:meth:`report` if the batch skipped anything."""
        if batch.malformed or batch.errors or batch.other:
            self.report(batch, now)

    def report(self, batch: ProblemBatch, now: float) -> None:
        stats, log = self.ctx.stats, self.ctx.log
        if batch.malformed:
            stats.incr(self.malformed, batch.malformed)
            n = self._bursts[0].due(now, batch.malformed)
            if n:
                log.notice(f"{self.who}: skipped {n} malformed {self.what} message(s) "
                           f"({stats.get(self.malformed)} in total), e.g.: {batch.problem}")
        if batch.errors:
            stats.incr(self.netlink_errors, len(batch.errors))
            n = self._bursts[1].due(now, len(batch.errors))
            if n:
                log.notice(f"{self.who}: netlink error message from the kernel: "
                           f"{os.strerror(batch.errors[0])} ({n} since last report)")
        if batch.other:
            stats.incr(self.unexpected, batch.other)
