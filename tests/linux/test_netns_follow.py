"""One daemon following namespaces as they come and go, against the real kernel.

pyulogd runs in the host namespace with NFLOG and NFCT inputs following
``qrouter-<pid>-*`` and ``snat-<pid>-*`` (names shaped like Neutron's, with a UUID whose first
group is this test's pid, so nothing else on the machine matches). While it runs, the test
creates namespaces, each with a log rule whose prefix is the namespace's own name, a ct
rule (so conntrack runs) and a veth pair with a name of its own; it sends traffic inside
each one (over the veth and over loopback), deletes half of them right after their last
packets, adds new ones, and checks that every namespace's events arrive, exactly, tagged
with the right namespace and router id, with interface names from the right namespace,
and that the daemon's descriptors are back to where they started once the namespaces are
gone. One namespace has its NFLOG group taken when it appears: its attach fails, is
counted, and succeeds at a rescan once the group is free.

Also: ``network_namespace_path``; ``-u nobody`` (CAP_SYS_ADMIN and CAP_NET_ADMIN kept, and
said so); never root at all, with ambient capabilities as a systemd unit would give them;
NFACCT counters of namespaces deleted between two polls.
"""

from __future__ import annotations

import itertools
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyulogd.codec import nflog as nflog_codec
from pyulogd.io.netlink import NetlinkSocket
from pyulogd.io.netns import NetnsHandle, in_netns, setns
from tests.linux.lab import have_root_and_tools, lines, sh, wait_for

_skip = have_root_and_tools("unshare", "mount")
pytestmark = [pytest.mark.linux, pytest.mark.skipif(_skip is not None, reason=_skip or "")]

GROUP = 47
TAG = f"{os.getpid() & 0xFFFFFFFF:08x}"
RUN = Path("/run/netns")
PEER = "10.9.0.2"
PEER_MAC = "02:00:0a:09:00:02"
VIA_VETH, VIA_LO = 3, 1  # packets per round out of the veth, and over loopback


def ns_name(i: int) -> str:
    kind = "snat" if i % 5 == 4 else "qrouter"
    return f"{kind}-{TAG}-7e57-4000-8000-{i:012x}"


def router_id(name: str) -> str:
    return name.split("-", 1)[1]


def veth(i: int) -> str:
    return f"pv{i}a"


def conf(out: Path, *, follow: str = "", path: str = "") -> str:
    where = f"netns={follow}" if follow else f"network_namespace_path={path}"
    return f"""[global]
logfile="{out}/daemon.log"
loglevel=3
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,json1:JSON
stack=ct1:NFCT,ip2str2:IP2STR,json2:JSON

[log1]
group={GROUP}
{where}
netns_rescan=1
netlink_qthreshold=1

[ct1]
{where}
hash_enable=0
event_mask=1

[json1]
file="{out}/pkt.json"
sync=1

[json2]
file="{out}/ct.json"
sync=1
"""


def setup_ns(name: str, i: int) -> None:
    """lo up, a veth pair with names of its own and a route out of it, the rules."""
    batch = "\n".join([
        "link set lo up",
        f"link add {veth(i)} type veth peer name pv{i}b",
        f"link set {veth(i)} up",
        f"link set pv{i}b up",
        f"addr add 10.9.0.1/24 dev {veth(i)}",
        f"neigh replace {PEER} lladdr {PEER_MAC} dev {veth(i)} nud permanent",
    ])  # fmt: skip
    sh("ip", "-n", name, "-batch", "-", input=batch + "\n")
    rules = f"""table inet pyut {{
  chain out {{ type filter hook output priority 0; policy accept;
    udp dport 9 log prefix "{name} " group {GROUP}
    ct state new counter
  }}
}}"""
    fd = os.open(RUN / name, os.O_RDONLY)
    try:
        # nft in the namespace without `ip netns exec` (which also remounts /sys): half the time.
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True, capture_output=True,
                       preexec_fn=lambda: setns(fd), pass_fds=(fd,))  # fmt: skip
    finally:
        os.close(fd)


_PORTS = itertools.count(20000)


