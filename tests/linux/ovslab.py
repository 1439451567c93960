"""Open vSwitch without its kernel module, for the flow collector tests (../shared/research/ipfix.md 3c).

Everything lives in places of the test's own: a temporary directory for the database, the
sockets, the pid and log files (``OVS_RUNDIR`` etc. point the tools there, never at the
system's /var/run/openvswitch), and three network namespaces with a unique prefix and a random
suffix: ``ovs`` runs ovsdb-server and ovs-vswitchd (so the bridge's internal port and the
export to 127.0.0.1 stay in it), ``a`` and ``b`` are two hosts, each joined to a bridge port
by a veth pair. The bridge uses the userspace datapath (``datapath_type=netdev``); transmit
checksum offload is off on the hosts' veths, without which TCP through it times out. The
daemons are stopped by the pids in their own pidfiles; :meth:`OvsLab.down` runs even when
the test fails.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.linux.lab import sh, wait_for

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
TOOLS = ("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovsdb-tool", "ethtool")


def missing_tools() -> str | None:
    for t in TOOLS:
        if shutil.which(t) is None:
            return f"needs {t} (Debian packages openvswitch-switch, ethtool)"
    return None if os.path.exists(SCHEMA) else f"needs {SCHEMA}"


class OvsLab:
    """Hosts ``a`` (10.79.N.1, fd79:N::1) and ``b`` (.2, ::2) on bridge ``br`` (netdev datapath)."""

    def __init__(self, tag: str = "ofx") -> None:
        sfx = secrets.token_hex(3)
        self.ns, self.a, self.b = (f"pyu-{tag}-{sfx}-{x}" for x in ("o", "a", "b"))
        self.br = f"{tag}{sfx}"[:15]
        self.port_a, self.port_b = f"pa{sfx}", f"pb{sfx}"
        n = int(sfx, 16) % 200 + 20
        self.a4, self.b4 = f"10.79.{n}.1", f"10.79.{n}.2"
        self.a6, self.b6 = f"fd79:{n}::1", f"fd79:{n}::2"
        self.dir = Path(tempfile.mkdtemp(prefix=f"pyu-{tag}-{sfx}-"))
        self.env = dict(os.environ, OVS_RUNDIR=str(self.dir), OVS_LOGDIR=str(self.dir), OVS_DBDIR=str(self.dir),
                        OVS_SYSCONFDIR=str(self.dir))  # fmt: skip
        self.db = f"unix:{self.dir}/db.sock"

    # -- set up and tear down
    def __enter__(self) -> OvsLab:
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def _up(self) -> None:
        for ns in (self.ns, self.a, self.b):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        d = self.dir
        self.run("ovsdb-tool", "create", f"{d}/conf.db", SCHEMA)
        self.run("ovsdb-server", f"{d}/conf.db", f"--remote=punix:{d}/db.sock", f"--pidfile={d}/ovsdb-server.pid",
                 f"--log-file={d}/ovsdb-server.log", f"--unixctl={d}/ovsdb-server.ctl", "--detach", "--no-chdir",
                 ns=self.ns)  # fmt: skip
        self.vsctl("--no-wait", "init")
        self.run("ovs-vswitchd", self.db, f"--pidfile={d}/ovs-vswitchd.pid", f"--log-file={d}/ovs-vswitchd.log",
                 f"--unixctl={d}/ovs-vswitchd.ctl", "--detach", "--no-chdir", ns=self.ns)  # fmt: skip
        for host, port, ifname, v4, v6 in ((self.a, self.port_a, "a0", self.a4, self.a6),
                                           (self.b, self.port_b, "b0", self.b4, self.b6)):  # fmt: skip
            sh("ip", "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", host, ns=self.ns)
            sh("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.auto_flowlabels=0", ns=host, check=False)
            sh("ip", "addr", "add", f"{v4}/24", "dev", ifname, ns=host)
            sh("ip", "addr", "add", f"{v6}/64", "dev", ifname, "nodad", ns=host)
            sh("ethtool", "-K", ifname, "tx", "off", ns=host)  # partial checksums: TCP would time out
            sh("ip", "link", "set", ifname, "up", ns=host)
            sh("ip", "link", "set", port, "up", ns=self.ns)
        self.vsctl("add-br", self.br, "--", "set", "Bridge", self.br, "datapath_type=netdev")
        self.vsctl("add-port", self.br, self.port_a, "--", "add-port", self.br, self.port_b)
        # Neighbours learnt once, so the flows the tests count are theirs only.
        wait_for(lambda: sh("ping", "-c1", "-W1", self.b4, ns=self.a, check=False).returncode == 0, 20,
                 "the bridge to forward")  # fmt: skip
        sh("ping", "-6", "-c1", "-W2", self.b6, ns=self.a, check=False)

    def down(self) -> None:
        d = self.dir
        if (d / "db.sock").exists():
            self.vsctl("--timeout=5", "--if-exists", "del-br", self.br, check=False)
        for name in ("ovs-vswitchd", "ovsdb-server"):
            try:
                pid = int((d / f"{name}.pid").read_text().strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), 10, f"{name} to stop")
            except AssertionError:
                os.kill(pid, signal.SIGKILL)
        for ns in (self.ns, self.a, self.b):
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(d, ignore_errors=True)

    # -- tools
    def run(self, *args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = list(args) if ns is None else ["ip", "netns", "exec", ns, *args]
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)}: {r.returncode}: {r.stderr}")
        return r

    def vsctl(self, *args: str, check: bool = True) -> str:
        return self.run("ovs-vsctl", f"--db={self.db}", *args, check=check).stdout

    def ofctl(self, *args: str) -> str:
        return self.run("ovs-ofctl", *args).stdout

    def ipfix_bridge(self, targets: list[str], **opts: Any) -> None:
        """Per-bridge IPFIX sampling (``sampling`` every packet by default)."""
        cols = {"sampling": 1, "obs_domain_id": 123, "obs_point_id": 456, "cache_active_timeout": 2,
                "cache_max_flows": 1000, **opts}  # fmt: skip
        tgt = ",".join(f'"{t}"' for t in targets)
        self.vsctl("--", "set", "Bridge", self.br, "ipfix=@i", "--", "--id=@i", "create", "IPFIX", f"targets=[{tgt}]",
                   *(f"{k}={v}" for k, v in cols.items()))  # fmt: skip

    def ipfix_flows(self, targets: list[str], set_id: int = 7, **opts: Any) -> None:
        """A Flow_Sample_Collector_Set for flow-based sampling (``sample(collector_set_id=...)`` actions)."""
        cols = {"cache_active_timeout": 2, "cache_max_flows": 1000, **opts}
        tgt = ",".join(f'"{t}"' for t in targets)
        self.vsctl("--", "--id=@br", "get", "Bridge", self.br, "--", "--id=@i", "create", "IPFIX", f"targets=[{tgt}]",
                   *(f"{k}={v}" for k, v in cols.items()), "--", "create", "Flow_Sample_Collector_Set",
                   f"id={set_id}", "bridge=@br", "ipfix=@i")  # fmt: skip

    def netflow(self, targets: list[str], active_timeout: int = 2) -> None:
        tgt = ",".join(f'"{t}"' for t in targets)
        self.vsctl("--", "set", "Bridge", self.br, "netflow=@n", "--", "--id=@n", "create", "NetFlow",
                   f"targets=[{tgt}]", f"active_timeout={active_timeout}")  # fmt: skip

    def unset_exports(self) -> None:
        """Remove every export (OVS sends what its caches hold: forced end)."""
        self.vsctl("--", "clear", "Bridge", self.br, "ipfix", "netflow", "--", "--all", "destroy",
                   "Flow_Sample_Collector_Set")  # fmt: skip

    def exec(self, ns: str, args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, *args], capture_output=True, text=True, timeout=60, **kw)
