"""The fault matrix (issue 12, item 7): every fault, under every output kind, adds up.

Each test is one row. Traffic: UDP to port 9 inside a namespace of the test's own, logged by
``udp dport 9 counter log group 31`` (one NFLOG message per packet: ``netlink_qthreshold=1``;
``seq_local=1``, so that the kernel's drops show as gaps). The daemon runs with
``loss_records=1`` and a control socket; a second stack writes every record to a JSON file on
a healthy disk (the witness: the test waits for it instead of sleeping).

For each row the test checks, from the daemon's own counters (its control socket while it
runs, its exit lines) and from the destination itself:

* ``logged`` (the nft counter) = records NFLOG handed on + the NFLOG sequence gaps: the
  kernel's losses are counted exactly;
* ``received`` = ``written`` + ``dropped`` (+ what is still spooled): the output's losses are
  counted exactly;
* the destination holds ``written`` records: what was counted written is there;
* where the output takes loss records: their counts add up to ``dropped`` + the kernel's
  losses: the trail itself says what it misses.

So nothing is lost unexplained. The SIGKILL rows run with the write-ahead log (``wal=1``,
docs/wal.md): the killed daemon's counters come back with its state, what it read is
replayed, and every record logged must be at the destination (by its kernel time and
number) or counted dropped. Around a SIGKILL the traffic pauses until the daemon read
everything (what the kernel logs while no daemon reads is lost with nobody to count it,
ulogd2 the same).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyulogd.ctl.status import CtlError, ask
from tests.faults.harness import (
    GROUP,
    OUTAGE,
    PREFIX,
    STOP_TIME,
    FaultDaemon,
    FaultNs,
    Peer,
    Row,
    fill,
    from_run,
    json_records,
    loss_sum,
    tmpfs,
)
from tests.linux.lab import have_root_and_tools, lines, wait_for

_skip = have_root_and_tools("mount", "umount")
pytestmark = [pytest.mark.faults, pytest.mark.linux, pytest.mark.skipif(_skip is not None, reason=_skip or "")]



@pytest.fixture()
def ns() -> Iterator[FaultNs]:
    n = FaultNs()
    try:
        yield n
    finally:
        n.delete()


def config(tmp: Path, ns: FaultNs, output: str, log: Path | None = None,
           nflog: str = "netlink_socket_buffer_size=8388608", wal: bool = False) -> str:
    """The daemon's config: the witness stack and ``output`` (its stack= line then its section).
    ``nflog``: more of NFLOG's section; by default a receive buffer (8 MiB) that holds every
    burst of these tests, so that only the rows about the kernel's losses have any."""
    stack, section = output.split("\n", 1)
    return f"""[global]
logfile="{log or tmp / 'daemon.log'}"
loglevel=3
loss_records=1
control_socket="{tmp / 'ctl.sock'}"
{f'wal=1{chr(10)}wal_dir="{tmp / "wal"}"' if wal else ""}
stack=log1:NFLOG,base0:BASE,ip2str0:IP2STR,witness:JSON
{stack}

[log1]
group={GROUP}
network_namespace_path="{ns.path}"
netlink_qthreshold=1
seq_local=1
{nflog}

[witness]
file="{tmp / 'witness.json'}"

{section}
"""


def status(tmp: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ask(str(tmp / "ctl.sock"), "status"))
    return doc


def output_status(tmp: Path, oid: str) -> dict[str, int]:
    for out in status(tmp)["outputs"]:
        if out["id"] == oid:
            return {k: v for k, v in out.items() if isinstance(v, int)}
    raise AssertionError(f"no output {oid}")


def settled(tmp: Path, ns: FaultNs, oid: str, kernel_exact: bool = True) -> bool:
    """The kernel's records all read (or counted as gaps), and ``oid`` holds none in flight.
    ``kernel_exact=False``: the kernel dropped records it did not number (the test waited for
    the records after the loss itself)."""
    try:
        doc = status(tmp)
    except CtlError:
        return False
    c = doc["counters"]
    if kernel_exact and c.get("nflog.log1.packets", 0) + c.get("nflog.log1.seq_lost", 0) != ns.logged():
        return False
    for out in doc["outputs"]:
        if out["id"] in (oid, "witness"):
            dropped = sum(v for k, v in out.items() if k.startswith("dropped."))
            spooled = out.get("spooled", 0) - out.get("unspooled", 0) - out.get("spool_lost", 0)
            if out["received"] > out["written"] + out.get("spooled", 0) + dropped or spooled > 0:
                return False  # records in memory or in the spool (more than received: a failure)
    return True


