"""The OVSDB client of the NEUTRON filter: the stream framer and the Interface table
(codec/ovsdb.py), the client on the loop (io/ovsdb.py) against the exchange recorded from a
real ovsdb-server (tests/vectors/ovsdb/session.jsonl, made by record.py next to it), and
against a real ovsdb-server started in a temporary directory (Debian openvswitch-switch).

Time the client waits (back-off between attempts) passes on a FakeClock; real time is only
waited for real events (the server answering), with deadlines.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyulogd.codec import ovsdb
from pyulogd.core.errors import DecodeError
from pyulogd.io.ovsdb import MONITOR_ID, OvsdbMonitor, socket_path
from tests.clocked import fake_context, loop_until
from tests.ovsdb_helpers import FakeServer

SESSION = Path(__file__).resolve().parents[1] / "vectors" / "ovsdb" / "session.jsonl"
SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
PORT = "1a2b3c4d-5e6f-4a1b-9c2d-3e4f5a6b7c8d"
GW = "9f8e7d6c-5b4a-4c3d-8e2f-1a0b9c8d7e6f"


def session() -> list[dict[str, str]]:
    return [json.loads(line) for line in SESSION.read_text().splitlines()]


def received() -> list[str]:
    return [e["data"] for e in session() if e["dir"] == "recv"]


# -- framer


def test_framer_whole_and_split_at_every_byte() -> None:
    chunks = received()
    expected = [json.loads(c) for c in chunks]
    stream = "\n".join(chunks).encode()
    assert ovsdb.Framer().feed(stream) == expected
    for cut in range(1, len(stream)):
        f = ovsdb.Framer()
        assert f.feed(stream[:cut]) + f.feed(stream[cut:]) == expected, cut


def test_framer_one_byte_at_a_time_with_tricky_strings() -> None:
    msgs = [{"method": "update", "params": ["m", {"s": 'brace } [ quote \\" back\\\\ é ü {'}], "id": None},
            {"id": 7, "result": {"a": ["}", "{", "\\"]}, "error": None}]
    data = b"  ".join(json.dumps(m, ensure_ascii=False).encode() for m in msgs) + b"\n"
    f = ovsdb.Framer()
    out: list[Any] = []
    for i in range(len(data)):
        out += f.feed(data[i:i + 1])
    assert out == msgs


@pytest.mark.parametrize("data", [b"[1,2]", b"garbage {}", b"{} x", b"}", b"{\"a\": 1]]", b"\xff{}", b"{\"a\": tru}"])
def test_framer_refuses_what_is_not_json_rpc(data: bytes) -> None:
    with pytest.raises(DecodeError):
        ovsdb.Framer().feed(data)


def test_framer_bounds_a_message() -> None:
    f = ovsdb.Framer(max_message=100)
    f.feed(b'{"a": "' + b"x" * 50)
    with pytest.raises(DecodeError, match="longer than 100"):
        f.feed(b"x" * 60)


# -- the table


def test_interface_table_follows_the_recorded_session() -> None:
    msgs = [json.loads(c) for c in received()]
    t = ovsdb.InterfaceTable()
    assert t.replace(msgs[0]["result"]) == {"br-int", "qr-1a2b3c4d-5e"}
    assert t.by_name["qr-1a2b3c4d-5e"] == ovsdb.Iface(PORT, "fa:16:3e:11:22:33", None)
    assert t.by_name["br-int"] == ovsdb.Iface(None, None, None)
    assert t.apply(msgs[1]["params"][1]) == {"qg-9f8e7d6c-5b"}
    assert t.by_name["qg-9f8e7d6c-5b"].iface_id == GW
    assert t.apply(msgs[2]["params"][1]) == {"qr-1a2b3c4d-5e"}  # iface-status changed: same answer, reported
    assert t.by_name["qr-1a2b3c4d-5e"].iface_id == PORT
    assert t.apply(msgs[3]["params"][1]) == {"qr-1a2b3c4d-5e"}
    assert set(t.by_name) == {"br-int", "qg-9f8e7d6c-5b"} and len(t) == 2


def test_interface_table_rename_and_replace() -> None:
    t = ovsdb.InterfaceTable()
    row = {"name": "tap1", "external_ids": ["map", [["iface-id", PORT], ["vm-uuid", "vm-1"]]]}
    t.apply({"Interface": {"u1": {"new": row}}})
    assert t.by_name["tap1"].vm_uuid == "vm-1"
    # a modify whose "new" lacks external_ids keeps what the row said
    assert t.apply({"Interface": {"u1": {"new": {"name": "tap2"}, "old": {"name": "tap1"}}}}) == {"tap1", "tap2"}
    assert "tap1" not in t.by_name and t.by_name["tap2"].iface_id == PORT
    assert t.replace({"Interface": {}}) == {"tap2"} and not t.by_name
    with pytest.raises(DecodeError):
        t.apply({"Interface": {"u2": "nonsense"}})


def test_monitor_request_is_what_the_server_got() -> None:
    sent = [e["data"] for e in session() if e["dir"] == "send"]
    req = ovsdb.monitor_request(1, MONITOR_ID, {"Interface": ["name", "external_ids"]})
    assert req.decode() == sent[0]


def test_socket_path() -> None:
    assert socket_path("unix:/run/openvswitch/db.sock") == "/run/openvswitch/db.sock"
    assert socket_path("/x/db.sock") == "/x/db.sock"
    for bad in ("tcp:127.0.0.1:6640", "relative.sock", "unix:"):
        with pytest.raises(ValueError):
            socket_path(bad)


# -- the client against the recorded server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FakeServer]:
    s = FakeServer(tmp_path / "db.sock")
    yield s
    s.close()


def capture_log(ctx: Any) -> io.StringIO:
    ctx.log.stream = buf = io.StringIO()
    ctx.log.path = "test"
    return buf


def monitor_on(ctx: Any, path: Path, changes: list[set[str]]) -> OvsdbMonitor:
    return OvsdbMonitor(ctx, str(path), changes.append, "NEUTRON 't'", "neutron.t", rand=lambda: 0.0)


def test_client_replays_the_recorded_session(server: FakeServer) -> None:
    ctx, _clock = fake_context()
    changes: list[set[str]] = []
    mon = monitor_on(ctx, server.path, changes)
    mon.start()
    conn = server.accept()
    sent = [e["data"] for e in session() if e["dir"] == "send"]
    assert server.read_request().decode() == sent[0]
    replies = received()
    # the first reply in two pieces, cut inside a string
    first = replies[0].encode()
    conn.sendall(first[:50])
    ctx.loop.run_once(0.2)
    assert not mon.synced
    conn.sendall(first[50:])
    loop_until(ctx, lambda: mon.synced)
    assert changes == [{"br-int", "qr-1a2b3c4d-5e"}]
    conn.sendall("".join(replies[1:]).encode())  # three updates in one read
    loop_until(ctx, lambda: len(changes) == 4)
    assert set(mon.table.by_name) == {"br-int", "qg-9f8e7d6c-5b"}
    assert ctx.stats.get("neutron.t.ovsdb_updates") == 3 and ctx.stats.get("neutron.t.ovsdb_resyncs") == 1
    mon.stop()


def test_client_answers_echo(server: FakeServer) -> None:
    ctx, _clock = fake_context()
    mon = monitor_on(ctx, server.path, [])
    mon.start()
    conn = server.accept()
    server.read_request()
    conn.sendall(b'{"id":"echo","method":"echo","params":[]}')
    ctx.loop.run_once(0.5)
    assert json.loads(conn.recv(4096)) == {"result": [], "error": None, "id": "echo"}
    mon.stop()


def test_client_reconnects_with_backoff_and_resyncs(server: FakeServer) -> None:
    ctx, clock = fake_context()
    changes: list[set[str]] = []
    mon = monitor_on(ctx, server.path, changes)
    mon.start()
    conn = server.accept()
    server.read_request()
    conn.sendall(received()[0].encode())
    loop_until(ctx, lambda: mon.synced)
    conn.close()  # the server goes away
    loop_until(ctx, lambda: mon.sock is None)
    assert ctx.stats.get("neutron.t.ovsdb_disconnects") == 1
    assert set(mon.table.by_name) == {"br-int", "qr-1a2b3c4d-5e"}  # kept while away
    ctx.loop.run_once(0)
    assert server.listener.fileno() >= 0
    server.listener.settimeout(0.2)
    with pytest.raises(TimeoutError):
        server.listener.accept()  # no attempt before the first wait
    clock.advance(1.0)
    ctx.loop.run_once(0)
    conn = server.accept()
    server.read_request()
    # the new monitor's reply no longer has qr-: it is gone from the table
    conn.sendall(b'{"id":2,"result":{"Interface":{}},"error":null}')
    loop_until(ctx, lambda: mon.synced)
    assert mon.table.by_name == {} and changes[-1] == {"br-int", "qr-1a2b3c4d-5e"}
    assert ctx.stats.get("neutron.t.ovsdb_resyncs") == 2
    mon.stop()


def test_client_drops_a_server_that_speaks_nonsense(server: FakeServer) -> None:
    ctx, _clock = fake_context()
    log = capture_log(ctx)
    mon = monitor_on(ctx, server.path, [])
    mon.start()
    conn = server.accept()
    server.read_request()
    conn.sendall(b'{"id":1,"result":null,"error":"unknown table"}')
    loop_until(ctx, lambda: mon.sock is None)
    assert ctx.stats.get("neutron.t.ovsdb_protocol_errors") == 1
    assert "the server refused the monitor: unknown table" in log.getvalue()
    mon.stop()


def test_unreachable_server_is_counted_logged_once_and_retried_with_doubling_waits(tmp_path: Path) -> None:
    ctx, clock = fake_context()
    log = capture_log(ctx)
    mon = monitor_on(ctx, tmp_path / "nothing.sock", [])
    mon.start()
    assert ctx.stats.get("neutron.t.ovsdb_connect_failures") == 1
    waits = []
    for _ in range(7):
        waits.append(mon.backoff.remaining(clock.monotonic()))
        clock.advance(waits[-1])
        ctx.loop.run_once(0)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0]
    assert ctx.stats.get("neutron.t.ovsdb_connect_failures") == 8
    # logged at the first failure (t=0), then at most once per 10 s with the count since:
    # failures at t = 1, 3, 7, 15 | 31 | 63 | 123
    lines = [line for line in log.getvalue().splitlines() if "cannot use ovsdb-server" in line]
    assert len(lines) == 5
    assert "No such file or directory (1 attempt(s) failed)" in lines[0] and "next try in 1 s" in lines[0]
    assert "(4 attempt(s) failed)" in lines[1] and "(1 attempt(s) failed)" in lines[2]
    mon.stop()
    clock.advance(120)
    ctx.loop.run_once(0)
    assert ctx.stats.get("neutron.t.ovsdb_connect_failures") == 8  # stopped: no more attempts


# -- against a real ovsdb-server


class RealServer:
    """ovsdb-server on a database of its own in the test's directory (no root needed)."""

    def __init__(self, d: Path) -> None:
        self.dir = d
        self.sock = str(d / "db.sock")
        self.proc: subprocess.Popen[bytes] | None = None
        self.vsctl = ["ovs-vsctl", f"--db=unix:{self.sock}", "--no-wait"]
        subprocess.run(["ovsdb-tool", "create", str(d / "db"), SCHEMA], check=True)

    def start(self) -> None:
        if os.path.exists(self.sock):
            os.unlink(self.sock)  # a stale name must not pass for the new server's
        self.proc = subprocess.Popen(["ovsdb-server", str(self.dir / "db"), f"--remote=punix:{self.sock}",
                                      f"--unixctl={self.dir}/ctl", "--no-chdir", f"--log-file={self.dir}/log"])
        deadline = time.monotonic() + 10
        while not os.path.exists(self.sock):
            assert time.monotonic() < deadline, "ovsdb-server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def vs(self, *args: str) -> None:
        subprocess.run([*self.vsctl, *args], check=True, capture_output=True)


