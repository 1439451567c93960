"""``pyulogd-audit report --html``: the page is self-contained, escapes what it shows, and
renders in a real browser (headless Chromium: no console error, every chart has a size)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.audit_helpers import fill, run, trail
from tests.chromium import browser, look


@pytest.fixture
def store(tmp_path: Path) -> str:
    d = tmp_path / "db"
    d.mkdir(mode=0o700)
    url = f"sqlite:///{d}/audit.db"
    records = trail()
    records[29][1]["audit.rule"] = '<script>alert("x")</script> & "quotes"'
    fill(url, tmp_path / "spool", records)
    return url


def test_report_is_self_contained_and_escaped(store: str, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    rc, out, err = run("report", "--db", store, "--html", str(page), "--bucket", "15m")
    assert (rc, err) == (0, "") and "report of 62 records" in out
    text = page.read_text()
    assert "<script>alert" not in text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text), "the page must load nothing"
    assert "default-src 'none'" in text  # and the browser is told so
    for needle in ("Drops and accepts over time", "Top sources", "Top dropped destinations", "Per router",
                   "Per port", "Loss records", "enobufs", "250 records held back", "net1", "2027-01-15T08:00"):
        assert needle in text, needle
    assert text.count('<svg class="chart"') == 3


def test_report_of_an_empty_range(store: str, tmp_path: Path) -> None:
    page = tmp_path / "empty.html"
    rc, _, _ = run("report", "--db", store, "--html", str(page), "--since", "2030-01-01T00:00:00Z")
    assert rc == 0 and "no records" in page.read_text()


def test_report_into_a_missing_directory_is_one_line(store: str, tmp_path: Path) -> None:
    rc, _, err = run("report", "--db", store, "--html", str(tmp_path / "no" / "such" / "r.html"))
    assert rc == 2 and len(err.splitlines()) == 1 and "No such file" in err


@pytest.mark.skipif(browser() is None, reason="needs Debian's chromium (scripts/install-deps.sh)")
def test_report_renders_in_chromium(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    page = tmp_path / "report.html"
    assert run("report", "--db", store, "--html", str(page), "--bucket", "15m")[0] == 0
    png = tmp_path / "report.png"
    seen = look(page, png, "document.body.getAttribute('data-chart-sizes')")
    assert seen["errors"] == []
    sizes = json.loads(seen["value"])
    assert [s[0] for s in sizes] == ["records per 900 s, by verdict", "records by source address",
                                     "dropped or rejected records by destination"]
    for label, width, height, rects in sizes:
        assert width > 300 and height > 100 and rects > 2, (label, width, height, rects)
    assert png.stat().st_size > 20000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # kept under the test's output (pytest's basetemp), and where a run asks for it
    keep = request.config.getoption("basetemp", None)
    if keep:
        shutil.copy(png, Path(keep) / "report.png")
