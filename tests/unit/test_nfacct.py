"""NFACCT: the nfnetlink_acct codec on hand-built and real kernel bytes, and the input plugin
with a stand-in socket (dump cycle, deferral, stalls, refusals, malformed answers).

The kernel test at the end (marker ``linux``) creates counters in a throw-away network
namespace and parses the kernel's own dump."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyulogd.codec import netlink as nl
from pyulogd.codec import nfacct as codec
from pyulogd.core.clock import FakeClock
from pyulogd.core.config import parse_text
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.core.plugin import DataType, KeyType
from pyulogd.daemon.service import Service
from pyulogd.io.loop import Loop
from pyulogd.plugins.inputs import nfacct as nfacct_mod
from pyulogd.plugins.inputs.nfacct import NfacctInput
from tests.builders.netlink import done_msg, error_msg
from tests.builders.nfacct import counter_msg
from tests.helpers import typed_options

SRC = Path(__file__).resolve().parents[2] / "src"

# A dump (NFNL_MSG_ACCT_GET, seq 7) as Linux 6.18 answered it: two objects in one datagram,
# 'cnt1' (4 packets, 336 bytes, used by one rule) and 'cnt2' (unused), then NLMSG_DONE.
KERNEL_PID = 0x3A8D
KERNEL_OBJECTS = bytes.fromhex(
    "4000000000070200070000008d3a00000000000009000100636e7431000000000c000200000000000000"
    "00040c000300000000000000015008000400000000024000000000070200070000008d3a000000000000"
    "09000100636e7432000000000c00020000000000000000000c00030000000000000000000800040000000001"
)
KERNEL_DONE = bytes.fromhex("1400000003000200070000008d3a000000000000")


# -- codec


def test_dump_request_layout() -> None:
    msg = codec.dump_request(9, zero=True, pid=5)
    ln, typ, flags, seq, pid = nl.HDR.unpack_from(msg)
    assert (ln, typ, flags, seq, pid) == (20, 0x0702, nl.NLM_F_REQUEST | nl.NLM_F_DUMP, 9, 5)
    assert msg[16:] == b"\0\0\0\0"  # AF_UNSPEC, version 0, res_id 0
    assert nl.HDR.unpack_from(codec.dump_request(1, zero=False))[1] == 0x0701


def test_real_kernel_dump() -> None:
    batch = codec.parse_buffer(KERNEL_OBJECTS, 7)
    assert [(c.name, c.pkts, c.nbytes, c.use, c.flags, c.quota) for c in batch.counters] == [
        ("cnt1", 4, 336, 2, None, None),
        ("cnt2", 0, 0, 1, None, None),
    ]
    assert batch.counters[0].raw == KERNEL_OBJECTS[:64]
    assert (batch.done, batch.error, batch.malformed, batch.stray) == (False, None, 0, 0)
    end = codec.parse_buffer(KERNEL_DONE, 7)
    assert end.done and not end.counters and end.stray == 0


def test_builders_reproduce_the_kernel_bytes() -> None:
    built = counter_msg("cnt1", 4, 336, seq=7, pid=KERNEL_PID, use=2) + counter_msg(
        "cnt2", 0, 0, seq=7, pid=KERNEL_PID, use=1
    )
    assert built == KERNEL_OBJECTS
    assert done_msg(7, KERNEL_PID) == KERNEL_DONE


def test_other_sequence_numbers_are_stray() -> None:
    batch = codec.parse_buffer(KERNEL_OBJECTS + KERNEL_DONE, 8)
    assert (batch.counters, batch.done, batch.stray) == ([], False, 3)
    assert codec.parse_buffer(KERNEL_OBJECTS, None).stray == 2


def test_quota_object_and_64_bit_values() -> None:
    msg = counter_msg("q", 2**64 - 1, 2**63, seq=1, flags=codec.NFACCT_F_QUOTA_BYTES, quota=10**12)
    (c,) = codec.parse_buffer(msg, 1).counters
    assert (c.pkts, c.nbytes, c.flags, c.quota) == (2**64 - 1, 2**63, codec.NFACCT_F_QUOTA_BYTES, 10**12)


def test_name_bytes_that_are_not_utf8_survive() -> None:
    (c,) = codec.parse_buffer(counter_msg(b"a\xff", 1, 1, seq=1), 1).counters
    assert c.name.encode("utf-8", "surrogateescape") == b"a\xff"


def test_pad_and_unknown_attributes_are_ignored() -> None:
    body = nl.NFGEN.pack(0, 0, 0) + b"".join([
        nl.nla(codec.NFACCT_PAD, b""), nl.nla(codec.NFACCT_NAME, b"x\0"), nl.nla(99, b"abcd"),
        nl.nla(codec.NFACCT_PKTS, (3).to_bytes(8, "big")), nl.nla(codec.NFACCT_BYTES, (9).to_bytes(8, "big")),
    ])  # fmt: skip
    msg = nl.nlmsg(codec.TYPE_NEW, nl.NLM_F_MULTI, 4, body)
    (c,) = codec.parse_buffer(msg, 4).counters
    assert (c.name, c.pkts, c.nbytes, c.use) == ("x", 3, 9, None)


@pytest.mark.parametrize(
    ("attrs", "why"),
    [
        ([nl.nla(codec.NFACCT_PKTS, bytes(8)), nl.nla(codec.NFACCT_BYTES, bytes(8))], "NAME"),
        ([nl.nla(codec.NFACCT_NAME, b"x\0"), nl.nla(codec.NFACCT_BYTES, bytes(8))], "attribute 2"),
        ([nl.nla(codec.NFACCT_NAME, b"x\0"), nl.nla(codec.NFACCT_PKTS, bytes(4)),
          nl.nla(codec.NFACCT_BYTES, bytes(8))], "4 bytes"),  # fmt: skip
        ([nl.nla(codec.NFACCT_NAME, b"x"), nl.nla(codec.NFACCT_PKTS, bytes(8)),
          nl.nla(codec.NFACCT_BYTES, bytes(8))], "NUL"),  # fmt: skip
        ([nl.nla(codec.NFACCT_NAME, b"y" * 32 + b"\0"), nl.nla(codec.NFACCT_PKTS, bytes(8)),
          nl.nla(codec.NFACCT_BYTES, bytes(8))], "at most 32"),  # fmt: skip
        ([b"\x03\x00\x01\x00"], "bad length"),
    ],
)
def test_malformed_objects(attrs: list[bytes], why: str) -> None:
    body = nl.NFGEN.pack(0, 0, 0) + b"".join(attrs)
    good = counter_msg("ok", 1, 2, seq=3)
    batch = codec.parse_buffer(nl.nlmsg(codec.TYPE_NEW, nl.NLM_F_MULTI, 3, body) + good, 3)
    assert batch.malformed == 1 and why in (batch.problem or "")
    assert [c.name for c in batch.counters] == ["ok"]  # the rest of the datagram still counts


def test_message_without_nfgenmsg() -> None:
    batch = codec.parse_buffer(nl.nlmsg(codec.TYPE_NEW, nl.NLM_F_MULTI, 3, b"\0\0"), 3)
    assert batch.malformed == 1 and not batch.counters


def test_error_answers() -> None:
    req = codec.dump_request(5, True)
    batch = codec.parse_buffer(error_msg(1, req), 5)
    assert batch.error == 1 and not batch.done
    assert codec.parse_buffer(error_msg(0, req), 5).error is None  # an ack is no error
    broken = nl.nlmsg(nl.NLMSG_ERROR, 0, 5, b"\0\0")
    assert codec.parse_buffer(broken, 5).malformed == 1


def test_every_truncation_of_real_bytes_is_counted_never_raised() -> None:
    data = KERNEL_OBJECTS + KERNEL_DONE
    for n in range(len(data)):
        batch = codec.parse_buffer(data[:n], 7)
        assert len(batch.counters) == min(n // 64, 2)  # the objects that are complete
        assert batch.malformed == (0 if n in (0, 64, 128) else 1), n
        assert not batch.done
    # Flipped bytes anywhere: parsed or counted, never an exception.
    for i in range(len(data)):
        for value in (0, 0xFF):
            mutated = data[:i] + bytes([value]) + data[i + 1 :]
            codec.parse_buffer(mutated, 7)


@given(st.binary(max_size=300), st.integers(0, 3))
def test_arbitrary_bytes_never_raise(data: bytes, seq: int) -> None:
    batch = codec.parse_buffer(data, seq)
    assert batch.malformed >= 0 and all(isinstance(c.name, str) for c in batch.counters)


@given(st.lists(st.tuples(st.text(max_size=30), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
                max_size=5))  # fmt: skip
def test_built_answers_round_trip(objects: list[tuple[str, int, int]]) -> None:
    objects = [(n.replace("\0", ""), p, b) for n, p, b in objects if len(n.encode()) < 32]
    batch = codec.parse_buffer(b"".join(counter_msg(n, p, b, seq=2) for n, p, b in objects), 2)
    assert [(c.name, c.pkts, c.nbytes) for c in batch.counters] == objects
    assert batch.malformed == 0


# -- the input plugin, with a stand-in socket


# A descriptor that is never readable, for waits on the stand-in socket (nothing is ever
# written to the pipe; its write end stays open so it does not read as EOF).
_SILENT_R, _SILENT_W = os.pipe()


class FakeSock:
    """The parts of NetlinkSocket the plugin uses; ``sent`` keeps what it sent."""

    portid = 4242

    def __init__(self) -> None:
        self.sock = self
        self.sent: list[bytes] = []
        self.seq = 0
        self.fail: OSError | None = None

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def send(self, data: bytes) -> int:
        if self.fail is not None:
            raise self.fail
        self.sent.append(data)
        return len(data)

    def fileno(self) -> int:
        return _SILENT_R

    def close(self) -> None:
        pass


class Capture:
    """Stands in for a stack: keeps every record the source emits, by key name."""

    def __init__(self) -> None:
        self.tail: list[Any] = []
        self.recs: list[dict[str, Any]] = []

    def run(self, rec: list[Any]) -> None:
        # The source's own keys; the trailer keys (oob.netns, ...) come with a stack's tail.
        own = NfacctInput.output_keys[: len(NfacctInput.output_keys) - NfacctInput.trailer_keys]
        self.recs.append({k.name: v for k, v in zip(own, rec[1:], strict=True)})


NOW = 1_795_770_859.490028


def make(**options: Any) -> tuple[NfacctInput, Capture, FakeSock, Context]:
    ctx = Context(loop=Loop(FakeClock(wall=NOW)))
    ctx.log.stream = io.StringIO()
    ctx.log.path = "test"
    ctx.log.level = 1
    cfg = {o.name: o.default for o in NfacctInput.options}
    cfg.update(pollinterval=10, **options)
    p = NfacctInput(ctx, "acct1", cfg)
    p.configure()
    cap = Capture()
    p.stacks = [cap]
    sock = FakeSock()
    p.sock = sock  # type: ignore[assignment]
    return p, cap, sock, ctx


def clock(ctx: Context) -> FakeClock:
    assert isinstance(ctx.clock, FakeClock)
    return ctx.clock


def log_text(ctx: Context) -> str:
    assert isinstance(ctx.log.stream, io.StringIO)
    return ctx.log.stream.getvalue()


def answer(seq: int, *objects: tuple[str, int, int]) -> bytes:
    return b"".join(counter_msg(n, p, b, seq=seq, pid=0) for n, p, b in objects) + done_msg(seq)


def test_declarations() -> None:
    assert (NfacctInput.name, NfacctInput.so_name) == ("NFACCT", "ulogd_inpflow_NFACCT.so")
    assert NfacctInput.output_type == DataType.SUM
    assert [(k.name, k.type) for k in NfacctInput.output_keys] == [
        ("sum.name", KeyType.STRING), ("sum.pkts", KeyType.UINT64), ("sum.bytes", KeyType.UINT64),
        ("sum", KeyType.RAW), ("oob.time.sec", KeyType.UINT32), ("oob.time.usec", KeyType.UINT32),
        # pyulogd: the network namespace, after ulogd's keys
        ("oob.netns", KeyType.STRING), ("neutron.router_id", KeyType.STRING),
        ("neutron.network_id", KeyType.STRING),
    ]  # fmt: skip
    assert {o.name: o.default for o in NfacctInput.options} == {
        "pollinterval": 0, "zerocounter": 1, "timestamp": 0,
        "network_namespace_path": "", "netns": "", "netns_dir": "/run/netns", "netns_rescan": 5,
    }  # fmt: skip
    assert NfacctInput.capabilities == ("CAP_NET_ADMIN",)


@pytest.mark.parametrize("value", [0, -1])
def test_pollinterval_must_be_positive(value: int) -> None:
    with pytest.raises(ConfigError, match="'pollinterval'.*greater than 0"):
        typed_options(NfacctInput, {"pollinterval": value})
    p = NfacctInput(Context(loop=Loop()), "acct1", typed_options(NfacctInput, {}))  # left out: the default, 0
    with pytest.raises(ConfigError, match="'pollinterval'"):
        p.configure()
    assert typed_options(NfacctInput, {"pollinterval": "1"})["pollinterval"] == 1


def _load(text: str, tmp: Path) -> Service:
    svc = Service(str(tmp / "t.conf"), Context(loop=Loop()))
    svc.ctx.log.set_destination("stdout")  # keep the test off syslog
    svc.load_config(parse_text(text.replace("@OUT@", str(tmp / "out.json")), str(tmp / "t.conf")))
    return svc


def test_config_nfacct_to_json(tmp_path: Path) -> None:
    conf = '[global]\nstack=acct1:NFACCT,json1:JSON\n\n[acct1]\npollinterval=60\n\n[json1]\nfile="@OUT@"\n'
    svc = _load(conf, tmp_path)
    assert isinstance(svc.stacks[0].source, NfacctInput)
    for bad, line in (("pollinterval=0\n", 5), ("", None)):
        text = conf.replace("pollinterval=60\n", bad)
        with pytest.raises(ConfigError, match="pollinterval") as err:
            _load(text, tmp_path)
        assert err.value.line == (line or 2)  # the option's line, else the stack's


def test_dump_cycle_emits_when_the_answer_is_complete() -> None:
    p, cap, sock, ctx = make()
    p.poll()
    (req,) = sock.sent
    assert nl.HDR.unpack_from(req)[1:4] == (0x0702, nl.NLM_F_REQUEST | nl.NLM_F_DUMP, 1)  # CTRZERO
    objs = answer(1, ("a", 3, 300), ("b", 0, 0))
    first = len(counter_msg("a", 3, 300, seq=1))
    cut = len(objs) - 20  # the objects in one datagram, NLMSG_DONE in the next
    p.feed(objs[:cut])
    assert cap.recs == []  # nothing until the answer is complete
    p.feed(objs[cut:])
    assert [(r["sum.name"], r["sum.pkts"], r["sum.bytes"]) for r in cap.recs] == [("a", 3, 300), ("b", 0, 0)]
    assert cap.recs[0]["sum"] == objs[:first]
    assert cap.recs[0]["oob.time.sec"] is None and cap.recs[0]["oob.time.usec"] is None
    assert ctx.stats.snapshot() == {"nfacct.acct1.dumps": 1, "nfacct.acct1.records": 2}
    # An empty table: a dump with no record.
    p.poll()
    p.feed(done_msg(2))
    assert len(cap.recs) == 2 and p._seq is None


def test_zerocounter_0_and_timestamp() -> None:
    p, cap, sock, _ = make(zerocounter=0, timestamp=1)
    p.poll()
    assert nl.HDR.unpack_from(sock.sent[0])[1] == 0x0701  # GET: running totals
    p.feed(answer(1, ("a", 1, 2)))
    assert (cap.recs[0]["oob.time.sec"], cap.recs[0]["oob.time.usec"]) == (1_795_770_859, 490028)


def test_sigusr2_dumps_now() -> None:
    p, cap, sock, _ = make()
    p.signal(signal.SIGUSR1)
    p.signal(signal.SIGHUP)
    assert sock.sent == []
    p.signal(signal.SIGUSR2)
    assert len(sock.sent) == 1
    p.signal(signal.SIGUSR2)  # a dump is running: that one is the answer
    assert len(sock.sent) == 1
    p.feed(answer(1, ("a", 1, 1)))
    assert len(cap.recs) == 1


def test_poll_during_dump_is_deferred() -> None:
    p, cap, sock, ctx = make()
    p.poll()
    p.poll()  # the timer again, while the answer is still being read: no EBUSY request
    assert len(sock.sent) == 1
    p.feed(answer(1, ("a", 5, 50)))
    assert len(sock.sent) == 2  # the deferred dump went out as soon as the first ended
    assert nl.HDR.unpack_from(sock.sent[1])[3] == 2
    p.feed(answer(2, ("a", 1, 10)))
    assert [r["sum.pkts"] for r in cap.recs] == [5, 1]
    assert len(sock.sent) == 2
    assert ctx.stats.get("nfacct.acct1.dumps") == 2


def test_stalled_dump_is_closed() -> None:
    p, cap, sock, ctx = make()
    p.poll()
    p.feed(counter_msg("a", 7, 70, seq=1))
    clock(ctx).advance(11)  # more than one interval later
    p.poll()
    assert [r["sum.pkts"] for r in cap.recs] == [7]  # what had arrived is kept
    assert ctx.stats.get("nfacct.acct1.dumps_incomplete") == 1
    assert len(sock.sent) == 2
    # Late pieces of the abandoned dump are not mixed into the new one.
    p.feed(counter_msg("late", 1, 1, seq=1) + done_msg(1))
    assert ctx.stats.get("nfacct.acct1.unexpected") == 2 and len(cap.recs) == 1
    p.feed(answer(2, ("a", 1, 1)))
    assert len(cap.recs) == 2


def test_refused_dump_is_logged_and_counted() -> None:
    p, cap, sock, ctx = make()
    for _ in range(3):
        p.poll()
        p.feed(error_msg(1, sock.sent[-1]))  # EPERM
    assert cap.recs == [] and p._seq is None
    assert ctx.stats.get("nfacct.acct1.dumps_refused") == 3
    text = log_text(ctx)
    assert text.count("refused the dump: Operation not permitted") == 1  # rate-limited
    assert "CAP_NET_ADMIN" in text and "docs/security.md" in text
    p.poll()
    p.feed(error_msg(16, sock.sent[-1]))  # EBUSY: no capability hint
    assert ctx.stats.get("nfacct.acct1.dumps_refused") == 4


def test_send_failure_is_counted() -> None:
    p, _cap, sock, ctx = make()
    sock.fail = OSError(105, "No buffer space available")
    p.poll()
    assert p._seq is None and ctx.stats.get("nfacct.acct1.send_errors") == 1
    assert "sending the dump request failed" in log_text(ctx)
    sock.fail = None
    p.poll()
    assert p._seq == 2


def test_malformed_counter_is_skipped() -> None:
    p, cap, _sock, ctx = make()
    p.poll()
    no_counts = nl.NFGEN.pack(0, 0, 0) + nl.nla(codec.NFACCT_NAME, b"x\0")
    bad = nl.nlmsg(codec.TYPE_NEW, nl.NLM_F_MULTI, 1, no_counts)
    p.feed(counter_msg("a", 1, 1, seq=1) + bad + counter_msg("b", 2, 2, seq=1) + done_msg(1))
    assert [r["sum.name"] for r in cap.recs] == ["a", "b"]
    assert ctx.stats.get("nfacct.acct1.malformed") == 1
    assert "malformed" in log_text(ctx)
    p.poll()
    p.feed(b"\xff" * 10)  # garbage framing
    assert ctx.stats.get("nfacct.acct1.malformed") == 2


def test_stop_is_safe_any_time() -> None:
    p, _cap, _sock, _ctx = make()
    p.poll()
    p.stop()
    p.stop()
    p.poll()  # no socket: nothing sent, nothing raised
    p.signal(signal.SIGUSR2)
    q = NfacctInput(Context(loop=Loop()), "x", typed_options(NfacctInput, {"pollinterval": 1}))
    q.stop()  # never started


def test_start_arms_the_timer_and_reads_from_the_loop() -> None:
    """start() with a real (unprivileged) netlink socket: reader and repeating timer."""
    ctx = Context(loop=Loop(FakeClock()))
    p = NfacctInput(ctx, "acct1", typed_options(NfacctInput, {"pollinterval": 30}))
    p.configure()
    p.start()
    try:
        assert p.sock is not None and p.sock.fileno() in ctx.loop.selector.get_map()
        dumps = [ctx.stats.get("nfacct.acct1.dumps")]
        for step in (29.9, 0.1, 29.9, 0.1):
            clock(ctx).advance(step)
            ctx.loop.run_once(0)
            dumps.append(ctx.stats.get("nfacct.acct1.dumps"))
        assert dumps == [0, 0, 1, 1, 2]  # one dump request every 30 s, none before
    finally:
        p.stop()
        ctx.loop.close()
    assert p.sock is None


# -- the real kernel

CAN_RUN = os.geteuid() == 0 and shutil.which("ip") is not None

DUMP_SCRIPT = """
import select, sys
from pyulogd.codec import nfacct
from pyulogd.io.netlink import NetlinkSocket
from tests.builders.nfacct import del_request, new_request
s = NetlinkSocket(bufsize=65536)
for name in ("pyu_a", "pyu_b"):
    s.request(new_request(name, s.next_seq()))
