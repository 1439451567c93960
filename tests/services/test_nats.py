"""NATS output and NATSIN input against a real nats-server with JetStream (started by the test on
ephemeral loopback ports: tests/natsserver.py; the machine's own server is never used), and the
collector's PGSQL output with ``unique_key`` against a PostgreSQL the test starts itself.

The node and the collector run in this process, each with its own context and event loop
(driven by :func:`pump` until the awaited event, with a deadline), the NATS client of each in
its own thread as in the daemon.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.core.plugin import Plugin
from pyulogd.core.stack import Stack
from pyulogd.io.loop import Loop
from pyulogd.io.natsmsg import escape_token
from pyulogd.plugins.inputs.natsin import NatsInput
from pyulogd.plugins.outputs.nats import NatsOutput
from pyulogd.plugins.outputs.pgsql import PgsqlOutput
from tests.helpers import Capture, NflogKeys, make_stack
from tests.natsserver import NatsCluster, have_nats_server, nats_server_version

pytest.importorskip("nats")
_skip = have_nats_server()
pytestmark = [pytest.mark.services, pytest.mark.skipif(_skip is not None, reason=_skip or "")]
STREAM = "PYN4T"


@pytest.fixture()
def nats() -> Iterator[NatsCluster]:
    c = NatsCluster(1)
    try:
        c.start()
        c.wait_ready()
        yield c
    finally:
        c.close()


def pump(ctxs: list[Context], done: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Run the loops until ``done()``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        for ctx in ctxs:
            ctx.loop.run_once(0.02)  # type: ignore[attr-defined]


def running(stack: Stack) -> Stack:
    for inst in stack.instances:
        inst.running()
    return stack


def stop(*stacks: Stack) -> None:
    for stack in stacks:
        for inst in reversed(stack.instances):
            inst.stop()


def node(urls: str, spool: str, node_id: str = "node-a", clock: FakeClock | None = None,
         **opts: Any) -> tuple[Context, NflogKeys, NatsOutput]:
    ctx = Context(loop=Loop(clock) if clock is not None else Loop(), hostname="net.node")
    ctx.node_id = node_id
    options = {"servers": urls, "create_stream": 1, "stream": STREAM, "subject": "pyn4.{host}.{node}",
               "spool_dir": spool, "linger": "10ms", "reconnect": "0.2", "reconnect_max": "1", "spool_delay": "0.2",
               "ack_timeout": "2", **opts}
    stack = running(make_stack([NflogKeys, (NatsOutput, options)], ctx))
    src, out = stack.instances
    assert isinstance(src, NflogKeys) and isinstance(out, NatsOutput)
    return ctx, src, out


def collector(urls: str, out: Plugin | tuple[type[Plugin], dict[str, Any]] | type[Plugin] = Capture,
              durable: str = "pyn4c", **opts: Any) -> tuple[Context, Stack]:
    ctx = Context(loop=Loop())
    stack = running(make_stack([(NatsInput, {"servers": urls, "stream": STREAM, "durable": durable,
                                             "keys_from": "NFLOG", **opts}), out], ctx))
    return ctx, stack


def emit(ctx: Context, src: NflogKeys, out: NatsOutput, first: int, n: int) -> None:
    for i in range(first, first + n):
        src.emit_dict({"oob.prefix": f"p{i}", "raw.pktlen": i, "oob.time.sec": 1_800_000_000 + i})
        if i % 50 == 0:
            out.flush()
    out.flush()


def consumer_info(urls: str, durable: str) -> Any:
    import nats as nats_py

    async def ask() -> Any:
        nc = await nats_py.connect(servers=urls.split(","))
        try:
            return await nc.jetstream().consumer_info(STREAM, durable)
        finally:
            await nc.close()

    return asyncio.run(ask())


def test_node_to_collector_with_original_keys_node_id_and_sequence(nats: NatsCluster, tmp_path: Any) -> None:
    nctx, src, out = node(nats.urls, str(tmp_path / "spool"))
    cctx, cstack = collector(nats.urls)
    cap = cstack.instances[1]
    assert isinstance(cap, Capture)
    try:
        emit(nctx, src, out, 1, 1200)
        pump([nctx, cctx], lambda: len(cap.records) >= 1200, what="1200 records at the collector")
        got = [(cap.value(r, "pyulogd.node_seq"), cap.value(r, "oob.prefix"), cap.value(r, "raw.pktlen"),
                cap.value(r, "pyulogd.node_id")) for r in cap.records]
        assert got == [(i, f"p{i}", i, "node-a") for i in range(1, 1201)]
        assert nctx.stats.get("nats.nats1.messages") == 3  # batch_size 500
        assert out.counters.written == 1200 and not out.counters.dropped
        assert out.commit_mark() == 1200  # all acknowledged
        # Acked only after the output took them (Capture is not an Output: committed at once).
        pump([nctx, cctx], lambda: consumer_info(nats.urls, "pyn4c").num_ack_pending == 0, what="acks")
        subject = f"pyn4.{escape_token('net.node')}.node-a"
        assert subject == "pyn4.net%2Enode.node-a"
    finally:
        stop(cstack)
        out.stop()


def test_broker_away_spools_then_drains_in_order_across_a_node_restart(tmp_path: Any) -> None:
    c = NatsCluster(1)
    spool = str(tmp_path / "spool")
    try:
        # No broker at all: everything goes to the spool; the node stops and starts again.
        nctx, src, out = node(c.urls, spool)
        emit(nctx, src, out, 1, 300)
        assert out.publisher is not None
        pump([nctx], lambda: nctx.stats.get("nats.nats1.spooled") == 300, what="300 records spooled")
        out.stop()
        assert os.listdir(spool)
        nctx, src, out = node(c.urls, spool)
        nctx.seq = 300  # as the write-ahead log will: the sequence goes on across restarts
        emit(nctx, src, out, 301, 100)
        pump([nctx], lambda: nctx.stats.get("nats.nats1.spooled") == 100, what="100 more spooled")
        assert out.commit_mark() <= 300  # what waits in the spool is not acknowledged
        c.start()
        c.wait_ready()
        cctx, cstack = collector(c.urls)
        cap = cstack.instances[1]
        assert isinstance(cap, Capture)
        pump([nctx, cctx], lambda: len(cap.records) >= 400, what="400 records after the outage")
        seqs = [cap.value(r, "pyulogd.node_seq") for r in cap.records]
        assert seqs == list(range(1, 401))  # nothing lost, nothing doubled, in order
        assert out.publisher is not None and out.publisher.spool is not None
        pump([nctx], lambda: out.publisher is not None and out.publisher.idle(), what="spool drained")
        assert out.commit_mark() == 400
        assert not out.counters.dropped
        stop(cstack)
    finally:
        out.stop()
        c.close()


def test_a_message_published_again_is_dropped_by_jetstream(nats: NatsCluster, tmp_path: Any) -> None:
    """The same records give the same Nats-Msg-Id, whichever batch or process carries them.
    (The same records: the same values, sequence numbers and reception time, hence a clock that
    stands still; batch_size=100 makes each message due at once, whatever the clock.)"""
    nctx, src, out = node(nats.urls, str(tmp_path / "a"), batch_size=100, clock=FakeClock(wall=1_800_000_000.0))
    emit(nctx, src, out, 1, 100)
    pump([nctx], lambda: nctx.stats.get("nats.nats1.messages") == 1, what="published")
    out.stop()
    # A second process numbering the same records the same way (a replay after a lost ack).
    nctx2, src2, out2 = node(nats.urls, str(tmp_path / "b"), batch_size=100, clock=FakeClock(wall=1_800_000_000.0))
    emit(nctx2, src2, out2, 1, 100)
    pump([nctx2], lambda: nctx2.stats.get("nats.nats1.messages") == 1, what="published again")
    assert nctx2.stats.get("nats.nats1.duplicates") == 100
    cctx, cstack = collector(nats.urls)
    cap = cstack.instances[1]
    assert isinstance(cap, Capture)
    try:
        pump([cctx], lambda: len(cap.records) >= 100, what="records")
        pump([cctx], lambda: consumer_info(nats.urls, "pyn4c").num_pending == 0, timeout=5, what="nothing more")
        assert len(cap.records) == 100
    finally:
        stop(cstack)
        out2.stop()


def test_a_full_spool_drops_and_counts_never_silently(tmp_path: Any) -> None:
    """No broker and a spool of 4 KiB: what does not fit is dropped and counted by cause."""
    c = NatsCluster(1)  # never started: nothing listens on its port
    try:
        nctx, src, out = node(c.urls, str(tmp_path / "spool"), spool_max="4K", batch_size=20)
        emit(nctx, src, out, 1, 400)
        pump([nctx], lambda: nctx.stats.get("nats.nats1.spooled") + nctx.stats.get("nats.nats1.dropped") == 400,
             what="every record spooled or dropped")
        spooled, dropped = nctx.stats.get("nats.nats1.spooled"), nctx.stats.get("nats.nats1.dropped")
        assert 0 < spooled < 400 and dropped == 400 - spooled
        assert out.counters.dropped == {"spool_full": dropped} and out.counters.received == 400
    finally:
        out.stop()
        c.close()


def _tls_files(d: Any) -> tuple[str, str, str]:
    ca_key, ca, key, csr, cert = (str(d / n) for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
        "-subj", "/CN=pyn4 test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "2",
        "-extfile", str(ext))
    return ca, cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_tls_and_a_password_both_ways(tmp_path: Any) -> None:
    """A server that wants TLS and a user: the node and the collector get through with the CA
    file and the password from a file; a wrong password is an outage (spooled), never a crash."""
    ca, cert, key = _tls_files(tmp_path)
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "bad").write_text("nope\n")
    c = NatsCluster(1, extra=f'tls {{ cert_file: "{cert}", key_file: "{key}" }}\n'
                             'authorization { user: "pyn4node", password: "s3cret" }')
    try:
        c.start()
        c.wait_ready()
        urls = c.urls.replace("nats://", "tls://")
        auth = {"user": "pyn4node", "pass_file": str(tmp_path / "pw"), "tls_ca": ca}
        nctx, src, out = node(urls, str(tmp_path / "spool"), **auth)
        cctx, cstack = collector(urls, **auth)
        cap = cstack.instances[1]
        assert isinstance(cap, Capture)
        emit(nctx, src, out, 1, 100)
        pump([nctx, cctx], lambda: len(cap.records) == 100, what="100 records over TLS")
        stop(cstack)
        out.stop()
        bctx, bsrc, bout = node(urls, str(tmp_path / "spool2"), user="pyn4node", pass_file=str(tmp_path / "bad"),
                                tls_ca=ca)
        emit(bctx, bsrc, bout, 1, 10)
        pump([bctx], lambda: bctx.stats.get("nats.nats1.spooled") == 10, what="spooled: the server refused us")
        bout.stop()
    finally:
        c.close()


# -- the collector's PGSQL: acks wait for the commit; unique_key drops what is there already

TABLE = """CREATE TABLE rec (_id bigserial, oob_prefix text, raw_pktlen integer, oob_time_sec bigint,
                             pyulogd_node_id text, pyulogd_node_seq bigint,
                             UNIQUE (pyulogd_node_id, pyulogd_node_seq, oob_time_sec))"""


@pytest.fixture()
def pg() -> Iterator[Any]:
    from tests.services.servers import PgCluster, pg_bindir

    if pg_bindir() is None:
        pytest.skip("PostgreSQL server binaries are not installed")
    cluster = PgCluster()
    try:
        cluster.start()
        cluster.psql("CREATE DATABASE pyn4")
        cluster.psql(TABLE, db="pyn4")
        yield cluster
    finally:
        cluster.close()


def rows(pg: Any) -> list[tuple[str, int]]:
    out = pg.psql("SELECT pyulogd_node_id, pyulogd_node_seq FROM rec ORDER BY pyulogd_node_seq", db="pyn4")
    return [(a, int(b)) for a, b in (line.split("|") for line in out.split())]


def pgsql_out(pg: Any, tmp: str) -> tuple[type[Plugin], dict[str, Any]]:
    return (PgsqlOutput, {"db": "pyn4", "host": "127.0.0.1", "port": pg.port, "user": "postgres", "table": "rec",
                          "procedure": "INSERT", "unique_key": "pyulogd_node_id,pyulogd_node_seq,oob_time_sec",
                          "spool_dir": tmp, "batch_timeout": "50ms", "reconnect": "0.2", "reconnect_max": "0.5"})


def test_collector_acks_only_committed_records_and_the_table_drops_redeliveries(
    nats: NatsCluster, pg: Any, tmp_path: Any
) -> None:
    nctx, src, out = node(nats.urls, str(tmp_path / "spool"), batch_size=50)
    cctx, cstack = collector(nats.urls, pgsql_out(pg, str(tmp_path / "cspool")), ack_wait="4")
    pgout = cstack.instances[1]
    assert isinstance(pgout, PgsqlOutput)
    try:
        pg.stop()
        emit(nctx, src, out, 1, 200)
        pump([nctx, cctx], lambda: cctx.stats.get("natsin.natsin0.records") >= 200, what="delivered")
        # The database is down: the rows wait (memory, then the collector's spool), nothing is acked,
        # and in-progress acks keep the messages from being redelivered past ack_wait.
        t_end = time.monotonic() + 5
        pump([nctx, cctx], lambda: time.monotonic() > t_end, what="waiting")
        info = consumer_info(nats.urls, "pyn4c")
        assert info.num_ack_pending == 4 and info.num_redelivered == 0
        assert cctx.stats.get("natsin.natsin0.acked") == 0
        pg.start()
        pump([nctx, cctx], lambda: consumer_info(nats.urls, "pyn4c").num_ack_pending == 0, what="acked")
        assert rows(pg) == [("node-a", i) for i in range(1, 201)]
    finally:
        stop(cstack)
    # A second consumer reads the whole stream again: every row is there already, none doubled.
    cctx, cstack = collector(nats.urls, pgsql_out(pg, str(tmp_path / "cspool2")), durable="pyn4again")
    try:
        pump([cctx], lambda: cctx.stats.get("sql.pgsql1.duplicates") == 200, what="duplicates skipped")
        assert rows(pg) == [("node-a", i) for i in range(1, 201)]
    finally:
        stop(cstack)
        out.stop()


def test_messages_the_consumer_skips_after_the_stream_lost_its_tail_are_read_again(tmp_path: Any) -> None:
    """The five-node failure test's loss, made on purpose: a stop of the broker loses the last
    message the consumer had delivered (here: the stream's store rolled back to before it, as
    nats-server 2.9 did when the whole cluster stopped), so the consumer's delivered sequence is
    ahead of the stream; the next message stored takes that sequence number and the consumer
    never delivers it. NATSIN reads it again from the stream after the outage.

    A broker that rewinds the consumer to the stream when it comes back (nats-server 2.15.1
    does: delivered and ack floor set to the stream's last sequence) delivers record 4 itself;
    then the test checks only that it arrives once (NATSIN's reading again is not exercised:
    there is nothing to read again), and says which case it met in its output."""
    import nats as nats_py

    from pyulogd.io.natsmsg import HDR_NODE
    from pyulogd.io.recordfmt import encode_batch

    server = NatsCluster(1)
    store = os.path.join(server.dir, "js0", "jetstream", "$G", "streams", STREAM, "msgs")

    async def publish(*seqs: int) -> list[int]:
        nc = await nats_py.connect(servers=server.urls.split(","))
        try:
            js = nc.jetstream()
            try:
                await js.stream_info(STREAM)
            except Exception:  # noqa: BLE001 - not there yet
                await js.add_stream(name=STREAM, subjects=["pyn4.>"])
            return [(await js.publish("pyn4.n", encode_batch(("oob.prefix",), [(f"p{s}",)], [s]),
                                      headers={HDR_NODE: "node-a"})).seq for s in seqs]
        finally:
            await nc.close()

    try:
        server.start()
        server.wait_ready()
        assert asyncio.run(publish(1, 2)) == [1, 2]
        server.stop()
        shutil.copytree(store, tmp_path / "before")  # the stream as it will come back
        server.start()
        server.wait_ready()
        cctx, cstack = collector(server.urls, durable="pyn4skip", ack_wait="5")
        cap = cstack.instances[1]
        assert isinstance(cap, Capture)
        seqs = lambda: [cap.value(r, "pyulogd.node_seq") for r in cap.records]  # noqa: E731
        try:
            assert asyncio.run(publish(3)) == [3]
            pump([cctx], lambda: seqs() == [1, 2, 3], what="the first three records")
            pump([cctx], lambda: consumer_info(server.urls, "pyn4skip").ack_floor.stream_seq == 3, what="acks")
            server.stop()
            pump([cctx], lambda: cctx.stats.get("natsin.natsin0.outages") == 1, what="the collector sees the outage")
            shutil.rmtree(store)
            shutil.copytree(tmp_path / "before", store)  # message 3 is lost, the consumer's state is not
            server.start()
            server.wait_ready()
            # Nothing new is stored until record 4, so the consumer's position stays as it came back.
            ahead = consumer_info(server.urls, "pyn4skip").delivered.stream_seq > 2
            print(f"{nats_server_version()}: consumer {'ahead of' if ahead else 'rewound to'} the stream")
            assert asyncio.run(publish(4)) == [3]  # record 4 takes stream sequence 3
            if ahead:  # nats-server 2.9: sequence 3 counts as delivered already
                info = consumer_info(server.urls, "pyn4skip")
                assert info.delivered.stream_seq == 3 and info.num_pending == 0  # the broker's view: nothing to send
            pump([cctx], lambda: 4 in seqs(), what="record 4 (read again from the stream if the consumer skips it)")
            # Read again: what was stored since the outage (with a margin for clocks: 1 and 2
            # too here, written a moment before it), which the database's unique key drops.
            assert seqs()[:3] == [1, 2, 3] and seqs()[-1] == 4 and seqs().count(4) == 1
            if ahead:
                assert cctx.stats.get("natsin.natsin0.reread") == len(seqs()) - 3
        finally:
            stop(cstack)
    finally:
        server.close()
