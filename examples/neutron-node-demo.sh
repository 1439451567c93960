#!/bin/bash
# pyulogd on a Neutron node, end to end, on a fresh machine (docs/neutron.md): builds the lab of
# tests/linux/neutron_lab.py (a legacy, an HA and a DVR router, DHCP, an iptables_hybrid compute
# node, our own userspace Open vSwitch with the agents' OVSDB rows, a mapping file), runs pyulogd
# with the Neutron stacks, sends accepted, dropped and rejected traffic, floating IP in and out,
# SNAT and a DROP flood, shows what was recorded, and removes everything (also on error or ^C).
# Run as root. --no-install skips installing Debian packages and pyulogd.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
[ "$(id -u)" = 0 ] || { echo "run as root (the lab creates network namespaces)" >&2; exit 1; }
if [ "${1:-}" != "--no-install" ]; then
    "$repo/scripts/install-deps.sh" neutron
    "$PY" -m pip install -q --disable-pip-version-check -e "$repo" 2>&1 | grep -v -i "warning: running pip as" || true
fi
work=$(mktemp -d /tmp/pyulogd-neutron-demo.XXXXXX)
echo "== output in $work"
cd "$repo"
PYTHONPATH="$repo/src:$repo" exec "$PY" - "$work" <<'PYTHON'
import json, signal, subprocess, sys, time
from pathlib import Path

from pyulogd.core import registry
from pyulogd.core.errors import ConfigError
from tests.linux.lab import sh, wait_for
from tests.linux.neutron_lab import NeutronLab, flood

work = Path(sys.argv[1])
try:
    registry.get("NEUTRON")
    neutron = True
except ConfigError:
    neutron = False
    print("== (the NEUTRON filter is not in this pyulogd: records carry the namespace's router id only)")

