"""Sans-IO decoders for the headers ulogd's BASE filter reads (NFLOG payload = L3 header on).

Each module decodes one header from a buffer and returns a plain tuple whose items are the
values of BASE's output keys for that header, in BASE's key order (the module's ``FIELDS``
names them), so the filter can store the whole tuple with one slice assignment. ``None``
items are keys ulogd leaves invalid; a ``None`` result means the header is not there
(fewer bytes than ulogd requires). The decoders never raise on short input: every read
is preceded by a length check against the ``length`` the caller passes, which must not
exceed what the buffer holds from ``off`` on.

No I/O, no clock, no allocation beyond the result tuple.
"""

from __future__ import annotations

from typing import TypeAlias

# What raw.pkt can be: the bytes of an NFLOG payload, or a view into a receive buffer.
Buffer: TypeAlias = bytes | bytearray | memoryview
