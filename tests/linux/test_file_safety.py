"""The daemon as an attacker meets it: ``-u nobody``, links planted by nobody (issue 10, 3 and 6).

Real daemons (``python -m pyulogd``), fed through a UNIXSOCK socket (no network needed):

* the pidfile exploit exactly as reported: ``ln -s /root-only/file DIR/pyulogd.pid`` by
  nobody, then ``pyulogd -d -p DIR/pyulogd.pid -u nobody``: the root-only file is unchanged;
* SQLITE3 with ``schema_file`` and a spool under ``-u nobody``: 100 records of 100 reach the
  database, and the database and the spool belong to nobody;
* a file the user could not reopen after the drop refuses the start (exit 1, naming it);
* SIGHUP after ``-u``: the output is reopened as the user, in a directory the user may write.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pyulogd.ctl.unixsock import UnixsockClient, udp_packet
from tests.linux.lab import lines, wait_for
from tests.privs import make_victim, plant_link, reachable_tmp, run_as_nobody, snapshot, users_dir, why_skip

_skip = why_skip()
pytestmark = [pytest.mark.linux, pytest.mark.skipif(_skip is not None, reason=_skip or "")]


def conf(out: Path, sock: Path, extra_stack: str = "", sections: str = "", emu: Path | None = None) -> str:
    return f"""[global]
logfile="{out}/daemon.log"
loglevel=3
stack=us1:UNIXSOCK,base1:BASE,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU
{extra_stack}

[us1]
socket_path="{sock}"
perms=0666

[emu1]
file="{emu or out / 'audit.log'}"
{sections}"""


def pyulogd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyulogd", "--no-realtime", *args]


def send(sock: Path, n: int, prefix: str = "P ") -> None:
    with UnixsockClient(str(sock)) as c:
        for i in range(n):
            c.send(udp_packet("192.0.2.1", "192.0.2.2", 1024 + i, 9999), prefix=prefix)


def started(log: Path) -> bool:
    return "entering main loop" in "".join(lines(log))


def stop(p: subprocess.Popen[str]) -> str:
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    return err


def daemon_pid(base: Path) -> int:
    """The pid of a daemon started with a config under ``base`` (when its pidfile cannot say)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"pyulogd" in cmdline and f"{base}/u.conf".encode() in cmdline:
                return int(entry)
    raise AssertionError(f"no daemon running with {base}/u.conf")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_pidfile_exploit_from_the_issue() -> None:
    user = run_as_nobody()
    with reachable_tmp() as base:
        run, out, victim = users_dir(base, "run"), base / "out", make_victim(base)
        out.mkdir()
        before = snapshot(victim)
        (base / "u.conf").write_text(conf(out, out / "u.sock"))
        pidfile = run / "pyulogd.pid"
        plant_link(victim, pidfile)  # as nobody, in the directory nobody owns
        r = subprocess.run(pyulogd("-d", "-p", str(pidfile), "-u", "nobody", "-c", str(base / "u.conf")),
                           capture_output=True, text=True, timeout=30)  # fmt: skip
        assert r.returncode == 0, r.stderr
        pid = int(pidfile.read_text()) if not pidfile.is_symlink() else daemon_pid(base)
        try:
            assert snapshot(victim) == before
            assert not pidfile.is_symlink() and os.stat(pidfile).st_uid == 0
            send(out / "u.sock", 2)
            wait_for(lambda: len(lines(out / "audit.log")) == 2, 10, "2 lines after the drop")
            assert os.stat(out / "audit.log").st_uid == user.uid  # the user reopens it on SIGHUP
        finally:
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not pid_alive(pid), 10, "exit")
        assert not pidfile.exists()  # removed by the user: the directory is its own
        assert snapshot(victim) == before


def test_pidfile_directory_writable_by_every_user_refuses_the_start() -> None:
    with reachable_tmp() as base:
        shared, out = base / "shared", base / "out"
        shared.mkdir()
        out.mkdir()
        os.chmod(shared, 0o1777)
        (base / "u.conf").write_text(conf(out, out / "u.sock"))
        r = subprocess.run(pyulogd("-d", "-p", str(shared / "p.pid"), "-u", "nobody", "-c", str(base / "u.conf")),
                           capture_output=True, text=True, timeout=30)  # fmt: skip
        if r.returncode == 0:  # a daemon started: stop it before failing
            os.kill(daemon_pid(base), signal.SIGTERM)
        assert r.returncode == 1
        assert f"cannot use pidfile {shared}/p.pid" in r.stderr and "writable by every user" in r.stderr
        assert os.listdir(shared) == []


SCHEMA = "CREATE TABLE ulog (oob_prefix TEXT, raw_pktlen INTEGER, udp_dport INTEGER);\n"


