"""No loss when the database goes away: a real NFLOG flood while the server is stopped for 20 s.

Each test runs its own throw-away server (tests/services/servers.py) inside the lab's server
namespace, pyulogd as a daemon process there, and a UDP flood from the client namespace
through ``udp dport 9999 counter log group N drop``. The server is stopped for 20 seconds
in the middle of the flood and started again; during the outage pyulogd is killed with
SIGKILL (after the flood paused, so that everything it had read is in its spool) and
started again while the database is still down (it then starts from the cached column
list). At the end the table holds exactly as many rows as the nft counter counted, in
the order the kernel logged them.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.linux.lab import Lab, have_root_and_tools, sh, wait_for
from tests.services.servers import MariadbInstance, PgCluster

_skip = have_root_and_tools()
pytestmark = [pytest.mark.services, pytest.mark.linux, pytest.mark.skipif(_skip is not None, reason=_skip or "")]
GROUP = 27
RATE = 4000
OUTAGE = 20.0
TABLE = "pkt"
COLUMNS = "oob_prefix, oob_time_sec, oob_time_usec, raw_pktlen, oob_hook"


@pytest.fixture()
def lab() -> Iterator[Lab]:
    with Lab("sql") as lab:
        lab.nft(f"""table inet t {{
  chain input {{ type filter hook input priority 0; policy accept;
    udp dport 9999 counter log prefix "FLOOD " group {GROUP} drop
  }}
}}""")
        yield lab


def nft_count(lab: Lab) -> int:
    out = sh("nft", "list", "chain", "inet", "t", "input", ns=lab.srv).stdout
    m = re.search(r"counter packets (\d+)", out)
    assert m is not None, out
    return int(m[1])


def flood(lab: Lab, count: int, rate: int = RATE) -> None:
    """``count`` UDP packets at about ``rate``/s from the client namespace."""
    code = f"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t0 = time.monotonic()
for i in range({count}):
    s.sendto(b"x" * (1 + i % 50), ("{lab.srv4}", 9999))
    if i % 100 == 99:
        ahead = (i + 1) / {rate} - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
"""
    sh(sys.executable, "-c", code, ns=lab.cli, timeout=120)


def config(tmp: Path, plugin: str, port: int, user: str) -> str:
    return f"""[global]
logfile="{tmp}/daemon.log"
loglevel=3
stack=log1:NFLOG,db1:{plugin}

[log1]
group={GROUP}
netlink_socket_buffer_size=8388608
netlink_socket_buffer_maxsize=67108864

[db1]
db="audit"
host="127.0.0.1"
port={port}
user="{user}"
table="{TABLE}"
procedure="INSERT"
reconnect=1
reconnect_max=2
batch_timeout=200ms
spool_dir="{tmp}/spool"
"""


class Daemon:
    def __init__(self, lab: Lab, conf: Path) -> None:
        self.lab, self.conf = lab, conf
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = self.lab.popen([sys.executable, "-m", "pyulogd", "-c", str(self.conf)])
        wait_for(lambda: GROUP in self.lab.nflog_groups(), 15, "pyulogd to bind its NFLOG group")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        wait_for(lambda: GROUP not in self.lab.nflog_groups(), 5, "the NFLOG group to be released")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def run_outage(lab: Lab, tmp: Path, start: Callable[[], None], stop: Callable[[], None],
               count_rows: Callable[[], list[tuple[int, int]]], daemon: Daemon) -> None:
    daemon.start()
    flood(lab, 3 * RATE)  # database up
    stop()
    down = time.monotonic()
    flood(lab, 4 * RATE)  # database down: memory, then the spool
    time.sleep(2.5)  # everything read reaches the spool (the writer spools after batch_timeout)
    daemon.kill()
    daemon.start()  # database still down: starts from the cached column list and the spool
    flood(lab, 4 * RATE)
    time.sleep(max(0.0, OUTAGE - (time.monotonic() - down)))
    start()
    flood(lab, 2 * RATE)  # database back: spool first, then new records
    sent = nft_count(lab)
    assert sent == 13 * RATE
    wait_for(lambda: len(count_rows()) >= sent, 40, "the spool to drain")
    assert daemon.stop() == 0
    rows = count_rows()
    assert len(rows) == sent  # nothing lost, nothing twice
    assert rows == sorted(rows)  # in the order the kernel logged them (kernel timestamps)
    log = (tmp / "daemon.log").read_text()
    assert "sql.db1.dropped" not in log and "sql.db1.spooled=" in log


def test_pgsql_outage(lab: Lab, tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    try:
        pg = PgCluster(ns=lab.srv)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot make a PostgreSQL cluster: {e}")
    try:
        pg.start()
        pg.psql("CREATE DATABASE audit")
        pg.psql(f"CREATE TABLE {TABLE} (_id bigserial, oob_prefix text, oob_time_sec bigint, oob_time_usec bigint,"
                " raw_pktlen integer, oob_hook smallint)", db="audit")
        (tmp_path / "ulogd.conf").write_text(config(tmp_path, "PGSQL", pg.port, "postgres"))

        def rows() -> list[tuple[int, int]]:
            try:
                out = pg.psql(f"SELECT oob_time_sec, oob_time_usec FROM {TABLE} ORDER BY _id", db="audit")
            except subprocess.CalledProcessError:
                return []
            return [(int(a), int(b)) for a, b in (x.split("|") for x in out.split())]

        run_outage(lab, tmp_path, pg.start, pg.stop, rows, Daemon(lab, tmp_path / "ulogd.conf"))
    finally:
        pg.close()


def test_mysql_outage(lab: Lab, tmp_path: Path) -> None:
    pytest.importorskip("pymysql")
    try:
        my = MariadbInstance(ns=lab.srv)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot make a MariaDB instance: {e}")
    try:
        my.start()
        my.mysql(f"CREATE DATABASE audit; CREATE TABLE audit.{TABLE} (_id bigint auto_increment primary key,"
                 " oob_prefix varchar(32), oob_time_sec bigint, oob_time_usec bigint, raw_pktlen int, oob_hook int)")
        (tmp_path / "ulogd.conf").write_text(config(tmp_path, "MYSQL", my.port, "root"))

        def rows() -> list[tuple[int, int]]:
            out = my.mysql(f"SELECT oob_time_sec, oob_time_usec FROM audit.{TABLE} ORDER BY _id", check=False)
            return [(int(a), int(b)) for a, b in (x.split("\t") for x in out.stdout.splitlines())]

        run_outage(lab, tmp_path, my.start, my.stop, rows, Daemon(lab, tmp_path / "ulogd.conf"))
    finally:
        my.close()