def wait_settled(tmp: Path, ns: FaultNs, oid: str, timeout: float, what: str, kernel_exact: bool = True) -> None:
    """Until :func:`settled`; on a timeout the assertion shows the counters as they are."""
    try:
        wait_for(lambda: settled(tmp, ns, oid, kernel_exact), timeout, what)
    except AssertionError:
        try:
            doc = status(tmp)
        except CtlError as e:
            raise AssertionError(f"timed out waiting for {what}: {e}") from None
        nflog = {k: v for k, v in doc["counters"].items() if k.startswith("nflog.")}
        raise AssertionError(f"timed out waiting for {what}: logged {ns.logged()}, {nflog}, "
                             f"outputs {doc['outputs']}") from None


def wait_read(tmp: Path, ns: FaultNs) -> None:
    """Until the daemon has read everything the kernel logged (the traffic paused)."""
    def read_all() -> bool:
        try:
            return int(status(tmp)["counters"].get("nflog.log1.packets", 0)) >= ns.logged()
        except CtlError:
            return False

    wait_for(read_all, 30, "the daemon to read every record logged")


def kill_row(row: Row, ns: FaultNs, daemon: FaultDaemon, prefix: str, data: list[tuple[Any, ...]],
             losses: int | None) -> None:
    """A row with a SIGKILL: the killed run's counters come back with the write-ahead log's state
    (the last run's exit line holds them all). The contract: every record logged is at the
    destination at least once (by its kernel time and number), or counted dropped (and then in
    a loss record where the output has them); the counters add up."""
    row.logged = ns.logged()
    exits = daemon.exits()
    if exits:
        stats, outs = exits[-1]
        from_run(row, stats, outs.get("out1", {}), prefix)
    row.at_destination = len(set(data))
    row.loss_recorded = losses or 0
    explained = row.at_destination + (row.loss_recorded if losses is not None else row.dropped)
    missing = row.logged - explained
    checks = [
        (missing <= 0, f"{missing} unexplained (logged {row.logged}, at the destination {row.at_destination}, "
                       f"in loss records / dropped {explained - row.at_destination})"),
        (bool(exits), "no clean exit"),
        (row.received == row.written + row.spooled_exact + row.dropped,
         f"counters inexact: received {row.received} != written {row.written} + spooled {row.spooled_exact} + "
         f"dropped {row.dropped}"),
    ]
    failed = [why for ok, why in checks if not ok]
    trail = " and in the trail" if losses is not None else ""
    row.verdict = ("FAILS: " + "; ".join(failed) if failed else
                   "no loss" if row.dropped == 0 else "loss counted" + trail)
    if row.replayed and not failed:
        row.verdict += f" ({row.replayed} replayed)"
    row.save()
    assert not failed, row


def witness(tmp: Path) -> int:
    return sum(1 for x in lines(tmp / "witness.json") if PREFIX.strip() in x)


