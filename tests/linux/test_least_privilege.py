"""Least privilege at run time (issue 12, item 5), against the real kernel.

A real daemon, ``-u`` a system user made for the test (as docs/security.md recommends: a user
of its own, never ``nobody``), runs in a network namespace of the test's own and follows
namespaces ``<tag>-f*`` with NFLOG (+ IFINDEX), NFCT (events) and NFACCT (polled every
second, also into SQLite, whose writer threads start after the drop); a second NFCT in the
daemon's own namespace polls the conntrack table every second. Then:

* idle, every thread of the daemon (/proc/PID/task/*/status) has CapEff 0, CapPrm and CapBnd
  exactly CAP_NET_ADMIN + CAP_SYS_ADMIN, CapInh = CapAmb = 0, NoNewPrivs 1 and the user's uid;
* a namespace created *after* the start is attached and records arrive from it: setns(),
  sockets opened and bound, NFLOG config requests, conntrack subscription, rtnetlink for
  IFINDEX, all after the drop, with the capabilities raised only around those calls;
* SIGUSR2 dumps the conntrack tables (of a namespace attached at start, one attached later,
  and the daemon's own) and the nfacct counters; the own-namespace poll sees flows deleted
  with ``conntrack -D`` and reports them ended; NFACCT polls go on;
* afterwards every thread's effective set is empty again, and nothing was refused
  (no dump error, no failed attach, no EPERM in the log);
* the risk docs/security.md documents: a process of the same uid can SIGSTOP the daemon
  (and SIGCONT it), one of another unprivileged uid cannot; neither can read its memory or
  environment (not dumpable after setuid()).

Namespaces are named ``zlp<random>-…`` and removed afterwards, the user too; all traffic is
over loopback inside them.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyulogd.io.netns import NetnsHandle, in_netns, setns
from tests.linux.lab import have_root_and_tools, lines, sh, wait_for
from tests.linux.nsdaemon import counters_at_exit
from tests.privs import reachable_tmp

_skip = have_root_and_tools("useradd", "userdel", "nfacct", "conntrack")
pytestmark = [pytest.mark.linux, pytest.mark.skipif(_skip is not None, reason=_skip or "")]

RUN = Path("/run/netns")
GROUP = 61
NEEDED = (1 << 12) | (1 << 21)  # CAP_NET_ADMIN, CAP_SYS_ADMIN
PER_NS = 3  # datagrams sent in each namespace, each from a socket of its own (a new conntrack)
SRC = str(Path(__file__).resolve().parents[2] / "src")
SCHEMA = "CREATE TABLE acct (sum_name TEXT, sum_pkts INTEGER, sum_bytes INTEGER);\n"


@pytest.fixture()
def user() -> Iterator[pwd.struct_passwd]:
    """A system user of the test's own (removed afterwards); ``nobody`` only if none can be made."""
    name = f"pyulogd-t{secrets.token_hex(4)}"
    r = subprocess.run(["useradd", "--system", "--no-create-home", "--user-group", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name], capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        try:
            yield pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip(f"cannot create a user ({r.stderr.strip()}) and there is no nobody")
        return
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture()
def namespaces() -> Iterator[list[str]]:
    names: list[str] = []
    try:
        yield names
    finally:
        for name in names:
            sh("ip", "netns", "del", name, check=False)


def in_ns(name: str, *args: str, input: str | None = None) -> None:
    """Run a command in namespace ``name`` (setns only, no remount of /sys as ip netns exec)."""
    fd = os.open(RUN / name, os.O_RDONLY)
    try:
        subprocess.run(list(args), input=input, text=True, check=True, capture_output=True,
                       preexec_fn=lambda: setns(fd), pass_fds=(fd,))  # fmt: skip
    finally:
        os.close(fd)


def add_ns(namespaces: list[str], name: str, *, log: bool) -> None:
    namespaces.append(name)
    sh("ip", "netns", "add", name)
    in_ns(name, "ip", "link", "set", "lo", "up")
    rule = f'udp dport 9 log prefix "{name} " group {GROUP}' if log else ""
    in_ns(name, "nft", "-f", "-", input=f"""table inet zlp {{
  chain out {{ type filter hook output priority 0; policy accept;
    {rule}
    ct state new counter
  }}
}}""")
    if log:
        in_ns(name, "nfacct", "add", "zlp_ctr")


def send(name: str) -> None:
    """PER_NS datagrams to 127.0.0.1:9 inside the namespace, each from a socket of its own."""
    h = NetnsHandle.open(str(RUN / name))
    try:
        with in_netns(h):
            socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(PER_NS)]
    finally:
        h.close()
    for s in socks:
        with s:
            s.sendto(b"x", ("127.0.0.1", 9))


