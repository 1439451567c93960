"""Many nodes, one audit store, through failures (issue 18 item 4): nothing lost, nothing doubled.

Five node daemons (pyulogd processes, each with its NFLOG and NFCT inputs in a network
namespace of its own, where a traffic generator sends UDP, a new flow every 50 packets, that an
nft rule logs), a three-server JetStream
cluster started here on ephemeral loopback ports with a stream of 3 replicas, two collector
daemons sharing one durable consumer (NATSIN -> AUDITDB), and a PostgreSQL started here with
the central layout (``pyulogd-audit schema create --central``). During the traffic:

1. one NATS server is SIGKILLed and brought back;
2. the whole cluster is stopped for 20 s (the issue's outage);
3. the whole cluster is stopped again for 8 s: longer than the stream's duplicate window,
   which is configured to 5 s here instead of JetStream's 120 s so that the test stays short
   (what matters is that republished messages are no longer de-duplicated by JetStream and
   must be by the database; 5 s is past it as much as 120 s would be, in a fifth of the time);
4. one collector is SIGKILLed (its unacked messages are redelivered to the other one after
   ack_wait) and started again;
5. PostgreSQL is restarted.

The daemons log at debug level (``loglevel=1``): every publish and its ack (stream sequence)
on the nodes, every message (stream sequence, records) and ack on the collectors; with the
stream read back on failure (``in_stream``), a missing record can be followed hop by hop.

At the end the table holds, for every node, exactly as many rows as the node logged (packets:
its nft log rule's counter; flows: the conntrack events its NFCT input counted), numbered 1..N
by the node's sequence (both stacks share it), with no number twice and none missing.

Marked ``nats_e2e`` so it can be run alone: ``pytest -m nats_e2e tests/services/test_nats_e2e.py``
(about 2.5 minutes). Names, namespaces and the NATS stream carry the prefix ``pyn4``
(namespaces: ``PYULOGD_TEST_NETNS_PREFIX`` if set, for a run beside another one). The broker is
``PYULOGD_TEST_NATS_SERVER`` if set (tests/natsserver.py): its version is in pytest's header
and in a failure's message, since the defects this test met after whole-cluster stops are the
broker's (docs/central.md).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyulogd.audit.cli import main as audit_main
from tests.linux.lab import have_root_and_tools, sh, wait_for
from tests.natsserver import NatsCluster, have_nats_server, nats_server_version
from tests.services.servers import PgCluster, pg_bindir

pytest.importorskip("nats")
pytest.importorskip("psycopg")
_skip = have_root_and_tools() or have_nats_server() or (None if pg_bindir() else "no PostgreSQL server binaries")
pytestmark = [pytest.mark.nats_e2e, pytest.mark.services, pytest.mark.linux,
              pytest.mark.skipif(_skip is not None, reason=_skip or "")]

NODES = 5
GROUP = 7
RATE = 150  # packets per second per node: 750/s in all, for about 100 s
STREAM = "PYN4E2E"
DURABLE = "pyn4-collectors"
NETNS_PREFIX = os.environ.get("PYULOGD_TEST_NETNS_PREFIX") or "pyn4"


class Node:
    def __init__(self, i: int, tmp: Path, urls: str) -> None:
        self.i = i
        self.ns = f"{NETNS_PREFIX}-{os.getpid()}-n{i}"
        self.conf = tmp / f"node{i}.conf"
        self.log = tmp / f"node{i}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.traffic: subprocess.Popen[bytes] | None = None
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "set", "lo", "up", ns=self.ns)
        # Conntrack runs in a namespace once a rule uses it; short UDP timeouts, so that flows
        # end (DESTROY events) while the test runs.
        sh("sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=3", ns=self.ns, check=False)
        sh("nft", "-f", "-", ns=self.ns, input=f"""table inet pyn4 {{
  chain out {{ type filter hook output priority 0; policy accept;
    ct state new counter
    udp dport 9999 counter log prefix "pyn4 n{i} " group {GROUP}
  }}
}}""")
        self.conf.write_text(f"""[global]
logfile="{self.log}"
loglevel=1
stack=log1:NFLOG,base1:BASE,nats1:NATS
stack=ct1:NFCT,nats2:NATS

