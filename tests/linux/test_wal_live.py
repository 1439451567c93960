"""SIGKILL mid-flood loses nothing that reached the write-ahead log (issue 12, item 1).

A daemon in a namespace of its own reads NFLOG (``seq_global=1``: the kernel numbers every
packet it logs) into a JSON file and an SQLite table (whose batches wait 60 s, so nothing is
committed there when the kill comes). It is SIGKILLed while UDP floods the namespace, then
started again: every packet the killed daemon had logged (read back from its write-ahead
log, by the kernel's sequence number) must then be in both outputs at least once, each output
must have got back exactly what it lacked (``replayed`` = missing + the duplicates it holds),
and the daemon's own sequence numbers go on strictly increasing.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from pyulogd.codec import nflog
from pyulogd.io.wal import HEADER, decode_frames, read_dir, read_state
from tests.linux.lab import have_root_and_tools, lines, sh, wait_for
from tests.linux.nsdaemon import Daemon, Namespace, unique

pytestmark = pytest.mark.skipif(bool(have_root_and_tools()), reason=have_root_and_tools() or "")

GROUP = 31


def _config(out: Path) -> str:
    return f"""[global]
logfile="{out}/ulogd.log"
loglevel=1
wal=1
wal_dir="{out}/wal"
stack=log1:NFLOG,base1:BASE,json1:JSON
stack=log1:NFLOG,base2:BASE,db1:SQLITE3

[log1]
group={GROUP}
seq_global=1
netlink_socket_buffer_size=4194304
netlink_socket_buffer_maxsize=16777216

[json1]
file="{out}/out.json"

