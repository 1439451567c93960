"""Part of the test suite on Debian 12's own Python and Debian's database client packages,
in the clean debootstrap chroot (scripts/debian-chroot.sh), with no pip: the MYSQL output
on python3-pymysql 1.0.2 (the floor of pyproject's ``mysql`` extra: nothing pyulogd uses
came with PyMySQL 1.1) and PGSQL on python3-psycopg 3.1.7, against the machine's MariaDB
and PostgreSQL on loopback, and the SQL and config unit tests.

The tests it runs skip without their server or the golden outputs (../shared/golden);
this test fails unless they ran and passed. Marker ``package`` (about 30 s cached).
"""

from __future__ import annotations

import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.package.test_deb import ROOT, _why_skip
from tests.services.conftest import MYSQL_ADDR

HERE = Path(__file__).resolve().parent
SHARED = ROOT.parent / "shared"
TESTS = ["tests/services/test_mysql.py", "tests/services/test_pgsql.py", "tests/unit/test_sql.py",
         "tests/unit/test_config.py"]  # fmt: skip

pytestmark = [
    pytest.mark.package,
    pytest.mark.skipif(_why_skip() is not None, reason=str(_why_skip())),
    pytest.mark.skipif(not (SHARED / "golden").is_dir(), reason="../shared/golden is not there"),
]


def _tree(dest: Path) -> Path:
    """This tree as it is (tracked files and new ones not ignored), as a tar."""
    names = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           check=True).stdout.split(b"\0")  # fmt: skip
    tar = dest / "tree.tar"
    with tarfile.open(tar, "w") as t:
        for name in filter(None, names):
            path = ROOT / name.decode()
            if path.exists():
                t.add(path, arcname=name.decode(), recursive=False)
    return tar


def test_sql_outputs_on_debians_python_and_clients(tmp_path: Path) -> None:
    tar = _tree(tmp_path)
    r = subprocess.run(
        [str(ROOT / "scripts" / "debian-chroot.sh"), "--no-clone", "--with", str(tar),
         "--with", str(HERE / "debian_python_in_chroot.sh"), "--shared", str(SHARED),
         "run", "bash /root/in/debian_python_in_chroot.sh " + " ".join(TESTS)],
        capture_output=True, text=True, timeout=900,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYULOGD_TEST_MYSQL": MYSQL_ADDR},
    )  # fmt: skip
    out = r.stdout
    assert r.returncode == 0, f"{out[-6000:]}\n{r.stderr[-3000:]}"
    assert "check: pymysql=1.0.2" in out, out[:2000]
    assert re.search(r"^check: psycopg=3\.1\.", out, re.M), out[:2000]
    summary = re.search(r"^(\d+) passed(?:, (\d+) skipped)?", out.splitlines()[-1])
    assert summary is not None, out[-3000:]
    assert "skipped" not in out.splitlines()[-1], out[-3000:]  # every SQL test ran, none skipped for a server
    assert int(summary.group(1)) >= 17
