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
from typing import Any

from pyulogd.core.errors import ConfigError
from pyulogd.core.options import Address, Duration, Int, Path, Size, Str
from pyulogd.core.plugin import Option
from pyulogd.io.chain import chain_options

# The first seven options of every ulogd2 SQL output (util/db.c), in ulogd's order.
ULOGD_DB = (
    Option("table", Str(), "", required=True, help="table or view whose columns say what to write"),
    Option("reconnect", Duration(), 2, help="seconds before the first reconnection attempt (doubles, capped)"),
    Option("connect_timeout", Duration(), 0, help="seconds a connection attempt may take (0: 10)"),
    Option("procedure", Str(), "", required=True, help="INSERT, INSERT INTO <name>, CALL <name> or a function"),
    Option("backlog_memcap", Size(), 0, help="bytes of records kept in memory before spooling (0: 64 MiB)"),
    Option("backlog_oneshot_requests", Int(), 10, help="accepted; batches replace it"),
    Option("ring_buffer_size", Int(), 0, help="accepted; the writer thread replaces it"),
)

# pyulogd's own: batching, spool, secrets.
PYULOGD = (
    Option("batch_size", Int(1), 10000, extra=True, help="rows per transaction at most"),
    Option("batch_timeout", Duration(), "1", extra=True, help="longest a record waits for its batch (s, or 250ms)"),
    Option("reconnect_max", Duration(), 60, extra=True,
           help="longest delay between reconnection attempts, seconds"),
    Option("spool_dir", Path(), "", extra=True, help="where records wait while the database is unavailable"),
    Option("spool_max", Size(), "1G", extra=True, help="size of the spool; records beyond it are dropped"),
    Option("stop_timeout", Duration(), "5", extra=True,
           help="at exit, how long to write before spooling the rest"),
    Option("schema_file", Path(), "", extra=True, help="SQL file run at start when the table does not exist"),
    # tamper evidence (io/chain.py): ulogd's tables get two columns, pyulogd_seq and
    # pyulogd_chain (db/output.py); AUDITDB has them in its schema
    *chain_options(),
)

SECRETS = (
    Option("pass_file", Path(), "", extra=True, help="read the password from this file (first line)"),
    Option("pass_env", Str(), "", extra=True, help="read the password from this environment variable"),
)

# ``host`` of the server outputs: a name or address, or the path of the server's local socket.
HOST = Address(paths=True)


def password(config: dict[str, Any], label: str) -> str:
    """``pass``, ``pass_file`` or ``pass_env``; more than one of them is an error."""
    given = [n for n in ("pass", "pass_file", "pass_env") if config.get(n)]
    if len(given) > 1:
        raise ConfigError(f"{label}: give only one of {', '.join(given)}")
    if config.get("pass_file"):
        path = config["pass_file"]
        try:
            with open(path, encoding="utf-8") as f:
                return f.readline().rstrip("\r\n")
        except OSError as e:
            raise ConfigError(f"{label}: cannot read pass_file '{path}': {e.strerror}") from e
    if config.get("pass_env"):
        name = config["pass_env"]
        if name not in os.environ:
            raise ConfigError(f"{label}: pass_env: environment variable '{name}' is not set")
        return os.environ[name]
    pw: str = config.get("pass") or ""
    return pw
