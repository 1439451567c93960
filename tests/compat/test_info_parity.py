"""``pyulogd -i`` against ``ulogd -i`` (2.0.8) for every plugin both have: each option line
ulogd2 prints, pyulogd prints too, word for word; pyulogd's other lines are its own options
(``extra``, shown with their kinds' names: Size, Duration, Path, ...). Typed options must not
change what ``-i`` says about ulogd2's options.

``ulogd -i`` only loads the plugin: no root, no kernel needed.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from pyulogd.core import registry
from pyulogd.core.info import describe

ULOGD = "/usr/sbin/ulogd"
PLUGDIR = "/usr/lib/x86_64-linux-gnu/ulogd"
PAIRS = [(so, name) for so, name in sorted(registry.SO_NAMES.items()) if name in registry.names()]

pytestmark = [pytest.mark.compat, pytest.mark.skipif(not os.path.exists(ULOGD), reason="needs ulogd2 (Debian ulogd2)")]

# Lines of 2.0.8 that pyulogd prints differently, and why.
ULOGD_ONLY = {
    # 2.0.8's SQLITE3 declares a third option without a name (pyulogd: buffer, Integer, 10).
    "SQLITE3": {"\tVar:  (Unknown)"},
    # 2.0.8 flags them Mandatory although an empty host means the local socket and an empty
    # pass no password; pyulogd does not (and takes pass_file / pass_env instead of pass).
    "MYSQL": {"\tVar: host (String, Default: , Mandatory)", "\tVar: pass (String, Default: , Mandatory)"},
}
# ulogd2's own options that 2.0.8 does not have yet: network_namespace_path came after 2.0.8;
# SQLITE3's buffer is the nameless option above.
NEWER = {"network_namespace_path", "buffer"}


def ulogd_vars(so: str) -> list[str]:
    out = subprocess.run([ULOGD, "-i", f"{PLUGDIR}/{so}"], capture_output=True, text=True, timeout=10, check=True)
    return [line for line in out.stdout.splitlines() if line.startswith("\tVar: ")]


@pytest.mark.parametrize(("so", "name"), PAIRS, ids=[name for _, name in PAIRS])
def test_option_lines_as_ulogd2(so: str, name: str) -> None:
    if not os.path.exists(f"{PLUGDIR}/{so}"):
        pytest.skip(f"{so} is not installed")
    theirs = ulogd_vars(so)
    ours = describe(registry.get(name)).splitlines()
    assert [line for line in theirs if line not in ours] == sorted(ULOGD_ONLY.get(name, ()))
    # Every option pyulogd presents as ulogd2's is one ulogd2 has (else it is an extra).
    listed = {line.split(" ")[1] for line in theirs}
    ulogd_options = [o.name for o in registry.get(name).options if not o.extra]
    assert [n for n in ulogd_options if n not in listed and n not in NEWER] == []