[db1]
db="{out}/out.sqlite"
table="pkt"
batch_size=1000000
batch_timeout=60
spool_dir="{out}/spool"
"""


def _logged(wal: Path) -> list[tuple[int, int]]:
    """(the daemon's sequence number, the kernel's seq.global) of every logged packet."""
    out: list[tuple[int, int]] = []
    for frame in read_dir(str(wal)):
        assert frame.reads is not None, "NFLOG logs the datagrams it read"
        for now, first, n, data in frame.reads:
            recs = nflog.Decoder().parse_buffer(data, now, 0).records
            assert len(recs) == n
            out.extend((first + i, rec[nflog.IDX["oob.seq.global"]]) for i, rec in enumerate(recs))
    return out


def _json_seqs(path: Path) -> list[int]:
    return [json.loads(line)["oob.seq.global"] for line in lines(path)]


def _db_seqs(path: Path) -> list[int]:
    con = sqlite3.connect(path)
    try:
        return [r[0] for r in con.execute("SELECT oob_seq_global FROM pkt")]
    finally:
        con.close()


def _replayed(text: str, oid: str) -> int:
    n = 0
    for line in text.splitlines():
        if f"to '{oid}' (after sequence" in line and "replayed" in line:
            n += int(line.split("replayed ", 1)[1].split()[0])
    return n


def test_sigkill_mid_flood_then_replay(tmp_path: Path) -> None:
    out = tmp_path
    con = sqlite3.connect(out / "out.sqlite")
    con.execute("CREATE TABLE pkt (oob_seq_global INTEGER, oob_prefix TEXT)")
    con.commit()
    con.close()
    ns = Namespace(unique("pyw1-"), GROUP)
    stop = threading.Event()
    try:
        wrap = ["ip", "netns", "exec", ns.name]
        d = Daemon(out, _config(out), out / "ulogd.log", wrapper=wrap)

        def flood() -> None:
            while not stop.is_set():
                ns.send(200)

        sender = threading.Thread(target=flood, daemon=True)
        sender.start()
        try:
            wait_for(lambda: len(lines(out / "out.json")) >= 3000, 60, "3000 records in the JSON file")
            d.kill()  # SIGKILL, mid-flood
        finally:
            stop.set()
            sender.join(30)
        assert d.proc.returncode == -signal.SIGKILL

        # What the killed daemon had logged (NFLOG's datagrams), read back from its write-ahead log.
        first = _logged(out / "wal")
        assert first, "nothing in the write-ahead log"
        logged = {g for _seq, g in first}
        assert len(logged) == len(first)
        pyseqs = [seq for seq, _g in first]
        assert pyseqs == sorted(pyseqs) and len(set(pyseqs)) == len(pyseqs)
        before_json = collections.Counter(_json_seqs(out / "out.json"))
        before_db = collections.Counter(_db_seqs(out / "out.sqlite"))
        assert not before_db, "the SQL batch was to wait 60 s"
        state = read_state(str(out / "wal"))
        assert state["reserved"] > max(pyseqs)

        # Start again: the outputs get back what they had not committed.
        d2 = Daemon(out, _config(out), out / "ulogd.log", wrapper=wrap)
        try:
            wait_for(lambda: _replayed(d2.text(), "db1") > 0, 30, "the replay")
            ns.send(100)  # and new records go on with higher numbers

            def second() -> list[int]:
                return [seq for seq, _g in _logged(out / "wal") if seq not in set(pyseqs)]

            wait_for(lambda: len(second()) >= 100, 30, "the new records in the log")
            assert min(second()) > max(pyseqs), "sequence numbers go on increasing across the kill"
            wait_for(lambda: len(set(_json_seqs(out / "out.json")) - logged) >= 100, 30, "the new records")
        finally:
            assert d2.stop() == 0, d2.stderr()
        text = d2.text()
        after_json = collections.Counter(_json_seqs(out / "out.json"))
        after_db = collections.Counter(_db_seqs(out / "out.sqlite"))
        for after, before, oid in ((after_json, before_json, "json1"), (after_db, before_db, "db1")):
            missing = logged - set(before)
            assert logged <= set(after), f"{oid}: {len(logged - set(after))} logged records never written"
            replayed = _replayed(text, oid)
            # The records of the first run written again: what was missing, plus the last ones it
            # had written after its cursor was last saved (at-least-once).
            again = sum(after[s] - before[s] for s in logged if s in before)
            assert replayed == len(missing) + again, (oid, replayed, len(missing), again)
            assert replayed >= len(missing)
        assert _replayed(text, "db1") == len(first)
        # The counters, saved with the cursors, add up (nothing left in memory after a stop).
        final = read_state(str(out / "wal"))["counters"]
        for oid in ("json1", "db1"):
            c = final[oid]
            assert c["received"] == c["written"] + c["spooled"] + sum(c["dropped"].values()), (oid, c)
            assert c["replayed"] == _replayed(text, oid)
        # Everything committed after a clean stop: no segment of the first run is left.
        assert not [seq for seq, _g in _logged(out / "wal") if seq <= max(pyseqs)]
    finally:
        stop.set()
        ns.delete()
        os.sync()


def test_a_full_disk_under_the_log_costs_no_record(tmp_path: Path) -> None:
    """The log's filesystem full (a 1 MiB tmpfs, filled once the daemon runs): every record
    still reaches the output, the records the log could not keep are counted, and the daemon
    runs on and exits 0."""
    from tests.linux.test_enospc import fill

    full = tmp_path / "full"
    full.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(full))
    ns = Namespace(unique("pyw1-"), GROUP)
    try:
        conf = f"""[global]
logfile="{tmp_path}/ulogd.log"
loglevel=1
wal=1
wal_dir="{full}/wal"
stack=log1:NFLOG,base1:BASE,json1:JSON

[log1]
group={GROUP}
seq_global=1

