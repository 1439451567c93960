"""HWHDR: the hardware (MAC) header as text (ulogd2 ``ulogd_filter_HWHDR.so``, spec 5.6).

Needed by the SQL schemas ulogd2 ships (``mac_str``, ``mac_saddr_str``, ``mac_daddr_str``
columns). As in 2.0.8: ``oob.protocol`` is copied; a valid ``raw.mac.saddr`` gives
``mac.saddr.str`` and ``raw.type`` 65535 (ARPHRD_VOID); a valid ``raw.mac`` gives
``raw.type`` (the input's, else 1 for a 14-byte header, else 65535), ``mac.str`` (the
whole header), and for Ethernet ``mac.daddr.str``, ``mac.saddr.str`` (unless already set)
and ``oob.protocol`` from the EtherType. ``raw.type`` and ``oob.protocol`` therefore
shadow NFLOG's keys of the same names for every plugin after this one. Text is lower-case
hex bytes joined by ``:``; a header over 42 bytes (2.0.8's buffer) is an error.
"""

from __future__ import annotations

from typing import Any

from pyulogd.core.plugin import ERR, OK, DataType, Filter, Key, KeyType

ARPHRD_ETHER = 1
ARPHRD_VOID = 65535
_MAX_HEADER = 42


class HwhdrFilter(Filter):
    name = "HWHDR"
    so_name = "ulogd_filter_HWHDR.so"
    description = "MAC header to strings"
    input_type = DataType.PACKET
    output_type = DataType.PACKET
    input_keys = (
        Key("raw.type", KeyType.UINT16, optional=True),
        Key("oob.protocol", KeyType.UINT16),
        Key("raw.mac", KeyType.RAW, optional=True),
        Key("raw.mac_len", KeyType.UINT16, optional=True),
        Key("raw.mac.saddr", KeyType.RAW, optional=True),
        Key("raw.mac.addrlen", KeyType.UINT16, optional=True),
    )
    output_keys = (
        Key("raw.type", KeyType.UINT16),
        Key("oob.protocol", KeyType.UINT16),
        Key("mac.saddr.str", KeyType.STRING),
        Key("mac.daddr.str", KeyType.STRING),
        Key("mac.str", KeyType.STRING),
    )

    def start(self) -> None:
        self._in = tuple(self.in_slots)

    def interp(self, rec: list[Any]) -> int:
        s_type, s_proto, s_mac, s_maclen, s_saddr, s_addrlen = self._in
        o = self.out_base
        proto = rec[s_proto]
        if proto is not None:
            rec[o + 1] = proto
        saddr = rec[s_saddr]
        if saddr is not None:
            alen = rec[s_addrlen]
            if alen is None:
                return ERR
            rec[o + 2] = bytes(saddr[:alen]).hex(":")
            rec[o] = ARPHRD_VOID
        mac = rec[s_mac]
        if mac is None:
            return OK
        mac_len = rec[s_maclen]
        if mac_len is None or mac_len > _MAX_HEADER:
            return ERR
        htype = rec[s_type]
        if htype is None:
            htype = ARPHRD_ETHER if mac_len == 14 else ARPHRD_VOID
        rec[o] = htype
        header = bytes(mac[:mac_len])
        if htype == ARPHRD_ETHER and len(header) >= 14:
            if rec[o + 2] is None:
                rec[o + 2] = header[6:12].hex(":")
            rec[o + 3] = header[0:6].hex(":")
            rec[o + 1] = int.from_bytes(header[12:14], "big")
        rec[o + 4] = header.hex(":")
        return OK
