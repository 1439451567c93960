"""The daemon as systemd and Prometheus see it, against the real kernel (issue 13, items 3,
5, 6): READY=1 once the NFLOG group is bound, STATUS= and WATCHDOG=1 that stop when the
loop is stopped, READY from the child with -d, /metrics of a daemon following namespaces
with hostile names (checked by promtool), pyulogdctl status, and idle metrics clients that
do not hold the packet path.

Namespaces are this test's own (``pyu-opsd-`` or ``pyu-...`` lab names, random suffixes,
removed in ``finally``); traffic stays inside them; the metrics endpoint is on loopback, on
a port the kernel picks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyulogd.core.escape import escape_text
from tests.linux.lab import Lab, have_root_and_tools, lines, sh, wait_for
from tests.linux.nsdaemon import Daemon, Namespace, unique

_skip = have_root_and_tools()
pytestmark = [pytest.mark.linux, pytest.mark.skipif(_skip is not None, reason=_skip or "")]
GROUP = 63
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}


class Systemd:
    """The listening end of NOTIFY_SOCKET: a path (an abstract name would belong to the
    network namespace the daemon runs in), messages kept with their arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.got: list[tuple[float, dict[str, str]]] = []

    def wait(self, key: str, timeout: float = 15.0) -> dict[str, str]:
        """The next message with ``key``, reading (and keeping) everything before it."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}= from the daemon within {timeout} s; got {self.got}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            msg = dict(line.split("=", 1) for line in data.decode().split("\n"))
            self.got.append((time.monotonic(), msg))
            if key in msg:
                return msg

    def drain(self, seconds: float) -> list[dict[str, str]]:
        """Everything that arrives within ``seconds``."""
        out = []
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                break
            out.append(dict(line.split("=", 1) for line in data.decode().split("\n")))
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def systemd(tmp_path: Path) -> Iterator[Systemd]:
    s = Systemd(tmp_path / "notify")
    yield s
    s.close()


@pytest.fixture()
def lab() -> Iterator[Lab]:
    with Lab("opsd") as lab:
        lab.nft(f"""table inet t {{
  chain input {{ type filter hook input priority 0; policy accept;
    udp dport 9999 log prefix "HIT " group {GROUP} drop
  }}
}}""")
        yield lab


def conf(out: Path) -> str:
    return f"""[global]
logfile="{out}/daemon.log"
loglevel=3
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU

[log1]
group={GROUP}
netlink_qthreshold=1

[emu1]
file="{out}/audit.log"
"""


def send_udp(lab: Lab, n: int = 1) -> None:
    code = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for i in range({n}): s.sendto(b'x', ('{lab.srv4}', 9999))")
    sh(sys.executable, "-c", code, ns=lab.cli)


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise


def test_ready_after_bind_status_watchdog_and_a_stopped_loop(lab: Lab, systemd: Systemd, tmp_path: Path) -> None:
    (tmp_path / "u.conf").write_text(conf(tmp_path))
    env = {**ENV, "NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen(["ip", "netns", "exec", lab.srv, sys.executable, "-m", "pyulogd", "-c",
                             str(tmp_path / "u.conf"), "--no-realtime"], env=env)  # fmt: skip
    try:
        ready = systemd.wait("READY")
        # Bound before READY=1: the group is there now, and the first packet gets logged.
        assert GROUP in lab.nflog_groups()
        send_udp(lab)
        wait_for(lambda: len(lines(tmp_path / "audit.log")) == 1, 5, "the first packet after READY")
        assert ready["MAINPID"] == str(proc.pid)  # ip netns exec execs: the daemon's own pid
        assert ready["STATUS"] == "0 records in, 0 lost"
        assert not any("READY" in m for _, m in systemd.got[:-1])  # nothing claimed readiness earlier
        status = systemd.wait("STATUS", timeout=10)
        assert status["STATUS"] == "1 records in, 0 lost"
        pings = [m for m in systemd.drain(1.0) if m.get("WATCHDOG") == "1"]
        assert len(pings) >= 3  # every 0.2 s
        # A loop that does not turn does not ping: systemd's watchdog would restart it.
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.1)  # a datagram already on its way
        systemd.drain(0.2)
        assert systemd.drain(1.5) == []
        proc.send_signal(signal.SIGCONT)
        systemd.wait("WATCHDOG", timeout=2)
        assert not any("RELOADING" in m for _, m in systemd.got)
        proc.send_signal(signal.SIGHUP)  # reopen files: still no RELOADING=1
        systemd.drain(0.5)
        proc.send_signal(signal.SIGTERM)
        assert systemd.wait("STOPPING")["STATUS"] == "stopping"
        assert proc.wait(15) == 0
        assert not any("RELOADING" in m for _, m in systemd.got)
    finally:
        stop(proc)


def test_with_d_ready_comes_from_the_child_that_runs(lab: Lab, systemd: Systemd, tmp_path: Path) -> None:
    (tmp_path / "u.conf").write_text(conf(tmp_path))
    pidfile = tmp_path / "pyulogd.pid"
    parent = subprocess.Popen(["ip", "netns", "exec", lab.srv, sys.executable, "-m", "pyulogd", "-d", "-c",
                               str(tmp_path / "u.conf"), "-p", str(pidfile), "--no-realtime"],
                              env={**ENV, "NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "400000",
                                   "WATCHDOG_PID": "1"})  # fmt: skip
    child = 0
    try:
        ready = systemd.wait("READY")
        assert parent.wait(15) == 0
        child = int(pidfile.read_text())
        assert ready["MAINPID"] == str(child) != str(parent.pid)
        assert GROUP in lab.nflog_groups()
        # WATCHDOG_PID names another process: the child does not ping.
        assert not any("WATCHDOG" in m for m in systemd.drain(1.0))
        assert "not sending WATCHDOG=1" in (tmp_path / "daemon.log").read_text()
    finally:
        if child:
            os.kill(child, signal.SIGTERM)
            wait_for(lambda: not pidfile.exists(), 15, "the daemon to stop")


def fetch(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers["Content-Type"], r.read().decode("utf-8")


NAMES = ["plain", "dot.ted", "new\nline", 'q"uote', "back\\slash"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (Debian package prometheus)")
def test_metrics_and_status_of_a_daemon_following_namespaces(tmp_path: Path) -> None:
    base = unique("pyu-opsd-")
    control = tmp_path / "run" / "control.sock"
    os.chmod(tmp_path, 0o755)
    config = f"""[global]
