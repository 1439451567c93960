#!/bin/bash
# pyulogd as Open vSwitch's flow collector, end to end (docs/flows.md). On a fresh Debian 12
# machine, as root, after scripts/install-deps.sh (openvswitch-switch, ethtool):
#
#   * a private Open vSwitch (ovsdb-server and ovs-vswitchd started here, in a network
#     namespace of the demo's own, with the userspace datapath: no kernel module, the system's
#     Open vSwitch untouched), a bridge and two hosts (namespaces) on it;
#   * IPFIX from the bridge (sampling=1) and a flow-sampling rule that DROPS UDP port 9999 and
#     exports what it dropped (observation point 999), both to pyulogd's IPFIXIN on the
#     namespace's loopback: IPFIXIN -> IP2STR -> PRINTFLOW -> LOGEMU and -> JSON;
#   * ping, TCP and UDP between the hosts, then the flow log, the JSON records of the drops,
#     and the daemon's counters.
#
# Everything is removed at the end, also on failure or Ctrl-C. PYTHON= picks the interpreter.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
sfx=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
OVSNS=pyu-ovsdemo-$sfx-o A=pyu-ovsdemo-$sfx-a B=pyu-ovsdemo-$sfx-b BR=demo$sfx
work=$(mktemp -d /tmp/pyulogd-ovs-demo.XXXXXX)
export OVS_RUNDIR=$work OVS_LOGDIR=$work OVS_DBDIR=$work OVS_SYSCONFDIR=$work
VSCTL=(ovs-vsctl --db="unix:$work/db.sock" --timeout=10)
pid= srv=