[json1]
file="{tmp_path}/out.json"
"""
        d = Daemon(tmp_path, conf, tmp_path / "ulogd.log", wrapper=["ip", "netns", "exec", ns.name])
        try:
            ns.send(50)
            wait_for(lambda: len(lines(tmp_path / "out.json")) == 50, 30, "the first 50 records")
            fill(full)
            ns.send(300)
            wait_for(lambda: len(lines(tmp_path / "out.json")) == 350, 30, "300 more records")
            wait_for(lambda: "write-ahead log: cannot write" in d.text(), 10, "the log's error")
        finally:
            assert d.stop() == 0, d.stderr()
        text = d.text()
        assert sorted(_json_seqs(tmp_path / "out.json")) == list(range(1, 351))
        unlogged = int(re.search(r"wal\.records_unlogged=(\d+)", text)[1])  # type: ignore[index]
        assert 0 < unlogged <= 300
        # What a full disk left of a frame was cut off again: every segment reads to its end.
        for name in os.listdir(full / "wal"):
            if name.endswith(".wal"):
                data = (full / "wal" / name).read_bytes()
                assert decode_frames(data[len(HEADER) :])[1] == 0, name
    finally:
        ns.delete()
        if subprocess.run(["umount", str(full)], capture_output=True).returncode != 0:
            sh("umount", "-l", str(full), check=False)


def _followed_config(out: Path, pattern: str) -> str:
    return f"""[global]
logfile="{out}/ulogd.log"
loglevel=1
wal=1
wal_dir="{out}/wal"
stack=log1:NFLOG,base1:BASE,json1:JSON
stack=log1:NFLOG,base2:BASE,db1:SQLITE3

[log1]
group={GROUP}
seq_global=1
netns={pattern}
netns_rescan=1
netlink_socket_buffer_size=4194304
netlink_socket_buffer_maxsize=16777216

[json1]
file="{out}/out.json"

