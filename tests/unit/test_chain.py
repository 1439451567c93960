"""Tamper evidence (io/chain.py, audit/verify.py): LOGEMU, GPRINT, JSON and ECS lines and
AUDITDB rows chained with an HMAC; ``pyulogd-audit verify`` finds lines and rows edited,
deleted, swapped or inserted, and says where; restarts and rotation continue the chain."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pyulogd.audit import schema
from pyulogd.audit.verify import check, file_records
from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.core.plugin import DataType, Key, KeyType, Source
from pyulogd.io.chain import Chain, LineChain, read_key, unseal
from pyulogd.io.loop import Loop
from pyulogd.plugins.outputs.ecs import EcsOutput
from pyulogd.plugins.outputs.gprint import GprintOutput
from pyulogd.plugins.outputs.json import JsonOutput
from pyulogd.plugins.outputs.logemu import LogemuOutput
from tests.audit_helpers import CHAIN_KEY as KEY
from tests.audit_helpers import chain_key_file, fill, run, trail
from tests.helpers import BaseKeys, NflogKeys, golden_packets, make_stack, stop_stack


@pytest.fixture
def work(tmp_path: Path) -> Path:
    d = tmp_path / "w"
    d.mkdir(mode=0o700)
    return d


@pytest.fixture
def key(work: Path) -> Path:
    return chain_key_file(work)


# -- the pieces
def test_chain_links_and_is_keyed() -> None:
    a, b = Chain(KEY), Chain(KEY[::-1])
    tags = [a.link(b"r%d" % i) for i in range(3)]
    assert a.seq == 3 and len(set(tags)) == 3 and all(len(t) == 22 for t in tags)
    assert b.link(b"r0") != tags[0]  # another key, another tag
    assert Chain(KEY).expected(tags[0], 2, b"r1") == tags[1]
    assert Chain(KEY).expected(tags[0], 2, b"r1x") != tags[1]
    assert Chain(KEY).expected(tags[1], 2, b"r1") != tags[1]  # the predecessor is part of it
    with pytest.raises(ValueError):
        Chain(b"short")


def test_seals_round_trip() -> None:
    for style, line in (("text", "Jan  1 00:00:00 h IN=eth0 chain=9:AAAAAAAAAAAAAAAAAAAAAA\n"),
                        ("json", '{"a": 1, "b": "x"}\n'), ("compact", '{"a":1}\n'), ("json", "{}\n")):
        chain = LineChain(KEY, style, "t")
        (sealed,) = chain.seal_all([line])
        found = unseal(sealed.rstrip("\n"))
        assert found is not None and found[0] == line.rstrip("\n") and found[1] == 1
    assert unseal("no seal here") is None


def test_key_file_rules(work: Path, key: Path) -> None:
    assert read_key(str(key)) == KEY  # the trailing newline is not part of the key
    os.chmod(key, 0o640)
    with pytest.raises(OSError, match="readable or writable by others"):
        read_key(str(key))
    os.chmod(key, 0o600)
    link = work / "link.key"
    link.symlink_to(key)
    with pytest.raises(OSError, match="symbolic link"):
        read_key(str(link))
    short = work / "short.key"
    short.write_bytes(b"tooshort")
    os.chmod(short, 0o600)
    with pytest.raises(OSError, match="16 to 4096 bytes"):
        read_key(str(short))
    with pytest.raises(ConfigError, match="chain_key"):
        make_stack([PrintSource, (LogemuOutput, {"file": str(work / "x.log"), "chain_key": str(link)})])


# -- lines
class PrintSource(Source):
    name = "PRINTSRC"
    output_type = DataType.PACKET
    output_keys = (Key("print", KeyType.STRING), Key("oob.time.sec", KeyType.UINT32))


def logemu(work: Path, key: Path, n: int, start: int = 0, name: str = "emu.log") -> Any:
    ctx = Context(loop=Loop(FakeClock(wall=1800000000.0)), hostname="fw1")
    stack = make_stack([PrintSource, (LogemuOutput, {"file": str(work / name), "chain_key": str(key)})], ctx)
    for i in range(start, start + n):
        stack.source.emit([None, f"IN=eth0 OUT= SRC=10.0.0.{i} DST=10.0.0.254 LEN=60\n", 1800000000 + i])
        if i % 7 == 0:
            stack.sink.flush()
    stop_stack(stack)
    return stack


def verify_files(key: Path, *files: Path) -> tuple[int, list[str]]:
    rc, out, err = run("verify", "--key", str(key), *[x for f in files for x in ("--file", str(f))])
    assert err == ""
    return rc, out.splitlines()


def test_logemu_lines_verify_and_edits_are_found(work: Path, key: Path) -> None:
    logemu(work, key, 20)
    log = work / "emu.log"
    lines = log.read_text().splitlines(keepends=True)
    assert len(lines) == 20 and lines[0].startswith("Jan 15 08:00:00 fw1 IN=eth0") and " chain=1:" in lines[0]
    rc, out = verify_files(key, log)
    assert rc == 0 and out[-1].endswith("20 records in 1 chain(s), last seq 20 tag " + lines[-1][-23:-1] + ": OK")

    cases = {
        "edit": (lambda ls: ls[:4] + [ls[4].replace("10.0.0.4", "10.0.0.9")] + ls[5:],
                 [f"{log}:5: changed: seq 5"]),
        "delete": (lambda ls: ls[:7] + ls[9:], [f"{log}:8: missing: seq 8..9 (2 records) missing"]),
        "swap": (lambda ls: ls[:10] + [ls[11], ls[10]] + ls[12:], [f"{log}:12: moved: seq 11 comes after seq 12"]),
        "insert": (lambda ls: ls[:3] + ["Jan 15 08:00:03 fw1 IN=eth0 forged\n"] + ls[3:],
                   [f"{log}:4: unsealed"]),
        "forged seal": (lambda ls: ls[:3] + [ls[3].replace("SRC=10.0.0.3", "SRC=6.6.6.6")] + ls[4:],
                        [f"{log}:4: changed: seq 4"]),
        "duplicate": (lambda ls: ls[:6] + [ls[5]] + ls[6:], []),
    }
    for name, (tamper, want) in cases.items():
        log.write_text("".join(tamper(lines)))
        rc, out = verify_files(key, log)
        errors = [line for line in out[:-1] if "duplicate" not in line]
        assert [e[: len(w)] for e, w in zip(errors, want, strict=False)] == want and len(errors) == len(want), (
            name, out)
        assert rc == (1 if want else 0) and out[-1].endswith("TAMPERED" if want else "OK"), (name, out)
    log.write_text("".join(lines[:-3]))  # the end cut off: the chain cannot tell, the anchor can
    rc, out = verify_files(key, log)
    assert rc == 0 and "last seq 17 " in out[-1]


def test_restart_and_rotation_continue_the_chain(work: Path, key: Path) -> None:
    logemu(work, key, 5)
    logemu(work, key, 5, start=5)  # a restart resumes from the file's last sealed line
    rc, out = verify_files(key, work / "emu.log")
    assert rc == 0 and "10 records in 1 chain(s)" in out[-1]
    # rotation: the file is renamed, SIGHUP reopens, the chain goes on in the new file
    ctx = Context(loop=Loop(FakeClock(wall=1800000000.0)), hostname="fw1")
    stack = make_stack([PrintSource, (LogemuOutput, {"file": str(work / "rot.log"), "chain_key": str(key)})], ctx)
    for i in range(6):
        if i == 3:
            stack.sink.flush()
            os.rename(work / "rot.log", work / "rot.log.1")
            stack.sink.signal(signal.SIGHUP)
        stack.source.emit([None, f"line {i}\n", 1800000000])
    stop_stack(stack)
    rc, out = verify_files(key, work / "rot.log.1", work / "rot.log")
    assert rc == 0 and "6 records in 1 chain(s)" in out[-1]
    rc, out = verify_files(key, work / "rot.log")  # alone: it starts at seq 4, a note, not an error
    assert rc == 0 and "begins at seq 4" in out[0]
    rc, out = verify_files(key, work / "rot.log", work / "rot.log.1")  # in the wrong order: two chains, noted
    assert "restart" in "".join(out) and "2 chain(s)" in out[-1]


def test_a_new_chain_after_a_lost_file_is_reported(work: Path, key: Path) -> None:
    logemu(work, key, 3, name="a.log")
    logemu(work, key, 3, start=3, name="b.log")  # another file: a chain of its own, seq 1 again
    rc, out = verify_files(key, work / "a.log", work / "b.log")
    assert rc == 0 and "restart" in out[0] and "2 chain(s)" in out[-1]


@pytest.mark.parametrize("kind", ["json", "ecs", "gprint"])
def test_json_ecs_gprint_lines(work: Path, key: Path, kind: str) -> None:
    out_file = work / f"{kind}.out"
    cls = {"json": JsonOutput, "ecs": EcsOutput, "gprint": GprintOutput}[kind]
    ctx = Context(loop=Loop(FakeClock(wall=1800000000.0)), hostname="fw1")
    stack = make_stack([NflogKeys, BaseKeys, (cls, {"file": str(out_file), "chain_key": str(key)})], ctx)
    base = stack.instances[1]
    for nflog, values, _obj, _emu in golden_packets()[:12]:
        base.values = values
        stack.source.emit_dict(nflog)
    stop_stack(stack)
    lines = out_file.read_text().splitlines(keepends=True)
    assert len(lines) == 12
    if kind != "gprint":
        import json

        docs = [json.loads(line) for line in lines]
        assert all("pyulogd.chain" in d for d in docs)
        if kind == "ecs":
            from tests.ecs_schema import problems

            assert all(problems(d) == [] for d in docs)  # the seal sits in the custom namespace
    assert verify_files(key, out_file)[0] == 0
    out_file.write_text("".join(lines[:2] + [lines[2].replace("1", "2", 1)] + lines[3:]))
    rc, out = verify_files(key, out_file)
    assert rc == 1 and out[0].startswith(f"{out_file}:3: changed")


def test_check_accepts_records_directly() -> None:
    chain = LineChain(KEY, "text", "t")
    sealed = chain.seal_all([f"r{i}\n" for i in range(4)])
    p = Path(os.devnull)
    assert p.exists()
    from pyulogd.audit.verify import Record

    recs = []
    for n, line in enumerate(sealed, 1):
        body, seq, tag = unseal(line.rstrip("\n")) or ("", 0, "")
        recs.append(Record(f"x:{n}", seq, tag, body.encode()))
    assert check(recs, KEY).ok and not check(recs, KEY[::-1]).ok  # the wrong key fails everything
    assert check(file_records([]), KEY).records == 0


# -- rows
def test_auditdb_rows_verify_and_tampering_is_found(work: Path, key: Path) -> None:
    url = f"sqlite:///{work}/audit.db"
    fill(url, work / "spool", chain_key=str(key))
    fill(url, work / "spool", trail()[:5], chain_key=str(key))  # a restart resumes the chain
    db = str(work / "audit.db")
    rc, out, err = run("verify", "--key", str(key), "--db", url)
    assert rc == 0 and "67 records in 1 chain(s)" in out and err == ""
    con = sqlite3.connect(db)
    t = schema.TABLE
    original = con.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()
    cols = [r[1] for r in con.execute(f"PRAGMA table_info({t})")]

    def restore() -> None:
        con.execute(f"DELETE FROM {t}")
        con.executemany(f"INSERT INTO {t} VALUES ({', '.join('?' * len(cols))})", original)
        con.commit()

    def verify() -> tuple[int, list[str]]:
        rc, out, _ = run("verify", "--key", str(key), "--db", url)
        return rc, out.splitlines()

    con.execute(f"UPDATE {t} SET dport = 23 WHERE id = 10")
    con.commit()
    assert verify() == (1, ["id 10: changed: seq 10: the record or its tag was altered (its HMAC does not match)",
                            verify()[1][-1]])
    restore()
    con.execute(f"DELETE FROM {t} WHERE id IN (30, 31, 32)")
    con.commit()
    rc, out = verify()
    assert rc == 1 and out[0] == "id 33: missing: seq 30..32 (3 records) missing before this record"
    restore()
    a, b = original[40], original[41]  # swap two rows' contents, seq and tag included
    sets = ", ".join(f"{c} = ?" for c in cols[1:])
    con.execute(f"UPDATE {t} SET {sets} WHERE id = 41", b[1:])
    con.execute(f"UPDATE {t} SET {sets} WHERE id = 42", a[1:])
    con.commit()
    rc, out = verify()
    assert rc == 1 and out[0] == "id 42: moved: seq 41 comes after seq 42: records were reordered"
    restore()
    con.execute(f"INSERT INTO {t} ({', '.join(cols[1:])}) SELECT {', '.join(cols[1:])} FROM {t} WHERE id = 5")
    con.commit()  # a row written twice (at-least-once delivery): a note only
    rc, out = verify()
    assert rc == 0 and "duplicate" in out[0] and out[-1].endswith("OK")
    restore()
    con.execute(f"INSERT INTO {t} (ts, kind) VALUES (1, 'packet')")
    con.commit()  # a row added by hand
    rc, out = verify()
    assert rc == 1 and "unsealed" in out[0]


def test_verify_bad_input(work: Path, key: Path) -> None:
    for argv, says in (
        (("verify", "--key", str(work / "nokey"), "--file", "x"), "--key"),
        (("verify", "--key", str(key)), "give --file"),
        (("verify", "--key", str(key), "--file", str(work / "missing.log")), "No such file"),
    ):
        rc, _, err = run(*argv)
        assert rc == 2 and says in err and len(err.splitlines()) == 1, err