def conf(out: Path, dbdir: Path, tag: str) -> str:
    return f"""[global]
logfile="{out}/daemon.log"
loglevel=3
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,json1:JSON
stack=ct1:NFCT,ip2str2:IP2STR,json2:JSON
stack=ct0:NFCT,ip2str3:IP2STR,json3:JSON
stack=acct1:NFACCT,json4:JSON
stack=acct1:NFACCT,db1:SQLITE3

[log1]
group={GROUP}
netns={tag}-f*
netns_rescan=1
netlink_qthreshold=1

[ct1]
netns={tag}-f*
hash_enable=0
event_mask=1

[ct0]
hash_enable=1
pollinterval=1

[acct1]
netns={tag}-f*
pollinterval=1

[json1]
file="{out}/pkt.json"
sync=1

[json2]
file="{out}/ct.json"
sync=1

[json3]
file="{out}/ct0.json"
sync=1

[json4]
file="{out}/acct.json"
sync=1

[db1]
db="{dbdir}/acct.db"
table="acct"
schema_file="{out}/schema.sql"
spool_dir="{dbdir}/spool"
batch_timeout="100ms"
"""


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(path)]


def thread_status(pid: int) -> list[dict[str, Any]]:
    """Capability sets, uids and no_new_privs of every thread of ``pid``."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            text = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except FileNotFoundError:
            continue  # a thread that just ended
        fields: dict[str, Any] = {"tid": int(tid)}
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                fields[key] = int(value, 16)
            elif key == "NoNewPrivs":
                fields[key] = int(value)
            elif key == "Uid":
                fields[key] = [int(x) for x in value.split()]
        out.append(fields)
    return out


def check_confined(pid: int, uid: int, samples: int = 10) -> int:
    """Every thread: the user's uid, CAP_NET_ADMIN + CAP_SYS_ADMIN permitted and in the bounding
    set and nothing else, nothing inheritable or ambient, no_new_privs, and nothing effective.

    The loop thread raises a capability for the few microseconds of a netlink request (the
    polls run every second), so one sample may catch it inside one; a capability left raised
    shows in every sample. Other threads never raise anything. Returns the thread count."""
    busy = 0
    threads = 0
    for _ in range(samples):
        st = thread_status(pid)
        threads = max(threads, len(st))
        for t in st:
            assert t["Uid"] == [uid] * 4, t
            assert (t["CapPrm"], t["CapBnd"], t["CapInh"], t["CapAmb"], t["NoNewPrivs"]) == (NEEDED, NEEDED, 0, 0, 1), t
            assert t["CapEff"] & ~NEEDED == 0, t
            if t["CapEff"]:
                assert t["tid"] == pid, f"a thread other than the loop's holds an effective capability: {t}"
                busy += 1
        time.sleep(0.03)
    assert busy <= 2, f"effective capabilities in {busy} of {samples} samples: left raised"
    return threads


def as_user(pw: pwd.struct_passwd, act: Callable[[], object]) -> int:
    """``act()`` in a child process running as ``pw``: 0, or the errno of its OSError."""
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        code = 99
        try:
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            act()
            code = 0
        except OSError as e:
            code = e.errno or 98
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status)


def try_signal(pw: pwd.struct_passwd, pid: int, sig: int) -> int:
    return as_user(pw, lambda: os.kill(pid, sig))


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)  # in case a check failed while it was stopped
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.stderr.read().decode(errors="replace") if proc.stderr else ""


def test_capabilities_are_effective_only_while_needed(user: pwd.struct_passwd, namespaces: list[str]) -> None:
    tag = f"zlp{secrets.token_hex(3)}"
    home, early, late = f"{tag}-home", f"{tag}-f1", f"{tag}-f2"
    add_ns(namespaces, home, log=False)
    add_ns(namespaces, early, log=True)
    with reachable_tmp() as out:
        dbdir = out / "db"
        dbdir.mkdir()
        os.chown(dbdir, user.pw_uid, user.pw_gid)
        (out / "schema.sql").write_text(SCHEMA)
        (out / "pyulogd.conf").write_text(conf(out, dbdir, tag))
        fd = os.open(RUN / home, os.O_RDONLY)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pyulogd", "--no-realtime", "-u", user.pw_name, "-c", str(out / "pyulogd.conf")],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=SRC),
                preexec_fn=lambda: setns(fd), pass_fds=(fd,),
            )  # fmt: skip
        finally:
            os.close(fd)
        log = out / "daemon.log"
        try:
            wait_for(lambda: "entering main loop" in "".join(lines(log)) or proc.poll() is not None, 20, "the start")
            assert proc.poll() is None, stop(proc)

            # Idle: nothing effective in any thread (the SQL writer and spiller included).
            assert check_confined(proc.pid, user.pw_uid) >= 3

            # A namespace that appears after the drop is attached by every input.
            add_ns(namespaces, late, log=True)
            for who in ("NFLOG 'log1'", "NFCT 'ct1'", "NFACCT 'acct1'"):
                wait_for(lambda w=who: f"{w}: attached network namespace {late}" in "".join(lines(log)),
                         10, f"{who} to attach {late}")  # fmt: skip
            for name in (early, late, home):
                send(name)
            wait_for(lambda: len(lines(out / "pkt.json")) >= 2 * PER_NS, 10, "packet records")
            wait_for(lambda: len(lines(out / "ct.json")) >= 2 * PER_NS, 10, "conntrack events")
            wait_for(lambda: {r.get("oob.netns") for r in records(out / "acct.json")} == {early, late}, 10,
                     "nfacct records of both namespaces")  # fmt: skip

            # SIGUSR2: conntrack dumps (early: socket opened as root; late: after the drop;
            # home: the daemon's own namespace) and an nfacct dump.
            proc.send_signal(signal.SIGUSR2)

            def dumped() -> set[str | None]:
                return {r.get("oob.netns") for r in records(out / "ct.json") if r["ct.event"] == 2}

            wait_for(lambda: dumped() == {early, late}, 10, "the conntrack dumps of both namespaces")
            wait_for(lambda: sum(r["ct.event"] == 2 for r in records(out / "ct0.json")) >= PER_NS, 10,
                     "the dump of the daemon's own namespace")  # fmt: skip
            # The own namespace's polling (every second, as resyncs do): flows deleted from the
            # kernel's table are reported ended by the next poll.
            in_ns(home, "conntrack", "-D", "-p", "udp", "--orig-port-dst", "9")
            wait_for(lambda: sum(r["ct.event"] == 4 for r in records(out / "ct0.json")) >= PER_NS, 10,
                     "the poll to report the deleted flows")  # fmt: skip
            polls_before = len(records(out / "acct.json"))
            wait_for(lambda: len(records(out / "acct.json")) >= polls_before + 4, 10, "two more nfacct polls")

            # Everything above done: nothing was left raised.
            check_confined(proc.pid, user.pw_uid)

            # Signals are checked by uid: the daemon's own user can stop it, another cannot.
            if user.pw_name != "nobody":
                other = pwd.getpwnam("nobody")
                assert try_signal(other, proc.pid, signal.SIGSTOP) == 1  # EPERM
                assert state(proc.pid) != "T"
            # Its memory and environment stay closed to it: the daemon is not dumpable after setuid().
            assert as_user(user, lambda: Path(f"/proc/{proc.pid}/environ").read_bytes()) == errno.EACCES
            assert try_signal(user, proc.pid, signal.SIGSTOP) == 0
            wait_for(lambda: state(proc.pid) == "T", 5, "the daemon to be stopped by its own user")
            assert try_signal(user, proc.pid, signal.SIGCONT) == 0
            wait_for(lambda: state(proc.pid) != "T", 5, "the daemon to continue")
        finally:
            err = stop(proc)
        assert proc.returncode == 0, err
        text = "".join(lines(log))
        assert f"changed to user {user.pw_name} (uid {user.pw_uid}, gid {user.pw_gid}), keeping CAP_NET_ADMIN, " \
               "CAP_SYS_ADMIN (permitted only" in text
        assert not [x for x in lines(log) if "<7>" in x or "<8>" in x]  # no error at all
        assert "Operation not permitted" not in text
        counters = counters_at_exit(text)
        refused = [k for k in counters if k.rsplit(".", 1)[1] in
                   ("dump_errors", "dumps_refused", "send_errors", "netns_attach_failed", "recv_errors")]
        assert refused == [], counters
        assert counters["nfct.ct0.purged"] == PER_NS  # the poll after the drop
        assert counters["nfct.ct1.events"] == 2 * PER_NS
        pkts = records(out / "pkt.json")
        assert sorted(str(r["oob.netns"]) for r in pkts) == [early] * PER_NS + [late] * PER_NS
        assert {r["oob.prefix"] for r in pkts} == {f"{early} ", f"{late} "}
        assert {r["oob.out"] for r in pkts} == {"lo"}  # IFINDEX, rtnetlink in each namespace
        events = [r for r in records(out / "ct.json") if r["ct.event"] == 1]
        assert sorted(str(r["oob.netns"]) for r in events) == [early] * PER_NS + [late] * PER_NS
        acct = records(out / "acct.json")
        assert {r["sum.name"] for r in acct} == {"zlp_ctr"}
        con = sqlite3.connect(dbdir / "acct.db")
        try:
            rows = con.execute("SELECT count(*) FROM acct WHERE sum_name = 'zlp_ctr'").fetchone()[0]
        finally:
            con.close()
        assert rows == len(acct)  # the writer thread (as the user, nothing effective) wrote them all
        assert os.stat(dbdir / "acct.db").st_uid == user.pw_uid
