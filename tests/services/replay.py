"""Golden netlink buffers through any config, offline; schemas of the ulogd2 package.

``run(config, case)`` builds the daemon's stacks from ``config`` (text), starts every plugin
but the input, hands the captured buffers of the golden ``case`` to the input in order,
and stops, as tests/compat/test_golden_offline.py does for the cases' own configs.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pyulogd.core.config import parse_text
from pyulogd.core.context import Context
from pyulogd.core.plugin import Source
from pyulogd.daemon.service import Service
from pyulogd.io.loop import Loop
from pyulogd.io.rtnl import LinkCache
from tests.compat.test_golden_offline import SET, raw_buffers

DOC = Path("/usr/share/doc/ulogd2")
__all__ = ["SET", "run", "schema", "json_rows"]


def schema(name: str) -> str:
    """The text of a schema file of Debian's ulogd2 package (gzipped or not)."""
    for path in (DOC / name, DOC / (name + ".gz")):
        if path.exists():
            data = path.read_bytes()
            return (gzip.decompress(data) if path.suffix == ".gz" else data).decode()
    raise FileNotFoundError(f"{name} is not in {DOC} (apt-get install ulogd2)")


def run(config: str, case: str, out: Path, times: int = 1) -> Service:
    ctx = Context(loop=Loop(), hostname="vm")
    cache = LinkCache(ctx, kernel=False)
    cache.names.update({1: "lo", 2: "gbb0"})
    ctx.ifcache = cache
    svc = Service(str(out / "ulogd.conf"), ctx)
    svc.load_config(parse_text(config, str(out / "ulogd.conf")))
    for stack in svc.stacks:
        for inst in stack.instances[1:]:
            if inst not in svc.started:
                inst.start()
                svc.started.append(inst)
                if hasattr(inst, "flush"):
                    svc.sinks.append(inst)  # type: ignore[arg-type]
    src = svc.stacks[0].source
    assert isinstance(src, Source)
    bufs = raw_buffers(case)
    for _ in range(times):
        for buf in bufs:
            src._handle(buf)  # type: ignore[attr-defined]
            svc.flush()
    svc.stop()
    return svc


def json_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"needs the {tool} client")


def psql(db: str, text: str) -> None:
    """Load SQL with psql (ulogd2's schema files are psql scripts)."""
    _need("psql")
    env = dict(os.environ, PGOPTIONS="-c client_min_messages=warning")
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-q"],
                   input=text, text=True, check=True, capture_output=True, env=env)


def mysql(db: str, text: str) -> None:
    """Load SQL with the mysql client (the schemas use its ``delimiter`` command)."""
    _need("mysql")
    subprocess.run(["mysql", "-h", "127.0.0.1", "-uroot", db], input=text, text=True, check=True,
                   capture_output=True)
