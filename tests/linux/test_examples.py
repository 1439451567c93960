"""examples/neutron-node-demo.sh end to end (docs/neutron.md, "The lab, and the demo"): it builds
the Neutron lab, runs pyulogd with the stacks of the docs' complete configuration, sends the
traffic and removes everything. Its Neutron lines must name the port and the project of every
packet (a stack without IFINDEX once wrote ``port=None`` on all of them), and the DROP flood
must have been summarised, not silently cut.

examples/demo.sh, the README's command 1, is run in a clean Debian by tests/package/test_readme.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.linux.neutron_lab import skip_reason

ROOT = Path(__file__).resolve().parents[2]
_skip = skip_reason()
pytestmark = [pytest.mark.linux, pytest.mark.skipif(_skip is not None, reason=_skip or "")]


def test_neutron_node_demo() -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    r = subprocess.run([str(ROOT / "examples" / "neutron-node-demo.sh"), "--no-install"], capture_output=True,
                       text=True, timeout=300, env=env)  # fmt: skip
    out = r.stdout
    m = re.search(r"^== output in (\S+)$", out, re.M)
    try:
        assert r.returncode == 0, f"{out[-4000:]}\n{r.stderr[-4000:]}"
        assert "== lab removed" in out
        assert m is not None, out[:2000]
        lines = (Path(m.group(1)) / "neutron-network-log.log").read_text().splitlines()
        assert len(lines) > 100, out[-3000:]
        unresolved = [x for x in lines if "port=None" in x or "project_id=None" in x]
        assert unresolved == [], unresolved[:3]
        held = re.search(r"^== rate-limit summaries: (\d+), records held back: (\d+)$", out, re.M)
        assert held is not None and int(held.group(1)) > 0 and int(held.group(2)) > 0, out[-3000:]
    finally:
        if m is not None and m.group(1).startswith("/tmp/pyulogd-neutron-demo."):
            shutil.rmtree(m.group(1), ignore_errors=True)
