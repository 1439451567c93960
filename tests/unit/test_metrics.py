"""Prometheus metrics (daemon/metrics.py): the declared tables, labels from the running
instances (namespace children with hostile names included), the text format, the gauges."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pyulogd.core import registry
from pyulogd.core.config import parse_text
from pyulogd.core.escape import escape_text, unescape_text
from pyulogd.core.plugin import Filter, Sink, Source
from pyulogd.daemon import metrics
from pyulogd.daemon.metrics import (
    DAEMON_COUNTERS,
    FAMILIES,
    INSTANCE_COUNTERS,
    PLUGIN_COUNTERS,
    Collector,
    map_counter,
    prefixes,
)
from pyulogd.daemon.service import Service
from tests.clocked import fake_context
from tests.helpers import Capture, make_stack
from tests.unit.test_netns_follow import FakeInput, FakeNamespaces

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "pyulogd"

# One sample line of the text format 0.0.4: name, optional labels, value.
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
SAMPLE = re.compile(rf"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{{{_LABEL}(?:,{_LABEL})*\}})? (-?[0-9.e+-]+|NaN|[+-]Inf)$")


def service(tmp_path: Path, text: str) -> Service:
    """The daemon's stacks for ``text``, with the outputs started (their files open): the
    inputs are not, a unit test binds no NFLOG group. ``svc.started`` is every instance."""
    ctx, _clock = fake_context()
    svc = Service(str(tmp_path / "ulogd.conf"), ctx)
    svc.load_config(parse_text(text.replace("TMP", str(tmp_path)), svc.config_path))
    for stack in svc.stacks:
        for inst in stack.instances:
            if inst not in svc.started:
                svc.started.append(inst)
                if isinstance(inst, Sink):
                    inst.start()
    return svc


CONF = """[global]
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU
stack=log1:NFLOG,base1:BASE,ip2str1:IP2STR,json1:JSON

[log1]
group=77

[emu1]
file="TMP/emu.log"

