"""The shipped alert rules: valid for Prometheus, firing when they should, and the same in
docs/metrics.md as in examples/prometheus/pyulogd-alerts.yml."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pyulogd.daemon.metrics import FAMILIES

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "examples" / "prometheus" / "pyulogd-alerts.yml"
CASES = ROOT / "tests" / "prometheus" / "pyulogd-alerts.test.yml"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="needs promtool (Debian package prometheus, scripts/install-deps.sh)")


def test_the_doc_shows_the_shipped_file() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.S)
    assert RULES.read_text() in blocks


def test_rules_use_only_families_the_daemon_exports() -> None:
    names = set(re.findall(r"\b((?:pyulogd|process)_[a-z_]+)\b", RULES.read_text()))
    assert names and names <= set(FAMILIES), names - set(FAMILIES)


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    r = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 14 rules found" in r.stdout


@needs_promtool
def test_promtool_unit_tests_of_the_rules(tmp_path: Path) -> None:
    """Each alert fires on the series that should raise it and stays quiet on a healthy
    daemon (tests/prometheus/pyulogd-alerts.test.yml)."""
    r = subprocess.run(["promtool", "test", "rules", CASES.name], cwd=CASES.parent, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    # The cases would pass vacuously against a file without rules: a broken copy must fail.
    broken = tmp_path / "examples" / "prometheus"
    broken.mkdir(parents=True)
    (broken / RULES.name).write_text(RULES.read_text().replace("> 0\n", "> 1e9\n"))
    cases = tmp_path / "tests" / "prometheus"
    cases.mkdir(parents=True)
    shutil.copy(CASES, cases / CASES.name)
    r = subprocess.run(["promtool", "test", "rules", CASES.name], cwd=cases, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode != 0 and "PyulogdRecordsLost" in r.stdout + r.stderr