[db1]
db="{out}/out.sqlite"
table="pkt"
batch_size=1000000
batch_timeout=60
spool_dir="{out}/spool"
"""


def _logged_by_source(wal: Path) -> list[tuple[str, int, int]]:
    """(source id, the daemon's sequence number, the kernel's seq.global) of every logged packet."""
    out: list[tuple[str, int, int]] = []
    for frame in read_dir(str(wal)):
        assert frame.reads is not None, "NFLOG logs the datagrams it read"
        for now, first, n, data in frame.reads:
            recs = nflog.Decoder().parse_buffer(data, now, 0).records
            assert len(recs) == n
            out.extend((frame.source, first + i, rec[nflog.IDX["oob.seq.global"]]) for i, rec in enumerate(recs))
    return out


def test_followed_namespaces_are_logged_and_replayed(tmp_path: Path) -> None:
    """``netns=``: the input made for each followed namespace at run time logs what it reads
    like a configured input. Two followed namespaces flooded, the daemon SIGKILLed, one of the
    namespaces deleted while it is down, the daemon started again: every packet the killed
    daemon had logged is in both outputs, with its namespace's name (also the deleted one's)."""
    out = tmp_path
    con = sqlite3.connect(out / "out.sqlite")
    con.execute("CREATE TABLE pkt (oob_seq_global INTEGER, oob_netns TEXT)")
    con.commit()
    con.close()
    tag = unique("gp-")
    spaces = [Namespace(f"{tag}-{x}", GROUP) for x in "ab"]
    stop = threading.Event()
    try:
        d = Daemon(out, _followed_config(out, f"{tag}-*"), out / "ulogd.log")
        wait_for(lambda: all(ns.nflog_bound() for ns in spaces), 15, "both namespaces attached")

        def flood() -> None:
            while not stop.is_set():
                for ns in spaces:
                    ns.send(100)

        sender = threading.Thread(target=flood, daemon=True)
        sender.start()
        try:
            wait_for(lambda: len(lines(out / "out.json")) >= 3000, 60, "3000 records in the JSON file")
            d.kill()  # SIGKILL, mid-flood
        finally:
            stop.set()
            sender.join(30)
        assert d.proc.returncode == -signal.SIGKILL

        first = _logged_by_source(out / "wal")
        logged = {(src.split(".", 1)[1], g) for src, _seq, g in first}
        assert {name for name, _g in logged} == {ns.name for ns in spaces}, "each namespace's input logs"
        assert len(logged) == len(first)
        pyseqs = [seq for _src, seq, _g in first]
        assert len(set(pyseqs)) == len(pyseqs), "one sequence for the daemon"
        assert not _db_pairs(out / "out.sqlite"), "the SQL batch was to wait 60 s"

        gone = spaces.pop()
        gone.delete()  # its input cannot come back: its records are replayed all the same
        d2 = Daemon(out, _followed_config(out, f"{tag}-*"), out / "ulogd.log")
        try:
            wait_for(lambda: _replayed(d2.text(), "db1") > 0, 30, "the replay")
            wait_for(spaces[0].nflog_bound, 15, "the namespace left attached again")
            spaces[0].send(100)

            def second() -> list[int]:
                return [seq for _src, seq, _g in _logged_by_source(out / "wal") if seq not in set(pyseqs)]

            wait_for(lambda: len(second()) >= 100, 30, "the new records in the log")
            assert min(second()) > max(pyseqs), "sequence numbers go on increasing across the kill"
        finally:
            assert d2.stop() == 0, d2.stderr()
        text = d2.text()
        assert "sources not in this configuration" not in text
        in_json = {(r["oob.netns"], r["oob.seq.global"]) for r in map(json.loads, lines(out / "out.json"))}
        in_db = set(_db_pairs(out / "out.sqlite"))
        assert logged <= in_json, f"{len(logged - in_json)} logged records never in the JSON file"
        assert logged <= in_db, f"{len(logged - in_db)} logged records never in the table"
        assert {g for name, g in logged if name == gone.name}, "the deleted namespace had records"
        assert _replayed(text, "db1") == len(first)
    finally:
        stop.set()
        for ns in spaces:
            ns.delete()
        os.sync()


def _db_pairs(path: Path) -> list[tuple[str, int]]:
    con = sqlite3.connect(path)
    try:
        return [(r[0], r[1]) for r in con.execute("SELECT oob_netns, oob_seq_global FROM pkt")]
    finally:
        con.close()


def test_records_a_rate_limit_holds_back_survive_a_sigkill(tmp_path: Path) -> None:
    """RATELIMIT's summaries are not logged: the records it holds back keep the output's cursor
    below them until their summary went on. 50 packets, 5 pass, 45 wait in an hour's window;
    SIGKILL; the restart replays the 45 through a fresh RATELIMIT (5 pass, 40 summarised at
    stop): every packet is in the file, as a record or in a summary's count."""
    out = tmp_path
    conf = f"""[global]
logfile="{out}/ulogd.log"
loglevel=1
wal=1
wal_dir="{out}/wal"
stack=log1:NFLOG,base1:BASE,rl1:RATELIMIT,json1:JSON

[log1]
group={GROUP}
seq_global=1

[rl1]
rate=1
burst=5
window=3600

[json1]
file="{out}/out.json"
"""
    ns = Namespace(unique("gp-"), GROUP)
    try:
        wrap = ["ip", "netns", "exec", ns.name]
        d = Daemon(out, conf, out / "ulogd.log", wrapper=wrap)
        try:
            ns.send(50)
            wait_for(lambda: len(_logged(out / "wal")) == 50, 30, "50 packets in the log")
            wait_for(lambda: len(lines(out / "out.json")) == 5, 30, "the 5 the bucket lets through")
            first_held = sorted(seq for seq, _g in _logged(out / "wal"))[5]
            wait_for(lambda: read_state(str(out / "wal")).get("seq", 0) >= first_held, 30, "the state saved")
            assert read_state(str(out / "wal"))["cursors"]["json1"] < first_held
        finally:
            d.kill()
        d2 = Daemon(out, conf, out / "ulogd.log", wrapper=wrap,
                    ready=lambda: "\n".join(lines(out / "ulogd.log")).count("entering main loop") == 2)
        assert d2.stop() == 0, d2.stderr()
        recs = [json.loads(line) for line in lines(out / "out.json")]
        passed = [r["oob.seq.global"] for r in recs if "audit.suppressed" not in r]
        summarised = sum(r["audit.suppressed"] for r in recs if "audit.suppressed" in r)
        assert len(passed) == 10 and len(set(passed)) == 10 and summarised == 40, (passed, summarised)
        assert _replayed(d2.text(), "json1") == 45
    finally:
        ns.delete()
