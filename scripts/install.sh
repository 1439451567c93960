#!/bin/bash
# Install pyulogd from this source tree with Debian's own Python, as root, on Debian 12:
# a virtual environment in /opt/pyulogd (PEP 668: Debian's Python refuses `pip install`
# into itself) that also sees Debian's Python packages (--system-site-packages: Debian's
# python3-psycopg and python3-pymysql then serve the PGSQL and MYSQL outputs), and the
# commands linked into /usr/local/bin. Nothing is fetched from PyPI unless extras are asked:
# the build backend is Debian's python3-hatchling.
#
#   scripts/install.sh                          pyulogd alone (the daemon needs nothing else)
#   PYULOGD_EXTRAS=json,nats scripts/install.sh  plus optional extras from PyPI (orjson, ...)
#   PYULOGD_PREFIX=/somewhere scripts/install.sh another place for the environment
#
# Running it again upgrades to this tree. The Debian package (debian/, docs/operations.md)
# is the other way, for machines managed with apt.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
prefix=${PYULOGD_PREFIX:-/opt/pyulogd}
bindir=${PYULOGD_BINDIR:-/usr/local/bin}
extras=${PYULOGD_EXTRAS:-}

scripts/install-deps.sh install
py=/usr/bin/python3
if [ ! -x "$prefix/bin/python3" ] || ! "$prefix/bin/python3" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "install.sh: creating $prefix ($("$py" --version))"
    "$py" -m venv --clear --system-site-packages "$prefix"
fi
pip=("$prefix/bin/python3" -m pip install -q --disable-pip-version-check --no-build-isolation)
# --force-reinstall: an upgrade from a tree whose version number did not change.
"${pip[@]}" --force-reinstall --no-deps .
if [ -n "$extras" ]; then
    "${pip[@]}" ".[$extras]"
fi
for cmd in pyulogd pyulogd-netns-wrapper pyulogd-unixsock-send pyulogdctl pyulogd-audit; do
    if [ -x "$prefix/bin/$cmd" ]; then
        ln -sfn "$prefix/bin/$cmd" "$bindir/$cmd"
    fi
done
echo "install.sh: $("$bindir/pyulogd" -V | head -n 1) in $prefix; commands in $bindir"
