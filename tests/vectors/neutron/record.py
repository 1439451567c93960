"""Record the listings the NEUTRON filter reads, from a namespace holding Neutron-style rules:
FWaaS's log chains (iptables-nft, as neutron-l3-agent writes them), the L3 agent's floating IP
NAT, the iptables_hybrid firewall's conntrack zones, and native nft log rules. Writes
ruleset.json (nft -j list ruleset), ruleset.txt (nft -a -s list ruleset), iptables-save.txt and
ip6tables-save.txt next to this file.

    python3 tests/vectors/neutron/record.py    # as root; the namespace is deleted afterwards
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
QR = "qr-1a2b3c4d-5e"
QR2 = "qr-2b3c4d5e-6f"
LIM = "-m limit --limit 100/sec --limit-burst 25"
IPTABLES = f"""*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:neutron-l3-agent-FORWARD - [0:0]
:neutron-l3-agent-accepted - [0:0]
:neutron-l3-agent-dropped - [0:0]
:neutron-l3-agent-rejected - [0:0]
:neutron-l3-agent-iv4aaaaaaaa - [0:0]
:neutron-l3-agent-ov4aaaaaaaa - [0:0]
-A FORWARD -j neutron-l3-agent-FORWARD
-A neutron-l3-agent-FORWARD -o {QR} -j neutron-l3-agent-iv4aaaaaaaa
-A neutron-l3-agent-FORWARD -i {QR} -j neutron-l3-agent-ov4aaaaaaaa
-A neutron-l3-agent-accepted -i {QR} {LIM} -j NFLOG --nflog-prefix 12823226497704342389
-A neutron-l3-agent-accepted -o {QR} {LIM} -j NFLOG --nflog-prefix 12823226497704342389
-A neutron-l3-agent-accepted -i {QR2} {LIM} -j NFLOG --nflog-prefix 5557
-A neutron-l3-agent-accepted -j ACCEPT
-A neutron-l3-agent-dropped -i {QR} {LIM} -j NFLOG --nflog-prefix 777001
-A neutron-l3-agent-dropped -o {QR} {LIM} -j NFLOG --nflog-prefix 777001
-A neutron-l3-agent-dropped -j DROP
-A neutron-l3-agent-rejected -i {QR} {LIM} -j NFLOG --nflog-prefix 777001
-A neutron-l3-agent-rejected -o {QR} {LIM} -j NFLOG --nflog-prefix 777001
-A neutron-l3-agent-rejected -p tcp -j REJECT --reject-with tcp-reset
-A neutron-l3-agent-rejected -j REJECT --reject-with icmp-port-unreachable
-A neutron-l3-agent-iv4aaaaaaaa -m state --state INVALID -j neutron-l3-agent-dropped
-A neutron-l3-agent-iv4aaaaaaaa -m state --state RELATED,ESTABLISHED -j ACCEPT
-A neutron-l3-agent-iv4aaaaaaaa -p tcp --dport 22 -j neutron-l3-agent-accepted
-A neutron-l3-agent-iv4aaaaaaaa -j neutron-l3-agent-dropped
-A neutron-l3-agent-ov4aaaaaaaa -j neutron-l3-agent-accepted
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:neutron-l3-agent-PREROUTING - [0:0]
:neutron-l3-agent-float-snat - [0:0]
:neutron-l3-agent-snat - [0:0]
-A PREROUTING -j neutron-l3-agent-PREROUTING
-A POSTROUTING -j neutron-l3-agent-snat
-A neutron-l3-agent-PREROUTING -d 172.24.4.10/32 -i qg-9f8e7d6c-5b -j DNAT --to-destination 10.0.0.4
-A neutron-l3-agent-snat -j neutron-l3-agent-float-snat
-A neutron-l3-agent-float-snat -s 10.0.0.4/32 -j SNAT --to-source 172.24.4.10
-A neutron-l3-agent-snat -o qg-9f8e7d6c-5b -j SNAT --to-source 172.24.4.2 --random-fully
COMMIT
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -m physdev --physdev-in qvb3c4d5e6f-70 -m comment --comment "Set zone for 3c4d5e6f-70" -j CT --zone 4097
-A PREROUTING -i tap3c4d5e6f-70 -m comment --comment "Set zone for 3c4d5e6f-70" -j CT --zone 4097
-A PREROUTING -m physdev --physdev-in qvb4d5e6f70-81 -m comment --comment "Set zone for 4d5e6f70-81" -j CT --zone 4098
-A PREROUTING -m physdev --physdev-in qvb5e6f7081-92 -m comment --comment "Set zone for 5e6f7081-92" -j CT --zone 4098
COMMIT
"""
NFT = """table inet audit {
  chain forward_audit { type filter hook forward priority 10; policy drop;
    ip saddr 192.0.2.0/24 log prefix "pyu-deny " group 5 drop
    tcp dport 80 log prefix "pyu-web " group 5
    accept
    log prefix "pyu-never " group 5
  }
  chain cond_audit {
    log prefix "pyu-cond " group 5
    tcp dport 22 accept
    drop
  }
  chain input_audit { type filter hook input priority 10; policy drop;
    iifname "lo" accept
    log prefix "pyu-tail " group 6
  }
}
"""


def sh(ns: str, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *args], input=stdin, text=True, capture_output=True,
                          check=True).stdout


def main() -> None:
    ns = f"nf-rec-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        sh(ns, "iptables-nft-restore", stdin=IPTABLES)
        sh(ns, "nft", "-f", "-", stdin=NFT)
        (HERE / "ruleset.json").write_text(sh(ns, "nft", "-j", "-s", "list", "ruleset"))
        (HERE / "ruleset.txt").write_text(sh(ns, "nft", "-a", "-s", "list", "ruleset"))
        (HERE / "iptables-save.txt").write_text(sh(ns, "iptables-nft-save"))
        (HERE / "ip6tables-save.txt").write_text(sh(ns, "ip6tables-nft-save"))
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    main()