[log1]
group={GROUP}
network_namespace_path="/run/netns/{self.ns}"
netlink_socket_buffer_size=8388608
netlink_socket_buffer_maxsize=67108864

[nats1]
servers="{urls}"
stream="{STREAM}"
subject="pyn4.{{node}}"
node_id="node{i}"
create_stream=1
replicas=3
duplicate_window=5
spool_dir="{tmp}/node{i}.spool"
batch_size=200
linger=100ms
ack_timeout=2
reconnect=0.2
reconnect_max=1
spool_delay=1

[ct1]
network_namespace_path="/run/netns/{self.ns}"
hash_enable=0
event_mask=5
netlink_socket_buffer_size=8388608
netlink_socket_buffer_maxsize=67108864

[nats2]
servers="{urls}"
stream="{STREAM}"
subject="pyn4.{{node}}"
node_id="node{i}"
create_stream=1
replicas=3
duplicate_window=5
spool_dir="{tmp}/node{i}.ctspool"
batch_size=200
linger=100ms
ack_timeout=2
reconnect=0.2
reconnect_max=1
spool_delay=1
""")

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "pyulogd", "-c", str(self.conf)])
        groups = lambda: sh("cat", "/proc/net/netfilter/nfnetlink_log", ns=self.ns, check=False).stdout  # noqa: E731
        wait_for(lambda: re.search(rf"^\s*{GROUP}\s", groups(), re.M), 30, f"node {self.i} to bind NFLOG")

    def flood(self, seconds: float) -> None:
        code = f"""
import socket, time
t0 = time.monotonic(); i = 0
while time.monotonic() - t0 < {seconds}:
    if i % 50 == 0:  # a new source port: a new conntrack flow every 50 packets
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x" * (1 + i % 50), ("127.0.0.1", 9999)); i += 1
    ahead = i / {RATE} - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
"""
        self.traffic = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-c", code])

    def flow_events(self) -> int:
        """What the node's NFCT input read (its counters at exit, after a clean stop)."""
        found = re.findall(r"nfct\.ct1\.events=(\d+)", self.log.read_text(errors="replace"))
        assert found, f"no NFCT counter in {self.log}"
        return int(found[-1])

    def logged(self) -> int:
        out = sh("nft", "list", "chain", "inet", "pyn4", "out", ns=self.ns).stdout
        m = re.search(r"counter packets (\d+)", out)
        assert m is not None, out
        return int(m[1])

    def stop(self) -> None:
        for p in (self.traffic, self.proc):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)

    def delete(self) -> None:
        self.stop()
        sh("ip", "netns", "del", self.ns, check=False)


class Collector:
    def __init__(self, i: int, tmp: Path, urls: str, pg_port: int) -> None:
        self.i = i
        self.conf = tmp / f"collector{i}.conf"
        self.log = tmp / f"collector{i}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf.write_text(f"""[global]
logfile="{self.log}"
loglevel=1
stack=in1:NATSIN,db1:AUDITDB

[in1]
servers="{urls}"
stream="{STREAM}"
durable="{DURABLE}"
ack_wait=10
max_inflight=128
fetch_batch=32

