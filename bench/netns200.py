#!/usr/bin/env python3
"""200 network namespaces: one ulogd2 per namespace against one pyulogd following all of them.

Every namespace (nb200-0 ... nb200-N-1, lo only, nothing leaves it) gets the same nftables
table: conntrack on (`ct state new counter`) and
`udp dport 5001 counter name sent log prefix "nb200-<i> " group 31 drop` in the input hook.

(a) **ulogd2**: N processes, one per namespace, as operators run them (`ip netns exec NS
    ulogd -c CONF`), each NFLOG->BASE->IFINDEX->IP2STR->JSON (sync=1) to a file of its own;
(b) **pyulogd**: one process with `netns=nb200-*` on its NFLOG input, the same stack, one file.

Per daemon: time to attach all N (start of the first process until group 31 is bound in every
namespace, read from /proc/net/netfilter/nfnetlink_log inside each), total VmRSS and PSS after
attach and VmHWM after the traffic, memory per namespace (ulogd2: total / N; pyulogd: its RSS
minus that of an idle pyulogd with no namespace / N), idle CPU, CPU during a traffic phase in
which every namespace sends K UDP datagrams to itself over loopback (round robin, paced to
--rate datagrams/s in total), events logged per namespace against the nft counters (loss,
misattribution), the logging rate. pyulogd only: --follow M namespaces created one by one while
it runs (time until each is attached) and deleted again (fds back to where they were).

CPU is read from /proc/PID/task/*/schedstat (nanoseconds on CPU): utime+stime in /proc/PID/stat
are whole clock ticks per process, and summing 200 truncated values undercounts by up to 2 s.
The tick figure is printed too. RSS of 200 processes counts their shared pages (libc, ulogd, the
plugins) 200 times; PSS splits them: both are printed.

  sudo bench/netns200.py --quick          # 20 namespaces, ~1 min
  sudo bench/netns200.py                  # 200 namespaces x 500 datagrams at 10,000/s
  sudo bench/netns200.py --daemons ulogd2 --json /tmp/n200.json

Cleans up every namespace and process it made, also on errors and Ctrl-C/SIGTERM. Needs root,
nft, ulogd2 (/usr/sbin/ulogd) and, for (b), a pyulogd whose NFLOG input has the netns= option.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import functools
import json
import os
import re
import shlex
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PREFIX = "nb200-"
GROUP = 31
PORT = 5001
CLONE_NEWNET = 0x40000000
HZ = os.sysconf("SC_CLK_TCK")
PLUGDIR = "/usr/lib/x86_64-linux-gnu/ulogd"
LOCK = "/run/lock/pyulogd-netns200.lock"

ULOGD_CONF = """[global]
logfile="{out}/ulogd.log"
loglevel=5
plugin="{plugdir}/ulogd_inppkt_NFLOG.so"
plugin="{plugdir}/ulogd_raw2packet_BASE.so"
plugin="{plugdir}/ulogd_filter_IFINDEX.so"
plugin="{plugdir}/ulogd_filter_IP2STR.so"
plugin="{plugdir}/ulogd_output_JSON.so"
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,json1:JSON

[log1]
group={group}
{log1_extra}

[json1]
file="{out}/out.json"
sync=1
"""

PYULOGD_CONF = """[global]
logfile="{out}/pyulogd.log"
loglevel=5
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,json1:JSON

[log1]
group={group}
{netns_line}
{log1_extra}