seq = s.next_seq()
s.sock.send(nfacct.dump_request(seq, zero=True, pid=s.portid))
out = []
while True:
    select.select([s.sock], [], [], 2)
    data = s.recv()
    if data is None:
        break
    out.append(data.hex())
    if nfacct.parse_buffer(data, seq).done:
        break
s.request(del_request("pyu_b", s.next_seq()))
print(seq)
print("\\n".join(out))
"""


@pytest.mark.linux
@pytest.mark.skipif(not CAN_RUN, reason="needs root and ip")
def test_codec_on_the_kernels_own_dump() -> None:
    """Create two counters with new_request() in a fresh namespace, dump them, parse."""
    ns = f"pyu-{os.getpid()}-acctc"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        # the repository too: the script imports tests.builders
        path = os.pathsep.join([str(SRC), str(SRC.parent), os.environ.get("PYTHONPATH", "")])
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", DUMP_SCRIPT],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path}, timeout=30,
                           check=True)  # fmt: skip
        first, *bufs = r.stdout.split()
        seq = int(first)
        counters = []
        done = False
        for hexdata in bufs:
            batch = codec.parse_buffer(bytes.fromhex(hexdata), seq)
            assert batch.malformed == 0 and batch.error is None and batch.stray == 0
            counters += batch.counters
            done = done or batch.done
        assert done
        assert sorted((c.name, c.pkts, c.nbytes, c.use) for c in counters) == [
            ("pyu_a", 0, 0, 1), ("pyu_b", 0, 0, 1),
        ]  # fmt: skip
        if shutil.which("nfacct"):  # the counter deleted by del_request is gone for the tool too
            listing = subprocess.run(["ip", "netns", "exec", ns, "nfacct", "list"], capture_output=True,
                                     text=True, check=True).stdout  # fmt: skip
            assert "pyu_a" in listing and "pyu_b" not in listing
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_released_namespace_is_dumped_one_last_time(monkeypatch: pytest.MonkeyPatch) -> None:
    p, cap, sock, ctx = make()
    monkeypatch.setattr(p, "_readable", lambda: p.feed(answer(sock.seq, ("a", 3, 30))))
    p.netns_released()  # what a namespace counted since the last poll is not lost with it
    assert len(sock.sent) == 1 and [r["sum.pkts"] for r in cap.recs] == [3]


def test_released_namespace_without_an_answer_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    p, cap, sock, ctx = make()
    monkeypatch.setattr(p, "_readable", lambda: None)
    clk = clock(ctx)
    t0 = clk.monotonic()
    p.netns_released()  # the fake clock jumps over the silent wait
    assert clk.monotonic() - t0 == pytest.approx(nfacct_mod.FINAL_DUMP_WAIT)
    assert ctx.stats.get("nfacct.acct1.dumps_incomplete") == 1 and p._seq is None and p._seq is None
