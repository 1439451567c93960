#!/bin/bash
# Debian packages, by what needs them; idempotent. Run as root.
#
#   scripts/install-deps.sh run       what the daemon needs at run time: Python 3.11+, nothing else
#                                     (the optional extras are Debian packages or pip: docs/operations.md)
#   scripts/install-deps.sh install   run + what scripts/install.sh needs to install from this tree
#                                     (venv, and Debian's hatchling as build backend: no PyPI needed)
#   scripts/install-deps.sh demo      what examples/demo.sh needs besides pyulogd (iproute2, nftables, ping)
#   scripts/install-deps.sh neutron   what examples/neutron-node-demo.sh and its lab need (Open vSwitch,
#                                     iptables-nft, conntrack, ethtool)
#   scripts/install-deps.sh package   what building the Debian package needs (dpkg-buildpackage, lintian)
#   scripts/install-deps.sh test      everything the tests use (the default): ulogd2 to compare with,
#                                     database servers and clients, rsyslog, carbon, tshark, nfdump,
#                                     logrotate, systemd-analyze, debootstrap, promtool, ...
#
# Several groups may be given at once (`install demo`).
set -euo pipefail

RUN=(python3)
INSTALL=("${RUN[@]}" python3-venv python3-pip python3-hatchling)
DEMO=(iproute2 nftables iputils-ping)
NEUTRON=("${DEMO[@]}" iptables conntrack openvswitch-switch ethtool procps)
PACKAGE=(dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all python3-hatchling fakeroot lintian git)
# ulogd2 and its plugins (side-by-side tests), the servers behind the SQL, syslog (with its gtls
# driver, for the TLS tests) and carbon tests, the tools the real-kernel tests drive, and what
# the install/package tests run:
# logrotate (rotation under a flood), systemd (systemd-analyze verify/security on the unit),
# libseccomp2 (the unit's system call filter imposed on a daemon), debootstrap (the clean
# Debian the README and the package are proven in), prometheus (promtool on /metrics).
TEST=("${INSTALL[@]}" "${DEMO[@]}" "${NEUTRON[@]}" "${PACKAGE[@]}"
      iputils-ping iptables nfacct conntrack procps gcc
      ulogd2 ulogd2-json ulogd2-sqlite3 ulogd2-pcap ulogd2-pgsql ulogd2-mysql
      postgresql postgresql-client mariadb-server mariadb-client
      rsyslog rsyslog-gnutls graphite-carbon python3-whisper nfdump tshark softflowd openvswitch-switch ethtool
      logrotate systemd libseccomp2 util-linux debootstrap prometheus python3-nftables
      openvswitch-switch  # ovsdb-server, ovsdb-tool, ovs-vsctl: NEUTRON's OVSDB client against a real server
      chromium)  # the HTML report opened in a headless browser (tests/unit/test_report.py)

want=()
[ $# -gt 0 ] || set -- test
for group in "$@"; do
    case $group in
        run) want+=("${RUN[@]}") ;;
        install) want+=("${INSTALL[@]}") ;;
        demo) want+=("${DEMO[@]}") ;;
        neutron) want+=("${NEUTRON[@]}") ;;
        package) want+=("${PACKAGE[@]}") ;;
        test) want+=("${TEST[@]}") ;;
        *) echo "install-deps: unknown group '$group' (run, install, demo, neutron, package, test)" >&2; exit 2 ;;
    esac
done

missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# ulogd2's package starts a system ulogd bound to NFLOG group 0..2 of the host namespace;
# tests use their own namespaces, so it does not get in the way, but it is not needed either.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet ulogd2 2>/dev/null; then
    systemctl stop ulogd2 || true
fi
# prometheus is here for promtool (the metrics tests); a server it started just now on :9090
# is not wanted. One that was installed before is left alone.
if [ ${#missing[@]} -gt 0 ] && [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
# openvswitch-switch is here for the Neutron lab, which runs an Open vSwitch of its own from a
# temporary directory; the system's switch that the package starts just now is not wanted.
# One that was installed before is left alone.
if [ ${#missing[@]} -gt 0 ] && [[ " ${missing[*]} " == *" openvswitch-switch "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now openvswitch-switch >/dev/null 2>&1 || true
fi
