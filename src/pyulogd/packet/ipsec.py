"""The SPI of IPsec AH (RFC 4302) and ESP (RFC 4303) headers, for ``ahesp.spi``.

ulogd2 2.0.8 recognises both protocols but never sets ``ahesp.spi`` (its code is under
``#if 0``, and would have read AH's SPI from the wrong offset). pyulogd reports it once
the fixed part of the header is captured: AH next header, length, reserved, SPI, sequence
(12 bytes, SPI at 4); ESP SPI, sequence (8 bytes, SPI at 0). See docs/compat.md.
"""

from __future__ import annotations

import struct

from pyulogd.packet import Buffer

_U32 = struct.Struct("!I")

AH_SIZE = 12
ESP_SIZE = 8


def ah_spi(buf: Buffer, off: int, length: int) -> int | None:
    if length < AH_SIZE:
        return None
    spi: int = _U32.unpack_from(buf, off + 4)[0]
    return spi


def esp_spi(buf: Buffer, off: int, length: int) -> int | None:
    if length < ESP_SIZE:
        return None
    spi: int = _U32.unpack_from(buf, off)[0]
    return spi
