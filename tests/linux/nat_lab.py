"""A three-namespace lab shaped like a Neutron router, for the conntrack (NFCT) tests.

``client`` (outside) <-> ``router`` <-> ``vm``: two veth pairs, IPv4 and IPv6 on both, forwarding on
in the router and an nft ``nat`` table there with a floating IP (DNAT of the floating address on
the outside to the vm's fixed address) and SNAT of the inside network to the router's outside
address, for both families. Every lab has unique namespace names and is deleted afterwards.

Neighbours are permanent entries (no ARP or neighbour discovery), so the only connections the
router's conntrack table sees are the ones :meth:`NatLab.traffic` makes.
"""

from __future__ import annotations

import itertools
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.linux.lab import sh, wait_for

_counter = itertools.count()
TCP_PORT, UDP_PORT = 7001, 7003
ETHERTYPE = {2: 0x0800, 10: 0x86DD}

# Dual-stack TCP and UDP echo servers; prints "ready" once both are bound.
SERVER = f"""
import socket, sys, threading
t = socket.socket(socket.AF_INET6); t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("::", {TCP_PORT})); t.listen()
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0); u.bind(("::", {UDP_PORT}))
def tcp():
    while True:
        c, _ = t.accept(); c.settimeout(5); c.sendall(c.recv(100)); c.close()
threading.Thread(target=tcp, daemon=True).start()
print("ready", flush=True)
while True:
    d, a = u.recvfrom(100); u.sendto(d, a)
"""
# One TCP connection (source port P) and one UDP exchange (source port P+2) per HOST@P argument.
CLIENT = f"""
import socket, sys
for spec in sys.argv[1:]:
    host, port = spec.rsplit("@", 1)
    port = int(port)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam); s.settimeout(5); s.bind(("", port)); s.connect((host, {TCP_PORT}))
    s.sendall(b"hello flow\\n"); assert s.recv(100) == b"hello flow\\n"; s.close()
    u = socket.socket(fam, socket.SOCK_DGRAM); u.settimeout(5); u.bind(("", port + 2))
    u.sendto(b"ok", (host, {UDP_PORT})); assert u.recvfrom(100)[0] == b"ok"; u.close()
"""


@dataclass(frozen=True)
class Flow:
    """One connection as the router's conntrack must record it: original and reply tuple."""

    kind: str  # "dnat" (client -> floating IP) or "snat" (vm -> client)
    family: int  # 2 or 10
    proto: int  # 6, 17, 1 or 58
    osrc: str
    odst: str
    rsrc: str
    rdst: str
    sport: int | None = None  # original direction; the reply's are swapped (no port translation)
    dport: int | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.family, self.proto, self.osrc, self.odst, self.sport, self.dport)

    def __str__(self) -> str:
        return f"{self.kind} fam={self.family} proto={self.proto} {self.osrc}:{self.sport} -> {self.odst}:{self.dport}"


def record_key(r: dict[str, Any]) -> tuple[Any, ...]:
    """The :attr:`Flow.key` of a JSON flow record (IP2STR names the original addresses src_ip/dest_ip)."""
    return (r.get("oob.family"), r.get("orig.ip.protocol"), r.get("src_ip"), r.get("dest_ip"),
            r.get("orig.l4.sport"), r.get("orig.l4.dport"))


def printflow_part(f: Flow, reply: bool, pkts: int, nbytes: int) -> str:
    """What pyulogd's PRINTFLOW prints for one direction of a flow (ICMP/ICMPv6: echo request 8/0, 128/0)."""
    src, dst = (f.rsrc, f.rdst) if reply else (f.osrc, f.odst)
    text = f"SRC={src} DST={dst} "
    if f.proto in (6, 17):
        sport, dport = (f.dport, f.sport) if reply else (f.sport, f.dport)
        text += f"PROTO={'TCP' if f.proto == 6 else 'UDP'} SPT={sport} DPT={dport} "
    elif f.proto == 1:
        text += "PROTO=ICMP TYPE=8 CODE=0 "
    else:
        text += "PROTO=ICMPv6 TYPE=128 CODE=0 "
    return text + f"PKTS={pkts} BYTES={nbytes} "


