"""Helpers for the audit tests: an audit store filled through the real AUDITDB output from
records of every kind, and the command run in-process with its output captured."""

from __future__ import annotations

import io
import os
import socket
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

from pyulogd.audit.cli import main
from pyulogd.core.clock import Clock, FakeClock
from pyulogd.core.context import Context
from pyulogd.io.loop import Loop
from pyulogd.plugins.outputs.auditdb import AuditDbOutput
from tests.helpers import make_stack, stop_stack
from tests.unit.test_ecs import AuditKeys, CtSource, ct_flow

T0 = 1800000000  # 2027-01-15T08:00:00Z
ROUTER, PORT_A, PORT_B, PROJECT = "r-1111", "p-aaaa", "p-bbbb", "proj-42"


def ip(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def trail() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(flow keys, audit keys) of a small Neutron-like day: a floating IP held by port A in the
    first hour and by port B later, drops of a port scan, a rate-limit summary, a loss record."""
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    where = {"neutron.router_id": ROUTER, "neutron.project_id": PROJECT}
    for n in range(20):  # inbound through floating IP 203.0.113.5 -> fixed 10.0.0.5 (port A)
        t = T0 + 60 * n
        out.append((ct_flow(1, ("198.51.100.9", "203.0.113.5", 40000 + n, 22), ("10.0.0.5", "198.51.100.9", 22,
                                                                                  40000 + n),
                            **{"flow.start.sec": t, "flow.start.usec": 0}),
                    {**where, "audit.action": "ACCEPT", "neutron.port_id": PORT_A, "audit.rule": "sg allow ssh"}))
    for n in range(10):  # the same floating IP held by port B (fixed 10.0.0.6) two hours later
        t = T0 + 7200 + 60 * n
        out.append((ct_flow(1, ("198.51.100.10", "203.0.113.5", 50000 + n, 443), ("10.0.0.6", "198.51.100.10", 443,
                                                                                    50000 + n),
                            **{"flow.start.sec": t, "flow.start.usec": 0}),
                    {**where, "audit.action": "ACCEPT", "neutron.port_id": PORT_B}))
    for n in range(30):  # a port scan dropped, from 192.0.2.66
        t = T0 + 3600 + n
        out.append((ct_flow(4, ("192.0.2.66", "10.0.0.5", 60000, 1000 + n), ("10.0.0.5", "192.0.2.66", 1000 + n,
                                                                              60000),
                            **{"flow.end.sec": t, "flow.end.usec": 5}),
                    {**where, "audit.action": "DROP" if n % 3 else "REJECT", "neutron.port_id": PORT_A,
                     "audit.rule": "sg default drop"}))
    out.append((ct_flow(4, ("192.0.2.66", "10.0.0.5", 60000, 2000), ("10.0.0.5", "192.0.2.66", 2000, 60000),
                        **{"flow.end.sec": T0 + 3700}),
                {**where, "audit.action": "DROP", "audit.suppressed": 250, "audit.first": T0 + 3650,
                 "audit.last": T0 + 3700, "audit.limit_key": "port=p-aaaa action=DROP"}))
    out.append((ct_flow(2, ("10.0.0.5", "192.0.2.1", 1, 2), ("192.0.2.1", "10.0.0.5", 2, 1),
                        **{"flow.start.sec": T0 + 3800}),
                {"audit.loss.count": 17, "audit.loss.reason": "enobufs", "audit.loss.first": T0 + 3790,
                 "audit.loss.last": T0 + 3800}))
    return out


def fill(db_url: str, spool: Path, records: list[tuple[dict[str, Any], dict[str, Any]]] | None = None,
         **opts: Any) -> Any:
    """Write ``records`` (default :func:`trail`) through CTKEYS -> AUDITKEYS -> AUDITDB."""
    ctx = Context(loop=Loop(), hostname="net1")
    cfg = {"db": db_url, "batch_timeout": "50ms", "spool_dir": str(spool), **opts}
    stack = make_stack([CtSource, AuditKeys, (AuditDbOutput, cfg)], ctx)
    audit = stack.instances[1]
    for flow, keys in records if records is not None else trail():
        audit.values = keys
        stack.source.emit_dict(flow)
    stack.sink.flush()
    stop_stack(stack)
    assert stack.errors == 0
    return stack


def run(*argv: str, clock: Clock | None = None) -> tuple[int, str, str]:
    """The command in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stderr(err):
        rc = main(list(argv), out=out, clock=clock or FakeClock(wall=T0 + 86400))
    return rc, out.getvalue(), err.getvalue()


CHAIN_KEY = b"0123456789abcdef0123456789abcdef"


def chain_key_file(folder: Path) -> Path:
    """A ``chain_key`` file as the daemon accepts it (root's, mode 600), holding :data:`CHAIN_KEY`."""
    path = folder / "chain.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, CHAIN_KEY + b"\n")
    os.close(fd)
    return path