def send(name: str) -> None:
    """One round of traffic inside the namespace: VIA_VETH packets out of its veth, VIA_LO
    over loopback, each from a socket of its own (so each is a new conntrack too)."""
    h = NetnsHandle.open(str(RUN / name))
    try:
        with in_netns(h):
            socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(VIA_VETH + VIA_LO)]
    finally:
        h.close()
    for n, s in enumerate(socks):
        # A source port of its own: the kernel may hand a closed socket's port out again, and
        # the same tuple while its conntrack lives is no new conntrack (no NEW event).
        s.bind(("", next(_PORTS)))
        s.sendto(b"x", (PEER if n < VIA_VETH else "127.0.0.1", 9))
        s.close()


class LogWatch(threading.Thread):
    """Tails the daemon's log and notes when each namespace was attached (monotonic time)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.attached: dict[tuple[str, str], float] = {}
        self.stopped = False

    def run(self) -> None:
        pat = re.compile(r"(NFLOG|NFCT) '\w+': attached network namespace (\S+)")
        pos = 0
        while not self.stopped:
            try:
                with open(self.path) as f:
                    f.seek(pos)
                    data = f.read()
                    pos = f.tell()
            except FileNotFoundError:
                data = ""
            now = time.monotonic()
            for m in pat.finditer(data):
                self.attached.setdefault((m.group(1), m.group(2)), now)
            time.sleep(0.005)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in lines(path)]


@pytest.fixture()
def cleanup() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        if (RUN / name).exists():
            sh("ip", "netns", "del", name, check=False)


def start_daemon(out: Path, text: str) -> subprocess.Popen[bytes]:
    (out / "pyulogd.conf").write_text(text)
    proc = subprocess.Popen([sys.executable, "-m", "pyulogd", "-c", str(out / "pyulogd.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_for(lambda: "entering main loop" in "".join(lines(out / "daemon.log")) or proc.poll() is not None,
                 10, "the daemon to start")  # fmt: skip
    except AssertionError:
        proc.kill()
        raise
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    return proc


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_follow_namespaces_as_they_come_and_go(tmp_path: Path, cleanup: list[str]) -> None:
    follow = f"qrouter-{TAG}-*,snat-{TAG}-*"
    proc = start_daemon(tmp_path, conf(tmp_path, follow=follow))
    watch = LogWatch(tmp_path / "daemon.log")
    watch.start()
    try:
        baseline = fd_count(proc.pid)
        expect_pkt: Counter[str] = Counter()
        created: dict[str, float] = {}

        def add(i: int) -> str:
            name = ns_name(i)
            cleanup.append(name)
            sh("ip", "netns", "add", name)
            created[name] = time.monotonic()
            setup_ns(name, i)
            wait_for(lambda: ("NFLOG", name) in watch.attached and ("NFCT", name) in watch.attached,
                     5, f"{name} to be attached")  # fmt: skip
            return name

        def round_(name: str) -> None:
            send(name)
            expect_pkt[name] += VIA_VETH + VIA_LO

        # 30 namespaces appear while the daemon runs; each sends its own traffic.
        first = [add(i) for i in range(30)]
        for name in first:
            round_(name)
        # Half are deleted right after their last packets (no waiting for the records).
        gone = first[::2]
        for name in gone:
            round_(name)
            sh("ip", "netns", "del", name)
        # The other half keep working; ten new ones come.
        kept = first[1::2]
        new = [add(i) for i in range(30, 40)]
        for name in kept + new:
            round_(name)

        # A namespace whose NFLOG group is taken when it appears: the attach fails and is
        # retried at the next rescan (netns_rescan=1) once the group is free.
        busy = ns_name(40)
        hold = tmp_path / "busy-ns"
        hold.touch()
        sh("unshare", f"--net={hold}", "true")
        try:
            h = NetnsHandle.open(str(hold), busy)
            holder = NetlinkSocket(netns=h)
            h.close()  # an open file pins the mount
            holder.request(nflog_codec.group_bind(GROUP, holder.next_seq()))
            cleanup.append(busy)
            (RUN / busy).touch()  # as ip netns add: the file first, the mount a moment later
            sh("mount", "--bind", str(hold), str(RUN / busy))
        finally:
            sh("umount", str(hold), check=False)
        wait_for(lambda: "cannot attach network namespace " + busy in "".join(lines(tmp_path / "daemon.log")),
                 5, "the busy namespace's attach to fail")  # fmt: skip
        assert ("NFLOG", busy) not in watch.attached
        holder.close()
        wait_for(lambda: ("NFLOG", busy) in watch.attached, 5, "the retry at the rescan")
        setup_ns(busy, 40)
        round_(busy)

        # Every event of every namespace arrives: exactly, and tagged with its own namespace.
        total = sum(expect_pkt.values())
        wait_for(lambda: len(lines(tmp_path / "pkt.json")) >= total, 15, f"{total} packet records")
        wait_for(lambda: len(lines(tmp_path / "ct.json")) >= total, 15, f"{total} conntrack records")
        time.sleep(0.3)  # nothing more may come
        pkts, flows = records(tmp_path / "pkt.json"), records(tmp_path / "ct.json")
        assert Counter(str(r["oob.netns"]) for r in pkts) == expect_pkt
        assert Counter(str(r["oob.netns"]) for r in flows) == expect_pkt
        index = {ns_name(i): i for i in range(41)}
        for r in pkts:
            name = str(r["oob.netns"])
            assert r["oob.prefix"] == name + " ", r  # the rule in that namespace logged it
            assert r["neutron.router_id"] == router_id(name) and "neutron.network_id" not in r
            # Names from the record's own namespace (index 2 or 3 there, not the host's).
            out_if = veth(index[name]) if r["dest_ip"] == PEER else "lo"
            assert r["oob.out"] == out_if and r["oob.in"] == "", r
        for name in expect_pkt:
            mine = [r for r in pkts if r["oob.netns"] == name]
            assert sum(r["oob.out"] == "lo" for r in mine) == expect_pkt[name] // (VIA_VETH + VIA_LO) * VIA_LO
        for r in flows:
            name = str(r["oob.netns"])
            assert r["ct.event"] == 1 and r["neutron.router_id"] == router_id(name)
            assert r["dest_ip"] in (PEER, "127.0.0.1") and r["orig.l4.dport"] == 9

        # New namespaces were attached within a second of `ip netns add` returning.
        latency = {n: watch.attached[("NFLOG", n)] - created[n] for n in created}
        worst = max(latency.values())
        print(f"\nattach latency: max {worst * 1000:.1f} ms, mean "
              f"{sum(latency.values()) / len(latency) * 1000:.1f} ms over {len(latency)} namespaces")
        assert worst < 1.0, latency

        # All gone: sockets, namespace fds and per-namespace link caches are closed again.
        for name in kept + new + [busy]:
            sh("ip", "netns", "del", name)
        wait_for(lambda: fd_count(proc.pid) == baseline, 5,
                 f"the daemon's descriptors back to {baseline} (now {fd_count(proc.pid)})")
    finally:
        watch.stopped = True
        stop_daemon(proc)
    log = "".join(lines(tmp_path / "daemon.log"))
    errors = [x for x in lines(tmp_path / "daemon.log") if " <7> " in x or " <8> " in x]
    assert [x for x in errors if f"NFLOG 'log1': cannot attach network namespace {busy}: " not in x] == []
    at_exit = re.search(r"counters at exit: (.*)", log)
    assert at_exit is not None
    counters = dict(kv.split("=") for kv in at_exit.group(1).split(", "))
    assert int(counters["nflog.log1.netns_attached"]) == 41 and int(counters["nflog.log1.netns_detached"]) == 41
    assert int(counters["nflog.log1.netns_attach_failed"]) >= 1
    assert int(counters["nflog.log1.packets"]) == total  # every namespace's counters, folded


def test_network_namespace_path(tmp_path: Path, cleanup: list[str]) -> None:
    name = ns_name(99)
    cleanup.append(name)
    sh("ip", "netns", "add", name)
    setup_ns(name, 99)
    proc = start_daemon(tmp_path, conf(tmp_path, path=str(RUN / name)))
    try:
        send(name)
        wait_for(lambda: len(lines(tmp_path / "pkt.json")) >= VIA_VETH + VIA_LO, 10, "packet records")
        wait_for(lambda: len(lines(tmp_path / "ct.json")) >= VIA_VETH + VIA_LO, 10, "conntrack records")
    finally:
        stop_daemon(proc)
    pkts = records(tmp_path / "pkt.json")
    assert len(pkts) == VIA_VETH + VIA_LO
    assert {(r["oob.netns"], r["neutron.router_id"], r["oob.prefix"]) for r in pkts} == {(name, router_id(name),
                                                                                            name + " ")}
    assert sorted(str(r["oob.out"]) for r in pkts) == ["lo"] * VIA_LO + [veth(99)] * VIA_VETH
    assert {r["oob.netns"] for r in records(tmp_path / "ct.json")} == {name}
    assert "working in network namespace " + name in "".join(lines(tmp_path / "daemon.log"))


def test_following_after_dropping_root(reachable_tmp_path: Path, cleanup: list[str]) -> None:
    """-u nobody keeps CAP_SYS_ADMIN and CAP_NET_ADMIN (permitted only), says so, and still
    attaches namespaces created afterwards (setns, group binds, rtnetlink for IFINDEX)."""
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    tmp_path = reachable_tmp_path
    (tmp_path / "pyulogd.conf").write_text(conf(tmp_path, follow=f"qrouter-{TAG}-*"))
    proc = subprocess.Popen([sys.executable, "-m", "pyulogd", "-u", "nobody", "-c", str(tmp_path / "pyulogd.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_for(lambda: "entering main loop" in "".join(lines(tmp_path / "daemon.log")), 10, "the daemon")
        name = ns_name(98)
        cleanup.append(name)
        sh("ip", "netns", "add", name)
        setup_ns(name, 98)
        wait_for(lambda: "NFCT 'ct1': attached network namespace " + name in "".join(lines(tmp_path / "daemon.log")),
                 5, "the attach")  # fmt: skip
        send(name)
        wait_for(lambda: len(lines(tmp_path / "pkt.json")) >= VIA_VETH + VIA_LO, 10, "packet records")
        wait_for(lambda: len(lines(tmp_path / "ct.json")) >= VIA_VETH + VIA_LO, 10, "conntrack records")
        status = Path(f"/proc/{proc.pid}/status").read_text()
    finally:
        stop_daemon(proc)
    log = "".join(lines(tmp_path / "daemon.log"))
    assert "keeping CAP_NET_ADMIN, CAP_SYS_ADMIN" in log
    assert re.search(r"keeping CAP_SYS_ADMIN: NFLOG 'log1' follows network namespaces .*: setns\(\)", log)
    assert re.search(r"keeping CAP_NET_ADMIN: NFCT 'ct1' .*follows network namespaces .*: its netlink requests", log)
    caps = {k: int(re.search(rf"{k}:\s*([0-9a-f]+)", status).group(1), 16)  # type: ignore[union-attr]
            for k in ("CapEff", "CapPrm", "CapBnd")}
    # Exactly CAP_NET_ADMIN and CAP_SYS_ADMIN, permitted only: raised around each request and
    # setns() (tests/linux/test_least_privilege.py checks every thread and every path).
    assert caps == {"CapEff": 0, "CapPrm": (1 << 12) | (1 << 21), "CapBnd": (1 << 12) | (1 << 21)}
    assert "Uid:\t65534" in status
    pkts = records(tmp_path / "pkt.json")
    assert sorted(str(r["oob.out"]) for r in pkts) == ["lo"] * VIA_LO + [veth(98)] * VIA_VETH
    assert {r["oob.netns"] for r in pkts} == {name}


@pytest.fixture()
def open_dir() -> Iterator[Path]:
    """A directory an unprivileged daemon can read and write (pytest's is root's only): its
    own, as a directory every user could write is refused (core/safefile.py)."""
    d = Path(tempfile.mkdtemp(prefix="pyut-netns-"))
    nobody = pwd.getpwnam("nobody")
    os.chown(d, nobody.pw_uid, nobody.pw_gid)
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_following_without_root_with_ambient_capabilities(open_dir: Path, cleanup: list[str]) -> None:
    """What a systemd unit with User= and AmbientCapabilities=CAP_NET_ADMIN CAP_SYS_ADMIN does
    (docs/netns.md), done with setpriv: never root, and namespaces are still followed."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    tmp_path = open_dir
    (tmp_path / "pyulogd.conf").write_text(conf(tmp_path, follow=f"qrouter-{TAG}-*"))
    caps = "+net_admin,+sys_admin"
    cmd = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
           f"--inh-caps={caps}", f"--ambient-caps={caps}",
           sys.executable, "-m", "pyulogd", "-c", str(tmp_path / "pyulogd.conf")]  # fmt: skip
    # The editable install's .pth may sit where nobody cannot read it: name the source tree.
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        wait_for(lambda: "entering main loop" in "".join(lines(tmp_path / "daemon.log")) or proc.poll() is not None,
                 10, "the daemon")  # fmt: skip
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        name = ns_name(97)
        cleanup.append(name)
        sh("ip", "netns", "add", name)
        setup_ns(name, 97)
        wait_for(lambda: "NFCT 'ct1': attached network namespace " + name in "".join(lines(tmp_path / "daemon.log")),
                 5, "the attach")  # fmt: skip
        send(name)
        wait_for(lambda: len(lines(tmp_path / "pkt.json")) >= VIA_VETH + VIA_LO, 10, "packet records")
        wait_for(lambda: len(lines(tmp_path / "ct.json")) >= VIA_VETH + VIA_LO, 10, "conntrack records")
        status = Path(f"/proc/{proc.pid}/status").read_text()
    finally:
        stop_daemon(proc)
    pkts = records(tmp_path / "pkt.json")
    assert {r["oob.netns"] for r in pkts} == {name}
    assert sorted(str(r["oob.out"]) for r in pkts) == ["lo"] * VIA_LO + [veth(97)] * VIA_VETH
    # The ambient capabilities held as -u holds them: permitted only, nothing ambient.
    sets = {k: int(re.search(rf"{k}:\s*([0-9a-f]+)", status).group(1), 16)  # type: ignore[union-attr]
            for k in ("CapEff", "CapPrm", "CapInh", "CapAmb")}
    assert sets == {"CapEff": 0, "CapPrm": (1 << 12) | (1 << 21), "CapInh": 0, "CapAmb": 0}
    assert re.search(r"NoNewPrivs:\s*1", status)
    assert "keeping CAP_NET_ADMIN, CAP_SYS_ADMIN (permitted only" in "".join(lines(tmp_path / "daemon.log"))