[json1]
file="TMP/out.json"
"""


def _unescape(value: str) -> str:
    """A label value as a scraper reads it (the format's \\\\, \\" and \\n)."""
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def stop(svc: Service) -> None:
    for inst in svc.started:
        if isinstance(inst, Sink):
            inst.stop()


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The exposition text back into samples, checking the grammar of every line."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    helped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
            continue
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind in ("counter", "gauge") and name in helped, line
            continue
        m = SAMPLE.match(line)
        assert m is not None, f"not a sample line: {line!r}"
        pairs = re.findall(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"', m.group(2) or "")
        labels = tuple((k, _unescape(v)) for k, v in pairs)
        assert m.group(1) in helped, f"{m.group(1)} has no HELP/TYPE before it"
        out.setdefault(m.group(1), {})[labels] = float(m.group(3))
    return out


def test_counters_of_running_instances_become_families_with_labels(tmp_path: Path) -> None:
    svc = service(tmp_path, CONF)
    stats = svc.ctx.stats
    stats.incr("nflog.log1.packets", 40)
    stats.incr("nflog.log1.enobufs", 2)
    stats.incr("nflog.log1.seq_lost", 7)
    stats.incr("nflog.log1.seq_global_gaps", 1)
    stats.incr("logemu.emu1.lines_lost", 3)
    stats.incr("json.json1.write_errors")
    stats.incr("stack.emu1.errors", 5)
    stats.incr("output.json1.flush_errors")
    stats.incr("log.lines_lost", 4)
    stats.incr("ifindex.rtnl.timeouts")
    got = parse(metrics.render(Collector(svc.ctx, svc.started).collect()))
    log1 = (("plugin", "NFLOG"), ("id", "log1"))
    assert got["pyulogd_input_records_total"] == {log1: 40}
    assert got["pyulogd_kernel_overruns_total"] == {log1: 2}
    assert got["pyulogd_sequence_lost_total"] == {log1: 7}
    assert got["pyulogd_sequence_gaps_total"] == {log1 + (("scope", "group"),): 0, log1 + (("scope", "global"),): 1}
    emu, js = (("plugin", "LOGEMU"), ("id", "emu1")), (("plugin", "JSON"), ("id", "json1"))
    assert got["pyulogd_output_lost_total"] == {emu + (("cause", "write_error"),): 3,
                                                js + (("cause", "write_error"),): 0}
    assert got["pyulogd_output_write_errors_total"] == {emu: 0, js: 1}
    assert got["pyulogd_stack_errors_total"] == {emu: 5, js: 0}
    assert got["pyulogd_output_flush_errors_total"] == {js: 1}
    assert got["pyulogd_log_lines_lost_total"] == {(): 4}
    assert got["pyulogd_ifindex_errors_total"] == {(("cause", "timeout"),): 1}
    assert "pyulogd_other_total" not in got  # every counter here has a family
    # Known counters of every instance are there before they move (increase() needs it).
    assert got["pyulogd_input_errors_total"][log1 + (("cause", "malformed"),)] == 0
    assert got["pyulogd_filter_errors_total"][(("plugin", "BASE"), ("id", "base1"), ("cause", "malformed"))] == 0
    stop(svc)


def test_status_line_sums_records_in_and_losses(tmp_path: Path) -> None:
    svc = service(tmp_path, CONF)
    stats = svc.ctx.stats
    stats.incr("nflog.log1.packets", 40)
    stats.incr("nflog.log1.seq_lost", 7)
    stats.incr("logemu.emu1.lines_lost", 3)
    stats.incr("nflog.log1.enobufs", 2)  # overruns: told apart, not records
    stats.incr("log.lines_lost", 9)  # log lines: not records either
    col = Collector(svc.ctx, svc.started).collect()
    assert metrics.status_line(col, 0) == "40 records in, 10 lost, 2 kernel overruns"
    assert metrics.status_line(col, 3).endswith("; 3 namespaces")
    stop(svc)


HOSTILE = [
    "qrouter-plain",
    "qrouter-dot.ted.name",  # dots: the counter name cannot be split on them
    'qrouter-"quoted"',
    "qrouter-back\\slash",
    "qrouter-new\nline",
    "qrouter-bad-" + b"\xff\xfe".decode("utf-8", "surrogateescape"),
    "qrouter-sep\u2028arator",
]


def test_namespace_children_are_labels_whatever_their_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNamespaces(monkeypatch, tmp_path)
    FakeInput.fail, FakeInput.calls = set(), []
    ctx, _clock = fake_context()
    for name in HOSTILE:
        fake.add(name)
    stack = make_stack([(FakeInput, {"netns": "qrouter-*", "netns_dir": str(tmp_path)}), Capture(ctx, "cap", {})],
                       ctx)  # fmt: skip
    manager = stack.source
    assert isinstance(manager, FakeInput) and set(manager.children or ()) == set(HOSTILE)
    for name in HOSTILE:
        ctx.stats.incr(f"fake.fake0.{name}.enobufs", 3)  # a counter with a family
        # FakeInput's own fake.<id>.starts has none: the generic family, labels and all
    text = metrics.render(Collector(ctx, stack.instances).collect())
    got = parse(text)
    by_ns = {dict(k)["namespace"]: v for k, v in got["pyulogd_kernel_overruns_total"].items() if "namespace" in dict(k)}
    # The label value is the name escaped by the daemon's one rule: one line, valid UTF-8,
    # and unescape_text gives the name back.
    assert {unescape_text(k): v for k, v in by_ns.items()} == {n: 3 for n in HOSTILE}
    assert set(by_ns) == {escape_text(n) for n in HOSTILE}
    starts = {dict(k)["namespace"]: v for k, v in got["pyulogd_other_total"].items() if dict(k)["counter"] == "starts"}
    assert {unescape_text(k) for k in starts} == set(HOSTILE) and set(starts.values()) == {1}
    assert got["pyulogd_netns_followed"] == {(("plugin", "FAKE"), ("id", "fake0")): len(HOSTILE)}
    text.encode("utf-8")  # valid UTF-8 (raises on a lone surrogate)
    assert all(SAMPLE.match(line) or line.startswith("# ") for line in text.splitlines())
    for inst in stack.instances:
        inst.stop()


def test_a_counter_without_a_family_is_exported_not_dropped(tmp_path: Path) -> None:
    svc = service(tmp_path, CONF)
    known = prefixes(svc.started)
    assert map_counter("nflog.log1.brand_new", known) == (
        "pyulogd_other_total", (("plugin", "NFLOG"), ("id", "log1"), ("counter", "brand_new")))
    assert map_counter("somewhere.else.entirely", known) == (
        "pyulogd_other_total", (("counter", "somewhere.else.entirely"),))
    svc.ctx.stats.incr("somewhere.else.entirely", 2)
    got = parse(metrics.render(Collector(svc.ctx, svc.started).collect()))
    assert got["pyulogd_other_total"] == {(("counter", "somewhere.else.entirely"),): 2}
    stop(svc)


def _counter_names_in_the_code() -> dict[str, set[str]]:
    """Counter names as the code makes them, by role: found in the source, so that a new
    counter without a family fails here rather than ending in pyulogd_other_total."""
    found: dict[str, set[str]] = {"input": set(), "filter": set(), "output": set(), "daemon": set(), "NFTRACE": set(),
                                  "IPFIXIN": set(), "NEUTRON": set()}  # fmt: skip
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        rel = path.relative_to(SRC).as_posix()
        for block in re.findall(r"STAT_NAMES = \((.*?)\)", text, re.S):
            names = set(re.findall(r'"(\w+)"', block))
            if rel in ("plugins/inputs/nftrace.py", "codec/nfttrack.py"):
                found["NFTRACE"] |= names
            elif rel == "plugins/inputs/ipfixin.py":
                found["IPFIXIN"] |= names
            elif rel in ("plugins/filters/neutron.py", "io/ovsdb.py"):  # NEUTRON's, and its OVSDB client's
                found["NEUTRON"] |= names
            else:
                found["input"] |= names
        if rel == "netns/source.py":
            found["input"] |= set(re.findall(r'self\._stat \+ "(\w+)"', text))
        if rel in ("io/sender.py", "io/filesink.py"):
            found["output"] |= set(re.findall(r'(?:p|stat_prefix) \+ "\.(\w+)"', text))
        # the loss counter of a file sink: "lines_lost" by default, PCAP's "records_lost"
        found["output"] |= set(re.findall(r'lost_name(?:: str)? ?= ?"(\w+)"', text))
        if rel == "db/writer.py":
            found["output"] |= set(re.findall(r'_count\("(\w+)"', text))
        for scope, suffix in re.findall(r'f"(\w+)\.\{instance_id\}\.(\w+)"', text):
            cls = registry.get(scope.upper())
            role = "input" if issubclass(cls, Source) else "filter" if issubclass(cls, Filter) else "output"
            found[role].add(suffix)
        found["daemon"] |= set(re.findall(r'stats\.incr\("([\w.]+)"', text))
        found["daemon"] |= set(re.findall(r'^LOST = "([\w.]+)"', text, re.M))
        found["daemon"] |= set(re.findall(r'SEND_ERRORS = "([\w.]+)"', text))
        if rel == "daemon/endpoints.py":
            causes = re.findall(r'\.count\("(\w+)"\)', text) + re.findall(r'_reject\(conn, "(\w+)"', text)
            found["daemon"] |= {f"{ep}.{w}" for ep in ("metrics", "control") for w in causes}
    return found


def test_every_counter_the_code_makes_has_a_family() -> None:
    found = _counter_names_in_the_code()
    # The scan must find what is there (a regex gone stale would pass anything).
    assert {"packets", "enobufs", "seq_lost", "netns_attached", "events", "records"} <= found["input"]
    assert {"bad_address", "malformed", "stopped"} <= found["filter"]
    assert {"lines_lost", "write_errors", "sent", "send_failures", "rows", "spooled", "records_lost"} <= found["output"]
    assert {"log.lines_lost", "ifindex.rtnl.errors", "netns.inotify_overflows", "metrics.busy",
            "control.timeout"} <= found["daemon"]
    for role in ("input", "filter", "output"):
        missing = found[role] - set(INSTANCE_COUNTERS[role])
        assert not missing, f"{role} counters without a family in daemon/metrics.py: {sorted(missing)}"
    assert {"events", "packets", "evicted", "table_reasserted"} <= found["NFTRACE"]
    missing = found["NFTRACE"] - set(PLUGIN_COUNTERS["NFTRACE"]) - set(INSTANCE_COUNTERS["input"])
    assert not missing, f"NFTRACE counters without a family: {sorted(missing)}"
    assert {"cache_misses", "unresolved", "ovsdb_connect_failures"} <= found["NEUTRON"]
    missing = found["NEUTRON"] - set(PLUGIN_COUNTERS["NEUTRON"])
    assert not missing, f"NEUTRON counters without a family: {sorted(missing)}"
    from pyulogd.codec.ipfixin.collector import CAUSES, COUNTERS

    ipfixin = found["IPFIXIN"] | set(COUNTERS) | {f"malformed.{c}" for c in CAUSES}
    missing = ipfixin - set(PLUGIN_COUNTERS["IPFIXIN"]) - set(INSTANCE_COUNTERS["input"])
    assert {"denied", "tcp_clients"} <= found["IPFIXIN"]
    assert not missing, f"IPFIXIN counters without a family: {sorted(missing)}"
    missing = {n for n in found["daemon"] if n not in DAEMON_COUNTERS and not n.startswith("metrics.requests")}
    assert not missing, f"daemon counters without a family: {sorted(missing)}"
    for table in (*INSTANCE_COUNTERS.values(), *PLUGIN_COUNTERS.values(), DAEMON_COUNTERS):
        for to in table.values():
            fam = FAMILIES[to.family]
            assert {k for k, _ in to.labels} <= set(fam.labels), (to, fam.labels)


def test_every_family_is_documented() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", doc, re.M))
    assert documented == set(FAMILIES), (set(FAMILIES) - documented, documented - set(FAMILIES))


def test_label_values_cannot_break_a_line() -> None:
    for text in ["a\nb", 'q"x', "b\\s", "\r\x00\x1b[31m", "\udcff", "\u2028\u0085"]:
        value = metrics.label_value(text)
        assert "\n" not in value and "\r" not in value
        value.encode("utf-8")
        # What a scraper reads back (the format's own unescaping) is the daemon's escaped text.
        assert unescape_text(_unescape(value)) == text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (Debian package prometheus)")
def test_promtool_accepts_the_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNamespaces(monkeypatch, tmp_path)
    FakeInput.fail, FakeInput.calls = set(), []
    ctx, _clock = fake_context()
    for name in HOSTILE:
        fake.add(name)
    stack = make_stack([(FakeInput, {"netns": "qrouter-*", "netns_dir": str(tmp_path)}), Capture(ctx, "cap", {})],
                       ctx)  # fmt: skip
    for name in HOSTILE:
        ctx.stats.incr(f"fake.fake0.{name}.seq_lost", 1)
    text = metrics.render(Collector(ctx, stack.instances).collect())
    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    for inst in stack.instances:
        inst.stop()


def test_loop_lag_and_last_write_age_from_the_one_second_tick(tmp_path: Path) -> None:
    svc = service(tmp_path, """[global]
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,sys1:SYSLOG

[log1]
group=77

[sys1]
socket="TMP/nowhere.sock"
""")
    ctx = svc.ctx
    clock = ctx.clock
    col = Collector(ctx, svc.started)
    col.start()
    sys1 = (("plugin", "SYSLOG"), ("id", "sys1"))
    for _ in range(3):
        clock.advance(1.0)  # type: ignore[attr-defined]
        ctx.loop.run_once(0)
    got = col.collect().samples
    assert got["pyulogd_output_last_write_age_seconds"][sys1] == 3.0  # nothing sent since the start
    assert got["pyulogd_loop_lag_seconds"][()] == 0.0
    ctx.stats.incr("syslog.sys1.sent", 5)
    clock.advance(1.0)  # type: ignore[attr-defined]
    ctx.loop.run_once(0)
    clock.advance(2.0)  # type: ignore[attr-defined]
    got = col.collect().samples
    assert got["pyulogd_output_last_write_age_seconds"][sys1] == 2.0
    # The loop last turned at +4 s; stuck until +11 s, it is 6 s late to the tick due at +5 s.
    clock.advance(5.0)  # type: ignore[attr-defined]
    ctx.loop.run_once(0)
    assert col.collect().samples["pyulogd_loop_lag_seconds"][()] == 6.0
    # ... and the gauge forgets it after two windows.
    for _ in range(int(2 * Collector.LAG_WINDOW) + 2):
        clock.advance(1.0)  # type: ignore[attr-defined]
        ctx.loop.run_once(0)
    assert col.collect().samples["pyulogd_loop_lag_seconds"][()] == 0.0
    assert got["pyulogd_output_queue_bytes"][sys1] >= 0 and got["pyulogd_output_connected"][sys1] in (0, 1)
    col.stop()
    stop(svc)


def test_file_outputs_report_size_and_age_of_their_file(tmp_path: Path) -> None:
    svc = service(tmp_path, CONF)
    emu = (("plugin", "LOGEMU"), ("id", "emu1"))
    got = Collector(svc.ctx, svc.started).collect().samples
    assert got["pyulogd_output_file_bytes"][emu] == 0
    (tmp_path / "emu.log").write_text("x" * 10)  # the same file, grown by someone
    got = Collector(svc.ctx, svc.started).collect().samples
    assert got["pyulogd_output_file_bytes"][emu] == 10
    assert got["pyulogd_output_last_write_age_seconds"][emu] >= 0
    stop(svc)


def test_a_plugin_whose_counter_means_something_else_has_its_own_family() -> None:
    """NFTRACE's ``events`` are trace events (several per packet), its ``packets`` its
    records; NFCT's ``events`` are its records."""
    nftrace = (("plugin", "NFTRACE"), ("id", "tr1"))
    nfct = (("plugin", "NFCT"), ("id", "ct1"))
    known = [metrics.Prefix("nftrace.tr1.", "input", nftrace, "NFTRACE"),
             metrics.Prefix("nfct.ct1.", "input", nfct, "NFCT")]
    assert map_counter("nftrace.tr1.events", known) == ("pyulogd_nftrace_events_total", nftrace)
    assert map_counter("nftrace.tr1.packets", known) == ("pyulogd_input_records_total", nftrace)
    evicted = nftrace + (("cause", "evicted"),)
    assert map_counter("nftrace.tr1.evicted", known) == ("pyulogd_nftrace_partial_total", evicted)
    assert map_counter("nftrace.tr1.enobufs", known) == ("pyulogd_kernel_overruns_total", nftrace)
    assert map_counter("nfct.ct1.events", known) == ("pyulogd_input_records_total", nfct)
