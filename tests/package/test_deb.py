"""The Debian package, built by Debian's tools and installed in a clean Debian 12.

`scripts/build-deb.sh` builds ``pyulogd_*_all.deb`` from this tree (dpkg-buildpackage,
then lintian, which must report no warning); `scripts/debian-chroot.sh` makes a throwaway
overlay of a cached ``debootstrap --variant=minbase bookworm`` and runs
``deb_in_chroot.sh`` in it: ``apt-get install ./pyulogd_*.deb``, the configuration the
package installs run as its unit runs it (user pyulogd, CAP_NET_ADMIN alone) on NFLOG
traffic of a namespace made inside, ``systemd-analyze verify`` and ``security`` on the
unit, and ``apt-get purge``. Nothing is installed on the machine itself.

Slow (about 30 s with the chroot cached; the first run debootstraps, about a minute more):
marker ``package``. ``PYULOGD_DEB=path`` tests an already built package instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot, mounts)"
    for tool in ("debootstrap", "dpkg-buildpackage", "lintian", "unshare"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"needs {tool} (scripts/install-deps.sh test)"
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return "needs a git checkout (the package is built from the tracked files)"
    return None


pytestmark = [pytest.mark.package, pytest.mark.skipif(_why_skip() is not None, reason=str(_why_skip()))]


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("PYULOGD_DEB")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("deb")
    r = subprocess.run([str(ROOT / "scripts" / "build-deb.sh"), str(out)], capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    assert r.returncode == 0, f"build-deb.sh failed (lintian warnings fail it too):\n{r.stdout}\n{r.stderr}"
    # lintian's own output: nothing but the note about running as root.
    tags = [line for line in r.stderr.splitlines() if re.match(r"^[EWIX]: ", line)]
    assert tags == [], tags
    return Path(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def chroot_run(deb: Path) -> dict[str, str]:
    r = subprocess.run(
        [str(ROOT / "scripts" / "debian-chroot.sh"), "--no-clone", "--with", str(deb),
         "--with", str(HERE / "deb_in_chroot.sh"), "run", "bash /root/in/deb_in_chroot.sh"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, f"in the chroot:\n{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
    checks = dict(m.groups() for m in re.finditer(r"^check: ([^=]+)=(.*)$", r.stdout, re.M))
    checks["_stdout"] = r.stdout
    return checks


def test_package_contents(deb: Path) -> None:
    files = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    for path in ("./usr/bin/pyulogd", "./usr/bin/pyulogd-netns-wrapper", "./usr/bin/pyulogd-unixsock-send",
                 "./etc/pyulogd/pyulogd.conf", "./etc/logrotate.d/pyulogd", "./lib/systemd/system/pyulogd.service",
                 "./usr/share/pyulogd/sqlite3.table", "./usr/share/pyulogd/systemd/netns.conf"):  # fmt: skip
        assert re.search(rf" {re.escape(path)}$", files, re.M), path
    fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends", "Recommends", "Suggests"], capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    assert "python3-psycopg" in fields and "python3-pymysql" in fields and "logrotate" in fields, fields


def test_installs_user_directories_and_commands(chroot_run: dict[str, str]) -> None:
    c = chroot_run
    assert c["user"] == "pyulogd:/var/lib/pyulogd:/usr/sbin/nologin"
    assert c["user_is_system"] == "yes"
    assert c["stat:/var/log/pyulogd"] == "pyulogd:adm:2750"
    assert c["stat:/var/lib/pyulogd"] == "pyulogd:pyulogd:750"
    assert c["stat:/var/spool/pyulogd"] == "pyulogd:pyulogd:750"  # the outputs' spools, writable under the unit
    assert c["stat:/etc/pyulogd/pyulogd.conf"] == "root:root:644"
    assert set(c["conffile"].split()) == {"/etc/logrotate.d/pyulogd", "/etc/pyulogd/pyulogd.conf"}
    for cmd in ("pyulogd", "pyulogd-netns-wrapper", "pyulogd-unixsock-send", "pyulogdctl", "pyulogd-audit"):
        assert c[f"cmd:{cmd}"] == f"/usr/bin/{cmd}"
    assert c["version"].startswith("pyulogd Version ")
    assert c["logrotate_conf"] == "ok"


def test_installs_beside_debians_ulogd2(chroot_run: dict[str, str]) -> None:
    c = chroot_run
    assert c["ulogd2_beside"] == "install ok installedinstall ok installed", c["ulogd2_beside"]
    assert c["ulogd2_shared_files"] == "none"
    assert {"pyulogd.service", "ulogd2.service"} <= set(c["ulogd2_units"].split()), c["ulogd2_units"]


def test_installed_config_logs_every_packet_as_the_unit_runs_it(chroot_run: dict[str, str]) -> None:
    c = chroot_run
    # The installed config's NFLOG input sends no netlink request after start: once it has
    # started, the daemon keeps no capability at all (docs/security.md).
    assert c["caps"] == c["capeff"] == "0000000000000000"
    assert c["audit_log_lines"] == "10"
    assert c["audit_json_lines"] == "10"
    assert c["sqlite_rows"] == "10"
    owners = dict(entry.split(":", 1) for entry in c["owners"].split())
    assert set(owners) >= {"audit.log", "audit.json", "audit.sqlite", "pyulogd.log"}, owners
    for name in ("audit.log", "audit.json", "audit.sqlite", "pyulogd.log"):
        assert owners[name] == "pyulogd:adm:640", (name, owners)  # UMask=0027, group from the setgid dir
    assert int(c["daemon_log"]) > 0


def test_unit_start_check_passes_as_the_units_user(chroot_run: dict[str, str]) -> None:
    assert chroot_run["check_config"] == "ok"


def test_unit_verifies_and_is_rated_ok(chroot_run: dict[str, str]) -> None:
    c = chroot_run
    assert c["verify"] == "clean", c["verify"]
    assert c["verify_netns"] == "clean", c["verify_netns"]
    score, word = c["exposure"].split()[:2]
    assert word == "OK" and float(score) <= 2.0, c["exposure"]
    score, word = c["exposure_netns"].split()[:2]
    assert word == "OK", c["exposure_netns"]
    # The figure docs/operations.md states.
    doc = (ROOT / "docs" / "operations.md").read_text()
    assert f"{c['exposure'].split()[0]} OK" in doc and f"{c['exposure_netns'].split()[0]} OK" in doc


def test_purge_leaves_nothing_but_the_user(chroot_run: dict[str, str]) -> None:
    c = chroot_run
    assert c["left_after_purge"] == "none"
    assert c["dpkg_status"] in ("not-installed", "unknown ok not-installed")
    assert c["user_after_purge"] == "kept"  # as adduser recommends for system users (README.source)
