"""Lines as datagrams, one per line: udp or a unix datagram socket (JSON's udp mode, SYSLOG,
IPFIX over udp). A :class:`~pyulogd.io.sink.LineSink`.

Everything else is the stream sink's (``io/streamsink.py``: queueing, batching, counters)
and the reliable sender's, which knows the datagram rules: a refused datagram (an ICMP port
unreachable reported on a later ``send``) is counted lost, the rest wait for a probe after
the back-off; a datagram that can never go (too big) is counted and skipped.
"""

from __future__ import annotations

import socket
from typing import TypeVar

from pyulogd.io.streamsink import SenderSink

LineT = TypeVar("LineT", str, bytes)


class DgramSink(SenderSink[LineT]):
    """One datagram per line."""

    kind = socket.SOCK_DGRAM

    def _hand_over(self, pending: list[LineT], mark: int | None) -> None:
        for line in pending:
            self._enqueue(line, 1, mark)