logfile="{tmp_path}/daemon.log"
loglevel=3
metrics="127.0.0.1:0"
control_socket="{control}"
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU

[log1]
group={GROUP}
netns="{base}-*"
netlink_qthreshold=1

[emu1]
file="{tmp_path}/emu.log"
netns_prefix=1
"""
    spaces: list[Namespace] = []
    daemon: Daemon | None = None
    idle: list[socket.socket] = []
    try:
        for i, name in enumerate(NAMES):
            spaces.append(Namespace(f"{base}-{i}-{name}", GROUP))
        daemon = Daemon(tmp_path, config, tmp_path / "daemon.log")
        wait_for(lambda: all(ns.nflog_bound() for ns in spaces), 15, "every namespace attached")
        m = re.search(r"metrics: serving (http://127\.0\.0\.1:\d+/metrics)", daemon.text())
        assert m is not None, daemon.text()
        url = m.group(1)
        for n, ns in enumerate(spaces, start=1):
            ns.send(n)
        total = sum(range(1, len(spaces) + 1))
        wait_for(lambda: len(lines(tmp_path / "emu.log")) == total, 10, f"{total} lines")

        status, ctype, text = fetch(url)
        assert status == 200 and ctype == "text/plain; version=0.0.4; charset=utf-8"
        r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
        for n, ns in enumerate(spaces, start=1):
            label = escape_text(ns.name).replace("\\", "\\\\").replace('"', '\\"')
            want = f'pyulogd_input_records_total{{plugin="NFLOG",id="log1",namespace="{label}"}} {n}'
            assert want in text.splitlines(), want
        assert 'pyulogd_netns_followed{plugin="NFLOG",id="log1"} 5' in text
        assert "pyulogd_other_total" not in text

        # Idle clients up to the limit and beyond: packets are still logged at once, and
        # the endpoint answers "busy" instead of queueing without end.
        host, port = urllib.parse.urlsplit(url).netloc.rsplit(":", 1)
        for _ in range(20):
            idle.append(socket.create_connection((host, int(port)), timeout=5))
        spaces[0].send(3)
        wait_for(lambda: len(lines(tmp_path / "emu.log")) == total + 3, 10, "packets while clients idle")
        with pytest.raises(urllib.error.HTTPError) as busy:
            fetch(url)
        assert busy.value.code == 503
        for s in idle:
            s.close()
        idle.clear()
        wait_for(lambda: _fetch_ok(url), 10, "the endpoint to answer again")

        # pyulogdctl, at a terminal: namespaces listed, each one printable line.
        r = subprocess.run([sys.executable, "-m", "pyulogd.ctl.status", "-c", str(daemon.conf), "status"],
                           capture_output=True, text=True, timeout=30, env=ENV)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "log1 (NFLOG): following" in r.stdout and "5 namespace(s)" in r.stdout
        for ns in spaces:
            assert f"  {escape_text(ns.name)}\n" in r.stdout
        assert f"records: {total + 3} in, 0 lost" in r.stdout
        assert all(ch.isprintable() for line in r.stdout.splitlines() for ch in line)
        doc = json.loads(subprocess.run([sys.executable, "-m", "pyulogd.ctl.status", "-s", str(control), "status",
                                         "--json"], capture_output=True, timeout=30, env=ENV).stdout)  # fmt: skip
        assert sorted(doc["inputs"][0]["namespaces"]) == sorted(ns.name for ns in spaces)
        assert daemon.stop() == 0
        assert not control.exists()
    finally:
        for s in idle:
            s.close()
        if daemon is not None:
            daemon.kill()
        for ns in spaces:
            ns.delete()


def _fetch_ok(url: str) -> bool:
    try:
        return fetch(url)[0] == 200
    except OSError:
        return False
