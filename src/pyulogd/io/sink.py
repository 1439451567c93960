"""Where an output's records go: the one interface every transport implements.

An output renders each record into a *line*: what one record is at its destination, a text
line ending in ``\\n`` (LOGEMU, JSON, GPRINT, ...), a datagram (SYSLOG), a pcap record, an
IPFIX message, a row of column values (the SQL outputs). It hands the line to its sink with
``add``; buffering, writing, reconnecting, spilling and counting losses are the sink's job,
done the same way for every output that uses it:

* :class:`~pyulogd.io.filesink.FileSink`: whole lines (or binary records) appended to a file
  with one ``write()`` per batch, a record a full disk half took cut off again, SIGHUP reopens;
* :class:`~pyulogd.io.streamsink.StreamSink`: tcp or unix stream through the reliable sender
  (bounded queue, reconnect with back-off, resend from the first line the peer did not get);
* :class:`~pyulogd.io.dgramsink.DgramSink`: one datagram per line (udp, unix datagram);
* the SQL outputs' row sink (``db/writer.py``), in front of the writer threads and the
  on-disk spool (``io/spool.py``).

The output base (``io/output.py``) drives every sink the same way: ``open`` at start,
``add`` per record (the bound method, looked up once at start), ``flush`` after each round of
the event loop, ``reopen`` on SIGHUP, ``close`` at stop. A sink never raises into the loop
for a failure of its destination: it counts the loss (``counters``, and the output's
``ctx.stats`` names that the docs list) and logs it once per burst.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

# Pending bytes that make a sink write (or queue) before the batch ends: big enough that a
# write costs little per record, small enough that a burst does not wait for the round's end.
FLUSH_AT = 64 * 1024

LineT_contra = TypeVar("LineT_contra", contravariant=True)
LineT = TypeVar("LineT")


class SinkCounters:
    """What a sink did with the lines handed to it, by count of records (issue 12, item 6).

    ``received``: records the sink took on (a buffering sink counts a batch when it hands it
    on, at ``flush``, so that the hot path pays nothing); ``written``: records that reached
    the destination (a file, the peer's socket, the database); ``spooled``: records that went
    to the output's on-disk spool instead (``unspooled`` counts those written from there
    later, also from a spool an earlier run left, ``spool_lost`` those the destination
    refused from there); ``dropped``: records lost, by cause
    (``write_failed``, ``not_open``, ``queue_full``, ``send_failed``, ``refused``,
    ``unsent_at_exit``, ``spool_full``, ``rejected``, ...); ``replayed``: of ``received``,
    those that came back from the write-ahead log at start (io/wal.py).

    The identity, exact at any moment and after any fault::

        received = written + spooled + dropped + in memory

    where *in memory* is what the sink holds on its way (:meth:`in_memory`; 0 after a flush
    for the file sink, 0 after ``close`` for every sink). The counters are persisted with
    the write-ahead log's cursors, so they survive a SIGKILL: what was in memory then was
    never delivered, and comes back as ``replayed`` (:meth:`restore`).
    """

    __slots__ = ("received", "written", "dropped", "spooled", "unspooled", "spool_lost", "replayed", "loss_reported")

    def __init__(self) -> None:
        self.received = 0
        self.written = 0
        self.spooled = 0
        self.unspooled = 0
        self.spool_lost = 0
        self.replayed = 0
        self.dropped: dict[str, int] = {}
        # Of ``dropped``, by cause, what the daemon's loss records already took (core/loss.py):
        # persisted with the rest, so that a restart neither forgets nor repeats a loss record.
        self.loss_reported: dict[str, int] = {}

    def drop(self, cause: str, records: int) -> None:
        if records > 0:
            self.dropped[cause] = self.dropped.get(cause, 0) + records

    @property
    def lost(self) -> int:
        """Records dropped, whatever the cause."""
        return sum(self.dropped.values())

    def in_memory(self) -> int:
        """Records received and not yet written, spooled nor dropped."""
        return self.received - self.written - self.spooled - self.lost

    def snapshot(self) -> dict[str, int]:
        """``received``, ``written``, ``spooled``, ``unspooled``, ``replayed`` and
        ``dropped.<cause>``, for metrics and tests."""
        out = {"received": self.received, "written": self.written}
        if self.spooled or self.unspooled or self.spool_lost:
            out.update(spooled=self.spooled, unspooled=self.unspooled, spool_lost=self.spool_lost)
        if self.replayed:
            out["replayed"] = self.replayed
        out.update({f"dropped.{cause}": n for cause, n in sorted(self.dropped.items())})
        return out

    def state(self) -> dict[str, object]:
        """What :meth:`restore` reads (the write-ahead log's state file)."""
        return {"received": self.received, "written": self.written, "spooled": self.spooled,
                "unspooled": self.unspooled, "spool_lost": self.spool_lost, "replayed": self.replayed,
                "dropped": dict(self.dropped), "loss_reported": dict(self.loss_reported)}

    def restore(self, saved: object) -> None:
        """Counters as a previous run saved them. What was in memory then was lost with the
        process and is not counted as received: it comes back by replay, counted then."""
        if not isinstance(saved, dict):
            return
        try:
            written = int(saved.get("written", 0))
            spooled = int(saved.get("spooled", 0))
            unspooled = int(saved.get("unspooled", 0))
            spool_lost = int(saved.get("spool_lost", 0))
            replayed = int(saved.get("replayed", 0))
            dropped = {str(k): int(v) for k, v in dict(saved.get("dropped", {})).items()}
            reported = {str(k): int(v) for k, v in dict(saved.get("loss_reported", {})).items()}
        except (TypeError, ValueError, AttributeError):
            return
        for cause, n in reported.items():
            self.loss_reported[cause] = self.loss_reported.get(cause, 0) + n
        self.written += written
        self.spooled += spooled
        self.unspooled += unspooled
        self.spool_lost += spool_lost
        self.replayed += replayed
        for cause, n in dropped.items():
            self.drop(cause, n)
        self.received += written + spooled + sum(dropped.values())


class LineSink(Protocol[LineT_contra]):
    """Where one output's lines go. ``LineSink[str]`` takes text lines, ``LineSink[bytes]``
    binary records, the SQL row sink tuples."""

    counters: SinkCounters

    def open(self) -> None:
        """At start: open the file, connect (a peer that is down only schedules retries).
        Raises PluginError when the output cannot work at all (a file that cannot be
        opened, a name that does not resolve)."""

    def add(self, line: LineT_contra) -> None:
        """Take one record's line. Cheap: usually an append; it writes when enough waits."""

    def flush(self) -> None:
        """Hand on what waits: after each round of the event loop, so every record is on its
        way before the daemon waits for more."""

    def reopen(self) -> None:
        """SIGHUP: a fresh file of the same name (log rotation), a fresh connection; what
        waits is flushed first and nothing is lost."""

    def close(self) -> None:
        """At stop: flush and close. Safe when ``open`` never ran, and twice."""


class BufferedSink(LineSink[LineT], Protocol[LineT]):
    """A sink that collects lines in a list until ``flush``: the file sink, and the network
    sinks in batch mode (JSON's).

    Its buffer is part of the interface, for the few outputs whose whole record costs a few
    microseconds (LOGEMU, JSON): appending a line to ``pending``, adding ``len(line)`` to
    ``size`` and calling ``flush()`` once ``size >= limit`` is exactly ``add(line)``, without
    the call, which is 1 % to 2 % of such a record (callgrind: ~400 instructions of ~51,000
    per LOGEMU packet). ``pending`` is only ever cleared in place, never replaced.
    """

    pending: list[LineT]
    size: int
    limit: int
