"""Config options of the SQL outputs: ulogd2's own, then pyulogd's additions.

ulogd2's options are all accepted. Those that configured 2.0.8's backlog and ring buffer
map onto the writer's queue: ``backlog_memcap`` (bytes, 0 = pyulogd's default) bounds the
records kept in memory before they spill to the spool; ``ring_buffer_size`` and
``backlog_oneshot_requests`` are accepted and have no effect (the writer thread and its
batches replace both); SQLite's ``buffer`` (unused by 2.0.8 itself) likewise. ``reconnect``
is the first delay of the reconnection backoff (0, which made 2.0.8 give up for good,
means 1 second here: records are never given up on).
"""

from __future__ import annotations

import os
import re
from typing import Any

from pyulogd.core.errors import ConfigError
from pyulogd.core.plugin import Option
from pyulogd.core.plugin import OptionType as T

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.I)
_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$", re.I)


def parse_size(text: str) -> int:
    m = _SIZE.match(str(text))
    if m is None:
        raise ValueError(f"'{text}' is not a size (e.g. 1073741824, 512M, 1G)")
    return int(float(m[1]) * 1024 ** " kmgt".index(m[2].lower() or " "))


def parse_seconds(text: str) -> float:
    m = _TIME.match(str(text))
    if m is None:
        raise ValueError(f"'{text}' is not a duration (e.g. 1, 0.5, 250ms)")
    return float(m[1]) / (1000 if (m[2] or "").lower() == "ms" else 1)


def _check(parse: Any) -> Any:
    def check(value: Any) -> str | None:
        try:
            parse(value)
        except ValueError as e:
            return str(e)
        return None

    return check


def _positive(value: Any) -> str | None:
    return None if int(value) > 0 else "must be greater than 0"


# The first seven options of every ulogd2 SQL output (util/db.c), in ulogd's order.
ULOGD_DB = (
    Option("table", T.STRING, "", required=True, help="table or view whose columns say what to write"),
    Option("reconnect", T.INT, 2, help="seconds before the first reconnection attempt (doubles, capped)"),
    Option("connect_timeout", T.INT, 0, help="seconds a connection attempt may take (0: 10)"),
    Option("procedure", T.STRING, "", required=True, help="INSERT, INSERT INTO <name>, CALL <name> or a function"),
    Option("backlog_memcap", T.INT, 0, help="bytes of records kept in memory before spooling (0: 64 MiB)"),
    Option("backlog_oneshot_requests", T.INT, 10, help="accepted; batches replace it"),
    Option("ring_buffer_size", T.INT, 0, help="accepted; the writer thread replaces it"),
)

# pyulogd's own: batching, spool, secrets.
PYULOGD = (
    Option("batch_size", T.INT, 10000, help="rows per transaction at most", check=_positive),
    Option("batch_timeout", T.STRING, "1", help="longest a record waits for its batch (s, or 250ms)",
           check=_check(parse_seconds)),
    Option("reconnect_max", T.INT, 60, help="longest delay between reconnection attempts, seconds"),
    Option("spool_dir", T.STRING, "", help="where records wait while the database is unavailable"),
    Option("spool_max", T.STRING, "1G", help="size of the spool; records beyond it are dropped",
           check=_check(parse_size)),
    Option("stop_timeout", T.STRING, "5", help="at exit, how long to write before spooling the rest",
           check=_check(parse_seconds)),
    Option("schema_file", T.STRING, "", help="SQL file run at start when the table does not exist"),
)

SECRETS = (
    Option("pass_file", T.STRING, "", help="read the password from this file (first line)"),
    Option("pass_env", T.STRING, "", help="read the password from this environment variable"),
)


def password(config: dict[str, Any], label: str) -> str:
    """``pass``, ``pass_file`` or ``pass_env``; more than one of them is an error."""
    given = [n for n in ("pass", "pass_file", "pass_env") if str(config.get(n) or "")]
    if len(given) > 1:
        raise ConfigError(f"{label}: give only one of {', '.join(given)}")
    if config.get("pass_file"):
        path = str(config["pass_file"])
        try:
            with open(path, encoding="utf-8") as f:
                return f.readline().rstrip("\r\n")
        except OSError as e:
            raise ConfigError(f"{label}: cannot read pass_file '{path}': {e.strerror}") from e
    if config.get("pass_env"):
        name = str(config["pass_env"])
        if name not in os.environ:
            raise ConfigError(f"{label}: pass_env: environment variable '{name}' is not set")
        return os.environ[name]
    return str(config.get("pass") or "")
