"""A two-namespace lab for real-kernel tests: a client and a server joined by a veth pair.

Every lab has unique namespace names and is deleted afterwards; traffic stays inside it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_counter = itertools.count()


def have_root_and_tools(*tools: str) -> str | None:
    """A reason to skip, or None when the machine can run real-kernel tests."""
    if os.geteuid() != 0:
        return "needs root"
    for t in ("ip", "nft", *tools):
        if shutil.which(t) is None:
            return f"needs {t}"
    return None


def sh(*args: str, ns: str | None = None, check: bool = True, input: str | None = None,
       timeout: float = 30) -> subprocess.CompletedProcess[str]:
    cmd = list(args) if ns is None else ["ip", "netns", "exec", ns, *args]
    return subprocess.run(cmd, check=check, text=True, capture_output=True, input=input, timeout=timeout)


class Lab:
    """``cli`` (10.77.N.1, fd77:N::1) <-> ``srv`` (10.77.N.2, fd77:N::2)."""

    def __init__(self, tag: str = "t") -> None:
        n = next(_counter)
        self.id = f"{os.getpid() % 100000}{n}"
        self.net = (os.getpid() + n) % 200 + 20
        self.cli = f"pyu-{tag}-{self.id}-c"
        self.srv = f"pyu-{tag}-{self.id}-s"
        self.cli_if = f"pc{self.id}"[:15]
        self.srv_if = f"ps{self.id}"[:15]
        self.cli4, self.srv4 = f"10.77.{self.net}.1", f"10.77.{self.net}.2"
        self.cli6, self.srv6 = f"fd77:{self.net}::1", f"fd77:{self.net}::2"
        self.cli_mac, self.srv_mac = "02:00:0a:4d:00:01", "02:00:0a:4d:00:02"

    def up(self) -> Lab:
        sh("ip", "netns", "add", self.cli)
        sh("ip", "netns", "add", self.srv)
        sh("ip", "link", "add", self.cli_if, "netns", self.cli, "address", self.cli_mac, "type", "veth",
           "peer", "name", self.srv_if, "netns", self.srv, "address", self.srv_mac)
        for ns, ifname, v4, v6, peer4, peer6, peer_mac in (
            (self.cli, self.cli_if, self.cli4, self.cli6, self.srv4, self.srv6, self.srv_mac),
            (self.srv, self.srv_if, self.srv4, self.srv6, self.cli4, self.cli6, self.cli_mac),
        ):
            sh("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", f"net.ipv6.conf.{ifname}.accept_dad=0",
               "net.ipv6.auto_flowlabels=0", ns=ns, check=False)
            sh("ip", "addr", "add", f"{v4}/24", "dev", ifname, ns=ns)
            sh("ip", "addr", "add", f"{v6}/64", "dev", ifname, "nodad", ns=ns)
            sh("ip", "link", "set", ifname, "up", ns=ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
            sh("ip", "neigh", "replace", peer4, "lladdr", peer_mac, "dev", ifname, "nud", "permanent", ns=ns)
            sh("ip", "-6", "neigh", "replace", peer6, "lladdr", peer_mac, "dev", ifname, "nud", "permanent",
               ns=ns)
        return self

    def down(self) -> None:
        for ns in (self.cli, self.srv):
            sh("ip", "netns", "del", ns, check=False)

    def nft(self, ruleset: str, ns: str | None = None) -> None:
        sh("nft", "-f", "-", ns=ns or self.srv, input=ruleset)

    def nflog_groups(self, ns: str | None = None) -> set[int]:
        out = sh("cat", "/proc/net/netfilter/nfnetlink_log", ns=ns or self.srv, check=False).stdout
        return {int(line.split()[0]) for line in out.splitlines() if line.strip()}

    def popen(self, args: Sequence[str], ns: str | None = None, **kw: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", ns or self.srv, *args], **kw)  # type: ignore[call-overload]

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


def wait_for(pred: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def lines(path: Path) -> list[str]:
    return path.read_text(errors="surrogateescape").splitlines() if path.exists() else []
