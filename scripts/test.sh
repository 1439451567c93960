#!/bin/bash
# The test command: installs what the tests need, then lint, types and the whole suite
# (unit tests, real-kernel tests in private namespaces, side-by-side tests with ulogd2).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (tests create network namespaces)" >&2; exit 1; }
scripts/install-deps.sh
python3 -m pip install -q --disable-pip-version-check -e '.[json,test]' 2>&1 | grep -v -i "warning: running pip as" || true
python3 -m ruff check src tests bench
python3 -m mypy
python3 -m pytest -ra "$@"
