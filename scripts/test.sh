#!/bin/bash
# The test command: installs what the tests need, then lint, types and the whole suite
# (unit tests, real-kernel tests in private namespaces, side-by-side tests with ulogd2).
#
# The Python packages go into a virtual environment of the repository, .venv, made from the
# first python3 on PATH with --system-site-packages: on a fresh Debian 12 that is Debian's
# Python, which refuses `pip install` into itself (PEP 668); where another Python comes
# first (pyenv on CI) it is that one, and what it already has is reused. The tree is
# installed editable, so the daemons the tests start (`python -m pyulogd`, the console
# scripts) run this tree's code. PYULOGD_VENV chooses another place.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (tests create network namespaces)" >&2; exit 1; }
scripts/install-deps.sh test
venv=${PYULOGD_VENV:-$PWD/.venv}
py=$(command -v python3)
# A venv whose Python went away or changed (another version, another installation) is made again.
probe='import sys; print(sys.base_prefix, sys.version)'
if [ "$("$venv/bin/python" -c "$probe" 2>/dev/null)" != "$("$py" -c "$probe")" ]; then
    echo "test.sh: creating $venv from $py ($("$py" --version))"
    "$py" -m venv --clear --system-site-packages "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[json,test]'
export PATH="$venv/bin:$PATH"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python -m ruff check src tests bench
python -m mypy
python -m pytest -ra "$@"
