"""PWSNIFF: clear-text POP3/FTP credentials (ulogd2 ``ulogd_filter_PWSNIFF.so``, spec 5.10).

What the plugin was written to do: pass only TCP packets to port 110 (POP3) or 21 (FTP),
and for those give the argument of a ``USER `` command as ``pwsniff.user`` and of a
``PASS `` command as ``pwsniff.pass`` (case-insensitive, up to the next space, CR or LF;
when a packet holds several, the last one). Every other event stops here, for this stack
only; a packet to those ports without credentials passes with both keys invalid.

Corrections (docs/compat.md): in 2.0.8 the validity test of ``raw.pkt`` looked at the wrong
flag, so the plugin stopped every event and a stack with PWSNIFF never wrote anything.
2.0.8 also read the payload from a fixed 20 bytes after the TCP header start (TCP options
were searched as text) and knew only IPv4; here the TCP data offset is honoured and IPv6
(TCP right after the fixed header) is read too. Fragments other than the first are
stopped (they carry no TCP header).
"""

from __future__ import annotations

from typing import Any

from pyulogd.core.plugin import OK, STOP, DataType, Filter, Key, KeyType

PORTS = frozenset({110, 21})
_BLANKS = b" \r\n"


def tcp_payload(pkt: bytes) -> bytes | None:
    """The TCP payload of an IP packet to one of ``PORTS``, or None."""
    if len(pkt) < 20:
        return None
    version = pkt[0] >> 4
    if version == 4:
        ihl = (pkt[0] & 0x0F) * 4
        if pkt[9] != 6 or ihl < 20 or int.from_bytes(pkt[6:8], "big") & 0x1FFF:
            return None
        end = min(len(pkt), int.from_bytes(pkt[2:4], "big"))
        tcp = ihl
    elif version == 6:
        if len(pkt) < 40 or pkt[6] != 6:
            return None
        end = min(len(pkt), 40 + int.from_bytes(pkt[4:6], "big"))
        tcp = 40
    else:
        return None
    if end < tcp + 20 or int.from_bytes(pkt[tcp + 2 : tcp + 4], "big") not in PORTS:
        return None
    data = tcp + (pkt[tcp + 12] >> 4) * 4
    return pkt[data:end] if data <= end else b""


def _argument(payload: bytes, upper: bytes, command: bytes) -> bytes | None:
    """The argument of the last ``command`` (e.g. ``b"USER "``) that ends with a blank."""
    found = None
    start = upper.find(command)
    while start >= 0:
        begin = start + len(command)
        ends = [i for i in (payload.find(b, begin) for b in _BLANKS) if i >= 0]
        if ends and min(ends) > begin:
            found = payload[begin : min(ends)]
        start = upper.find(command, start + 1)
    return found


class PwsniffFilter(Filter):
    name = "PWSNIFF"
    so_name = "ulogd_filter_PWSNIFF.so"
    description = (
        "Only TCP packets to POP3 (110) or FTP (21) pass; the arguments of their `USER` and "
        "`PASS` commands become `pwsniff.user` and `pwsniff.pass`. (ulogd2 2.0.8 stopped every "
        "event.)"
    )
    input_type = DataType.PACKET
    output_type = DataType.PACKET
    input_keys = (Key("raw.pkt", KeyType.NONE, help="the IP packet"),)
    output_keys = (
        Key("pwsniff.user", KeyType.STRING, help="argument of the packet's USER command"),
        Key("pwsniff.pass", KeyType.STRING, help="argument of the packet's PASS command"),
    )

    def interp(self, rec: list[Any]) -> int:
        pkt = rec[self.in_slots[0]]
        if pkt is None:
            return STOP
        payload = tcp_payload(bytes(pkt))
        if payload is None:
            return STOP
        if payload:
            upper = payload.upper()
            o = self.out_base
            for i, command in enumerate((b"USER ", b"PASS ")):
                value = _argument(payload, upper, command)
                if value is not None:
                    rec[o + i] = value.decode("utf-8", "surrogateescape")
        return OK
