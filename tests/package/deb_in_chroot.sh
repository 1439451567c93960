#!/bin/bash
# Inside the clean bookworm chroot of scripts/debian-chroot.sh, with the built package in
# /root/in: install it as a user would, run the configuration it installs as its unit runs
# it, check the unit with systemd-analyze, purge it. Prints `check: NAME=VALUE` lines that
# tests/package/test_deb.py asserts on; any failure here exits non-zero.
set -euo pipefail
deb=$(echo /root/in/pyulogd_*_all.deb)
say() { echo "check: $1=$2"; }

apt-get update -qq
# As a user installs it (its Recommends too: logrotate); systemd for systemd-analyze;
# iproute2, nftables for the traffic (the package only Suggests them).
apt-get install -y -qq "$deb" >/root/apt.log 2>&1 || { cat /root/apt.log; exit 1; }
apt-get install -y -qq --no-install-recommends systemd iproute2 nftables >>/root/apt.log 2>&1 \
    || { cat /root/apt.log; exit 1; }
dpkg -L pyulogd | sort >/root/files.txt
# Beside Debian's ulogd2 (docs/operations.md, "Moving from ulogd2"): both install, and no
# file, command, unit or configuration belongs to both.
if apt-get install -y -qq --no-install-recommends ulogd2 >>/root/apt.log 2>&1; then
    shared=$(comm -12 <(dpkg -L pyulogd | sort | while read -r f; do [ -d "$f" ] || echo "$f"; done) \
                      <(dpkg -L ulogd2 | sort | while read -r f; do [ -d "$f" ] || echo "$f"; done) | tr '\n' ' ')
    say ulogd2_beside "$(dpkg-query -W -f='${Status}' ulogd2 pyulogd | tr -s ' ')"
    say ulogd2_shared_files "${shared:-none}"
    say ulogd2_units "$(ls /lib/systemd/system | grep -E '^(pyulogd|ulogd)' | tr '\n' ' ')"
else
    say ulogd2_beside "install failed: $(tail -n 3 /root/apt.log | tr '\n' ' ')"
fi

say user "$(getent passwd pyulogd | cut -d: -f1,6,7)"
say user_is_system "$([ "$(id -u pyulogd)" -lt 1000 ] && echo yes || echo no)"
for d in /var/log/pyulogd /var/lib/pyulogd /var/spool/pyulogd /etc/pyulogd/pyulogd.conf; do
    say "stat:$d" "$(stat -c '%U:%G:%a' "$d")"
done
say conffile "$(dpkg-query -W -f='${Conffiles}' pyulogd | awk '{print $1}' | tr '\n' ' ')"
for c in pyulogd pyulogd-netns-wrapper pyulogd-unixsock-send pyulogdctl pyulogd-audit; do
    say "cmd:$c" "$(command -v "$c" || echo none)"
done
say version "$(pyulogd -V | head -n 1)"
# The unit's ExecStartPre, as the unit's user.
if setpriv --reuid=pyulogd --regid=pyulogd --init-groups --no-new-privs \
        /usr/bin/pyulogd --check-config /etc/pyulogd/pyulogd.conf >/root/check.out 2>&1; then
    say check_config ok
else
    say check_config "failed: $(head -c 300 /root/check.out | tr '\n' ' ')"
fi
say logrotate_conf "$(logrotate -d /etc/logrotate.d/pyulogd >/dev/null 2>&1 && echo ok || echo bad)"

# The installed configuration, run as the unit runs it: user pyulogd, CAP_NET_ADMIN as
# its only capability (ambient), no new privileges. In a namespace of our own with an
# nftables rule logging to NFLOG group 5, the group the configuration listens to.
ns=pyu-pkg-$$-$RANDOM
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
ip netns exec "$ns" nft -f - <<'NFT'
table inet pkg {
  chain out { type filter hook output priority 0; policy accept;
    udp dport 9 log prefix "PKG " group 5
  }
}
NFT
umask 0027  # the unit's UMask=
ip netns exec "$ns" setpriv --reuid=pyulogd --regid=pyulogd --init-groups \
    --inh-caps=-all,+net_admin --ambient-caps=+net_admin --bounding-set=-all,+net_admin --no-new-privs \
    /usr/bin/pyulogd -c /etc/pyulogd/pyulogd.conf --no-realtime 2>/root/daemon.stderr &
