#!/bin/bash
# Inside the clean bookworm chroot of scripts/debian-chroot.sh, with this tree as
# /root/in/tree.tar and the golden outputs at /root/shared: part of the test suite on
# Debian's own Python and Debian's database clients only (no pip at all): PyMySQL 1.0.2,
# the floor of the `mysql` extra, and psycopg 3.1.7, against the machine's MariaDB and
# PostgreSQL on loopback (the chroot shares the machine's network).
# ulogd2 (its SQL schemas) and the mysql/psql clients: as scripts/install-deps.sh test.
set -euo pipefail
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3 python3-pytest python3-hypothesis python3-pymysql \
    python3-psycopg ulogd2 mariadb-client postgresql-client >/root/apt.log 2>&1 || { cat /root/apt.log; exit 1; }
echo "check: pymysql=$(python3 -c 'import pymysql; print(pymysql.__version__)')"
echo "check: psycopg=$(python3 -c 'import psycopg; print(psycopg.__version__)')"
mkdir -p /root/pyulogd
tar -xf /root/in/tree.tar -C /root/pyulogd
cd /root/pyulogd
# The MYSQL and PGSQL outputs on Debian's clients, and the SQL and config unit tests.
PYTHONPATH=src python3 -m pytest -q -p no:cacheprovider -rs "$@"
