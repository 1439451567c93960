"""Tenant separation (io/tenants.py: Splitter, SplitSink): JSON and LOGEMU with
``split_by=neutron.project_id`` write each record to its project's file, a flow between two
projects to both, an unresolved one (or one whose project id cannot name a file) to its own."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError, PluginError
from pyulogd.core.plugin import DataType, Key, Source
from pyulogd.core.plugin import KeyType as T
from pyulogd.io import tenants
from pyulogd.io.loop import Loop
from pyulogd.io.tenants import UNRESOLVED, Splitter, check_template, destination_name
from pyulogd.plugins.outputs.json import JsonOutput
from pyulogd.plugins.outputs.logemu import LogemuOutput
from tests.helpers import make_stack

A, B = "736672c700cd43e1bd321aeaf940365c", "0b1c2d3e-4f50-4a61-8b72-93a4b5c6d7e8"


class Src(Source):
    name = "SRC"
    output_type = DataType.PACKET
    output_keys = (Key("print", T.STRING), Key("oob.time.sec", T.UINT32), Key("n", T.UINT32),
                   Key("neutron.project_id", T.STRING), Key("neutron.peer_project_id", T.STRING))  # fmt: skip

    def send(self, n: int, project: Any = None, peer: Any = None) -> None:
        self.emit([None, f"record {n}\n", 1800000000, n, project, peer])


class NoProject(Source):
    name = "NOPROJECT"
    output_type = DataType.PACKET
    output_keys = (Key("print", T.STRING),)


@pytest.mark.parametrize(("value", "name"), [
    (A, A), (B, B), (None, UNRESOLVED), ("", UNRESOLVED), ("../../etc/passwd", UNRESOLVED), ("ABCDEF", UNRESOLVED),
    ("unresolved", UNRESOLVED), ("-abc", UNRESOLVED), ("a" * 65, UNRESOLVED), ("abc\n", UNRESOLVED),
    (7, UNRESOLVED), ("ab cd", UNRESOLVED),
])  # fmt: skip
def test_destination_names(value: Any, name: str) -> None:
    assert destination_name(value) == name


def test_splitter() -> None:
    s = Splitter((1, 2))
    assert s.destinations([None, A, None]) == (A,)
    assert s.destinations([None, A, A]) == (A,)
    assert s.destinations([None, A, B]) == (A, B)
    assert s.destinations([None, None, B]) == (UNRESOLVED, B)
    assert s.destinations([None, "x/y", "z/w"]) == (UNRESOLVED,)
    assert s.destinations([None, None, None]) == (UNRESOLVED,)
    assert Splitter((1,)).destinations([None, B]) == (B,)


@pytest.mark.parametrize(("path", "why"), [
    ("/var/log/x.json", "exactly once"), ("/var/log/{project}/{project}.json", "exactly once"),
    ("/var/log/{project}/x.json", "must be in the file name"), ("/var/log/{project}-{n}.json", "other than"),
])  # fmt: skip
def test_templates(path: str, why: str) -> None:
    assert why in (check_template(path) or "")
    assert check_template("/var/log/pyulogd/{project}.json") is None


def lines(p: Path) -> list[str]:
    return p.read_text().splitlines() if p.exists() else []


def numbers(p: Path) -> list[int]:
    return [json.loads(line)["n"] for line in lines(p)]


def test_json_per_project_files(tmp_path: Path) -> None:
    ctx = Context(loop=Loop())
    stack = make_stack([Src, (JsonOutput, {"file": tmp_path / "{project}.json", "split_by": "neutron.project_id",
                                           "timestamp": 0})], ctx)  # fmt: skip
    src: Any = stack.source
    assert (tmp_path / "unresolved.json").exists()  # opened at start: the directory is known good
    src.send(1, A)
    src.send(2, B)
    src.send(3, A, B)  # a flow between the two projects: to both
    src.send(4)  # unresolved
    src.send(5, "../etc", A)  # an id that cannot name a file: unresolved, and A's
    src.send(6, A, A)
    stack.sink.flush()
    assert numbers(tmp_path / f"{A}.json") == [1, 3, 5, 6]
    assert numbers(tmp_path / f"{B}.json") == [2, 3]
    assert numbers(tmp_path / "unresolved.json") == [4, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{A}.json", f"{B}.json", "unresolved.json"])
    # the line is the same JSON whatever file it is in
    assert lines(tmp_path / f"{A}.json")[1] == lines(tmp_path / f"{B}.json")[1]
    # SIGHUP (log rotation): every file is reopened
    (tmp_path / f"{A}.json").rename(tmp_path / "rotated.json")
    stack.sink.signal(signal.SIGHUP)
    src.send(7, A)
    stack.sink.flush()
    assert numbers(tmp_path / f"{A}.json") == [7] and numbers(tmp_path / "rotated.json") == [1, 3, 5, 6]
    stack.sink.stop()


def test_logemu_per_project_files(tmp_path: Path) -> None:
    ctx = Context(loop=Loop())
    stack = make_stack([Src, (LogemuOutput, {"file": tmp_path / "{project}.log", "split_by": "neutron.project_id"})],
                       ctx)  # fmt: skip
    src: Any = stack.source
    src.send(1, A)
    src.send(2, B, A)
    src.send(3)
    stack.sink.flush()
    assert [line.split(" ", 4)[-1] for line in lines(tmp_path / f"{A}.log")] == ["record 1", "record 2"]
    assert [line.split(" ", 4)[-1] for line in lines(tmp_path / f"{B}.log")] == ["record 2"]
    assert [line.split(" ", 4)[-1] for line in lines(tmp_path / "unresolved.log")] == ["record 3"]
    stack.sink.stop()


def test_many_projects_never_mix_when_files_are_closed_for_room(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(tenants, "MAX_OPEN", 3)
    ctx = Context(loop=Loop())
    stack = make_stack([Src, (JsonOutput, {"file": tmp_path / "{project}.json", "split_by": "neutron.project_id",
                                           "timestamp": 0})], ctx)  # fmt: skip
    src: Any = stack.source
    projects = [f"{i:032x}" for i in range(10)]
    for n in range(100):
        src.send(n, projects[(n * 7) % 10])
    stack.sink.flush()
    for i, p in enumerate(projects):
        assert numbers(tmp_path / f"{p}.json") == [n for n in range(100) if (n * 7) % 10 == i]
    assert ctx.stats.get("json.json1.split_opens") > 10  # files were closed and reopened
    stack.sink.stop()


def test_a_destination_that_cannot_be_opened_is_counted_not_mixed(tmp_path: Path) -> None:
    ctx = Context(loop=Loop())
    stack = make_stack([Src, (JsonOutput, {"file": tmp_path / "{project}.json", "split_by": "neutron.project_id",
                                           "timestamp": 0})], ctx)  # fmt: skip
    (tmp_path / f"{A}.json").mkdir()  # not a file
    src: Any = stack.source
    src.send(1, A)
    src.send(2, B)
    stack.sink.flush()
    assert ctx.stats.get("json.json1.lines_lost") == 1 and numbers(tmp_path / f"{B}.json") == [2]
    assert numbers(tmp_path / "unresolved.json") == []
    stack.sink.stop()


def test_split_configuration_errors(tmp_path: Path) -> None:
    ctx = Context(loop=Loop())
    with pytest.raises(ConfigError, match="can only split by neutron.project_id"):
        make_stack([Src, (JsonOutput, {"file": tmp_path / "{project}.json", "split_by": "oob.prefix"})], ctx)
    with pytest.raises(ConfigError, match=r"option 'file' with split_by: must contain \{project\} exactly once"):
        make_stack([Src, (JsonOutput, {"file": tmp_path / "all.json", "split_by": "neutron.project_id"})], ctx)
    with pytest.raises(ConfigError, match="split_by needs mode file"):
        make_stack([Src, (JsonOutput, {"mode": "udp", "split_by": "neutron.project_id"})], ctx)
    with pytest.raises(ConfigError, match="must be in the file name"):
        make_stack([Src, (LogemuOutput, {"file": tmp_path / "{project}/x.log", "split_by": "neutron.project_id"})],
                   ctx)  # fmt: skip
    for out in ((JsonOutput, {"file": tmp_path / "{project}.json", "split_by": "neutron.project_id"}),
                (LogemuOutput, {"file": tmp_path / "{project}.log", "split_by": "neutron.project_id"})):
        with pytest.raises(PluginError, match="nothing before it in the stack produces that key"):
            make_stack([NoProject, out], ctx)


def test_each_project_file_is_a_chain_of_its_own(tmp_path: Path, monkeypatch: Any) -> None:
    """With chain_key (io/chain.py) every project's file verifies alone, also after its file was
    closed for room and opened again (the chain resumes from its last sealed line)."""
    from tests.audit_helpers import run

    monkeypatch.setattr(tenants, "MAX_OPEN", 2)
    work = tmp_path / "w"
    work.mkdir(mode=0o700)
    key = work / "chain.key"
    key.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    key.chmod(0o600)
    ctx = Context(loop=Loop())
    stack = make_stack([Src, (JsonOutput, {"file": work / "{project}.json", "split_by": "neutron.project_id",
                                           "timestamp": 0, "chain_key": key})], ctx)  # fmt: skip
    src: Any = stack.source
    for n in range(12):
        src.send(n, (A, B, None)[n % 3], A if n == 4 else None)
        stack.sink.flush()
    stack.sink.stop()
    assert numbers(work / f"{A}.json") == [0, 3, 4, 6, 9] and numbers(work / f"{B}.json") == [1, 4, 7, 10]
    for name, count in ((f"{A}.json", 5), (f"{B}.json", 4), ("unresolved.json", 4)):
        rc, out, err = run("verify", "--key", str(key), "--file", str(work / name))
        assert rc == 0 and err == "" and out.splitlines()[-1].endswith(": OK"), out
        assert f"{count} records in 1 chain(s), last seq {count} " in out, out
