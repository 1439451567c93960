"""The NFCT input's accept filters (ulogd2's ``accept_src_filter``, ``accept_dst_filter``,
``accept_proto_filter``): which flows to keep, by original source, destination and protocol.

Apart from :mod:`pyulogd.codec.nfct`, whose value lists it reads; :mod:`pyulogd.codec.ctbpf`
compiles a :class:`FlowFilter` into a socket filter the kernel runs.
"""

from __future__ import annotations

import socket
from typing import Any

from pyulogd.codec.nfct import I_ORIG_PROTO, I_ORIG_SADDR

# Used when /etc/protocols is missing (minimal containers).
_PROTO_NAMES = {
    "icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51, "ipv6-icmp": 58,
    "icmpv6": 58, "dccp": 33, "sctp": 132, "udplite": 136,
}  # fmt: skip

# (network as int, mask as int) per address length
_Nets = dict[int, list[tuple[int, int]]]


def _parse_nets(text: str, what: str) -> _Nets | None:
    import ipaddress

    if not text.strip():
        return None
    nets: _Nets = {4: [], 16: []}
    for tok in text.split(","):
        tok = tok.strip()
        if "/" not in tok:
            raise ValueError(f"{what}: '{tok}': No network specified (write address/prefixlen)")
        try:
            net = ipaddress.ip_network(tok, strict=False)
        except ValueError as e:
            raise ValueError(f"{what}: '{tok}': {e}") from None
        size = 4 if net.version == 4 else 16
        nets[size].append((int(net.network_address), int(net.netmask)))
    return nets


def _parse_protos(text: str) -> frozenset[int] | None:
    if not text.strip():
        return None
    out = set()
    for tok in text.split(","):
        name = tok.strip()
        if name.isdigit() and int(name) < 256:
            out.add(int(name))
            continue
        try:
            out.add(socket.getprotobyname(name))
        except OSError:
            num = _PROTO_NAMES.get(name.lower())
            if num is None:
                raise ValueError(f"accept_proto_filter: Unknown protocol '{name}'") from None
            out.add(num)
    return frozenset(out)


def _in(nets: _Nets, addr: Any) -> bool:
    lst = nets.get(len(addr)) if addr is not None else None
    if not lst:
        return False  # a family with no network listed is not accepted
    a = int.from_bytes(addr, "big")
    for net, mask in lst:
        if a & mask == net:
            return True
    return False


class FlowFilter:
    """Accepts a flow when its original source is in one of ``src``'s networks, its original
    destination in one of ``dst``'s and its protocol in ``protos`` (each test only when set)."""

    def __init__(self, src: _Nets | None, dst: _Nets | None, protos: frozenset[int] | None) -> None:
        self.src, self.dst, self.protos = src, dst, protos

    @classmethod
    def parse(cls, src: str, dst: str, proto: str) -> FlowFilter | None:
        """From the options' text; None when all are empty. Raises ValueError."""
        s = _parse_nets(src, "accept_src_filter")
        d = _parse_nets(dst, "accept_dst_filter")
        p = _parse_protos(proto)
        if s is None and d is None and p is None:
            return None
        return cls(s, d, p)

    def __repr__(self) -> str:
        def nets(n: _Nets | None) -> str:
            return "any" if n is None else f"{len(n[4])} IPv4 and {len(n[16])} IPv6 networks"

        protos = "any" if self.protos is None else ",".join(map(str, sorted(self.protos)))
        return f"source {nets(self.src)}, destination {nets(self.dst)}, protocols {protos}"

    def __call__(self, values: list[Any]) -> bool:
        if self.protos is not None and values[I_ORIG_PROTO] not in self.protos:
            return False
        if self.src is not None and not _in(self.src, values[I_ORIG_SADDR]):
            return False
        return self.dst is None or _in(self.dst, values[I_ORIG_SADDR + 1])
