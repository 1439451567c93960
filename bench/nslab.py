"""What the live cost benchmarks share (bench/neutron_cost.py, bench/nftrace_cost.py,
bench/nats_bench.py): two network namespaces joined by a veth pair, a UDP sender paced at a
rate, the C flood generator, an nft counter, the daemon's CPU, and the commands that run in a
namespace. Imported by the scripts next to it (``python3 bench/x.py``
puts bench/ first on ``sys.path``).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

UDPFLOOD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench", "udpflood.c")

# Sends UDP datagrams of 64 bytes to HOST:PORT at RATE per second for SECONDS; prints how many.
SENDER = """import socket, sys, time
rate, secs, host, port = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n, t0, payload = 0, time.monotonic(), b"x" * 64
end = t0 + secs
while True:
    now = time.monotonic()
    if now >= end:
        break
    due = int((now - t0) * rate)
    while n < due:
        s.sendto(payload, (host, port))
        n += 1
    time.sleep(0.0005)
print(n)
"""


def sh(*args: str, ns: str | None = None, input: str | None = None) -> str:
    """Run a command (in namespace ``ns``); its standard output; CalledProcessError on failure."""
    cmd = list(args) if ns is None else ["ip", "netns", "exec", ns, *args]
    return subprocess.run(cmd, input=input, text=True, capture_output=True, check=True).stdout


def send(ns: str, rate: float, secs: float, host: str, port: int = 5001, python: str = "python3") -> int:
    """Send from namespace ``ns`` at ``rate`` datagrams/s for ``secs``; the number sent."""
    return int(sh(python, "-c", SENDER, str(rate), str(secs), host, str(port), ns=ns).strip())


@contextmanager
def veth_lab(a: str, b: str, dev_a: str, dev_b: str, addr_a: str, addr_b: str) -> Iterator[None]:
    """Namespaces ``a`` and ``b`` with loopback up, joined by veth ``dev_a`` (in ``a``, address
    ``addr_a``, with prefix length) and ``dev_b`` (in ``b``); both removed at the end, even on
    failure."""
    try:
        for ns in (a, b):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "link", "add", dev_a, "netns", a, "type", "veth", "peer", "name", dev_b, "netns", b)
        for ns, dev, addr in ((a, dev_a, addr_a), (b, dev_b, addr_b)):
            sh("ip", "addr", "add", addr, "dev", dev, ns=ns)
            sh("ip", "link", "set", dev, "up", ns=ns)
        yield
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def build_generator(work: str) -> str:
    """shared/bench/udpflood.c compiled into ``work``; the executable's path."""
    exe = os.path.join(work, "udpflood")
    sh("gcc", "-O2", "-o", exe, UDPFLOOD)
    return exe


def nft_counter(ns: str, family: str, table: str) -> int:
    """The packets of the first ``counter`` of an nft table in namespace ``ns`` (0 when none)."""
    m = re.search(r"counter packets (\d+)", sh("nft", "list", "table", family, table, ns=ns))
    return int(m[1]) if m else 0


def wait_for(log: Path, word: str, seconds: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Wait until ``word`` is in the file ``log`` (the daemon is up); False after ``seconds``
    or when ``proc`` exits first."""
    end = time.monotonic() + seconds
    while not (log.exists() and word in log.read_text()):
        if time.monotonic() > end or (proc is not None and proc.poll() is not None):
            return False
        time.sleep(0.05)
    return True


def proc_cpu(pid: int, gone: float | None = None) -> float:
    """utime + stime of a process, seconds; ``gone`` instead when it is not there (else
    OSError)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        if gone is None:
            raise
        return gone
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def cpu_times() -> tuple[float, float]:
    """(system + softirq, total) seconds of the whole machine, from /proc/stat."""
    f = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    v = [int(x) / os.sysconf("SC_CLK_TCK") for x in f]
    return v[2] + v[5] + v[6], sum(v)