pid=$!
for _ in $(seq 100); do
    ip netns exec "$ns" grep -qE '^ *5 ' /proc/net/netfilter/nfnetlink_log && break
    kill -0 "$pid" 2>/dev/null || { cat /root/daemon.stderr; exit 1; }
    sleep 0.1
done
ip netns exec "$ns" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(10):
    s.sendto(b"%d" % i, ("127.0.0.1", 9))'
for _ in $(seq 100); do
    [ "$(grep -c 'PKG ' /var/log/pyulogd/audit.log 2>/dev/null)" = 10 ] && break
    sleep 0.1
done
say caps "$(grep CapPrm /proc/$pid/status | awk '{print $2}')"
say capeff "$(grep CapEff /proc/$pid/status | awk '{print $2}')"
kill -TERM "$pid"; wait "$pid" || { echo "daemon exit $?"; cat /root/daemon.stderr; exit 1; }
pid=
say audit_log_lines "$(grep -c 'PKG ' /var/log/pyulogd/audit.log)"
say audit_json_lines "$(grep -c '"oob.prefix": "PKG "' /var/log/pyulogd/audit.json)"
say sqlite_rows "$(python3 -c 'import sqlite3; print(sqlite3.connect("/var/log/pyulogd/audit.sqlite").execute(
    "select count(*) from ulog_pkt where oob_prefix = ?", ("PKG ",)).fetchone()[0])')"
say owners "$(cd /var/log/pyulogd && stat -c "%n:%U:%G:%a" * | tr "\n" " ")"
say daemon_log "$(grep -c . /var/log/pyulogd/pyulogd.log)"

# The unit: what systemd itself says about it.
verify=$(systemd-analyze verify /lib/systemd/system/pyulogd.service 2>&1) || { echo "$verify"; exit 1; }
say verify "${verify:-clean}"
security=$(systemd-analyze security --offline=true /lib/systemd/system/pyulogd.service 2>&1)
echo "$security" | sed 's/^/security: /'
say exposure "$(echo "$security" | sed -n 's/.*Overall exposure level for pyulogd.service: //p')"
# The netns drop-in on top of it.
mkdir -p /etc/systemd/system/pyulogd.service.d
cp /usr/share/pyulogd/systemd/netns.conf /etc/systemd/system/pyulogd.service.d/
verify=$(systemd-analyze verify pyulogd.service 2>&1) || { echo "$verify"; exit 1; }
say verify_netns "${verify:-clean}"
say exposure_netns "$(systemd-analyze security --offline=true pyulogd.service 2>&1 \
    | sed -n 's/.*Overall exposure level for pyulogd.service: //p')"
rm -r /etc/systemd/system/pyulogd.service.d

apt-get purge -y -qq pyulogd >>/root/apt.log 2>&1 || { cat /root/apt.log; exit 1; }
left=()
while read -r f; do
    [ -e "$f" ] && [ ! -d "$f" ] && left+=("$f")
done </root/files.txt
for d in /etc/pyulogd /var/log/pyulogd /var/lib/pyulogd /var/spool/pyulogd /usr/share/pyulogd /usr/lib/python3/dist-packages/pyulogd; do
    [ -e "$d" ] && left+=("$d")
done
say left_after_purge "${left[*]:-none}"
say user_after_purge "$(getent passwd pyulogd >/dev/null && echo kept || echo removed)"
say dpkg_status "$(dpkg-query -W -f='${Status}' pyulogd 2>/dev/null || echo not-installed)"