[db1]
db="postgresql://postgres@127.0.0.1:{pg_port}/central"
create=0
spool_dir="{tmp}/collector{i}.spool"
batch_size=2000
batch_timeout=200ms
reconnect=0.5
reconnect_max=2
""")

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "pyulogd", "-c", str(self.conf)])

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[tuple[NatsCluster, PgCluster, list[Node], list[Collector]]]:
    os.chmod(tmp_path, 0o755)
    nats = NatsCluster(3)
    pg = PgCluster()
    nodes: list[Node] = []
    collectors: list[Collector] = []
    try:
        nats.start()
        nats.wait_ready()
        pg.start()
        pg.psql("CREATE DATABASE central")
        assert audit_main(["schema", "create", "--central", "--db",
                           f"postgresql://postgres@127.0.0.1:{pg.port}/central"]) == 0
        nodes = [Node(i, tmp_path, nats.urls) for i in range(NODES)]
        collectors = [Collector(i, tmp_path, nats.urls, pg.port) for i in range(2)]
        yield nats, pg, nodes, collectors
    finally:
        for c in collectors:
            c.stop()
        for n in nodes:
            n.delete()
        nats.stop()
        for f in os.listdir(nats.dir):
            if f.endswith(".log"):
                shutil.copy(os.path.join(nats.dir, f), tmp_path / f"nats-{f}")
        nats.close()
        pg.close()


def consumer_state(urls: str) -> str:
    import asyncio

    import nats as nats_py

    async def ask() -> str:
        nc = await nats_py.connect(servers=urls.split(","))
        try:
            info = await nc.jetstream().consumer_info(STREAM, DURABLE)
            return (f"pending {info.num_pending}, ack pending {info.num_ack_pending}, "
                    f"redelivered {info.num_redelivered}, delivered {info.delivered}")
        finally:
            await nc.close()

    return asyncio.run(ask())


def missing_seqs(pg: PgCluster, logged: dict[str, int]) -> dict[str, list[int]]:
    """node -> the sequence numbers from 1 to what it logged (or its highest row) that have no row."""
    out: dict[str, list[int]] = {}
    for node, n in logged.items():
        top = f"GREATEST({int(n)}, (SELECT max(node_seq) FROM pyulogd_audit WHERE node_id = '{node}'))"
        text = pg.psql(f"SELECT s FROM generate_series(1, {top}) s WHERE NOT EXISTS (SELECT 1 FROM pyulogd_audit "
                       f"WHERE node_id = '{node}' AND node_seq = s) ORDER BY 1", db="central")
        out[node] = [int(x) for x in text.split()]
    return out


def in_stream(urls: str, wanted: dict[str, list[int]]) -> str:
    """Where the missing records are in the stream: for each (node, seq) wanted, the stream
    messages holding it (stream sequence, Nats-Msg-Id), read with direct gets."""
    import asyncio

    import nats as nats_py

    from pyulogd.io.recordfmt import decode_batch

    want = {(n, s) for n, seqs in wanted.items() for s in seqs}

    async def scan() -> str:
        nc = await nats_py.connect(servers=urls.split(","))
        try:
            js = nc.jetstream()
            info = await js.stream_info(STREAM)
            found: dict[tuple[str, int], list[str]] = {}
            lines = [f"stream: first {info.state.first_seq}, last {info.state.last_seq}, "
                     f"messages {info.state.messages}"]
            gaps = 0
            for sseq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    m = await js.get_msg(STREAM, sseq)
                except Exception:  # noqa: BLE001 - a deleted or lost message
                    gaps += 1
                    continue
                hdr = m.headers or {}
                node = hdr.get("Pyulogd-Node", "")
                batch = decode_batch(m.data or b"")
                for s in batch.seqs or []:
                    if (node, s) in want:
                        found.setdefault((node, s), []).append(f"{sseq}:{hdr.get('Nats-Msg-Id')}")
            lines.append(f"stream sequences without a message: {gaps}")
            for key in sorted(want):
                lines.append(f"{key}: {found.get(key, 'NOT IN THE STREAM')}")
            return "\n".join(lines)
        finally:
            await nc.close()

    return asyncio.run(scan())


def rows_per_node(pg: PgCluster) -> dict[str, tuple[int, int, int, int]]:
    """node -> (rows, distinct sequence numbers, lowest, highest)."""
    out = pg.psql("SELECT node_id, count(*), count(DISTINCT node_seq), min(node_seq), max(node_seq) "
                  "FROM pyulogd_audit GROUP BY node_id ORDER BY 1", db="central")
    found = {}
    for line in out.split():
        node, n, d, lo, hi = line.split("|")
        found[node] = (int(n), int(d), int(lo), int(hi))
    return found



def test_nodes_to_central_store_through_failures(
    world: tuple[NatsCluster, PgCluster, list[Node], list[Collector]], tmp_path: Path,
) -> None:
    tmp = tmp_path
    nats, pg, nodes, collectors = world
    for c in collectors:
        c.start()
    for n in nodes:
        n.start()
        n.flood(100)
    phase = time.monotonic()

    def at(t: float) -> None:  # the plan's clock: wait until t seconds into the traffic
        left = phase + t - time.monotonic()
        if left > 0:
            time.sleep(left)

    # 1. One server killed and back.
    at(5)
    nats.kill(1)
    at(12)
    nats.start(1)
    nats.wait_ready()
    # 2. The whole cluster away for 20 s.
    at(20)
    nats.stop()
    at(40)
    nats.start()
    nats.wait_ready()
    # 3. Away again, for longer than the stream's 5 s duplicate window.
    at(52)
    nats.stop()
    at(60)
    nats.start()
    nats.wait_ready()
    # 4. One collector killed; the other takes its redelivered messages; it comes back.
    at(68)
    collectors[0].kill()
    at(74)
    collectors[0].start()
    # 5. PostgreSQL restarted.
    at(80)
    pg.stop()
    at(86)
    pg.start()
    for n in nodes:
        assert n.traffic is not None
        n.traffic.wait(60)
    packets = {f"node{n.i}": n.logged() for n in nodes}
    assert all(v > 50 * RATE for v in packets.values()), packets

    def packets_in() -> bool:
        out = pg.psql("SELECT node_id, count(*) FROM pyulogd_audit WHERE kind = 'packet' GROUP BY 1", db="central")
        found = dict(line.split("|") for line in out.split())
        return all(int(found.get(k, 0)) >= v for k, v in packets.items())

    logged = packets
    try:
        wait_for(packets_in, 180, f"every logged packet in PostgreSQL ({packets})")
        for n in nodes:
            n.stop()  # a clean stop: whatever was still queued goes out first, and the counters are logged
        # What each node logged: the packets its nft rule counted and the flow events its NFCT read.
        logged = {f"node{n.i}": packets[f"node{n.i}"] + n.flow_events() for n in nodes}
        assert all(v > packets[k] + 100 for k, v in logged.items()), (logged, packets)  # flows too
        wait_for(lambda: all(rows_per_node(pg).get(k, (0,))[0] >= v for k, v in logged.items()), 60,
                 f"every record in PostgreSQL ({logged})")
    except AssertionError as e:
        kinds = pg.psql("SELECT node_id, kind, count(*), min(node_seq), max(node_seq) FROM pyulogd_audit "
                        "GROUP BY 1, 2 ORDER BY 1, 2", db="central")
        logs = "\n".join(line for x in [*nodes, *collectors] if x.log.exists()
                         for line in x.log.read_text(errors="replace").splitlines()
                         if "counters at exit" in line or "<7>" in line or "duplicate" in line)
        missing = missing_seqs(pg, logged)
        kinds_missing = {k: pg.psql(f"SELECT node_seq FROM pyulogd_audit WHERE node_id = '{k}' AND node_seq "
                                    f"BETWEEN {v[0] - 3} AND {v[-1] + 3} ORDER BY 1", db="central").split()
                         for k, v in missing.items() if v}
        (tmp / "missing.txt").write_text(f"{missing}\n{kinds_missing}\n{in_stream(nats.urls, missing)}\n")
        raise AssertionError(f"{e}\n{nats_server_version()}\nrows: {rows_per_node(pg)}\nby kind:\n{kinds}\n"
                             f"missing: {missing}\n{(tmp / 'missing.txt').read_text()}\n"
                             f"consumer: {consumer_state(nats.urls)}\nlogs:\n{logs}") from None
    found = rows_per_node(pg)
    want = {k: (v, v, 1, v) for k, v in logged.items()}
    assert found == want  # per node: N rows, N distinct sequence numbers, 1..N: none missing, none twice
    dups = pg.psql("SELECT count(*) FROM (SELECT node_id, node_seq FROM pyulogd_audit "
                   "GROUP BY 1, 2 HAVING count(*) > 1) d", db="central").strip()
    assert dups == "0"
    # The faults did cause redeliveries and republishes, which the store absorbed.
    logs = "".join(c.log.read_text(errors="replace") for c in collectors if c.log.exists())
    node_logs = "".join(n.log.read_text(errors="replace") for n in nodes if n.log.exists())
    assert "spooling to" in node_logs and "sending the queue" in node_logs
    assert "database" in logs
