"""The README's command 1, as a new user runs it: in a clean Debian 12 (the cached
``debootstrap --variant=minbase bookworm`` of scripts/debian-chroot.sh, a throwaway overlay)
with Debian's own Python and nothing else, from a copy of this tree, as root. The command is
read from README.md itself, so the README cannot drift from what is tested: it must install
pyulogd (scripts/install.sh: a venv in /opt/pyulogd) and run the demo, whose audit trail
must hold the accepted and the dropped packets. Nothing is installed on the machine itself.

Marker ``package`` (about 20 s with the chroot and its packages cached).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.package.test_deb import ROOT, _why_skip
from tests.package.test_debian_python import _tree

pytestmark = [pytest.mark.package, pytest.mark.skipif(_why_skip() is not None, reason=str(_why_skip()))]


def readme_commands() -> list[str]:
    """The commands of the README's first ``sh`` block (comments left out), in order."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^```sh\n(.*?)^```", text, re.M | re.S)
    assert m is not None, "README.md has no sh block"
    return [line for line in m.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_readme_gives_two_commands_install_and_demo_then_tests() -> None:
    assert readme_commands() == ["scripts/install.sh && examples/demo.sh", "scripts/test.sh"]


def test_command_1_installs_and_runs_the_demo_on_a_fresh_debian(tmp_path: Path) -> None:
    command = readme_commands()[0]
    tar = _tree(tmp_path)
    inside = ("test ! -e /usr/local/bin/python3 && ! ls /opt/pyulogd >/dev/null 2>&1 && "
              "mkdir /root/pyulogd && tar -C /root/pyulogd -xf /root/in/tree.tar && cd /root/pyulogd && "
              f"{command}")  # fmt: skip
    r = subprocess.run(
        [str(ROOT / "scripts" / "debian-chroot.sh"), "--no-clone", "--with", str(tar), "run", inside],
        capture_output=True, text=True, timeout=900, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )  # fmt: skip
    out = r.stdout
    assert r.returncode == 0, f"{out[-6000:]}\n{r.stderr[-3000:]}"
    # Debian's Python made the environment; the commands are linked where the README says.
    assert re.search(r"^install\.sh: creating /opt/pyulogd \(Python 3\.11\.\d+\)$", out, re.M), out[:3000]
    assert "in /opt/pyulogd; commands in /usr/local/bin" in out
    # The demo's audit trail: the accepted and the dropped packets, in every output.
    assert re.search(r"^demo ok: 4 audit lines", out, re.M), out[-3000:]
    for prefix in ("ACCEPT-PING", "ACCEPT-WEB", "DROP-TELNET", "DROP-DNS"):
        assert re.search(rf"^\w{{3}} [ \d]\d \d\d:\d\d:\d\d \S+ {prefix} ", out, re.M), prefix
        assert re.search(rf"^{prefix}\s+1$", out, re.M), prefix  # the SQLite query's row
