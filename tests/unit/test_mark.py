"""MARK (spec 5.7): ct.mark first, then oob.mark, masked; mismatch stops the event for this stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pyulogd.core.config import parse_text
from pyulogd.core.context import Context
from pyulogd.core.plugin import DataType, Key, KeyType, Source
from pyulogd.core.stack import build_stack
from pyulogd.io.loop import Loop
from pyulogd.plugins.filters.mark import MarkFilter
from tests.helpers import Capture, make_stack


class Marks(Source):
    name = "MARKS"
    output_type = DataType.PACKET
    output_keys = (Key("ct.mark", KeyType.UINT32), Key("oob.mark", KeyType.UINT32))


def passed(opts: dict[str, Any], events: list[tuple[int | None, int | None]]) -> list[int]:
    stack = make_stack([Marks, (MarkFilter, opts), Capture])
    for ct, oob in events:
        stack.source.emit([None, ct, oob])
    cap: Capture = stack.instances[-1]  # type: ignore[assignment]
    return [events.index((cap.value(r, "ct.mark"), cap.value(r, "oob.mark"))) for r in cap.records]


def test_default_passes_mark_zero_only() -> None:
    assert passed({}, [(None, 0), (None, 1), (0, 5), (3, 0), (None, None)]) == [0, 2, 4]


def test_ct_mark_wins_over_oob_mark() -> None:
    assert passed({"mark": 1}, [(1, 2), (2, 1), (None, 1), (None, 2)]) == [0, 2]


def test_mask() -> None:
    events = [(None, 0x10001), (None, 0x20001), (None, 0x10002), (None, 0xFFFF0001)]
    assert passed({"mark": 1, "mask": 0xFF}, events) == [0, 1, 3]
    assert passed({"mark": 0xFFFF0001, "mask": -1}, events) == [3]
    assert passed({"mark": -1}, [(None, 0xFFFFFFFF), (None, 1)]) == [0]  # (u_int32_t) mark


def test_stop_is_per_stack_and_counted() -> None:
    ctx = Context(loop=Loop())
    src = Marks(ctx, "m0", {})
    s1 = make_stack([src, (MarkFilter, {"mark": 1}), Capture], ctx)
    s2 = make_stack([src, (MarkFilter, {"mark": 2}), Capture], ctx)
    for m in (1, 2, 2, 3):
        src.emit([None, None, m])
    assert len(s1.instances[-1].records) == 1 and len(s2.instances[-1].records) == 2  # type: ignore[attr-defined]
    assert s1.errors == 0 and s2.errors == 0  # STOP is not an error
    assert ctx.stats.get("mark.mark1.stopped") == 3 + 2  # both instances are named mark1 here


def test_section_optional_options_parsed(tmp_path: Path) -> None:
    """As Debian's [mark1] mark = 1; no section at all is fine too (2.0.8 ignores its absence)."""
    from pyulogd.core import registry

    registry.register(Marks)
    try:
        for body, mark in (("[m1]\nmark = 1\nmask=0x0f\n", 1), ("", 0)):
            cfg = parse_text("[global]\nstack=s:MARKS,m1:MARK,c:CAPTURE\n" + body, str(tmp_path / "x.conf"))
            registry.register(Capture)
            stack = build_stack(Context(loop=Loop()), cfg, cfg.section("global").entries[0].value or "", 2, {})  # type: ignore[union-attr]
            f: MarkFilter = stack.instances[1]  # type: ignore[assignment]
            assert f.mark == mark and f.mask == (0x0F if mark else 0xFFFFFFFF)
    finally:
        registry.unregister("MARKS")
        registry.unregister("CAPTURE")


def test_info_shows_mask_minus_one(capsys: pytest.CaptureFixture[str]) -> None:
    from pyulogd.daemon.cli import main

    assert main(["-i", "MARK"]) == 0
    out = capsys.readouterr().out
    assert "\tVar: mark (Integer, Default: 0)\n\tVar: mask (Integer, Default: -1)\n" in out
    assert "\tKey: ct.mark (unsigned int 32, optional)\n\tKey: oob.mark (unsigned int 32, optional)\n" in out
