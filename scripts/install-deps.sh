#!/bin/bash
# Debian packages pyulogd's demo and tests use; idempotent. Run as root.
set -euo pipefail
PKGS=(iproute2 iputils-ping nftables iptables nfacct conntrack ulogd2 ulogd2-json ulogd2-sqlite3 ulogd2-pcap procps
      ulogd2-pgsql ulogd2-mysql postgresql postgresql-client mariadb-server mariadb-client gcc
      rsyslog graphite-carbon python3-whisper nfdump tshark python3-nftables openvswitch-switch ethtool)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# ulogd2's package starts a system ulogd bound to NFLOG group 0..2 of the host namespace;
# tests use their own namespaces, so it does not get in the way, but it is not needed either.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet ulogd2 2>/dev/null; then
    systemctl stop ulogd2 || true
fi
