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

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pyulogd.audit import schema
from pyulogd.audit.dburl import Db
from pyulogd.io.chain import Chain, unseal


def row_bytes(values: Iterable[Any]) -> bytes:
    """The bytes a row's tag covers: each value typed and length-prefixed, so that no two
    different rows serialize alike (None, integers, text, bytes)."""
    out = bytearray()
    for v in values:
        if v is None:
            out += b"N"
        elif isinstance(v, bool):
            out += b"i1" if v else b"i0"
        elif isinstance(v, int):
            t = str(v).encode()
            out += b"i" + str(len(t)).encode() + b":" + t
        elif isinstance(v, str):
            t = v.encode("utf-8", "surrogateescape")
            out += b"s" + str(len(t)).encode() + b":" + t
        else:
            t = bytes(v)
            out += b"b" + str(len(t)).encode() + b":" + t
    return bytes(out)


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
    last = 0
    chained = False
    while True:
        rows = db.rows(sql, (last, batch))
        if not rows:
            return
        for row in rows:
            last = int(row[0])
            where = f"id {last}"
            if row[1] is None or row[2] is None:
                yield Finding("unsealed", where, "a row without seq/chain" + (
                    " (written before chain_key was set)" if not chained else " (inserted by hand?)"), error=chained)
                continue
            chained = True
            yield Record(where, int(row[1]), str(row[2]), row_bytes(row[3:]))


def file_records(paths: Iterable[str]) -> Iterator[Record | Finding]:
    """The sealed lines of files, in order; an unsealed line is a Finding."""
    for path in paths:
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                line = raw.decode("utf-8", "surrogateescape").rstrip("\n")
                if not line:
                    continue
                where = f"{path}:{n}"
                found = unseal(line)
                if found is None:
                    yield Finding("unsealed", where, "a line without a chain seal (added by hand?)")
                    continue
                body, seq, tag = found
                yield Record(where, seq, tag, body.encode("utf-8", "surrogateescape"))
