#!/bin/bash
# pyulogd demo: two namespaces (a client and a firewalled server), nftables rules that log
# accepted and dropped traffic to NFLOG group 5, pyulogd on examples/ulogd.conf inside the
# server namespace, some traffic, then the audit trail. Cleans up after itself. Run as root.
# Runs the `pyulogd` command found on PATH (scripts/install.sh, the Debian package), else
# `python3 -m pyulogd` (a development tree); PYULOGD="..." chooses another.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
if [ -z "${PYULOGD:-}" ]; then
    PYULOGD=$(command -v pyulogd || echo "$PY -m pyulogd")
fi
for tool in ip nft ping; do
    command -v "$tool" >/dev/null && continue
    if [ -x "$here/../scripts/install-deps.sh" ]; then
        echo "== the demo needs iproute2, nftables and ping: scripts/install-deps.sh demo"
        "$here/../scripts/install-deps.sh" demo
        break
    fi
    echo "demo: needs $tool (apt-get install iproute2 nftables iputils-ping)" >&2; exit 1
done
tag=$$
CLI=pyu-demo-cli-$tag SRV=pyu-demo-srv-$tag
work=$(mktemp -d /tmp/pyulogd-demo.XXXXXX)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    ip netns del "$CLI" 2>/dev/null || true
    ip netns del "$SRV" 2>/dev/null || true
}
trap cleanup EXIT

echo "== lab: $CLI (10.250.0.1) <-> $SRV (10.250.0.2), nftables in $SRV"
ip netns add "$CLI"; ip netns add "$SRV"
ip link add vcli$tag netns "$CLI" type veth peer name vsrv$tag netns "$SRV"
ip -n "$CLI" addr add 10.250.0.1/24 dev vcli$tag; ip -n "$CLI" link set vcli$tag up; ip -n "$CLI" link set lo up
ip -n "$SRV" addr add 10.250.0.2/24 dev vsrv$tag; ip -n "$SRV" link set vsrv$tag up; ip -n "$SRV" link set lo up
ip netns exec "$SRV" nft -f - <<NFT
table inet demo {
  chain input {
    type filter hook input priority 0; policy accept;
    ct state established,related accept
    iifname "lo" accept
    icmp type echo-request log prefix "ACCEPT-PING " group 5 accept
    tcp dport 8080 log prefix "ACCEPT-WEB " group 5 accept
    tcp dport 23 log prefix "DROP-TELNET " group 5 drop
    udp dport 53 log prefix "DROP-DNS " group 5 drop
  }
}
NFT

sed -e "s#/var/log/pyulogd#$work#g" -e "s#/usr/share/doc/ulogd2/sqlite3.table#$here/sqlite3.table#" \
    "$here/ulogd.conf" > "$work/ulogd.conf"
echo "== starting $PYULOGD -c $work/ulogd.conf in $SRV"
# shellcheck disable=SC2086 # PYULOGD may be "python3 -m pyulogd"
ip netns exec "$SRV" $PYULOGD -c "$work/ulogd.conf" &
pid=$!
for _ in $(seq 50); do
    ip netns exec "$SRV" grep -qE '^ *5 ' /proc/net/netfilter/nfnetlink_log 2>/dev/null && break
    sleep 0.1
done

echo "== traffic: ping, TCP 8080 (accepted), TCP 23 and UDP 53 (dropped)"
ip netns exec "$SRV" "$PY" -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.250.0.2", 8080)); s.listen(); s.settimeout(3)
c, _ = s.accept(); c.recv(100); c.close()' &
srv=$!
sleep 0.3
ip netns exec "$CLI" ping -c 2 -i 0.2 -q 10.250.0.2 >/dev/null
ip netns exec "$CLI" "$PY" - <<'PYEOF'
import socket
s = socket.create_connection(("10.250.0.2", 8080), timeout=2); s.sendall(b"GET /\n"); s.close()
for port in (23,):
    try:
        socket.create_connection(("10.250.0.2", port), timeout=0.5)
    except OSError:
        pass
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b"q", ("10.250.0.2", 53))
PYEOF
wait $srv || true
sleep 0.5
kill -TERM "$pid"; wait "$pid" || true; pid=

echo; echo "== $work/audit.log (ulogd LOGEMU format)"
cat "$work/audit.log"
echo; echo "== $work/audit.json (first 2 records)"
head -n 2 "$work/audit.json"
echo; echo "== $work/audit.sqlite: select oob_prefix, count(*) from ulog_pkt group by oob_prefix"
"$PY" -c 'import sqlite3, sys
for prefix, n in sqlite3.connect(sys.argv[1]).execute(
        "select oob_prefix, count(*) from ulog_pkt group by oob_prefix order by 1"):
    print(f"{prefix:<14} {n}")' "$work/audit.sqlite"
echo; echo "demo ok: $(wc -l < "$work/audit.log") audit lines; files kept in $work"