def account(row: Row, daemon: FaultDaemon, oid: str, prefix: str, ns: FaultNs, *,
            data_at_dest: int, audit_at_dest: int | None = None, losses_at_dest: int | None = None,
            audit: list[dict[str, Any]] | None = None) -> None:
    """Fill ``row`` from the daemon's clean exits and check that it adds up (module docstring).
    A row that does not add up is saved with what failed as its verdict, then fails."""
    row.logged = ns.logged()
    exits = daemon.exits()
    assert exits, daemon.text()[-3000:]
    for stats, outs in exits:
        from_run(row, stats, outs.get(oid, {}), prefix)
    packets = sum(s.get("nflog.log1.packets", 0) for s, _ in exits)
    row.at_destination = data_at_dest
    if losses_at_dest is not None:
        row.loss_recorded = losses_at_dest
    # The kernel's losses: every record logged was read or is a counted gap, except those the
    # kernel dropped without numbering them (a reader stopped for long, kernel 6.18): for those
    # the trail must hold an "enobufs" loss record (how many is a lower bound).
    row.unnumbered = row.logged - packets - row.kernel_lost
    if audit is not None:
        row.enobufs = sum(a["audit.loss.count"] for a in audit if a.get("audit.loss.reason") == "enobufs")
    checks = [
        (row.unnumbered >= 0, f"{-row.unnumbered} more read than logged"),
        (not row.unnumbered or row.enobufs > 0, f"{row.unnumbered} lost unnumbered and not in the trail"),
        # Every record read reached the output (audit records are the daemon's own).
        (row.received - row.audit == packets, f"output received {row.received - row.audit} of {packets} read"),
        # The output's losses, exactly: received = written + spooled + dropped (nothing in memory at exit).
        (row.received == row.written + row.spooled_exact + row.dropped,
         f"counters inexact: received {row.received} != written {row.written} + spooled {row.spooled_exact} + "
         f"dropped {row.dropped}"),
        # What was counted written (directly or from the spool) is at the destination.
        (data_at_dest + (audit_at_dest or 0) == row.written + row.unspooled,
         f"{data_at_dest} records at the destination, {row.written} + {row.unspooled} counted written"),
        # The trail says what it misses: the output's drops, the kernel's gaps, the overruns.
        (losses_at_dest is None or losses_at_dest == row.dropped + row.kernel_lost + row.enobufs,
         f"loss records say {losses_at_dest}, counted {row.dropped + row.kernel_lost + row.enobufs}"),
    ]
    failed = [why for ok, why in checks if not ok]
    lost = row.dropped + row.kernel_lost
    row.verdict = ("no loss" if lost + row.unnumbered == 0 else
                   "loss counted" + (" and in the trail" if losses_at_dest is not None else " (no trail form)"))
    if row.unnumbered > 0:
        row.verdict = (f"{row.unnumbered} dropped unnumbered by the kernel: {row.enobufs} overrun(s) in the "
                       "trail (a lower bound)" + ("; " + row.verdict if lost else ""))
    if failed:
        row.verdict = "FAILS: " + "; ".join(failed)
        row.save()
        raise AssertionError(f"{row.verdict}: {row}")


def run_json_file_row(tmp_path: Path, ns: FaultNs, fault: str, target: Path,
                      during: Callable[[FaultDaemon], None], kernel_exact: bool = True) -> Row:
    """JSON to ``target``: 200 records during the fault (``during``), 20 once it is over."""
    cfg = config(tmp_path, ns, f'stack=log1:NFLOG,base1:BASE,ip2str1:IP2STR,out1:JSON\n[out1]\nfile="{target}"')
    daemon = FaultDaemon(tmp_path, cfg, ns, tmp_path / "daemon.log")
    try:
        ns.send(200)
        wait_for(lambda: witness(tmp_path) == 200, 30, "200 records in the witness")
        during(daemon)
        ns.send(20)
        wait_for(lambda: witness(tmp_path) == 220, 30, "220 records in the witness")
        wait_settled(tmp_path, ns, "out1", 30, "the daemon to settle", kernel_exact=kernel_exact)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    data, audit = json_records(lines(target)) if target.exists() else ([], [])
    row = Row(fault, "file (JSON)")
    if not kernel_exact:  # a run was killed: its counters are gone; what the destination holds
        row.logged = ns.logged()
        row.at_destination = len({d.get("oob.seq.local") for d in data})
        row.loss_recorded = loss_sum(audit)
        for stats, outs in daemon.exits():
            from_run(row, stats, outs.get("out1", {}), "json.out1")
        missing = row.logged - row.at_destination - row.loss_recorded
        row.verdict = "no loss" if row.loss_recorded == 0 and missing <= 0 else f"{max(missing, 0)} unexplained"
        return row
    account(row, daemon, "out1", "json.out1", ns, data_at_dest=len(data), audit_at_dest=len(audit),
            losses_at_dest=loss_sum(audit))
    assert all(d["oob.prefix"] == PREFIX for d in data)
    return row