def test_sqlite_and_spool_under_u_nobody_get_every_record() -> None:
    """Item 6: before, root made the database (schema_file) and the spool, and all 100 records
    were dropped after the drop while the start said 0. Now the user makes them."""
    user = run_as_nobody()
    with reachable_tmp() as base:
        out, dbdir = base / "out", users_dir(base, "db")
        out.mkdir()
        (base / "schema.sql").write_text(SCHEMA)
        db, spool = dbdir / "ulogd.db", base / "spool"
        sections = f"""
[db1]
db="{db}"
table="ulog"
schema_file="{base}/schema.sql"
spool_dir="{spool}"
batch_timeout="100ms"
"""
        (base / "u.conf").write_text(conf(out, out / "u.sock", "stack=us1:UNIXSOCK,base1:BASE,db1:SQLITE3", sections))
        p = subprocess.Popen(pyulogd("-u", "nobody", "-c", str(base / "u.conf")), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            wait_for(lambda: started(out / "daemon.log") or p.poll() is not None, 20, "the daemon")
            assert p.poll() is None, p.communicate()[1]
            send(out / "u.sock", 100)

            def rows() -> int:
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                try:
                    return int(con.execute("SELECT count(*) FROM ulog").fetchone()[0])
                finally:
                    con.close()

            wait_for(lambda: rows() == 100, 20, "100 rows")
        finally:
            err = stop(p)
        log = "".join(lines(out / "daemon.log"))
        assert "sql.db1.rows=100" in log and "dropped" not in log, err
        con = sqlite3.connect(db)
        assert con.execute("SELECT count(*), min(udp_dport), max(oob_prefix) FROM ulog").fetchone() == (100, 9999, "P ")
        con.close()
        for path in (db, spool, *spool.iterdir(), *dbdir.iterdir()):
            assert os.stat(path).st_uid == user.uid, path
        assert stat.S_IMODE(os.stat(spool).st_mode) == 0o700


def test_paths_the_user_cannot_write_refuse_the_start() -> None:
    with reachable_tmp() as base:
        out = base / "out"
        out.mkdir()
        make_victim(out, "audit.log")  # root's 0600, from a run without -u
        (base / "u.conf").write_text(conf(out, out / "u.sock"))
        r = subprocess.run(pyulogd("-u", "nobody", "-c", str(base / "u.conf")), capture_output=True, text=True,
                           timeout=30)  # fmt: skip
        assert r.returncode == 1
        assert f"'{out}/audit.log'" in r.stderr and "not writable by user nobody" in r.stderr
        os.unlink(out / "audit.log")
        (base / "schema.sql").write_text(SCHEMA)
        sections = f'\n[db1]\ndb="{base}/root.db"\ntable="ulog"\nschema_file="{base}/schema.sql"\n'
        (base / "u.conf").write_text(conf(out, out / "u.sock", "stack=us1:UNIXSOCK,base1:BASE,db1:SQLITE3", sections))
        r = subprocess.run(pyulogd("-u", "nobody", "-c", str(base / "u.conf")), capture_output=True, text=True,
                           timeout=30)  # fmt: skip
        assert r.returncode == 1
        assert f"cannot use db '{base}/root.db'" in r.stderr and "-wal" in r.stderr
        assert not (base / "root.db").exists()


def test_sighup_after_u_reopens_as_the_user() -> None:
    """logrotate moves the file away; SIGHUP; the user creates the new one where it may
    (its own directory), and in root's directory keeps writing to the old one, saying why."""
    user = run_as_nobody()
    with reachable_tmp() as base:
        out, mine = base / "out", users_dir(base, "mine")
        out.mkdir()
        emu = mine / "audit.log"
        (base / "u.conf").write_text(conf(out, out / "u.sock", emu=emu))
        p = subprocess.Popen(pyulogd("-u", "nobody", "-c", str(base / "u.conf")), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            wait_for(lambda: started(out / "daemon.log") or p.poll() is not None, 20, "the daemon")
            send(out / "u.sock", 1)
            wait_for(lambda: len(lines(emu)) == 1, 10, "1 line")
            emu.rename(mine / "audit.log.1")
            (out / "daemon.log").rename(out / "daemon.log.1")
            p.send_signal(signal.SIGHUP)
            wait_for(lambda: emu.exists(), 10, "the reopened file")
            send(out / "u.sock", 2)
            wait_for(lambda: len(lines(emu)) == 2, 10, "2 lines in the new file")
            assert os.stat(emu).st_uid == user.uid
        finally:
            stop(p)
        # The daemon's own log is in root's directory: the user cannot create it again there.
        assert not (out / "daemon.log").exists()
        assert "cannot reopen the log file" in "".join(lines(out / "daemon.log.1"))