cleanup() {
    set +e
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    [ -n "$srv" ] && kill "$srv" 2>/dev/null && wait "$srv" 2>/dev/null
    [ -S "$work/db.sock" ] && "${VSCTL[@]}" --if-exists del-br "$BR" 2>/dev/null
    for d in ovs-vswitchd ovsdb-server; do
        [ -f "$work/$d.pid" ] && kill "$(cat "$work/$d.pid")" 2>/dev/null
    done
    for ns in "$OVSNS" "$A" "$B"; do ip netns del "$ns" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT

for t in ovsdb-server ovs-vswitchd ovs-vsctl ovs-ofctl ethtool; do
    command -v "$t" >/dev/null || { echo "needs $t: apt-get install openvswitch-switch ethtool" >&2; exit 1; }
done

echo "== Open vSwitch (userspace datapath) in $OVSNS, state in $work"
for ns in "$OVSNS" "$A" "$B"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ovsdb-tool create "$work/conf.db" /usr/share/openvswitch/vswitch.ovsschema
ip netns exec "$OVSNS" ovsdb-server "$work/conf.db" --remote="punix:$work/db.sock" --pidfile="$work/ovsdb-server.pid" \
    --log-file="$work/ovsdb-server.log" --unixctl="$work/ovsdb-server.ctl" --detach --no-chdir
"${VSCTL[@]}" --no-wait init
ip netns exec "$OVSNS" ovs-vswitchd "unix:$work/db.sock" --pidfile="$work/ovs-vswitchd.pid" \
    --log-file="$work/ovs-vswitchd.log" --unixctl="$work/ovs-vswitchd.ctl" --detach --no-chdir
"${VSCTL[@]}" add-br "$BR" -- set Bridge "$BR" datapath_type=netdev
for h in a b; do
    ns=$([ $h = a ] && echo "$A" || echo "$B"); n=$([ $h = a ] && echo 1 || echo 2)
    ip -n "$OVSNS" link add "p$h$sfx" type veth peer name "${h}0" netns "$ns"
    ip -n "$ns" addr add "10.80.0.$n/24" dev "${h}0"
    ip -n "$ns" addr add "fd80::$n/64" dev "${h}0" nodad
    ip netns exec "$ns" ethtool -K "${h}0" tx off >/dev/null  # the userspace datapath needs full checksums
    ip -n "$ns" link set "${h}0" up; ip -n "$OVSNS" link set "p$h$sfx" up
    "${VSCTL[@]}" add-port "$BR" "p$h$sfx"
done

echo "== pyulogd: IPFIXIN on 127.0.0.1 in $OVSNS"
cat > "$work/ulogd.conf" <<EOF
[global]
logfile="$work/pyulogd.log"
loglevel=3
stack=ipfix1:IPFIXIN,ip2str1:IP2STR,print1:PRINTFLOW,emu1:LOGEMU
stack=ipfix1:IPFIXIN,ip2str2:IP2STR,json1:JSON

[ipfix1]
host="127.0.0.1"
port=0

[emu1]
file="$work/flows.log"

[json1]
file="$work/flows.json"
EOF
ip netns exec "$OVSNS" "$PY" -m pyulogd -c "$work/ulogd.conf" &
pid=$!
port=
for _ in $(seq 100); do
    port=$(sed -n "s/.*IPFIXIN 'ipfix1': listening on udp 127.0.0.1 port \([0-9]*\).*/\1/p" "$work/pyulogd.log" \
           2>/dev/null | head -1 || true)
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { echo "pyulogd did not start:"; cat "$work/pyulogd.log"; exit 1; }

echo "== IPFIX from bridge $BR (every packet, at input and output) and a rule that drops UDP 9999 and exports it"
# (Open vSwitch samples each packet as it enters and as it leaves the bridge: two records,
# ipfix.direction 0 and 1; other_config:enable-output-sampling=false did not change that in
# 3.1 with the userspace datapath.)
"${VSCTL[@]}" -- set Bridge "$BR" ipfix=@i -- --id=@i create IPFIX targets=\"127.0.0.1:$port\" sampling=1 \
    obs_domain_id=123 obs_point_id=1 cache_active_timeout=2 cache_max_flows=1000
"${VSCTL[@]}" -- --id=@br get Bridge "$BR" -- --id=@i create IPFIX targets=\"127.0.0.1:$port\" \
    cache_active_timeout=2 cache_max_flows=1000 -- create Flow_Sample_Collector_Set id=7 bridge=@br ipfix=@i
ovs-ofctl add-flow "$BR" "cookie=0x5a11,priority=30,udp,tp_dst=9999,actions=sample(probability=65535,\
collector_set_id=7,obs_domain_id=123,obs_point_id=999)"

echo "== traffic: ping v4/v6, TCP 8080, UDP 9999 (dropped by the rule)"
ip netns exec "$B" "$PY" -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.80.0.2", 8080)); s.listen(); s.settimeout(10)
c, _ = s.accept(); c.sendall(c.recv(100)); c.close()' &
srv=$!
ip netns exec "$A" ping -c 2 -i 0.2 -q 10.80.0.2 >/dev/null || true   # (the first ping also teaches the bridge MACs)
ip netns exec "$A" ping -6 -c 2 -i 0.2 -q fd80::2 >/dev/null || true
ip netns exec "$A" "$PY" -c '
import socket, time
for _ in range(50):
    try:
        s = socket.create_connection(("10.80.0.2", 8080), timeout=2); break
    except OSError:
        time.sleep(0.1)
s.sendall(b"hello\n"); s.recv(100); s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3):
    u.sendto(b"nobody gets this", ("10.80.0.2", 9999))'
wait "$srv" || true; srv=

echo "== waiting for Open vSwitch's export (cache_active_timeout=2)"
for _ in $(seq 100); do
    grep -q '"ipfix.obs_point_id": 999' "$work/flows.json" 2>/dev/null && grep -q 'PROTO=TCP' "$work/flows.log" \
        && break
    sleep 0.1
done
"${VSCTL[@]}" -- clear Bridge "$BR" ipfix -- --all destroy Flow_Sample_Collector_Set
kill "$pid"; wait "$pid" || true; pid=

echo; echo "== $work/flows.log (IPFIXIN -> IP2STR -> PRINTFLOW -> LOGEMU; each flow twice: in and out of the bridge)"
cat "$work/flows.log"
echo; echo "== the dropped packets, as JSON (observation point 999 = the drop rule)"
grep '"ipfix.obs_point_id": 999' "$work/flows.json" | "$PY" -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print({k: r[k] for k in ("src_ip", "dest_ip", "orig.ip.protocol", "orig.l4.dport", "orig.raw.pktcount",
                             "ipfix.obs_point_id", "ipfix.in_ifname") if k in r})'
echo; echo "== counters"
grep -o 'counters at exit: .*' "$work/pyulogd.log" | tr ',' '\n' | grep ipfixin || true