[json1]
file="{out}/out.json"
sync=1
"""

RULESET = """table inet nb200 {{
  counter sent {{ }}
  chain input {{ type filter hook input priority 0; policy accept;
    ct state new counter
    udp dport {port} counter name "sent" log prefix "{prefix} " group {group} drop
  }}
}}
"""


class Interrupted(Exception):
    pass


def _on_signal(signum: int, _frame: object) -> None:
    raise Interrupted(f"signal {signum}")


# --------------------------------------------------------------------------- namespaces


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class Netns:
    """Switch this (single-threaded) process between network namespaces; sockets stay where made."""

    def __init__(self) -> None:
        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.fds: dict[str, int] = {}

    def fd(self, name: str) -> int:
        if name not in self.fds:
            self.fds[name] = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        return self.fds[name]

    @contextmanager
    def inside(self, name: str) -> Iterator[None]:
        _setns(self.fd(name))
        try:
            yield
        finally:
            _setns(self.home)

    def forget(self, name: str) -> None:
        fd = self.fds.pop(name, None)
        if fd is not None:
            os.close(fd)

    def inode(self, name: str) -> int:
        return os.fstat(self.fd(name)).st_ino

    def nflog_bound(self, name: str, group: int) -> bool:
        with self.inside(name):
            try:
                with open("/proc/thread-self/net/netfilter/nfnetlink_log") as f:
                    text = f.read()
            except FileNotFoundError:
                return False
        return any(line.split()[:1] == [str(group)] for line in text.splitlines())


def sh(args: list[str], check: bool = True, input: str | None = None, timeout: float = 120
       ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, text=True, capture_output=True, input=input, timeout=timeout)


def lo_up(ns: Netns, name: str) -> None:
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with ns.inside(name):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            req = struct.pack("16sH14x", b"lo", 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), siocgifflags, req))[1]
            fcntl.ioctl(s.fileno(), siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


def run_in_each(ns: Netns, jobs: list[tuple[str, list[str], str | None]], parallel: int = 16
                ) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run one command inside each namespace: fork while switched into it (children keep it)."""
    out: dict[str, subprocess.CompletedProcess[str]] = {}
    for i in range(0, len(jobs), parallel):
        running = []
        for name, cmd, stdin in jobs[i:i + parallel]:
            with ns.inside(name):
                p = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            running.append((name, cmd, stdin, p))
        for name, cmd, stdin, p in running:
            o, e = p.communicate(stdin, timeout=60)
            out[name] = subprocess.CompletedProcess(cmd, p.returncode, o, e)
    return out


def create_namespaces(ns: Netns, names: list[str]) -> None:
    sh(["ip", "-batch", "-"], input="".join(f"netns add {n}\n" for n in names))
    for n in names:
        lo_up(ns, n)
    jobs: list[tuple[str, list[str], str | None]] = [
        (n, ["nft", "-f", "-"], RULESET.format(port=PORT, prefix=n, group=GROUP)) for n in names]
    for n, r in run_in_each(ns, jobs).items():
        if r.returncode != 0:
            raise RuntimeError(f"nft in {n}: {r.stderr.strip()}")


def read_counters(ns: Netns, names: list[str]) -> dict[str, int]:
    jobs: list[tuple[str, list[str], str | None]] = [
        (n, ["nft", "-j", "list", "counter", "inet", "nb200", "sent"], None) for n in names]
    out = {}
    for n, r in run_in_each(ns, jobs).items():
        items = json.loads(r.stdout)["nftables"] if r.returncode == 0 else []
        out[n] = next((int(i["counter"]["packets"]) for i in items if "counter" in i), -1)
    return out


def pids_in(inodes: set[int]) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}/ns/net").st_ino in inodes:
                    pids.append(int(d))
            except OSError:
                pass
    return pids


def delete_namespaces(ns: Netns, names: Iterable[str]) -> None:
    names = [n for n in names if os.path.exists(f"/run/netns/{n}")]
    if not names:
        return
    inodes = set()
    for n in names:
        try:
            inodes.add(ns.inode(n))
        except OSError:
            pass
    for pid in pids_in(inodes):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for n in names:
        ns.forget(n)
    sh(["ip", "-force", "-batch", "-"], check=False, input="".join(f"netns del {n}\n" for n in names))


def leftovers() -> list[str]:
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(PREFIX))
    except FileNotFoundError:
        return []


# --------------------------------------------------------------------------- /proc figures