def test_nfacct_counters_of_deleted_namespaces_are_not_lost(tmp_path: Path, cleanup: list[str]) -> None:
    """NFACCT following namespaces: each namespace's counters, tagged, and a namespace deleted
    between two polls is dumped one last time on its way out."""
    if shutil.which("nfacct") is None or shutil.which("iptables") is None:
        pytest.skip("needs nfacct and iptables")
    want = {ns_name(80): 2, ns_name(81): 5}
    for name in want:
        cleanup.append(name)
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", name, "nfacct", "add", "pyu_ctr")
        r = sh("ip", "netns", "exec", name, "iptables", "-A", "OUTPUT", "-p", "udp", "--dport", "9",
               "-m", "nfacct", "--nfacct-name", "pyu_ctr", check=False)  # fmt: skip
        if r.returncode != 0:
            pytest.skip(f"iptables -m nfacct does not work here: {r.stderr.strip()}")
    (tmp_path / "acct.conf").write_text(f"""[global]
logfile="{tmp_path}/daemon.log"
stack=acct1:NFACCT,json1:JSON

[acct1]
netns=qrouter-{TAG}-*
pollinterval=3600

[json1]
file="{tmp_path}/acct.json"
sync=1
""")
    proc = subprocess.Popen([sys.executable, "-m", "pyulogd", "-c", str(tmp_path / "acct.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: "acct1': 2 network namespace(s) attached" in "".join(lines(tmp_path / "daemon.log")),
                 10, "both namespaces attached")  # fmt: skip
        for name, n in want.items():
            h = NetnsHandle.open(str(RUN / name))
            with in_netns(h):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            h.close()
            for _ in range(n):
                s.sendto(b"x", ("127.0.0.1", 9))
            s.close()
            sh("ip", "netns", "del", name)  # long before the next poll
        wait_for(lambda: len(lines(tmp_path / "acct.json")) >= 2, 5, "the last dumps")
    finally:
        stop_daemon(proc)
    got = {(r["oob.netns"], r["sum.name"]): r["sum.pkts"] for r in records(tmp_path / "acct.json")}
    assert got == {(name, "pyu_ctr"): n for name, n in want.items()}
