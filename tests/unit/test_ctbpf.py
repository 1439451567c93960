"""The NFCT accept filters compiled to a kernel socket filter (pyulogd.codec.ctbpf): run by a
reference interpreter, the program accepts exactly the flows the user-space FlowFilter accepts
(and every message that is no conntrack entry), on the golden buffers and on random flows."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyulogd.codec import ctbpf, nfct
from pyulogd.codec import netlink as nl
from pyulogd.codec.nfct_filter import FlowFilter
from tests.builders.nfct import Tuple, build_ct

VECTORS = Path(__file__).resolve().parents[2] / "tests/vectors/nfct"


def verdict(flt: FlowFilter, msg: bytes) -> bool:
    return ctbpf.run(ctbpf.compile_filter(flt), msg) != 0


def golden_messages() -> list[bytes]:
    out = []
    for case in ("flow-json", "flow-hash-json"):
        for hexbuf in (VECTORS / f"{case}.buffers.hex").read_text().split():
            buf = bytes.fromhex(hexbuf)
            msgs, _ = nl.split(buf)
            out += [buf[off : off + ln] for off, ln, *_ in msgs]
    return out


FILTERS = [
    ("10.0.0.0/8", "", ""),
    ("", "192.168.0.0/16,10.1.2.3/32", ""),
    ("", "", "tcp,udp"),
    ("", "", "icmp"),
    ("fd00::/8", "", "ipv6-icmp,tcp"),
    ("0.0.0.0/0", "::/0", ""),
    ("10.0.0.0/8,2001:db8::/32", "10.0.0.0/8,fd00:201::/64", "tcp,udp,icmp,58"),
    ("127.0.0.1/32", "", "sctp"),
]


@pytest.mark.parametrize(("src", "dst", "proto"), FILTERS)
def test_golden_flows_same_verdict_as_user_space(src: str, dst: str, proto: str) -> None:
    flt = FlowFilter.parse(src, dst, proto)
    assert flt is not None
    msgs = golden_messages()
    assert len(msgs) >= 30
    for msg in msgs:
        if len(msg) < 20 or not nfct.event_of(*nl.HDR.unpack_from(msg, 0)[1:3]):
            assert verdict(flt, msg)  # no conntrack entry: left to user space
            continue
        assert verdict(flt, msg) == flt(nfct.decode(msg)), (src, dst, proto, nfct.as_dict(nfct.decode(msg)))


V4 = st.builds(lambda *b: bytes(b), *[st.sampled_from([10, 192, 168, 0, 1, 2, 3, 255])] * 4)
V6 = st.builds(lambda head, tail: bytes.fromhex(head) + tail,
               st.sampled_from(["fd00", "2001", "fe80"]), st.binary(min_size=14, max_size=14))  # fmt: skip
NETS4 = ["10.0.0.0/8", "192.168.0.0/16", "10.1.2.3/32", "0.0.0.0/0", "192.168.1.0/24"]
NETS6 = ["fd00::/8", "2001:db8::/32", "::/0", "fe80::1/128", "2001::/16"]


@settings(max_examples=300, deadline=None)
@given(
    v6=st.booleans(), data=st.data(),
    proto=st.sampled_from([1, 6, 17, 58, 132]),
    src=st.lists(st.sampled_from(NETS4 + NETS6), max_size=3),
    dst=st.lists(st.sampled_from(NETS4 + NETS6), max_size=3),
    protos=st.lists(st.sampled_from(["tcp", "udp", "icmp", "58", "sctp"]), max_size=3),
)  # fmt: skip
def test_random_flows_same_verdict(v6: bool, data: st.DataObject, proto: int, src: list[str],
                                   dst: list[str], protos: list[str]) -> None:  # fmt: skip
    flt = FlowFilter.parse(",".join(src), ",".join(dst), ",".join(protos))
    if flt is None:
        return
    addr = V6 if v6 else V4
    ports = proto in (6, 17, 132)
    icmp = proto in (1, 58)
    orig = Tuple(data.draw(addr), data.draw(addr), proto, 1000 if ports else None, 80 if ports else None,
                 8 if icmp else None, 0 if icmp else None, 5 if icmp else None)  # fmt: skip
    msg = build_ct(data.draw(st.sampled_from([nfct.NEW, nfct.UPDATE, nfct.DESTROY])), orig,
                   counters=(1, 2, 3, 4), mark=7)  # fmt: skip
    assert verdict(flt, msg) == flt(nfct.decode(msg))


def test_program_shape_and_packing() -> None:
    flt = FlowFilter.parse("10.0.0.0/8", "", "tcp")
    assert flt is not None
    prog = ctbpf.compile_filter(flt)
    assert prog[-2] == (ctbpf.RET, 0, 0, ctbpf.ACCEPT_ALL) and prog[-1] == (ctbpf.RET, 0, 0, 0)
    assert len(ctbpf.pack(prog)) == 8 * len(prog)
    # A message that is no conntrack entry (an NLMSG_ERROR) passes; so does a truncated one.
    err = nl.nlmsg(nl.NLMSG_ERROR, 0, 1, b"\0" * 20)
    assert ctbpf.run(prog, err) == ctbpf.ACCEPT_ALL


def test_too_many_networks_is_refused_not_miscompiled() -> None:
    many = ",".join(f"10.{i // 256}.{i % 256}.0/24" for i in range(200))
    flt = FlowFilter.parse(many, "", "")
    assert flt is not None
    with pytest.raises(ctbpf.TooLarge):
        ctbpf.compile_filter(flt)


def test_socket_takes_the_program() -> None:
    """The kernel's verifier accepts what we compile (on a netlink socket of our own; no
    namespace or privilege needed)."""
    from pyulogd.io.netlink import NetlinkSocket

    flt = FlowFilter.parse("10.0.0.0/8,fd00::/8", "192.168.0.0/16", "tcp,udp,icmp")
    assert flt is not None
    try:
        sock = NetlinkSocket(groups=0)
    except OSError as e:  # pragma: no cover - no netfilter netlink here
        pytest.skip(f"no netlink socket: {e}")
    try:
        sock.attach_filter(ctbpf.pack(ctbpf.compile_filter(flt)))
    finally:
        sock.close()
