"""``pyulogd-audit verify``: find the records of a chained trail (io/chain.py) that were
deleted, changed, inserted or moved, and say where.

The input is a sequence of records in stored order (the lines of one or more files, in
rotation order; the rows of the audit table by ``id``), each with its location, ``seq``,
tag and the bytes the tag covers. The checks, for each chain (a chain starts at ``seq`` 1):

* **changed**: a record's tag is not the HMAC of its bytes chained to the tag of record
  ``seq - 1`` (its own bytes were edited, or its tag);
* **missing**: a ``seq`` that the chain skips (records deleted; also records an output lost
  while writing, which its loss counters report);
* **moved**: a record stored after one with a higher ``seq`` (lines or rows swapped);
* **duplicate**: the same ``seq`` twice with the same tag and bytes is reported as a note:
  the SQL writer delivers at least once, so a batch written just before a crash is written
  again after the restart; different bytes under one ``seq`` are a change;
* **unsealed**: a line without a seal in a chained file (inserted by hand, or written
  before ``chain_key`` was set).

What cannot be seen: records cut off after the last one kept. The daemon logs the last
``seq`` and tag of every chain when it stops and on SIGHUP; verify prints the last ones it
saw, to compare.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyulogd.audit import schema
from pyulogd.audit.dburl import Db, DbError
from pyulogd.io.chain import CHAIN_COLUMNS, Chain, canon_bytes, row_bytes, unseal_lines


@dataclass
class Record:
    where: str  # "file:line" or "id N"
    seq: int
    tag: str
    body: bytes


@dataclass
class Finding:
    kind: str  # changed, missing, moved, duplicate, unsealed, restart
    where: str
    text: str
    error: bool = True

    def line(self) -> str:
        return f"{self.where}: {self.kind}: {self.text}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    records: int = 0
    chains: int = 0
    last: tuple[int, str] | None = None

    @property
    def ok(self) -> bool:
        return not any(f.error for f in self.findings)


def check(records: Iterable[Record | Finding], key: bytes) -> Report:
    """Verify records in stored order (a Finding in the input is passed through: a line the
    reader could not use)."""
    report = Report()
    chain = Chain(key)
    chains: list[dict[int, Record]] = []
    cur: dict[int, Record] = {}
    top = 0
    for item in records:
        if isinstance(item, Finding):
            report.findings.append(item)
            continue
        rec = item
        report.records += 1
        first = cur.get(1)
        same_as_first = first is not None and first.tag == rec.tag and first.body == rec.body
        if rec.seq == 1 and not same_as_first and chain.expected("", 1, rec.body) == rec.tag:
            # a first record after others starts a new chain, unless the chain so far goes on
            # from it (its seq 2 is tagged after this one): then it was moved
            second = cur.get(2)
            if second is None or chain.expected(rec.tag, 2, second.body) != second.tag:
                if cur:
                    chains.append(cur)
                    report.findings.append(Finding("restart", rec.where, "a new chain starts here (the output "
                                                   "restarted without its previous record: records before it "
                                                   "could have been cut off unseen)", error=False))
                cur = {}
                top = 0
        seen = cur.get(rec.seq)
        if seen is not None:
            if seen.tag == rec.tag and seen.body == rec.body:
                report.findings.append(Finding("duplicate", rec.where, f"seq {rec.seq} again (as at {seen.where}): "
                                               "a batch delivered twice, harmless", error=False))
            else:
                report.findings.append(Finding("changed", rec.where, f"seq {rec.seq} already at {seen.where} "
                                               "with other contents"))
            continue
        if rec.seq < top:
            report.findings.append(Finding("moved", rec.where, f"seq {rec.seq} comes after seq {top}: "
                                           "records were reordered"))
        top = max(top, rec.seq)
        cur[rec.seq] = rec
    if cur:
        chains.append(cur)
    report.chains = len(chains)
    for n, recs in enumerate(chains):
        seqs = sorted(recs)
        lowest = seqs[0]
        if lowest != 1 and n == 0:
            report.findings.append(Finding("start", recs[lowest].where, f"the chain begins at seq {lowest}: records "
                                           f"1..{lowest - 1} are in an earlier file, or were deleted",
                                           error=False))
        prev_seq = None
        for seq in seqs:
            rec = recs[seq]
            if prev_seq is not None and seq != prev_seq + 1:
                a, b = prev_seq + 1, seq - 1
                what = f"seq {a}" if a == b else f"seq {a}..{b} ({b - a + 1} records)"
                report.findings.append(Finding("missing", rec.where, f"{what} missing before this record"))
            prev = recs.get(seq - 1)
            if prev is not None or seq == 1:
                want = chain.expected(prev.tag if prev is not None else "", seq, rec.body)
                if want != rec.tag:
                    report.findings.append(Finding("changed", rec.where, f"seq {seq}: the record or its tag was "
                                                   "altered (its HMAC does not match)"))
            prev_seq = seq
        last = recs[seqs[-1]]
        report.last = (last.seq, last.tag)
    report.findings.sort(key=lambda f: _order(f.where))
    return report


def _order(where: str) -> tuple[str, int]:
    head, _, num = where.rpartition(":") if ":" in where else where.rpartition(" ")
    try:
        return head, int(num)
    except ValueError:
        return where, 0


def db_records(db: Db, batch: int = 20000) -> Iterator[Record | Finding]:
    """The rows of the audit table by id (insertion order), read in batches."""
    cols = ("id", "seq", "chain", *schema.CHAINED)
    sql = f"SELECT {', '.join(cols)} FROM {schema.TABLE} WHERE id > ? ORDER BY id LIMIT ?"

    def rows() -> Iterator[tuple[Any, ...]]:
        last = 0
        while page := db.rows(sql, (last, batch)):
            yield from page
            last = int(page[-1][0])

    return _row_records(rows(), "id", "seq/chain", row_bytes)


def _row_records(rows: Iterable[tuple[Any, ...]], label: str, columns: str,
                 body: Callable[[Sequence[Any]], bytes]) -> Iterator[Record | Finding]:
    """Rows of (position, seq, tag, the values the tag covers...) as records; a row without a
    seal is a finding, an error once a sealed row was seen (before: written before
    chain_key was set)."""
    chained = False
    for row in rows:
        where = f"{label} {row[0]}"
        if row[1] is None or row[2] is None:
            yield Finding("unsealed", where, f"a row without {columns}" + (
                " (written before chain_key was set)" if not chained else " (inserted by hand?)"), error=chained)
            continue
        chained = True
        yield Record(where, int(row[1]), str(row[2]), body(row[3:]))


# The id-column rule of each ulogd SQL output (db/columns.py): a first column it does not
# write (an auto-increment id), so not chained; by default the rule of the dialect's output.
SKIP_RULES = {"SQLITE3": "never", "PGSQL": "underscore", "MYSQL": "always", "DBI": "always"}
DIALECT_OUTPUT = {"sqlite": "SQLITE3", "pgsql": "PGSQL", "mysql": "MYSQL"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def table_records(db: Db, table: str, order_by: str = "", output: str = "",
                  batch: int = 20000) -> Iterator[Record | Finding]:
    """The rows of a ulogd table chained by its SQL output (PGSQL, MYSQL, SQLITE3:
    ``pyulogd_seq`` and ``pyulogd_chain`` columns), in stored order: ``order_by`` (a column,
    e.g. the id column), by default SQLite's ``rowid`` and the chain's ``seq`` elsewhere
    (then rows moved are seen as changed, not as moved). The tag covers the columns the
    output wrote, in table order: all but the two chain columns and the id column of the
    rule of ``output`` (:data:`SKIP_RULES`; by default the dialect's own output, DBI must be
    named). DbError for a table that is not chained."""
    from pyulogd.db.columns import skip_first
    from pyulogd.db.statement import quote_ident

    for name in (table, order_by):
        if name and not _NAME.fullmatch(name):
            raise DbError(f"'{name}' is not a plain table or column name")
    cols = db.columns(table)
    if not cols:
        raise DbError(f"no table {table} in {db.url.describe()}")
    if any(c not in cols for c in CHAIN_COLUMNS):
        raise DbError(f"table {table} has no {' and '.join(CHAIN_COLUMNS)} columns: not chained (chain_key)")
    if order_by and order_by.lower() not in cols and not (order_by.lower() == "rowid" and db.dialect == "sqlite"):
        raise DbError(f"table {table} has no column {order_by}")
    rule = SKIP_RULES.get((output or DIALECT_OUTPUT[db.dialect]).upper())
    if rule is None:
        raise DbError(f"--output {output}: one of {', '.join(SKIP_RULES)}")
    data = [c for c in skip_first(cols, rule) if c not in CHAIN_COLUMNS]
    order = order_by or ("rowid" if db.dialect == "sqlite" else CHAIN_COLUMNS[0])
    q = [quote_ident(c, db.dialect) for c in (order, *CHAIN_COLUMNS, *data)]
    sql = f"SELECT {', '.join(q)} FROM {quote_ident(table, db.dialect)} ORDER BY {q[0]} LIMIT ? OFFSET ?"  # noqa: S608

    def rows() -> Iterator[tuple[Any, ...]]:
        offset = 0
        while page := db.rows(sql, (batch, offset)):
            yield from page
            offset += len(page)

    return _row_records(rows(), order, "/".join(CHAIN_COLUMNS), canon_bytes)


def file_records(paths: Iterable[str], key: bytes | None = None) -> Iterator[Record | Finding]:
    """The sealed records of files, in order; an unsealed line is a Finding.

    A record of several lines (OPRINT, XML's header) is sealed on its last line with the
    number of its lines: the lines before it belong to it; unsealed lines left over are
    findings. A pcap file (PCAP's) is read with its seals in ``<file>.chain``
    (:func:`pcap_records`, which needs ``key`` to pair them up)."""
    for path in paths:
        if key is not None and _is_pcap(path):
            yield from pcap_records(path, key)
            continue
        with open(path, "rb") as f:
            loose: list[tuple[str, str]] = []  # unsealed lines since the last sealed one
            for n, raw in enumerate(f, 1):
                line = raw.decode("utf-8", "surrogateescape").rstrip("\n")
                if not line:
                    continue
                where = f"{path}:{n}"
                found = unseal_lines(line)
                if found is None:
                    loose.append((where, line))
                    continue
                body, seq, tag, lines = found
                take = loose[max(0, len(loose) - (lines - 1)):] if lines > 1 else []
                yield from _unsealed(loose[: len(loose) - len(take)])
                loose.clear()
                if take:
                    where = take[0][0]
                    body = "\n".join([t for _, t in take] + [body])
                yield Record(where, seq, tag, body.encode("utf-8", "surrogateescape"))
            yield from _unsealed(loose)


def _unsealed(lines: list[tuple[str, str]]) -> Iterator[Finding]:
    for where, _ in lines:
        yield Finding("unsealed", where, "a line without a chain seal (added by hand?)")


# -- PCAP: binary records, their seals in <file>.chain

PCAP_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")
WINDOW = 64  # how far from its place a record's seal is looked for (records moved further read as changed)


def _is_pcap(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) in PCAP_MAGICS
    except OSError:
        return False


def pcap_bodies(path: str) -> Iterator[tuple[str, bytes] | Finding]:
    """Each record of a classic pcap file as PCAP wrote it (16-byte header and data), with
    ``file record:N``; a record cut short is a Finding."""
    import struct

    with open(path, "rb") as f:
        data = f.read()
    order = "<" if data[:4] == PCAP_MAGICS[0] else ">"
    hdr = struct.Struct(order + "IIII")
    off, n = 24, 0
    while off < len(data):
        n += 1
        if off + 16 > len(data):
            yield Finding("changed", f"{path} record:{n}", "a record header cut short at the end of the file")
            return
        caplen = hdr.unpack_from(data, off)[2]
        end = off + 16 + caplen
        if end > len(data):
            yield Finding("changed", f"{path} record:{n}", "a record cut short at the end of the file")
            return
        yield f"{path} record:{n}", data[off:end]
        off = end


def seal_file(path: str) -> str:
    """Where the seals of a capture are: ``<path>.chain``, or for a rotated capture
    (``ulogd.pcap.1``, ``ulogd.pcap-20261207``) the seal file rotated with it
    (``ulogd.pcap.chain.1``, ``ulogd.pcap.chain-20261207``) when that one exists."""
    own = path + ".chain"
    m = re.fullmatch(r"(.+?)([.-]\d+)", path)
    if m is not None and not os.path.exists(own):
        rotated = m.group(1) + ".chain" + m.group(2)
        if os.path.exists(rotated):
            return rotated
    return own


def pcap_records(path: str, key: bytes) -> Iterator[Record | Finding]:
    """The records of a pcap file paired with their seals (:func:`seal_file`).

    The seals are a list apart, so each record is matched to the seal whose HMAC it passes,
    looked for near its place (:data:`WINDOW`), and yields that seal's ``seq`` and tag: so
    :func:`check` sees deletions (seals left without a record: a gap), moves (``seq`` out of
    order) and copies (a ``seq`` twice). A record that passes no seal was changed when a seal
    between those of its neighbours is left over (it takes it, and :func:`check` says
    "changed"), else it was inserted (unsealed). Seals left over before the first record or
    after the last are records deleted at the start or cut off the end, which (unlike lines)
    can be seen."""
    chain = Chain(key)
    seals: list[tuple[int, str]] = []
    for rec in file_records([seal_file(path)]):
        if isinstance(rec, Finding):
            yield rec
        else:
            seals.append((rec.seq, rec.tag))
    items = list(pcap_bodies(path))
    prevs = [seals[k - 1][1] if k > 0 and seals[k - 1][0] == seq - 1 else "" for k, (seq, _) in enumerate(seals)]
    used = [False] * len(seals)
    match: list[int | None] = [None] * len(items)
    j = 0  # the seal after the last one matched
    for i, item in enumerate(items):
        if isinstance(item, Finding):
            continue
        body = item[1]
        near = range(max(0, j - WINDOW), min(len(seals), j + WINDOW))
        hits = [k for k in near if chain.expected(prevs[k], seals[k][0], body) == seals[k][1]]
        if hits:
            k = next((k for k in hits if not used[k]), hits[0])  # a used one: a copy
            used[k] = True
            match[i] = k
            j = max(j, k + 1)
    # records that pass no seal: changed (a seal between the neighbours' is free) or inserted
    last = -1
    for i, item in enumerate(items):
        if isinstance(item, Finding):
            yield item
            continue
        where, body = item
        got = match[i]
        if got is None:
            nxt = next((m for m in match[i + 1 :] if m is not None), len(seals))
            got = next((m for m in range(last + 1, nxt) if not used[m]), None) if nxt > last else None
            if got is None:
                yield Finding("unsealed", where, f"a record without a seal in {path}.chain (added?)")
                continue
            used[got] = True
        last = max(last, got)
        yield Record(where, seals[got][0], seals[got][1], body)
    # seals no record took before the first one taken (records deleted at the start: a
    # chain of lines cannot tell those from an earlier file, seals can) and after the last
    first = next((k for k in range(len(seals)) if used[k]), len(seals))
    for ks, at, why in (([k for k in range(first) if not used[k]], 1, "deleted"),
                           ([k for k in range(max(last + 1, first), len(seals)) if not used[k]],
                            len(items) + 1, "cut off")):
        if ks:
            a, b = seals[ks[0]][0], seals[ks[-1]][0]
            what = f"seq {a}" if len(ks) == 1 else f"seq {a}..{b} ({len(ks)} records)"
            yield Finding("missing", f"{path} record:{at}", f"{what} sealed in {path}.chain but not in the file "
                          f"({why})")
