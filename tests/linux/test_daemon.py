"""The daemon as an operator runs it: -d, -p, -u, -c relative, SIGHUP for logrotate, SIGTERM."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.linux.lab import Lab, have_root_and_tools, lines, sh, wait_for

_skip = have_root_and_tools()
pytestmark = [pytest.mark.linux, pytest.mark.skipif(_skip is not None, reason=_skip or "")]
GROUP = 21


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
sync=1
"""


@pytest.fixture()
def lab() -> Lab:
    with Lab("dmn") as lab:
        lab.nft(f"""table inet t {{
  chain input {{ type filter hook input priority 0; policy accept;
    udp dport 9999 log prefix "HIT " group {GROUP} drop
  }}
}}""")
        yield lab  # type: ignore[misc]


def send_udp(lab: Lab, n: int = 1) -> None:
    code = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for i in range({n}): s.sendto(b'x', ('{lab.srv4}', 9999))")
    sh(sys.executable, "-c", code, ns=lab.cli)


def pyulogd(lab: Lab, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", lab.srv, sys.executable, "-m", "pyulogd", *args],
                          capture_output=True, text=True, timeout=30, cwd=cwd)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_daemon_pidfile_relative_config_sighup_sigterm(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "u.conf").write_text(conf(tmp_path))
    pidfile = tmp_path / "pyulogd.pid"
    # -c relative to the caller's directory: resolved before daemonizing (ulogd2 fails here).
    r = pyulogd(lab, "-d", "-c", "u.conf", "-p", str(pidfile), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    pid = int(pidfile.read_text())
    try:
        assert pid_alive(pid)
        wait_for(lambda: GROUP in lab.nflog_groups(), 10, "group bound")
        # A second daemon with the same pidfile is refused while the first holds its lock.
        r2 = pyulogd(lab, "-c", "u.conf", "-p", str(pidfile), cwd=tmp_path)
        assert r2.returncode == 1 and "already running" in r2.stderr
        send_udp(lab, 3)
        wait_for(lambda: len(lines(tmp_path / "audit.log")) == 3, 10, "3 lines")
        # logrotate: move the file away, SIGHUP, the next lines go to a new file; none lost.
        (tmp_path / "audit.log").rename(tmp_path / "audit.log.1")
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: (tmp_path / "audit.log").exists(), 10, "reopened file")
        send_udp(lab, 2)
        wait_for(lambda: len(lines(tmp_path / "audit.log")) == 2, 10, "2 lines in the new file")
        assert len(lines(tmp_path / "audit.log.1")) == 3
        assert all(" HIT  IN=" in x for x in lines(tmp_path / "audit.log"))
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pid_alive(pid), 10, "exit on SIGTERM")
    assert not pidfile.exists()
    assert "Terminal signal received, exiting" in (tmp_path / "daemon.log").read_text()


def test_stale_pidfile_is_replaced(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "u.conf").write_text(conf(tmp_path))
    pidfile = tmp_path / "p.pid"
    pidfile.write_text("999999\n")  # nobody holds its lock
    r = pyulogd(lab, "-d", "-c", str(tmp_path / "u.conf"), "-p", str(pidfile))
    assert r.returncode == 0, r.stderr
    pid = int(pidfile.read_text())
    assert pid != 999999
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pid_alive(pid), 10, "exit")


def test_daemon_start_failure_is_reported_by_the_parent(lab: Lab, tmp_path: Path) -> None:
    """ulogd2 -d exits 0 even when the stack then fails; pyulogd's parent waits and says why."""
    (tmp_path / "u.conf").write_text(conf(tmp_path).replace(f'"{tmp_path}/audit.log"', '"/nonexistent/x/a.log"'))
    r = pyulogd(lab, "-d", "-c", str(tmp_path / "u.conf"))
    assert r.returncode == 1
    assert "a.log" in r.stderr


def test_drop_privileges_keeps_logging(lab: Lab, reachable_tmp_path: Path) -> None:
    tmp_path = reachable_tmp_path
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    (tmp_path / "u.conf").write_text(conf(tmp_path))
    p = lab.popen([sys.executable, "-m", "pyulogd", "-c", str(tmp_path / "u.conf"), "-u", "nobody"],
                  stderr=subprocess.PIPE)
    try:
        wait_for(lambda: GROUP in lab.nflog_groups(), 10, "group bound")
        time.sleep(0.3)
        status = Path(f"/proc/{p.pid}/status").read_text()  # ip netns exec execs the daemon
        uid_line = next(x for x in status.splitlines() if x.startswith("Uid:"))
        assert uid_line.split()[1:] == [str(user.pw_uid)] * 4
        send_udp(lab, 2)
        wait_for(lambda: len(lines(tmp_path / "audit.log")) == 2, 10, "lines after dropping privileges")
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0


def test_second_sigterm_during_shutdown_still_exits_0(lab: Lab, tmp_path: Path) -> None:
    """An operator (or systemd) repeating SIGTERM must not turn a clean exit into death by signal."""
    (tmp_path / "u.conf").write_text(conf(tmp_path))
    for _ in range(5):
        p = lab.popen([sys.executable, "-m", "pyulogd", "-c", str(tmp_path / "u.conf")], stderr=subprocess.PIPE)
        wait_for(lambda: GROUP in lab.nflog_groups(), 10, "group bound")
        p.send_signal(signal.SIGTERM)
        time.sleep(0.005)
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
        wait_for(lambda: GROUP not in lab.nflog_groups(), 10, "group released")


def test_realtime_priority_like_ulogd_unless_disabled(lab: Lab, tmp_path: Path) -> None:
    """ulogd2 runs at nice -1 with SCHED_RR so a busy machine does not make it overflow."""
    (tmp_path / "u.conf").write_text(conf(tmp_path))
    for extra, policy in (([], os.SCHED_RR), (["--no-realtime"], os.SCHED_OTHER)):
        p = lab.popen([sys.executable, "-m", "pyulogd", "-c", str(tmp_path / "u.conf"), *extra])
        try:
            wait_for(lambda: GROUP in lab.nflog_groups(), 10, "group bound")
            wait_for(lambda p=p, policy=policy: os.sched_getscheduler(p.pid) == policy, 5, "scheduling policy")
        finally:
            p.send_signal(signal.SIGTERM)
            assert p.wait(10) == 0
        wait_for(lambda: GROUP not in lab.nflog_groups(), 10, "group released")