@pytest.fixture
def real_server(tmp_path: Path) -> Iterator[RealServer]:
    tools = ("ovsdb-server", "ovsdb-tool", "ovs-vsctl")
    if not all(shutil.which(t) for t in tools) or not os.path.exists(SCHEMA):
        pytest.skip("needs Debian's openvswitch-switch (ovsdb-server, ovsdb-tool, ovs-vsctl)")
    d = tmp_path / "ovs"
    d.mkdir()
    srv = RealServer(d)
    srv.start()
    try:
        srv.vs("init")
        srv.vs("add-br", "br-int")
        yield srv
    finally:
        srv.stop()


def test_real_ovsdb_server_inserts_changes_deletes_and_restart(real_server: RealServer) -> None:
    srv = real_server
    ctx, clock = fake_context()
    changes: list[set[str]] = []
    mon = OvsdbMonitor(ctx, srv.sock, changes.append, "NEUTRON 't'", "neutron.t", rand=lambda: 0.0)
    mon.start()
    loop_until(ctx, lambda: mon.synced, timeout=10)
    assert set(mon.table.by_name) == {"br-int"}
    srv.vs("add-port", "br-int", "qr-1a2b3c4d-5e", "--", "set", "Interface", "qr-1a2b3c4d-5e", "type=internal",
           f"external_ids:iface-id={PORT}", "external_ids:attached-mac=fa:16:3e:11:22:33")
    loop_until(ctx, lambda: "qr-1a2b3c4d-5e" in mon.table.by_name, timeout=10)
    assert mon.table.by_name["qr-1a2b3c4d-5e"] == ovsdb.Iface(PORT, "fa:16:3e:11:22:33", None)
    srv.vs("set", "Interface", "qr-1a2b3c4d-5e", f"external_ids:iface-id={GW}")
    loop_until(ctx, lambda: mon.table.by_name["qr-1a2b3c4d-5e"].iface_id == GW, timeout=10)
    srv.vs("del-port", "br-int", "qr-1a2b3c4d-5e")
    loop_until(ctx, lambda: "qr-1a2b3c4d-5e" not in mon.table.by_name, timeout=10)
    assert {"qr-1a2b3c4d-5e"} in changes
    # The server restarts: the client notices, keeps what it knew, and after its back-off
    # wait (fake time) finds the server again and takes the new state as a whole.
    srv.stop()
    loop_until(ctx, lambda: mon.sock is None, timeout=10)
    assert ctx.stats.get("neutron.t.ovsdb_disconnects") == 1 and set(mon.table.by_name) == {"br-int"}
    srv.start()
    # changed before the client is back (it waits for its back-off on the fake clock)
    srv.vs("add-port", "br-int", "tap11112222-33", "--", "set", "Interface", "tap11112222-33",
           "external_ids:iface-id=11112222-3333-4444-8555-666677778888")
    assert not mon.synced
    clock.advance(mon.backoff.remaining(clock.monotonic()))
    loop_until(ctx, lambda: mon.synced, timeout=10)
    assert mon.table.by_name["tap11112222-33"].iface_id == "11112222-3333-4444-8555-666677778888"
    assert ctx.stats.get("neutron.t.ovsdb_resyncs") == 2
    mon.stop()