def cpu_ns(pid: int) -> int:
    """Nanoseconds on CPU of all threads of pid (schedstat)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    except OSError:
        pass
    return total


def cpu_ticks_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / HZ
    except (OSError, IndexError, ValueError):
        return 0.0


def status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def nfds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


# --------------------------------------------------------------------------- traffic


class Sender:
    """One UDP socket per namespace (made inside it); K datagrams each, round robin, paced."""

    def __init__(self, ns: Netns, names: list[str]) -> None:
        self.socks: list[socket.socket] = []
        for n in names:
            with ns.inside(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", 0))
            self.socks.append(s)

    def send(self, per_ns: int, rate: float) -> tuple[int, float]:
        payload = b"netns200-payload"
        dst = ("127.0.0.1", PORT)
        sent, t0 = 0, time.monotonic()
        for _ in range(per_ns):
            for s in self.socks:
                s.sendto(payload, dst)
                sent += 1
                if rate > 0 and sent % 64 == 0:
                    ahead = t0 + sent / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
        return sent, time.monotonic() - t0

    def close(self) -> None:
        for s in self.socks:
            s.close()


# --------------------------------------------------------------------------- daemons


@dataclass
class Daemon:
    label: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self, timeout: float = 10) -> list[int | None]:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return [p.returncode for p in self.procs]


def out_bytes(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        try:
            total += p.stat().st_size
        except OSError:
            pass
    return total


_prefix_re = re.compile(rb'"oob\.prefix": "(' + re.escape(PREFIX.encode()) + rb'\d+) "')
_netns_re = re.compile(rb'"oob\.netns": "([^"]*)"')


def count_events(paths: list[Path]) -> tuple[dict[str, int], int, int]:
    """Events per namespace (by log prefix); lines whose oob.netns disagrees; lines with oob.netns."""
    per: dict[str, int] = {}
    wrong = tagged = 0
    for path in paths:
        try:
            f = open(path, "rb")
        except OSError:
            continue
        with f:
            for line in f:
                m = _prefix_re.search(line)
                if not m:
                    continue
                name = m.group(1).decode()
                per[name] = per.get(name, 0) + 1
                t = _netns_re.search(line)
                if t:
                    tagged += 1
                    if t.group(1).decode() != name:
                        wrong += 1
    return per, wrong, tagged


def wait_until(pred: Callable[[], bool], timeout: float, what: str, alive: Callable[[], bool]) -> float:
    t0 = time.monotonic()
    while not pred():
        if not alive():
            raise RuntimeError(f"daemon exited while waiting for {what}")
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - t0


def wait_attached(ns: Netns, names: list[str], d: Daemon, t0: float, timeout: float) -> float:
    pending = set(names)
    while pending:
        for n in list(pending):
            if ns.nflog_bound(n, GROUP):
                pending.discard(n)
        if not pending:
            break
        if not d.alive():
            raise RuntimeError(f"{d.label}: a daemon exited before attaching ({len(pending)} namespaces left)")
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{d.label}: {len(pending)} of {len(names)} namespaces not attached after "
                               f"{timeout:g} s (e.g. {sorted(pending)[:3]})")
        time.sleep(0.02)
    return time.monotonic() - t0


def start_ulogd2(a: argparse.Namespace, names: list[str], work: Path, errlog: Any) -> Daemon:
    d = Daemon("ulogd2")
    for n in names:
        out = work / n
        out.mkdir(parents=True)
        conf = out / "ulogd.conf"
        conf.write_text(ULOGD_CONF.format(out=out, plugdir=PLUGDIR, group=GROUP, log1_extra=a.log1_extra))
        d.procs.append(subprocess.Popen(["ip", "netns", "exec", n, a.ulogd, "-c", str(conf)],
                                        stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog))
        d.outputs.append(out / "out.json")
    return d


def start_pyulogd(a: argparse.Namespace, work: Path, errlog: Any, netns_glob: str | None,
                  label: str = "pyulogd") -> Daemon:
    work.mkdir(parents=True, exist_ok=True)
    netns_line = f'{a.netns_option}="{netns_glob}"' if netns_glob is not None else ""
    conf = work / "pyulogd.conf"
    conf.write_text(PYULOGD_CONF.format(out=work, group=GROUP, netns_line=netns_line, log1_extra=a.log1_extra))
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    d = Daemon(label)
    d.procs.append(subprocess.Popen([*shlex.split(a.pyulogd_cmd), "-c", str(conf)], stdin=subprocess.DEVNULL,
                                    stdout=errlog, stderr=errlog, env=env))
    d.outputs.append(work / "out.json")
    return d


def pyulogd_supports_netns(a: argparse.Namespace) -> bool:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    r = subprocess.run([*shlex.split(a.pyulogd_cmd), "-i", "NFLOG"], capture_output=True, text=True, env=env)
    return re.search(rf"Var: {re.escape(a.netns_option)}\b", r.stdout) is not None


def memory(pids: list[int]) -> dict[str, int]:
    return {"rss_kb": sum(status_kb(p, "VmRSS") for p in pids), "pss_kb": sum(pss_kb(p) for p in pids),
            "hwm_kb": sum(status_kb(p, "VmHWM") for p in pids)}


def phase(a: argparse.Namespace, kind: str, ns: Netns, names: list[str], sender: Sender, work: Path,
          log: Callable[[str], None]) -> dict[str, Any]:
    res: dict[str, Any] = {"daemon": kind, "namespaces": len(names)}
    errlog = open(work / f"{kind}.stderr", "ab")
    baseline: Daemon | None = None
    d: Daemon | None = None
    try:
        if kind == "pyulogd":
            # Memory of a pyulogd with the same stack that follows nothing: the base of "per namespace".
            baseline = start_pyulogd(a, work / "pyulogd-idle", errlog, f"{PREFIX}none-*", "pyulogd (idle)")
            time.sleep(a.settle)
            wait_until(lambda: (work / "pyulogd-idle" / "pyulogd.log").exists(), 20, "idle pyulogd", baseline.alive)
            time.sleep(1.0)
            res["idle_instance"] = memory(baseline.pids)
            baseline.stop()
            baseline = None
        t0 = time.monotonic()
        if kind == "ulogd2":
            d = start_ulogd2(a, names, work / "ulogd2", errlog)
        else:
            d = start_pyulogd(a, work / "pyulogd", errlog, f"{PREFIX}*")
        res["attach_s"] = round(wait_attached(ns, names, d, t0, a.attach_timeout), 3)
        res["processes"] = len(d.procs)
        if kind == "ulogd2":
            res["process_names"] = sorted({comm(p) for p in d.pids})
        log(f"{kind}: {len(names)} namespaces attached in {res['attach_s']:.2f} s by {len(d.procs)} process(es)")
        time.sleep(a.settle)
        res["after_attach"] = memory(d.pids)
        res["fds"] = sum(nfds(p) for p in d.pids)
        c0, t_idle = sum(cpu_ns(p) for p in d.pids), time.monotonic()
        time.sleep(a.idle_seconds)
        res["idle_cpu_s"] = round((sum(cpu_ns(p) for p in d.pids) - c0) / 1e9, 4)
        res["idle_seconds"] = round(time.monotonic() - t_idle, 2)

        counters0 = read_counters(ns, names)
        sizes0 = out_bytes(d.outputs)
        cpu0, ticks0 = sum(cpu_ns(p) for p in d.pids), sum(cpu_ticks_s(p) for p in d.pids)
        t_send0 = time.monotonic()
        sent, send_s = sender.send(a.packets, a.rate)
        t_sent = time.monotonic()
        res.update(sent=sent, send_s=round(send_s, 3), offered_per_s=round(sent / send_s, 1) if send_s else None)
        # drained: no output growth for --idle (and at least 1.5 s: the NFLOG flush timer is 1 s)
        last, last_change, samples = out_bytes(d.outputs), time.monotonic(), []
        while time.monotonic() - t_sent < a.drain_timeout:
            time.sleep(0.1)
            size = out_bytes(d.outputs)
            samples.append((time.monotonic(), size))
            if size != last:
                last, last_change = size, time.monotonic()
            elif time.monotonic() - last_change >= a.idle and time.monotonic() - t_sent >= 1.5:
                break
        cpu1, ticks1 = sum(cpu_ns(p) for p in d.pids), sum(cpu_ticks_s(p) for p in d.pids)
        res["traffic_cpu_s"] = round((cpu1 - cpu0) / 1e9, 3)
        res["traffic_cpu_ticks_s"] = round(ticks1 - ticks0, 2)
        res["drain_wall_s"] = round(max(last_change, t_sent) - t_send0, 3)
        res["after_traffic"] = memory(d.pids)
        res["alive_after_traffic"] = d.alive()
        counters1 = read_counters(ns, names)
        res["counter"] = sum(counters1[n] - counters0[n] for n in names)
        grown = last - sizes0
        t99 = next((t for t, sz in samples if sz - sizes0 >= 0.99 * grown), None) if grown > 0 else None
        res["rc"] = d.stop()
        per, wrong, tagged = count_events(d.outputs)
        logged = sum(per.get(n, 0) for n in names)
        expected = {n: counters1[n] - counters0[n] for n in names}
        res["logged"] = logged
        res["lost"] = res["counter"] - logged
        res["loss_pct"] = round(100.0 * res["lost"] / res["counter"], 3) if res["counter"] else None
        res["namespaces_with_loss"] = sum(1 for n in names if per.get(n, 0) < expected[n])
        res["namespaces_with_extra"] = sum(1 for n in names if per.get(n, 0) > expected[n])
        res["tagged"] = tagged
        res["misattributed"] = wrong
        res["logged_per_s_99"] = round(0.99 * logged / (t99 - t_send0), 1) if t99 else None
        res["cpu_us_per_event"] = round(1e6 * res["traffic_cpu_s"] / logged, 2) if logged else None
        if kind == "pyulogd" and "idle_instance" in res:
            delta = res["after_attach"]["rss_kb"] - res["idle_instance"]["rss_kb"]
            res["rss_per_ns_kb"] = round(delta / len(names), 1)
        else:
            res["rss_per_ns_kb"] = round(res["after_attach"]["rss_kb"] / len(names), 1)
            res["pss_per_ns_kb"] = round(res["after_attach"]["pss_kb"] / len(names), 1)
        d = None
        return res
    finally:
        for x in (baseline, d):
            if x is not None:
                x.stop(5)
        errlog.close()


def follow(a: argparse.Namespace, ns: Netns, work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """pyulogd only: namespaces created while it runs, one at a time; then deleted again."""
    errlog = open(work / "follow.stderr", "ab")
    d = start_pyulogd(a, work / "pyulogd-follow", errlog, f"{PREFIX}f*", "pyulogd (follow)")
    names = [f"{PREFIX}f{i}" for i in range(a.follow)]
    res: dict[str, Any] = {"namespaces": len(names)}
    try:
        wait_until(lambda: (work / "pyulogd-follow" / "pyulogd.log").exists(), 20, "pyulogd start", d.alive)
        time.sleep(a.settle)
        pid = d.pids[0]
        fds0, rss0 = nfds(pid), status_kb(pid, "VmRSS")
        lags = []
        for n in names:
            sh(["ip", "netns", "add", n])
            lags.append(wait_until(functools.partial(ns.nflog_bound, n, GROUP), 10, f"{n} attached", d.alive))
        res["attach_lag_s"] = {"median": round(statistics.median(lags), 3), "max": round(max(lags), 3),
                               "min": round(min(lags), 3)}
        time.sleep(0.5)
        res["fds_before"], res["fds_attached"] = fds0, nfds(pid)
        res["rss_before_kb"], res["rss_attached_kb"] = rss0, status_kb(pid, "VmRSS")
        delete_namespaces(ns, names)
        try:
            res["fds_back_after_s"] = round(wait_until(lambda: nfds(pid) <= fds0, 10, "fds back", d.alive), 3)
        except RuntimeError:
            res["fds_back_after_s"] = None
        res["fds_after_delete"] = nfds(pid)
        log(f"pyulogd follow: {len(names)} namespaces attached {res['attach_lag_s']} s after creation; "
            f"fds {fds0} -> {res['fds_attached']} -> {res['fds_after_delete']}")
        return res
    finally:
        d.stop(5)
        delete_namespaces(ns, names)
        errlog.close()


# --------------------------------------------------------------------------- report


def mb(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def ratio(p: float | None, u: float | None, digits: int = 2) -> str:
    if p is None or u is None or u == 0:
        return "-"
    return f"{p / u:.{digits}f}"


def table(r: dict[str, Any]) -> str:
    u, p = r.get("ulogd2"), r.get("pyulogd")
    n = r["namespaces"]
    rows: list[tuple[str, Callable[[dict[str, Any]], Any], Callable[[Any], str], bool]] = [
        ("processes", lambda x: x["processes"], str, True),
        (f"time to attach all {n} namespaces (s)", lambda x: x["attach_s"], lambda v: f"{v:.2f}", True),
        ("total VmRSS after attach (MB)", lambda x: x["after_attach"]["rss_kb"], mb, True),
        ("total PSS after attach (MB)", lambda x: x["after_attach"]["pss_kb"], mb, True),
        ("total VmHWM after traffic (MB)", lambda x: x["after_traffic"]["hwm_kb"], mb, True),
        ("memory per namespace (kB RSS)¹", lambda x: x["rss_per_ns_kb"], lambda v: f"{v:.0f}", True),
        ("open fds (all processes)", lambda x: x["fds"], str, True),
        ("idle CPU (ms over the idle period)", lambda x: 1000 * x["idle_cpu_s"], lambda v: f"{v:.1f}", True),
        ("CPU during traffic (s, schedstat)", lambda x: x["traffic_cpu_s"], lambda v: f"{v:.3f}", True),
        ("CPU during traffic (s, /proc stat ticks)", lambda x: x["traffic_cpu_ticks_s"], lambda v: f"{v:.2f}", True),
        ("CPU µs per event", lambda x: x["cpu_us_per_event"], lambda v: f"{v:.1f}", True),
        ("datagrams sent / nft counter", lambda x: (x["sent"], x["counter"]), lambda v: f"{v[0]} / {v[1]}", False),
        ("events logged", lambda x: x["logged"], str, True),
        ("lost (loss %)", lambda x: (x["lost"], x["loss_pct"]), lambda v: f"{v[0]} ({v[1]:.2f} %)", False),
        ("namespaces with loss", lambda x: x["namespaces_with_loss"], str, False),
        ("records tagged oob.netns / misattributed", lambda x: (x["tagged"], x["misattributed"]),
         lambda v: f"{v[0]} / {v[1]}", False),
        ("offered rate (datagrams/s, all namespaces)", lambda x: x["offered_per_s"], lambda v: f"{v:.0f}", False),
        ("logged/s (99 % point)", lambda x: x["logged_per_s_99"], lambda v: f"{v:.0f}", True),
        ("send start → output quiet (s)", lambda x: x["drain_wall_s"], lambda v: f"{v:.2f}", False),
    ]
    lines = ["| metric | ulogd2 (one per namespace) | pyulogd (one, netns=) | pyulogd / ulogd2 |", "|---|---|---|---|"]
    for title, get, fmt, with_ratio in rows:
        vals = []
        for x in (u, p):
            try:
                v = get(x) if x else None
            except (KeyError, TypeError):
                v = None
            vals.append(v)
        cells = [fmt(v) if v is not None else "-" for v in vals]
        rt = ratio(vals[1], vals[0]) if with_ratio and all(isinstance(v, (int, float)) for v in vals) else ""
        lines.append(f"| {title} | {cells[0]} | {cells[1]} | {rt} |")
    note = "¹ ulogd2: total VmRSS / namespaces (a whole process each"
    if u and "pss_per_ns_kb" in u:
        note += f"; PSS {u['pss_per_ns_kb']:.0f} kB"
    note += "); pyulogd: (its VmRSS − VmRSS of an idle pyulogd following no namespace"
    if p and "idle_instance" in p:
        note += f", {mb(p['idle_instance']['rss_kb'])} MB"
    note += ") / namespaces."
    lines.append("")
    lines.append(note)
    if r.get("follow"):
        f = r["follow"]
        lag = f.get("attach_lag_s", {})
        lines.append(f"pyulogd following: {f['namespaces']} namespaces created one at a time while it ran, attached "
                     f"{lag.get('median')} s (median), {lag.get('max')} s (max) after `ip netns add` returned; "
                     f"open fds {f.get('fds_before')} → {f.get('fds_attached')} → {f.get('fds_after_delete')} "
                     "after deleting them again.")
    return "\n".join(lines)


def pyulogd_source() -> dict[str, Any]:
    """Which pyulogd was measured: HEAD, whether the tree differs, a digest of src/pyulogd."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted((REPO / "src" / "pyulogd").rglob("*.py")):
        h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True).stdout
    return {"head": head or "?", "src_modified": bool(dirty.strip()), "digest": h.hexdigest()[:12]}