class NatLab:
    """client (ext .1) -- (ext .2, floating .100) router (int .1) -- (int .10 fixed) vm."""

    def __init__(self, tag: str = "nat") -> None:
        n = next(_counter)
        self.id = f"{os.getpid() % 100000}{n}"
        ext = (os.getpid() + 2 * n) % 100 * 2 + 20
        self.client, self.router, self.vm = (f"pyu-{tag}-{self.id}-{x}" for x in ("c", "r", "v"))
        # Interface names after Neutron's: qg- (gateway, outside) and qr- (router interface).
        self.client_if, self.qg, self.qr, self.vm_if = (f"{p}{self.id}"[:15] for p in ("cl", "qg", "qr", "vm"))
        self.client_mac, self.qg_mac, self.qr_mac, self.vm_mac = (
            f"02:00:0a:4e:00:{i:02x}" for i in (1, 2, 3, 4))
        self.ext_net4, self.int_net4 = f"10.78.{ext}.0/24", f"10.78.{ext + 1}.0/24"
        self.ext_net6, self.int_net6 = f"fd78:{ext}::/64", f"fd78:{ext + 1}::/64"
        self.client4, self.router_ext4, self.fip4 = (f"10.78.{ext}.{i}" for i in (1, 2, 100))
        self.router_int4, self.fixed4 = f"10.78.{ext + 1}.1", f"10.78.{ext + 1}.10"
        self.client6, self.router_ext6, self.fip6 = (f"fd78:{ext}::{i}" for i in (1, 2, 100))
        self.router_int6, self.fixed6 = f"fd78:{ext + 1}::1", f"fd78:{ext + 1}::10"
        self._servers: list[subprocess.Popen[str]] = []

    # -- set up and tear down

    def up(self) -> NatLab:
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def _up(self) -> None:
        for ns in (self.client, self.router, self.vm):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        for a_ns, a_if, a_mac, b_ns, b_if, b_mac in (
            (self.client, self.client_if, self.client_mac, self.router, self.qg, self.qg_mac),
            (self.router, self.qr, self.qr_mac, self.vm, self.vm_if, self.vm_mac),
        ):
            sh("ip", "link", "add", a_if, "netns", a_ns, "address", a_mac, "type", "veth",
               "peer", "name", b_if, "netns", b_ns, "address", b_mac)
        for ns, ifname in ((self.client, self.client_if), (self.router, self.qg), (self.router, self.qr),
                           (self.vm, self.vm_if)):
            sh("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", f"net.ipv6.conf.{ifname}.accept_dad=0",
               "net.ipv6.auto_flowlabels=0", ns=ns, check=False)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", ns=self.router)
        addrs = (
            (self.client, self.client_if, [f"{self.client4}/24", f"{self.client6}/64"]),
            # The floating IP sits on the gateway port as a /32 (/128), as Neutron puts it.
            (self.router, self.qg, [f"{self.router_ext4}/24", f"{self.fip4}/32",
                                    f"{self.router_ext6}/64", f"{self.fip6}/128"]),
            (self.router, self.qr, [f"{self.router_int4}/24", f"{self.router_int6}/64"]),
            (self.vm, self.vm_if, [f"{self.fixed4}/24", f"{self.fixed6}/64"]),
        )
        for ns, ifname, cidrs in addrs:
            for cidr in cidrs:
                sh("ip", "addr", "add", cidr, "dev", ifname, *(["nodad"] if ":" in cidr else []), ns=ns)
            sh("ip", "link", "set", ifname, "up", ns=ns)
        neighbours = (
            (self.client, self.client_if, self.qg_mac, (self.router_ext4, self.fip4, self.router_ext6, self.fip6)),
            (self.router, self.qg, self.client_mac, (self.client4, self.client6)),
            (self.router, self.qr, self.vm_mac, (self.fixed4, self.fixed6)),
            (self.vm, self.vm_if, self.qr_mac, (self.router_int4, self.router_int6)),
        )
        for ns, ifname, mac, ips in neighbours:
            for ip in ips:
                sh("ip", "neigh", "replace", ip, "lladdr", mac, "dev", ifname, "nud", "permanent", ns=ns)
        # The vm reaches the outside through the router; the client knows only its own network,
        # so it can reach the vm through the floating IP alone.
        sh("ip", "route", "add", "default", "via", self.router_int4, ns=self.vm)
        sh("ip", "-6", "route", "add", "default", "via", self.router_int6, ns=self.vm)
        sh("nft", "-f", "-", ns=self.router, input=self.nat_ruleset())

    def nat_ruleset(self) -> str:
        return f"""table inet nat {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "{self.qg}" ip daddr {self.fip4} dnat ip to {self.fixed4}
    iifname "{self.qg}" ip6 daddr {self.fip6} dnat ip6 to {self.fixed6}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "{self.qg}" ip saddr {self.int_net4} masquerade
    oifname "{self.qg}" ip6 saddr {self.int_net6} snat ip6 to {self.router_ext6}
  }}
}}
"""

    def down(self) -> None:
        for p in self._servers:
            if p.poll() is None:
                p.kill()
            p.wait(5)
        self._servers.clear()
        for ns in (self.client, self.router, self.vm):
            sh("ip", "netns", "del", ns, check=False)

    def __enter__(self) -> NatLab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- processes and traffic

    def popen(self, ns: str, args: list[str], **kw: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(["ip", "netns", "exec", ns, *args], **kw)

    def start_servers(self) -> None:
        """Echo servers in the vm (reached through the floating IP) and in the client (reached from the vm)."""
        for ns in (self.vm, self.client):
            p: subprocess.Popen[str] = self.popen(ns, [sys.executable, "-c", SERVER], stdout=subprocess.PIPE,
                                                  text=True)
            self._servers.append(p)
            assert p.stdout is not None
            ready, _, _ = select.select([p.stdout], [], [], 10)
            assert ready and p.stdout.readline().strip() == "ready", f"echo server in {ns} did not start"

    def flows(self) -> list[Flow]:
        """The twelve connections :meth:`traffic` makes, as the router's conntrack must see them."""
        out = []
        for fam, client, fip, fixed, router_ext, base in (
            (2, self.client4, self.fip4, self.fixed4, self.router_ext4, 0),
            (10, self.client6, self.fip6, self.fixed6, self.router_ext6, 4),
        ):
            icmp = 1 if fam == 2 else 58
            # DNAT: the client connects to the floating IP; the vm's fixed address answers.
            out += [Flow("dnat", fam, 6, client, fip, fixed, client, 41001 + base, TCP_PORT),
                    Flow("dnat", fam, 17, client, fip, fixed, client, 41003 + base, UDP_PORT),
                    Flow("dnat", fam, icmp, client, fip, fixed, client)]
            # SNAT: the vm connects out; the client answers the router's outside address.
            out += [Flow("snat", fam, 6, fixed, client, client, router_ext, 42001 + base, TCP_PORT),
                    Flow("snat", fam, 17, fixed, client, client, router_ext, 42003 + base, UDP_PORT),
                    Flow("snat", fam, icmp, fixed, client, client, router_ext)]
        return out

    def traffic(self) -> None:
        sh(sys.executable, "-c", CLIENT, f"{self.fip4}@41001", f"{self.fip6}@41005", ns=self.client)
        sh(sys.executable, "-c", CLIENT, f"{self.client4}@42001", f"{self.client6}@42005", ns=self.vm)
        for ns, dst4, dst6 in ((self.client, self.fip4, self.fip6), (self.vm, self.client4, self.client6)):
            sh("ping", "-n", "-c1", "-W2", dst4, ns=ns)
            sh("ping", "-n", "-6", "-c1", "-W2", dst6, ns=ns)

    def ct_count(self) -> int:
        return int(sh("conntrack", "-C", ns=self.router).stdout.strip())

    def flush(self) -> None:
        sh("conntrack", "-F", ns=self.router)


def ct_listeners(pid: int) -> int:
    """How many ctnetlink sockets of process ``pid`` are subscribed to NEW, UPDATE and DESTROY.

    As ``../shared/golden/goldentool.py`` ct_listeners(), but per process: the sockets of
    ``/proc/PID/net/netlink`` (the process's own namespace) with protocol 12 (NETLINK_NETFILTER)
    and groups 1-3, whose inode is one of the process's descriptors.
    """
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
        table = Path(f"/proc/{pid}/net/netlink").read_text()
    except OSError:
        return 0
    mine = set()
    for fd in fds:
        try:
            mine.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    n = 0
    for line in table.splitlines()[1:]:
        f = line.split()
        if len(f) >= 10 and f[1] == "12" and int(f[3], 16) & 7 == 7 and f"socket:[{f[9]}]" in mine:
            n += 1
    return n


def wait_listening(proc: subprocess.Popen[Any], sockets: int, what: str, timeout: float = 15) -> None:
    """Wait until ``proc`` has ``sockets`` conntrack event sockets (and fail early if it exits)."""
    wait_for(lambda: proc.poll() is not None or ct_listeners(proc.pid) >= sockets, timeout,
             f"{what} to subscribe to conntrack events")
    assert proc.poll() is None, f"{what} exited with {proc.returncode}"


def stop(*procs: subprocess.Popen[Any], timeout: float = 10) -> list[int]:
    """One SIGTERM to each, then SIGKILL to any that has not exited within ``timeout``; the exit statuses.

    One signal only: a second SIGTERM is not what an operator sends (and it would race pyulogd's
    interpreter shutdown, where CPython has put SIGTERM back to its default action).
    """
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    rcs = []
    for p in procs:
        try:
            rcs.append(p.wait(timeout))
        except subprocess.TimeoutExpired:
            p.kill()
            rcs.append(p.wait())
    return rcs


def complete_lines(path: Path) -> list[str]:
    """The lines of an output file that are complete (end with a newline): what a reader polling a
    file that is being written can rely on."""
    if not path.exists():
        return []
    return path.read_text(errors="surrogateescape").split("\n")[:-1]


def iter_json(path: Path) -> Iterator[str]:
    yield from (x for x in complete_lines(path) if x.strip())