lab = NeutronLab(work / "lab")
(work / "lab").mkdir()
daemon = None
try:
    print(f"== building the lab (tag {lab.tag}): routers {lab.r1} (legacy), {lab.r2} (HA), {lab.r3} (DVR)")
    lab.up()
    for ns in (lab.qrouter2, lab.qrouter3, lab.snat3, lab.fip, lab.qdhcp):
        # pyulogd's own table: never a rule inside Neutron's chains (docs/neutron.md)
        sh("nft", "-f", "-", ns=ns, input=f"""table inet pyulogd_audit {{
            chain input {{ type filter hook input priority 0; policy accept;
                meta l4proto icmp icmp type echo-request log prefix "audit" group {lab.group}
            }}
        }}""")
    # and in the legacy router, every datagram of the flood below, before FWaaS drops it
    sh("nft", "-f", "-", ns=lab.qrouter1, input=f"""table inet pyulogd_audit {{
        chain forward {{ type filter hook forward priority -10; policy accept;
            udp dport 4444 log prefix "audit-flood" group {lab.group}
        }}
    }}""")
    follow = f"qrouter-{lab.hex}*,snat-{lab.hex}*,{lab.fip},{lab.qdhcp}"
    ident = (f'ovsdb="unix:{lab.ovs.sock}"\nmapping="{lab.mapping}"\nha_confs="{lab.ha_confs}"\n')
    n1 = ",neutron1:NEUTRON" if neutron else ""
    n2 = ",neutron2:NEUTRON" if neutron else ""
    n3 = ",neutron3:NEUTRON" if neutron else ""
    conf = f"""[global]
logfile="{work}/pyulogd.log"
loglevel=3
# packets FWaaS accepted, dropped, rejected (and our own audit rules): JSON and Neutron's line
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR{n1},rl1:RATELIMIT,json1:JSON
stack=log1:NFLOG,ifi2:IFINDEX{n2},rl2:RATELIMIT,nl1:NEUTRONLOG
# connections with their NAT context and totals
stack=ct1:NFCT,ip2str3:IP2STR{n3},json3:JSON

[log1]
group={lab.group}
netns="{follow}"
seq_local=1

[ct1]
netns="{follow}"
event_mask=0x5
hash_enable=0
accounting=1

[rl1]
preset=neutron
window=2s

[rl2]
preset=neutron
window=2s

[json1]
file="{work}/packets.json"

[nl1]
file="{work}/neutron-network-log.log"
format=fwaas

[json3]
file="{work}/flows.json"
""" + ("".join(f"\n[neutron{i}]\n{ident}" for i in (1, 2, 3)) if neutron else "")
    (work / "pyulogd.conf").write_text(conf)
    print(f"== starting pyulogd -c {work}/pyulogd.conf")
    daemon = subprocess.Popen([sys.executable, "-m", "pyulogd", "-c", str(work / "pyulogd.conf")],
                              stderr=open(work / "daemon.stderr", "wb"))
    log = work / "pyulogd.log"
    wait_for(lambda: log.exists() and "entering main loop" in log.read_text() or daemon.poll() is not None, 30,
             "pyulogd to start")
    if daemon.poll() is not None:
        sys.exit("pyulogd did not start:\n" + (work / "daemon.stderr").read_text())
    # The inputs attach to each namespace as they find it: NFLOG binds its group there, and
    # NFCT turns conntrack accounting on (a connection made before has no totals).
    for ns in (lab.qrouter1, lab.qrouter2, lab.qrouter3, lab.snat3, lab.fip, lab.qdhcp):
        wait_for(lambda: str(lab.group) in sh("cat", "/proc/net/netfilter/nfnetlink_log", ns=ns).stdout.split(),
                 15, f"NFLOG in {ns}")
        wait_for(lambda: sh("sysctl", "-n", "net.netfilter.nf_conntrack_acct", ns=ns).stdout.strip() == "1",
                 15, f"conntrack accounting in {ns}")
    server = lab.listen_tcp(lab.vm1, 22)
    print("== traffic: ssh to the floating IP (accepted), UDP 9999 (rejected), telnet (dropped)")
    lab.tcp_connect(lab.ext, lab.fip_ip, 22)
    lab.udp(lab.ext, lab.fip_ip, 9999)
    lab.tcp_connect(lab.ext, lab.fip_ip, 23, timeout=1)
    print("== traffic: vm1 out through its floating IP, vm2 through the gateway's SNAT")
    lab.ping(lab.vm1, lab.ext_ip)
    lab.ping(lab.vm2, lab.ext_ip)
    print("== traffic: the HA router, the DVR router, its snat and FIP namespaces, DHCP")
    for ns, addr in ((lab.vm1, f"10.{lab.n}.1.3"), (lab.vm1, f"10.{lab.n}.1.4"), (lab.vm1, f"10.{lab.n}.1.5"),
                     (lab.ext, f"172.31.{lab.n}.4"), (lab.vm1, lab.dhcp_ip)):
        lab.ping(ns, addr)
    print("== a DROP flood: 2000 datagrams at 1000/s to the floating IP; FWaaS drops them, its own log")
    print("   rule's iptables limit (100/s) silently; pyulogd's rule logs every one and RATELIMIT lets")
    print("   100/s through and summarises the rest")
    flood(lab.ext, lab.fip_ip, 4444, 2000, 1000.0)
    server.kill()
    server.wait()
    lab.conntrack_flush(lab.qrouter1)
    time.sleep(2)
finally:
    if daemon is not None and daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(20)
    lab.down()
    print("== lab removed")

def show(name: str, n: int = 6) -> None:
    path = work / name
    lines = path.read_text().splitlines() if path.exists() else []
    print(f"\n== {name}: {len(lines)} line(s); the first {min(n, len(lines))}:")
    for line in lines[:n]:
        print("  " + (line if len(line) < 400 else line[:400] + " ..."))

show("neutron-network-log.log")
show("packets.json", 4)
show("flows.json", 4)
recs = [json.loads(l) for l in (work / "packets.json").read_text().splitlines() if l.endswith("}")]
summaries = [r for r in recs if "audit.suppressed" in r]
print(f"\n== rate-limit summaries: {len(summaries)}, records held back: {sum(r['audit.suppressed'] for r in summaries)}")
text = (work / "pyulogd.log").read_text()
print("== counters at exit:", text.split("counters at exit: ", 1)[1].splitlines()[0] if "counters at exit" in text
      else "(none)")
PYTHON
