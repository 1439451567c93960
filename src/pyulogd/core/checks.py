"""Option checks shared by plugins (``Option.check``): each returns the problem, or None.

A value that can never work is refused when the config is read, with file and line, rather
than when a socket is first opened (perhaps hours later, after a reconnect) or, worse, taken
modulo 65536 by a C library into another port.
"""

from __future__ import annotations

import re
from typing import Any

_DIGITS = re.compile(r"[0-9]+\Z")
# What getaddrinfo() may take for a service name (/etc/services: letters, digits, '-', '_',
# '.', '+', '/'; it starts with a letter). Anything else would only fail at start.
_SERVICE = re.compile(r"[A-Za-z][A-Za-z0-9_.+/-]*\Z")


def _port(v: Any, low: int) -> str | None:
    if isinstance(v, int):
        n = v
    else:
        text = str(v)
        if text == "":
            return None  # unset: the plugin says whether it needs one
        if not _DIGITS.match(text):
            if _SERVICE.match(text):
                return None  # a service name, resolved when the socket is opened
            return f"'{text}' is neither a port number nor a service name"
        n = int(text)
    if not low <= n <= 65535:
        return f"port {n} is out of range ({low}..65535)"
    return None


def check_port(v: Any) -> str | None:
    """A peer's port: 1..65535 (an integer option), or for a text option also a service name
    (``syslog``, ``https``), resolved at start."""
    return _port(v, 1)


def check_port_or_default(v: Any) -> str | None:
    """A client library's port option, where 0 stands for its default port: 0..65535."""
    return _port(v, 0)