def machine() -> str:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} vCPU ({cpu}), {mem:.0f} GiB, kernel {os.uname().release}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--namespaces", type=int, default=200)
    ap.add_argument("--packets", type=int, default=500, help="datagrams per namespace in the traffic phase")
    ap.add_argument("--rate", type=float, default=10000,
                    help="datagrams/s over all namespaces (0: as fast as possible)")
    ap.add_argument("--quick", action="store_true", help="20 namespaces, 200 datagrams each at 5000/s, follow 5")
    ap.add_argument("--daemons", default="ulogd2,pyulogd", help="comma list: ulogd2, pyulogd")
    ap.add_argument("--ulogd", default="/usr/sbin/ulogd")
    ap.add_argument("--pyulogd-cmd", default=f"{shlex.quote(sys.executable)} -m pyulogd",
                    help="pyulogd command (the repo's src/ is put on PYTHONPATH)")
    ap.add_argument("--netns-option", default="netns", help="pyulogd's NFLOG option naming namespaces")
    ap.add_argument("--log1-extra", default="", help="extra [log1] lines for both daemons ('\\n' = newline)")
    ap.add_argument("--follow", type=int, default=20, help="pyulogd: namespaces created while it runs (0: skip)")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds after attach before measuring")
    ap.add_argument("--idle-seconds", type=float, default=5.0)
    ap.add_argument("--idle", type=float, default=2.0, help="output quiet this long = drained")
    ap.add_argument("--attach-timeout", type=float, default=120)
    ap.add_argument("--drain-timeout", type=float, default=120)
    ap.add_argument("--workdir", default="/tmp/netns200")
    ap.add_argument("--keep", action="store_true", help="keep the output files")
    ap.add_argument("--json", help="write the results as JSON to this file")
    a = ap.parse_args()
    a.log1_extra = a.log1_extra.replace("\\n", "\n")
    if a.quick:
        a.namespaces, a.packets, a.rate, a.follow = 20, 200, 5000.0, min(a.follow, 5)
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, nftables)")
    daemons = [x.strip() for x in a.daemons.split(",") if x.strip()]
    lockfd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit(f"another netns200 run holds {LOCK}")

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGINT too: a background job ignores it
        signal.signal(sig, _on_signal)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    work = Path(a.workdir) / stamp
    work.mkdir(parents=True)
    names = [f"{PREFIX}{i}" for i in range(a.namespaces)]
    ns = Netns()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(), "namespaces": a.namespaces,
        "packets_per_ns": a.packets, "rate": a.rate, "command": shlex.join(sys.argv),
        "loadavg_start": open("/proc/loadavg").read().split()[:3], "pyulogd_source": pyulogd_source(),
    }
    sender: Sender | None = None
    rc = 0
    try:
        if leftovers():
            log(f"removing {len(leftovers())} namespaces left by an earlier run")
            delete_namespaces(ns, leftovers())
        if "pyulogd" in daemons and not pyulogd_supports_netns(a):
            log(f"pyulogd's NFLOG has no '{a.netns_option}=' option yet: pyulogd side skipped (pending)")
            daemons.remove("pyulogd")
            results["pyulogd_pending"] = True
        t = time.monotonic()
        create_namespaces(ns, names)
        log(f"{len(names)} namespaces with log rules in {time.monotonic() - t:.1f} s")
        sender = Sender(ns, names)
        for kind in daemons:
            log(f"--- {kind}")
            results[kind] = phase(a, kind, ns, names, sender, work, log)
            r = results[kind]
            log(f"{kind}: sent {r['sent']} counter {r['counter']} logged {r['logged']} lost {r['lost']} "
                f"cpu {r['traffic_cpu_s']} s rss {mb(r['after_attach']['rss_kb'])} MB")
        if "pyulogd" in daemons and a.follow > 0:
            results["follow"] = follow(a, ns, work, log)
        results["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        print(f"\n## netns200: {a.namespaces} namespaces, {a.packets} datagrams each at "
              f"{a.rate:g}/s in total ({results['date']})\n")
        src = results["pyulogd_source"]
        print(f"Machine: {results['machine']}; load average {' '.join(results['loadavg_start'])} at start. "
              f"pyulogd: {src['head']}{' + uncommitted changes in src/' if src['src_modified'] else ''}, "
              f"source digest {src['digest']}.\n")
        print(table(results))
        if results.get("pyulogd_pending"):
            print("\npyulogd side pending: its NFLOG input has no netns= option yet.")
    except (KeyboardInterrupt, Interrupted) as e:
        log(f"interrupted ({e or 'Ctrl-C'}): cleaning up")
        rc = 130
    except Exception as e:
        log(f"error: {type(e).__name__}: {e}; cleaning up (files in {work})")
        rc = 1
        a.keep = True
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if sender is not None:
            sender.close()
        delete_namespaces(ns, [*names, *leftovers()])
        left = leftovers()
        if left:
            log(f"WARNING: namespaces left: {left[:5]}")
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=1) + "\n")
        if not a.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    return rc


if __name__ == "__main__":
    sys.exit(main())
