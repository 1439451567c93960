"""Community ID v1: one flow hash that Zeek, Suricata, Filebeat and Elastic agree on.

``"1:" + base64(SHA1(seed:u16 ‖ saddr ‖ daddr ‖ proto:u8 ‖ 0:u8 [‖ sport:u16 ‖ dport:u16]))``,
all in network byte order, with the two endpoints ordered first so that both directions
of a flow hash alike: the smaller address goes first, and for equal addresses the smaller
port. TCP, UDP and SCTP hash their ports; ICMP and ICMPv6 hash the message type in place of
the source port and, in place of the destination port, the type of the matching
request/reply (echo request <-> echo reply, ...) when there is one, which makes the pair
one flow, else the code (a one-way message: never reordered). Other protocols hash no ports.

Our own code, stdlib only (hashlib, base64): it runs per record on the ECS hot path, where
the ``communityid`` package (the reference implementation, used as the oracle in the tests)
costs about twenty times as much for validating its input. Callers pass addresses as the
packed bytes the decoders produce (4 or 16 bytes) and ports as integers.
"""

from __future__ import annotations

from base64 import b64encode
from hashlib import sha1

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMP6 = 58
PROTO_SCTP = 132

# Protocols whose flows have ports (ICMP's type/code stand in for them).
PORT_PROTOS = frozenset({PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMP6, PROTO_SCTP})

# The request <-> reply pairs of the specification (Zeek's mapping); a type not listed is
# a one-way message.
ICMP4_PAIRS = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
ICMP6_PAIRS = {128: 129, 129: 128, 130: 131, 131: 130, 133: 134, 134: 133, 135: 136, 136: 135,
               139: 140, 140: 139, 144: 145, 145: 144}  # fmt: skip


def community_id(
    proto: int, saddr: bytes, daddr: bytes, sport: int | None = None, dport: int | None = None, seed: int = 0
) -> str:
    """The Community ID v1 string of one flow (``sport``/``dport``: ICMP type and code).

    A protocol with ports but no port values (a fragment without its L4 header) hashes
    without ports, as the reference does for port-less tuples.
    """
    one_way = False
    if proto == PROTO_ICMP or proto == PROTO_ICMP6:
        if sport is not None and dport is not None:
            pair = (ICMP4_PAIRS if proto == PROTO_ICMP else ICMP6_PAIRS).get(sport)
            if pair is None:
                one_way = True
            else:
                dport = pair
    if sport is None or dport is None:
        ports = b""
        if not one_way and daddr < saddr:
            saddr, daddr = daddr, saddr
    else:
        if not one_way and (daddr < saddr or (saddr == daddr and dport < sport)):
            saddr, daddr, sport, dport = daddr, saddr, dport, sport
        ports = ((sport << 16) | dport).to_bytes(4, "big")
    data = seed.to_bytes(2, "big") + saddr + daddr + bytes((proto & 0xFF, 0)) + ports
    return "1:" + b64encode(sha1(data, usedforsecurity=False).digest()).decode("ascii")


class CommunityIdCache:
    """:func:`community_id` of recent tuples: packets of one flow, and the start and end
    records of one connection, repeat their tuple. Bounded: cleared when full."""

    def __init__(self, size: int = 8192, seed: int = 0) -> None:
        self.known: dict[tuple[int, bytes, bytes, int | None, int | None], str] = {}
        self.size = size
        self.seed = seed

    def get(self, proto: int, saddr: bytes, daddr: bytes, sport: int | None, dport: int | None) -> str:
        key = (proto, saddr, daddr, sport, dport)
        cid = self.known.get(key)
        if cid is None:
            cid = community_id(proto, saddr, daddr, sport, dport, self.seed)
            if len(self.known) >= self.size:
                self.known.clear()
            self.known[key] = cid
        return cid