# -- disk full
def test_disk_full_file(tmp_path: Path, ns: FaultNs) -> None:
    with tmpfs(tmp_path / "full") as full:
        target = full / "pkt.json"
        target.write_text("")
        fill(full)

        def room(daemon: FaultDaemon) -> None:
            os.unlink(full / "filler")

        row = run_json_file_row(tmp_path, ns, "disk full", target, room)
    assert row.dropped > 0 and row.causes.get("write_failed") == row.dropped
    row.save()


def test_disk_full_log(tmp_path: Path, ns: FaultNs) -> None:
    with tmpfs(tmp_path / "full") as full:
        log = full / "daemon.log"
        log.write_text("")
        fill(full)
        target = tmp_path / "pkt.json"
        cfg = config(tmp_path, ns, f'stack=log1:NFLOG,base1:BASE,ip2str1:IP2STR,out1:JSON\n[out1]\nfile="{target}"',
                     log=log)
        daemon = FaultDaemon(tmp_path, cfg, ns, log)
        try:
            ns.send(200)
            daemon.signal(signal.SIGHUP)  # the log reopened while full, logging about it
            wait_for(lambda: witness(tmp_path) == 200, 30, "200 records in the witness")
            wait_settled(tmp_path, ns, "out1", 30, "the daemon to settle")
            assert daemon.stop() == 0
        finally:
            daemon.kill()
        data, audit = json_records(lines(target))
        row = Row("disk full", "the daemon's log")
        account(row, daemon, "out1", "json.out1", ns, data_at_dest=len(data), audit_at_dest=len(audit),
                losses_at_dest=loss_sum(audit))
        stats = daemon.exits()[0][0]
        assert stats["log.lines_lost"] > 0  # the log's own losses are counted (records lose nothing)
        row.notes.append(f"log.lines_lost={stats['log.lines_lost']}")
    assert row.dropped == 0 and len(data) == 200
    row.save()


