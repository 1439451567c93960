"""Loss records and heartbeats in the trail (core/loss.py, issue 12 item 4).

Real outputs (JSON, LOGEMU, GPRINT, OPRINT, ECS) writing real files, a context on a
FakeClock: the trail's timers fire when the clock is advanced, nothing sleeps.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pyulogd.core.config import parse_text
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.core.loss import AUDIT_KEYS, AuditTrail, LossLedger, audit_text, iso_time
from pyulogd.core.plugin import OK, DataType, Filter, Key, KeyType, Source
from pyulogd.core.stack import Stack
from pyulogd.daemon.service import Service
from pyulogd.io.output import Output
from pyulogd.io.sink import SinkCounters
from pyulogd.plugins.outputs.ecs import EcsOutput
from pyulogd.plugins.outputs.gprint import GprintOutput
from pyulogd.plugins.outputs.json import JsonOutput
from pyulogd.plugins.outputs.logemu import LogemuOutput
from pyulogd.plugins.outputs.oprint import OprintOutput
from tests.clocked import fake_context
from tests.helpers import make_stack

T0 = 1_700_000_000.0


class Src(Source):
    name = "LOSSSRC"
    output_type = DataType.PACKET
    output_keys = (
        Key("oob.time.sec", KeyType.UINT32),
        Key("oob.prefix", KeyType.STRING),
        Key("print", KeyType.STRING),
    )

    def send(self, n: int = 1) -> None:
        for i in range(n):
            self.emit([None, int(T0), "p ", f"pkt {i}\n"])


class Boom(Filter):
    """Raises on a record whose prefix is ``boom``."""

    name = "LOSSBOOM"
    input_type = output_type = DataType.PACKET
    input_keys = (Key("oob.prefix", KeyType.STRING),)

    def interp(self, rec: list[Any]) -> int:
        if rec[self.in_slots[0]] == "boom":
            raise RuntimeError("boom")
        return OK


def outputs(tmp_path: Path) -> dict[str, tuple[type[Output[Any]], dict[str, Any]]]:
    return {
        "json": (JsonOutput, {"file": tmp_path / "out.json"}),
        "logemu": (LogemuOutput, {"file": tmp_path / "emu.log"}),
        "gprint": (GprintOutput, {"file": tmp_path / "gprint.log"}),
        "oprint": (OprintOutput, {"file": tmp_path / "oprint.log"}),
        "ecs": (EcsOutput, {"file": tmp_path / "ecs.json"}),
    }


def build(tmp_path: Path, mode: str, heartbeat: float = 0.0) -> tuple[Context, Any, Src, list[Stack], AuditTrail]:
    ctx, clock = fake_context(wall=T0)
    src = Src(ctx, "src1", {})
    stacks = [make_stack([src, spec], ctx, spec=f"src1:LOSSSRC,{kind}1:{spec[0].name}")
              for kind, spec in outputs(tmp_path).items()]  # fmt: skip
    trail = AuditTrail(ctx, stacks, mode=mode, heartbeat=heartbeat)
    trail.start()
    return ctx, clock, src, stacks, trail


def flush(stacks: list[Stack]) -> None:
    for s in stacks:
        s.sink.flush()


def tick(ctx: Context, clock: Any, seconds: float = 1.0) -> None:
    clock.advance(seconds)
    ctx.loop.run_once(0)  # type: ignore[attr-defined]


def text(tmp_path: Path, name: str) -> str:
    return (tmp_path / name).read_text()


def test_the_ledger_sums_per_origin_and_keeps_first_and_last() -> None:
    ledger = LossLedger()
    a, b = object(), object()
    ledger.report(a, 3, "seq_gap", 10.0)
    ledger.report(a, 2, "enobufs", 12.5)
    ledger.report(b, 0, "seq_gap", 11.0)  # nothing lost: nothing to say
    (loss,) = ledger.take()
    assert (loss.origin, loss.count, loss.first, loss.last, loss.reason()) == (a, 5, 10.0, 12.5, "enobufs;seq_gap")
    assert ledger.take() == []


def test_auto_writes_loss_records_into_pyulogds_formats_and_leaves_ulogds_alone(tmp_path: Path) -> None:
    ctx, clock, src, stacks, trail = build(tmp_path, "auto")
    src.send(2)
    flush(stacks)
    before = {n: text(tmp_path, n) for n in ("out.json", "emu.log", "gprint.log", "oprint.log")}
    ctx.losses.report(src, 7, "seq_gap", T0 + 0.25)
    tick(ctx, clock)
    flush(stacks)
    # ulogd2's formats: byte for byte what they were (loss_records=auto)
    assert {n: text(tmp_path, n) for n in before} == before
    docs = [json.loads(x) for x in text(tmp_path, "ecs.json").splitlines()]
    assert len(docs) == 3
    loss = docs[-1]
    assert loss["event"]["kind"] == "pipeline_error" and loss["event"]["action"] == "records-lost"
    assert loss["pyulogd"]["loss"] == {"count": 7, "reason": "seq_gap"}
    assert loss["event"]["start"] == loss["event"]["end"] == iso_time(T0 + 0.25)
    assert trail.records == 1 and ctx.stats.get("audit.records") == 1


def test_loss_records_on_every_output_in_its_own_format(tmp_path: Path) -> None:
    ctx, clock, src, stacks, _trail = build(tmp_path, "1")
    src.send(1)
    ctx.losses.report(src, 4, "seq_gap", T0 + 0.1)
    ctx.losses.report(src, 1, "enobufs", T0 + 0.6)
    tick(ctx, clock)
    flush(stacks)
    first, last = iso_time(T0 + 0.1), iso_time(T0 + 0.6)
    objs = [json.loads(x) for x in text(tmp_path, "out.json").splitlines()]
    assert objs[1]["audit.status"] == "SKIPDATA" and objs[1]["audit.loss.count"] == 5
    assert objs[1]["audit.loss.reason"] == "enobufs;seq_gap"
    assert (objs[1]["audit.loss.first"], objs[1]["audit.loss.last"]) == (first, last)
    assert objs[1]["audit.loss.source"] == "LOSSSRC 'src1'" and "timestamp" in objs[1] and "dvc" in objs[1]
    emu = text(tmp_path, "emu.log").splitlines()
    assert re.fullmatch(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ pyulogd: audit.status=SKIPDATA "
                        r"audit.loss.count=5 audit.loss.reason=enobufs;seq_gap "
                        rf"audit.loss.first={re.escape(first)} audit.loss.last={re.escape(last)} "
                        r"audit.loss.source=LOSSSRC\\x20'src1'", emu[1]), emu  # fmt: skip
    gp = [x for x in text(tmp_path, "gprint.log").splitlines() if "audit." in x]
    assert gp == [f"audit.status=SKIPDATA,audit.loss.count=5,audit.loss.reason=enobufs;seq_gap,"
                  f"audit.loss.first={first},audit.loss.last={last},audit.loss.source=LOSSSRC 'src1'"]
    op = text(tmp_path, "oprint.log")
    assert op.count("===>PACKET BOUNDARY") == 2 and "audit.loss.count=5\n" in op
    assert "audit.loss.count" not in op.split("===>PACKET BOUNDARY")[1]  # the packet's own dump unchanged


def test_a_loss_goes_to_every_stack_of_the_input_once(tmp_path: Path) -> None:
    ctx, clock, src, stacks, trail = build(tmp_path, "1")
    ctx.losses.report(src, 3, "seq_gap", T0)
    tick(ctx, clock)
    tick(ctx, clock)  # reported once: nothing more the next second
    flush(stacks)
    assert trail.records == len(stacks)
    assert len(text(tmp_path, "out.json").splitlines()) == 1


def test_a_plugin_error_is_a_loss_of_its_stack_only(tmp_path: Path) -> None:
    ctx, clock = fake_context(wall=T0)
    src = Src(ctx, "src1", {})
    s1 = make_stack([src, Boom, (JsonOutput, {"file": tmp_path / "a.json"})], ctx, spec="a")
    s2 = make_stack([src, (JsonOutput, {"file": tmp_path / "b.json"})], ctx, spec="b")
    trail = AuditTrail(ctx, [s1, s2], mode="1")
    trail.start()
    src.emit([None, int(T0), "boom", "x\n"])
    tick(ctx, clock)
    flush([s1, s2])
    a = [json.loads(x) for x in text(tmp_path, "a.json").splitlines()]
    b = [json.loads(x) for x in text(tmp_path, "b.json").splitlines()]
    assert len(a) == 1 and a[0]["audit.loss.reason"] == "plugin_error" and a[0]["audit.loss.count"] == 1
    assert a[0]["audit.loss.source"] == "stack 'a'"
    assert len(b) == 1 and "audit.status" not in b[0]  # the other stack wrote the record itself


class DropSink:
    """A sink that drops everything while ``full`` (a disk full, a peer away)."""

    def __init__(self) -> None:
        self.counters = SinkCounters()
        self.full = True
        self.lines: list[str] = []

    def open(self) -> None: ...

    def add(self, line: str) -> None:
        self.counters.received += 1
        if self.full:
            self.counters.drop("write_failed", 1)
        else:
            self.counters.written += 1
            self.lines.append(line)

    def flush(self) -> None: ...

    def reopen(self) -> None: ...

    def close(self) -> None: ...


class DropJson(JsonOutput):
    name = "DROPJSON"

    def make_sink(self) -> Any:
        self._buffer = self.sink_ = DropSink()  # type: ignore[assignment]
        return self.sink_

    def interp(self, rec: list[Any]) -> int:
        self.sink_.add(self._line(rec))
        return OK


def test_an_outputs_own_losses_are_written_once_it_writes_again() -> None:
    ctx, clock = fake_context(wall=T0)
    src = Src(ctx, "src1", {})
    stack = make_stack([src, DropJson], ctx, spec="s")
    out = stack.sink
    assert isinstance(out, DropJson)
    trail = AuditTrail(ctx, [stack], mode="1")
    trail.start()
    sink = out.sink_
    for second in range(3):  # three seconds of an outage: still dropping, no loss record yet
        src.send(10)
        tick(ctx, clock)
        assert sink.counters.received == 10 * (second + 1)
    sink.full = False  # the disk has room again
    tick(ctx, clock)  # a second without new drops: the loss record goes out
    assert len(sink.lines) == 1
    rec = json.loads(sink.lines[0])
    assert rec["audit.loss.count"] == 30 and rec["audit.loss.reason"] == "write_failed"
    assert rec["audit.loss.first"] == iso_time(T0 + 1) and rec["audit.loss.last"] == iso_time(T0 + 3)
    assert rec["audit.loss.source"] == "output DROPJSON 'dropjson1'"
    # received = written + dropped, the loss record counted like any record
    c = sink.counters
    assert (c.received, c.written, c.lost) == (31, 1, 30)


def test_a_lost_loss_record_is_reported_in_the_next_one() -> None:
    ctx, clock = fake_context(wall=T0)
    src = Src(ctx, "src1", {})
    stack = make_stack([src, DropJson], ctx, spec="s")
    out = stack.sink
    assert isinstance(out, DropJson)
    trail = AuditTrail(ctx, [stack], mode="1")
    trail.start()
    src.send(5)
    tick(ctx, clock)  # 5 dropped: pending
    tick(ctx, clock)  # no new drops: the loss record is tried, and dropped too
    assert out.sink_.counters.lost == 6
    out.sink_.full = False
    tick(ctx, clock)  # the failed attempt is a new drop: pending again
    tick(ctx, clock)
    (line,) = out.sink_.lines
    assert json.loads(line)["audit.loss.count"] == 1


def test_at_stop_the_pending_loss_is_written_even_while_dropping() -> None:
    ctx, _clock = fake_context(wall=T0)
    src = Src(ctx, "src1", {})
    stack = make_stack([src, DropJson], ctx, spec="s")
    out = stack.sink
    assert isinstance(out, DropJson)
    trail = AuditTrail(ctx, [stack], mode="1")
    trail.start()
    src.send(2)
    out.sink_.full = False
    trail.stop()
    (line,) = out.sink_.lines
    assert json.loads(line)["audit.loss.count"] == 2


def test_heartbeat_every_n_seconds_with_the_records_since(tmp_path: Path) -> None:
    ctx, clock, src, stacks, _trail = build(tmp_path, "auto", heartbeat=10.0)
    src.send(3)
    flush(stacks)
    for _ in range(9):
        tick(ctx, clock)
    flush(stacks)
    assert "HEARTBEAT" not in text(tmp_path, "out.json")  # not yet: 9 s
    tick(ctx, clock)
    flush(stacks)
    objs = [json.loads(x) for x in text(tmp_path, "out.json").splitlines()]
    assert len(objs) == 4
    hb = objs[3]
    assert hb["audit.status"] == "HEARTBEAT" and hb["audit.heartbeat.records"] == 3
    assert hb["audit.heartbeat.since"] == iso_time(T0)
    assert "pyulogd: audit.status=HEARTBEAT audit.heartbeat.records=3" in text(tmp_path, "emu.log")
    # Nothing happened in the next 10 s: a heartbeat that says so (its own predecessor not counted).
    for _ in range(10):
        tick(ctx, clock)
    flush(stacks)
    hb2 = json.loads(text(tmp_path, "out.json").splitlines()[-1])
    assert hb2["audit.heartbeat.records"] == 0 and hb2["audit.heartbeat.since"] == iso_time(T0 + 10)
    # ECS has no form for a heartbeat
    assert "HEARTBEAT" not in text(tmp_path, "ecs.json")


def test_loss_records_zero_writes_none(tmp_path: Path) -> None:
    ctx, clock, src, stacks, trail = build(tmp_path, "0")
    ctx.losses.report(src, 7, "seq_gap", T0)
    tick(ctx, clock)
    flush(stacks)
    assert trail.records == 0 and text(tmp_path, "ecs.json") == ""


def test_audit_text_escapes_outside_strings() -> None:
    rec: list[Any] = [None] * (1 + len(AUDIT_KEYS))
    rec[1] = "SKIPDATA"
    rec[6] = "NFLOG 'x\n y'"
    assert audit_text(rec, 1) == "audit.status=SKIPDATA audit.loss.source=NFLOG\\x20'x\\n\\x20y'"


@pytest.mark.parametrize(("line", "why"), [("loss_records=maybe", "loss_records"), ("heartbeat=-1", "heartbeat")])
def test_global_options_are_typed_and_refused_with_file_and_line(tmp_path: Path, line: str, why: str) -> None:
    cfg = parse_text(f"[global]\n{line}\nstack=a:NULLIN,b:NULL\n", str(tmp_path / "x.conf"))
    with pytest.raises(ConfigError) as e:
        Service(str(tmp_path / "x.conf")).load_config(cfg)
    assert e.value.line == 2 and why in str(e.value)


def test_global_options_reach_the_service(tmp_path: Path) -> None:
    ctx, _clock = fake_context(wall=T0)
    cfg = parse_text("[global]\nloss_records=1\nheartbeat=1m\n", str(tmp_path / "x.conf"))
    svc = Service(str(tmp_path / "x.conf"), ctx)
    with pytest.raises(ConfigError):  # no stack: refused, but the two lines were read
        svc.load_config(cfg)
    assert (svc.loss_records, svc.heartbeat) == ("1", 60.0)


def test_a_restart_reports_what_the_killed_daemon_had_not_written_and_nothing_twice() -> None:
    """Counters restored by the write-ahead log (io/wal.py) carry what loss records took."""
    ctx, clock = fake_context(wall=T0)
    src = Src(ctx, "src1", {})
    stack = make_stack([src, DropJson], ctx, spec="s")
    out = stack.sink
    assert isinstance(out, DropJson)
    c = out.sink_.counters
    c.restore({"dropped": {"write_failed": 50, "queue_full": 5}, "loss_reported": {"write_failed": 30}})
    out.sink_.full = False
    trail = AuditTrail(ctx, [stack], mode="1")
    trail.start()
    tick(ctx, clock)  # the 25 the killed daemon counted but never wrote into the trail
    tick(ctx, clock)
    (line,) = out.sink_.lines
    rec = json.loads(line)
    assert rec["audit.loss.count"] == 25 and rec["audit.loss.reason"] == "queue_full;write_failed"
    assert c.loss_reported == {"write_failed": 50, "queue_full": 5}
    assert c.state()["loss_reported"] == {"write_failed": 50, "queue_full": 5}  # saved with the counters
    tick(ctx, clock)
    assert len(out.sink_.lines) == 1
