"""Files outputs append to: whole text lines (LOGEMU, JSON's file mode, XML, GPRINT, OPRINT,
NACCT) or binary records (PCAP). A :class:`~pyulogd.io.sink.LineSink`.

Lines are collected and written with one ``os.write`` on an ``O_APPEND`` file descriptor per
batch (the loop calls ``flush()`` after each round of ready sockets, before it waits for the
next event), or as soon as :data:`~pyulogd.io.sink.FLUSH_AT` bytes are pending. Every write
holds whole records, so several stacks appending to one file never interleave inside a line.
That already gives what ``sync=1`` promises in ulogd2 (every record is in the file before the
daemon waits for more), so ``sync`` adds no ``write()`` per record: at high rates that
syscall costs more than the rest of the record.

Files are opened by one set of rules (``core/safefile.py``: no link followed, after ``-u`` as
the user), at start and again on SIGHUP (log rotation), which keeps the old file when the
new one cannot be opened. A write never raises into the loop: a failed one is a loss counted
by cause (``<output>.<id>.write_errors`` per failed write, ``.lines_lost`` or, for binary
records, ``.records_lost`` per record; :attr:`FileSink.counters`), logged once per burst of
failures, and the next batch tries again. What a short write (a full disk) left of a record
is cut off again (``core/append.py``), so the next record never starts inside it; a text
file that cannot be cut (a pipe) gets a newline before the next batch instead.

Tamper evidence (``chain``, an ``io/chain.py`` LineChain, from an output's ``chain_key``): the
lines of a batch are sealed when the batch is written, whoever added them (the fused stack
included); at open the chain resumes from the file's last sealed line, and the last seal is
logged at SIGHUP and at stop. Binary records (PCAP) cannot carry a seal: theirs go, one line
per record in the same order, to ``<file>.chain`` beside the file (opened by the same rules).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from pyulogd.core import safefile
from pyulogd.core.append import AppendError, append
from pyulogd.core.errors import PluginError
from pyulogd.io.sink import FLUSH_AT, SinkCounters

if TYPE_CHECKING:
    from pyulogd.core.context import Context
    from pyulogd.io.chain import LineChain

LineT = TypeVar("LineT", str, bytes)


@dataclass(frozen=True)
class Wording:
    """The log lines of one kind of file, ``{label}``, ``{path}``, ``{reason}`` and ``{lost}``
    filled in. Per kind because ulogd2's messages differ (PCAP's are its own) and operators
    and tests look for them."""

    open_failed: str
    write_failed: str
    works_again: str
    reopen_failed: str
    torn: str = ""  # binary records: a partial record stayed at the end


LOG_FILE = Wording(
    open_failed="{label}: can't open log file {path!r}: {reason}",
    write_failed="{label}: can't write to {path!r}: {reason}; dropping lines",
    works_again="{label}: writing to {path!r} works again ({lost} line(s) lost)",
    reopen_failed="{label}: can't reopen {path!r}: {reason}; keeping old file",
)
PCAP_FILE = Wording(
    open_failed="{label}: can't open pcap file {path}: {reason}",
    write_failed="{label}: Error during write: {reason}; dropping records",
    works_again="{label}: writing to {path!r} works again",
    reopen_failed="{label}: can't reopen {path!r}: {reason}; keeping the old file",
    torn="{label}: {path!r} ends in a partial record that could not be cut off",
)


class FileSink(Generic[LineT]):
    """An append-only file written in batches of whole records.

    ``binary``: the lines are ``bytes`` records (PCAP) instead of text; ``header()`` (binary)
    is written first whenever the file opened is empty (the pcap global header), never half.
    ``stat_prefix``: ``<output>.<id>`` of the loss counters; ``label``: the output's name in
    log lines; ``chain``: seal each text line (tamper evidence, see the module docstring).
    """

    def __init__(
        self,
        ctx: Context,
        path: str,
        stat_prefix: str,
        label: str,
        *,
        binary: bool = False,
        header: Callable[[], bytes] | None = None,
        lost_name: str = "lines_lost",
        wording: Wording = LOG_FILE,
        chain: LineChain | None = None,
    ) -> None:
        self.ctx = ctx
        self.path = path
        self.label = label
        self.binary = binary
        self.header = header
        self.wording = wording
        self.fd = -1
        # Lines waiting for the next write; cleared in place, never replaced.
        self.pending: list[LineT] = []
        self.size = 0
        self.limit = FLUSH_AT
        self.counters = SinkCounters()
        self.chain = chain
        # The ctx.stats counters this sink keeps (after "<output>.<id>."), for metrics.
        self.stat_names = ("write_errors", lost_name)
        self._errors_name = stat_prefix + ".write_errors"
        self._lost_name = f"{stat_prefix}.{lost_name}"
        self._failing = False
        self._lost_burst = 0  # records lost in the current burst of failures
        self._torn = False  # text: a half line stayed at the end of the file
        self._seal_fd = -1  # binary records with a chain: <path>.chain

    # -- life cycle
    def open(self) -> None:
        try:
            self.fd = self._open()
        except OSError as e:
            raise PluginError(self._say(self.wording.open_failed, e.strerror)) from e
        if self.chain is not None:
            self._open_chain()

    def _open_chain(self) -> None:
        chain = self.chain
        assert chain is not None
        seals = self.seal_path
        if self.binary:
            try:
                fd = safefile.open_append(seals, self.ctx.run_as)
            except OSError as e:
                raise PluginError(f"{self.label}: can't open the seal file '{seals}': {e.strerror}") from e
            if self._seal_fd >= 0:
                _close(self._seal_fd)
            self._seal_fd = fd
        if chain.resume(seals):
            return
        if chain.chain.seq:  # a new file after SIGHUP (XML's next file, a rotated one): it goes on
            self.ctx.log.info(f"{chain.label}: the chain goes on in {seals!r} after seq {chain.chain.seq}")
        else:
            self.ctx.log.notice(f"{chain.label}: no sealed line in {seals!r}: a new chain starts there")

    @property
    def seal_path(self) -> str:
        """Where the seals are: the file itself, or ``<file>.chain`` for binary records."""
        return self.path + ".chain" if self.binary else self.path

    def _open(self) -> int:
        fd = safefile.open_append(self.path, self.ctx.run_as)
        if self.header is None:
            return fd
        try:
            if os.fstat(fd).st_size == 0:
                header = self.header()
                try:
                    append(fd, header)
                except AppendError as e:
                    e.settle(fd, header, (len(header),))  # half a header is cut off again
                    raise
        except OSError:
            os.close(fd)
            raise
        return fd

    def reopen(self) -> None:
        """SIGHUP (log rotation): new lines go to a freshly opened file of the same name,
        opened by the same rules (after -u, as the user: docs/security.md); the old file
        stays in use when that fails."""
        self.flush()
        if self.chain is not None:
            self.ctx.log.notice(self.chain.anchor())
        try:
            fd = self._open()
        except OSError as e:
            self.ctx.log.error(self._say(self.wording.reopen_failed, e.strerror))
            return
        old, self.fd = self.fd, fd
        self._torn = False
        if old >= 0:
            _close(old)
        if self.chain is not None and self.binary:
            try:
                self._open_chain()
            except PluginError as e:
                self.ctx.log.error(str(e))

    def close(self) -> None:
        self.flush()
        if self.chain is not None and self.chain.chain.seq:
            self.ctx.log.notice(self.chain.anchor())
        if self.fd >= 0:
            _close(self.fd)
            self.fd = -1
        if self._seal_fd >= 0:
            _close(self._seal_fd)
            self._seal_fd = -1

    # -- records
    def add(self, line: LineT) -> None:
        self.pending.append(line)
        self.size += len(line)
        if self.size >= self.limit:
            self.flush()

    def flush(self) -> None:
        pending = self.pending
        if not pending:
            return
        lines = len(pending)
        self.counters.received += lines
        seals = None
        if self.chain is not None:
            if self.binary:
                seals = self.chain.seal_bytes(pending)  # type: ignore[arg-type]
            else:
                pending[:] = self.chain.seal_all(pending)  # type: ignore[arg-type, assignment]
        # Outside strings were escaped by whoever made the line (pyulogd.core.escape), so text
        # is plain UTF-8; surrogateescape only keeps a bug elsewhere from raising here.
        data = b"".join(pending) if self.binary else "".join(pending).encode("utf-8", "surrogateescape")  # type: ignore[arg-type]
        if self.fd < 0:
            pending.clear()
            self.size = 0
            self._lost(lines, "file is not open", "not_open")
            return
        # After a half line that could not be cut off, start on a line of our own.
        head = 1 if self._torn else 0
        if head:
            data = b"\n" + data
        if seals is not None:
            self._write_seals(seals)
        try:
            append(self.fd, data)
        except AppendError as e:
            # Whole records written stay written, a half one is cut off; the rest is lost.
            if self.binary:
                kept, torn = e.settle(self.fd, data, itertools.accumulate(map(len, pending)))
                if torn and self.wording.torn:
                    self.ctx.log.error(self._say(self.wording.torn, None))
            else:
                kept, torn = e.settle(self.fd, data, _ends(pending, head))  # type: ignore[arg-type]
                self._torn = torn or (bool(head) and not kept)
                kept = max(0, kept - head)
            pending.clear()
            self.size = 0
            self.counters.written += kept
            self._lost(lines - kept, e.strerror, "write_failed")
            return
        pending.clear()
        self.size = 0
        self._torn = False
        self.counters.written += lines
        if self._failing:
            self._failing = False
            self.ctx.log.notice(self._say(self.wording.works_again, None))

    def _write_seals(self, seals: list[str]) -> None:
        """The seals of binary records, to ``<file>.chain``: before the records, so that a
        record on disk always has its seal (a seal whose record was lost reads as "missing",
        which the loss counters explain)."""
        data = "".join(seals).encode("ascii")
        try:
            append(self._seal_fd, data)
        except AppendError as e:
            e.settle(self._seal_fd, data)  # whole seal lines stay
            self.ctx.stats.incr(self._errors_name)
            self.ctx.log.error(f"{self.label}: cannot write the seals to {self.seal_path!r}: {e.strerror}")

    def _lost(self, records: int, reason: str | None, cause: str) -> None:
        self.ctx.stats.incr(self._errors_name)
        self.ctx.stats.incr(self._lost_name, records)
        self.counters.drop(cause, records)
        if not self._failing:  # once per burst of failures
            self._failing = True
            self._lost_burst = 0
            self.ctx.log.error(self._say(self.wording.write_failed, reason))
        self._lost_burst += records

    def _say(self, text: str, reason: str | None) -> str:
        return text.format(label=self.label, path=self.path, reason=reason, lost=self._lost_burst)


class StdoutSink(FileSink[str]):
    """Standard output (XML's ``stdout=1``): never opened, never closed, SIGHUP only flushes."""

    def __init__(self, ctx: Context, stat_prefix: str, label: str) -> None:
        super().__init__(ctx, "<stdout>", stat_prefix, label)

    def open(self) -> None:
        self.fd = 1

    def reopen(self) -> None:
        self.flush()

    def close(self) -> None:
        self.flush()


def _ends(items: Iterable[str], start: int) -> Iterator[int]:
    """Where each item ends in the bytes written (after ``start`` bytes of our own)."""
    pos = start
    if start:
        yield start
    for item in items:
        pos += len(item.encode("utf-8", "surrogateescape"))
        yield pos


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:  # EIO of a last delayed write: nothing to do about it any more
        pass