def sqlite_rows(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT count(*) FROM pkt").fetchone()[0])
    finally:
        con.close()


def test_disk_full_sql(tmp_path: Path, ns: FaultNs) -> None:
    with tmpfs(tmp_path / "full") as full:
        db = full / "audit.db"
        con = sqlite3.connect(db)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE pkt (oob_prefix TEXT, oob_seq_local INTEGER)")
        con.commit()
        con.close()
        out = (f'stack=log1:NFLOG,out1:SQLITE3\n[out1]\ndb="{db}"\ntable="pkt"\nspool_dir="{tmp_path / "spool"}"\n'
               "batch_timeout=100ms\nreconnect=200ms\nreconnect_max=1")
        daemon = FaultDaemon(tmp_path, config(tmp_path, ns, out), ns, tmp_path / "daemon.log")
        try:
            # (A database on a full disk at start is refused: "disk I/O error", the daemon exits 1.)
            ns.send(20)
            wait_for(lambda: sqlite_rows(db) == 20, 30, "20 rows before the disk fills")
            # A reader holding a snapshot keeps SQLite from restarting its write-ahead file, so
            # the next transactions must grow it: on a full disk.
            reader = sqlite3.connect(db)
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM pkt").fetchone()
            fill(full)
            ns.send(200)
            wait_for(lambda: witness(tmp_path) == 220, 30, "220 records in the witness")
            wait_for(lambda: "database or disk is full" in daemon.text(), 30, "the writer to meet the full disk")
            reader.rollback()
            reader.close()
            os.unlink(full / "filler")
            ns.send(20)
            wait_for(lambda: witness(tmp_path) == 240, 30, "240 records in the witness")
            wait_settled(tmp_path, ns, "out1", 60, "the database to take the rows")
            assert daemon.stop() == 0
        finally:
            daemon.kill()
        row = Row("disk full", "SQL (SQLITE3)")
        account(row, daemon, "out1", "sql.out1", ns, data_at_dest=sqlite_rows(db))
    assert row.at_destination == row.written + row.unspooled  # SQL tables have no loss record: counted only
    row.save()


# -- PostgreSQL of the test's own
@pytest.fixture()
def pg(tmp_path: Path) -> Iterator[Any]:
    pytest.importorskip("psycopg")
    from tests.services.servers import PgCluster

    try:
        cluster = PgCluster()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot make a PostgreSQL cluster: {e}")
    try:
        cluster.start()
        cluster.psql("CREATE DATABASE audit")
        cluster.psql("CREATE TABLE pkt (_id bigserial, oob_prefix text, oob_time_sec bigint, oob_time_usec bigint, "
                     "oob_seq_local bigint)", db="audit")
        yield cluster
    finally:
        cluster.close()


def pg_keys(pg: Any) -> list[tuple[Any, ...]]:
    """(kernel time, kernel number) of every row: a record written twice has the same."""
    out = pg.psql("SELECT oob_time_sec, oob_time_usec, oob_seq_local FROM pkt", db="audit")
    return [tuple(x.split("|")) for x in out.split()]


def pg_rows(pg: Any, distinct: bool = False) -> int:
    what = "count(DISTINCT oob_seq_local)" if distinct else "count(*)"
    try:
        return int(pg.psql(f"SELECT {what} FROM pkt", db="audit").strip())
    except subprocess.CalledProcessError:
        return -1


def pg_output(pg: Any, spool: Path, extra: str = "") -> str:
    return (f'stack=log1:NFLOG,out1:PGSQL\n[out1]\ndb="audit"\nhost="127.0.0.1"\nport={pg.port}\nuser="postgres"\n'
            f'table="pkt"\nprocedure="INSERT"\nspool_dir="{spool}"\nbatch_timeout=100ms\nreconnect=200ms\n'
            f"reconnect_max=1\n{extra}")


def test_disk_full_spool(tmp_path: Path, ns: FaultNs, pg: Any) -> None:
    with tmpfs(tmp_path / "full") as full:
        out = pg_output(pg, full / "spool", "backlog_memcap=4096")
        daemon = FaultDaemon(tmp_path, config(tmp_path, ns, out), ns, tmp_path / "daemon.log")
        try:
            ns.send(20)
            wait_for(lambda: pg_rows(pg) == 20, 30, "20 rows with the database up")
            fill(full)  # the spool's disk full (the daemon started with room: its column cache is there)
            pg.stop()
            ns.send(300)  # beyond the memory bound: to the spool, which is full
            wait_for(lambda: witness(tmp_path) == 320, 30, "320 records in the witness")
            wait_for(lambda: sum(v for k, v in output_status(tmp_path, "out1").items() if k.startswith("dropped."))
                     > 0, 30, "the output to drop what neither memory nor the spool holds")  # fmt: skip
            pg.start()
            ns.send(20)
            wait_for(lambda: witness(tmp_path) == 340, 30, "340 records in the witness")
            wait_settled(tmp_path, ns, "out1", 60, "the database to take the rows")
            assert daemon.stop() == 0
        finally:
            daemon.kill()
        row = Row("disk full", "spool (PGSQL, database down)")
        account(row, daemon, "out1", "sql.out1", ns, data_at_dest=pg_rows(pg))
    assert row.dropped > 0 and row.at_destination == row.written + row.unspooled
    row.save()


# -- database stopped 20 s
def test_database_stopped(tmp_path: Path, ns: FaultNs, pg: Any) -> None:
    daemon = FaultDaemon(tmp_path, config(tmp_path, ns, pg_output(pg, tmp_path / "spool")), ns, tmp_path / "daemon.log")
    try:
        with ns.traffic(100):
            wait_for(lambda: pg_rows(pg) >= 50, 30, "rows with the database up")
            pg.stop()
            wait_for(lambda: witness(tmp_path) >= 100 * OUTAGE, 2 * OUTAGE + 30, f"{OUTAGE:g} s of traffic")
            pg.start()
            n = witness(tmp_path)
            wait_for(lambda: witness(tmp_path) >= n + 100, 30, "traffic after the database came back")
        wait_settled(tmp_path, ns, "out1", 60, "the spool to drain")
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    row = Row(f"database stopped {OUTAGE:g} s", "SQL (PGSQL)")
    account(row, daemon, "out1", "sql.out1", ns, data_at_dest=pg_rows(pg))
    assert row.spooled > 0 and row.dropped == 0 and row.at_destination == row.logged
    row.save()


def test_database_stopped_sigkill(tmp_path: Path, ns: FaultNs, pg: Any) -> None:
    out = pg_output(pg, tmp_path / "spool")
    daemon = FaultDaemon(tmp_path, config(tmp_path, ns, out, wal=True), ns, tmp_path / "daemon.log")
    row = Row(f"database stopped {OUTAGE:g} s + SIGKILL", "SQL (PGSQL)")
    try:
        with ns.traffic(100):
            wait_for(lambda: pg_rows(pg) >= 50, 30, "rows with the database up")
            pg.stop()
            wait_for(lambda: ns.logged() >= 100 * OUTAGE / 2, OUTAGE + 30, "half the outage")
        wait_read(tmp_path, ns)  # everything logged was read: what is lost now is the daemon's
        daemon.kill()  # in the middle of the outage: records in memory and in the spool
        daemon.start()
        with ns.traffic(100):
            wait_for(lambda: ns.logged() >= 100 * OUTAGE, OUTAGE + 30, "the rest of the outage")
            pg.start()
            n = ns.logged()
            wait_for(lambda: ns.logged() >= n + 100, 30, "traffic after the database came back")
        wait_settled(tmp_path, ns, "out1", 60, "the spool to drain", kernel_exact=False)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    kill_row(row, ns, daemon, "sql.out1", pg_keys(pg), None)


# -- network peer down 20 s
def json_tcp(peer: Peer, spool: Path) -> str:
    """The spool in the test's directory: the default (/var/spool/pyulogd/...) is the machine's."""
    return (f'stack=log1:NFLOG,base1:BASE,ip2str1:IP2STR,out1:JSON\n[out1]\nmode=tcp\nhost="127.0.0.1"\n'
            f'port={peer.port}\nreconnect_max=1\nspool_dir="{spool}"')


def peer_row(tmp_path: Path, ns: FaultNs, kill: bool) -> tuple[Row, Peer, FaultDaemon]:
    """JSON over TCP at 250 records/s, the peer down for OUTAGE seconds (SIGKILL and restart in
    the middle: the traffic pauses around it, so that nothing is logged while no daemon reads)."""
    peer = Peer()
    conf = config(tmp_path, ns, json_tcp(peer, tmp_path / "netspool"), wal=kill)
    daemon = FaultDaemon(tmp_path, conf, ns, tmp_path / "daemon.log")
    try:
        with ns.traffic(250):
            wait_for(lambda: len(peer.lines()) >= 100, 30, "records at the peer")
            peer.down()
            wait_for(lambda: ns.logged() >= 250 * OUTAGE / 2, OUTAGE + 30, "half the outage")
        if kill:
            wait_read(tmp_path, ns)
            daemon.kill()
            daemon.start()
        with ns.traffic(250):
            wait_for(lambda: ns.logged() >= 250 * OUTAGE, OUTAGE + 30, "the rest of the outage")
            peer.up()
            n = ns.logged()
            wait_for(lambda: ns.logged() >= n + 250, 30, "traffic after the peer came back")
        wait_settled(tmp_path, ns, "out1", 60, "the queue to drain", kernel_exact=not kill)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
        peer.close()
    return Row(f"peer down {OUTAGE:g} s" + (" + SIGKILL" if kill else ""), "network (JSON over TCP)"), peer, daemon


def test_peer_down(tmp_path: Path, ns: FaultNs) -> None:
    row, peer, daemon = peer_row(tmp_path, ns, kill=False)
    data, audit = json_records(peer.lines())
    account(row, daemon, "out1", "json.out1", ns, data_at_dest=len(data), audit_at_dest=len(audit),
            losses_at_dest=loss_sum(audit))
    row.save()
    assert row.dropped == 0, f"{row.dropped} records dropped ({row.causes}), each in a loss record"


def json_keys(data: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(d.get("oob.time.sec"), d.get("oob.time.usec"), d.get("oob.seq.local")) for d in data]


def test_peer_down_sigkill(tmp_path: Path, ns: FaultNs) -> None:
    row, peer, daemon = peer_row(tmp_path, ns, kill=True)
    data, audit = json_records(peer.lines())
    kill_row(row, ns, daemon, "json.out1", json_keys(data), loss_sum(audit))


def test_disk_full_sigkill(tmp_path: Path, ns: FaultNs) -> None:
    with tmpfs(tmp_path / "full") as full:
        target = full / "pkt.json"
        target.write_text("")
        fill(full)
        out = f'stack=log1:NFLOG,base1:BASE,ip2str1:IP2STR,out1:JSON\n[out1]\nfile="{target}"'
        daemon = FaultDaemon(tmp_path, config(tmp_path, ns, out, wal=True), ns, tmp_path / "daemon.log")
        try:
            ns.send(200)
            wait_read(tmp_path, ns)
            wait_for(lambda: sum(v for k, v in output_status(tmp_path, "out1").items() if k.startswith("dropped."))
                     >= 200, 30, "the disk-full drops")  # fmt: skip
            daemon.kill()  # its drops counted (and saved), its loss record not yet written
            os.unlink(full / "filler")
            daemon.start()
            ns.send(20)
            wait_settled(tmp_path, ns, "out1", 30, "the daemon to settle", kernel_exact=False)
            assert daemon.stop() == 0
        finally:
            daemon.kill()
        data, audit = json_records(lines(target))
    row = Row("disk full + SIGKILL", "file (JSON)")
    kill_row(row, ns, daemon, "json.out1", json_keys(data), loss_sum(audit))


# -- the daemon stopped (SIGSTOP 30 s) and the kernel's buffer overrun
def kernel_loss_row(tmp_path: Path, ns: FaultNs, fault: str, nflog: str, load: Callable[[FaultDaemon], None]) -> Row:
    target = tmp_path / "pkt.json"
    cfg = config(tmp_path, ns, f'stack=log1:NFLOG,base1:BASE,ip2str1:IP2STR,out1:JSON\n[out1]\nfile="{target}"',
                 nflog=nflog)
    daemon = FaultDaemon(tmp_path, cfg, ns, tmp_path / "daemon.log")
    try:
        load(daemon)
        # After the loss, a few packets whose sequence numbers close the last gap.
        n = witness(tmp_path)
        ns.send(10)
        wait_for(lambda: witness(tmp_path) >= n + 10, 30, "the packets after the loss")
        wait_settled(tmp_path, ns, "out1", 30, "the daemon to settle", kernel_exact=False)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    data, audit = json_records(lines(target))
    row = Row(fault, "file (JSON)")
    account(row, daemon, "out1", "json.out1", ns, data_at_dest=len(data), audit_at_dest=len(audit),
            losses_at_dest=loss_sum(audit), audit=audit)
    assert row.kernel_lost + row.unnumbered > 0
    return row


def test_sigstop(tmp_path: Path, ns: FaultNs) -> None:
    def stopped(daemon: FaultDaemon) -> None:
        daemon.signal(signal.SIGSTOP)
        try:
            with ns.traffic(100):
                # the load for STOP_TIME seconds while the daemon cannot read: the kernel's buffer fills
                ended = wait_for_count(ns, int(100 * STOP_TIME), STOP_TIME + 30)
        finally:
            daemon.signal(signal.SIGCONT)
        assert ended

    # The kernel's default receive buffer (ulogd2's default config sets none).
    row = kernel_loss_row(tmp_path, ns, f"SIGSTOP {STOP_TIME:g} s", "", stopped)
    row.save()


def test_kernel_overrun(tmp_path: Path, ns: FaultNs) -> None:
    def flood(daemon: FaultDaemon) -> None:
        ns.send(20000)  # as fast as one socket sends, into a 4 KiB receive buffer

    row = kernel_loss_row(tmp_path, ns, "kernel buffer overrun", "netlink_socket_buffer_size=4096", flood)
    row.save()


def wait_for_count(ns: FaultNs, n: int, timeout: float) -> bool:
    wait_for(lambda: ns.logged() >= n, timeout, f"{n} packets logged")
    return True
