"""Issue 6, done when: Debian's /etc/ulogd.conf with every stack uncommented (but the ULOG one)
loads and builds every stack, given the peers it names.

The file is used as shipped except: the commented ``#stack=`` lines are uncommented, file
paths point into a temporary directory, the NuFW socket too, and ``logfile`` is a file.
Database sections keep their settings (``localhost``): pyulogd builds a SQL stack whose
server is down and spools until it is back (docs/sql.md). Stacks whose plugins other
engineers have not landed yet are skipped and listed (``PENDING``); the ULOG stack must be
refused with its explanation.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from pyulogd.core import registry
from pyulogd.core.config import parse_text
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.core.stack import parse_stack_spec
from pyulogd.daemon.service import Service
from pyulogd.io.loop import Loop

DEBIAN = Path("/etc/ulogd.conf")
pytestmark = pytest.mark.skipif(not DEBIAN.exists(), reason="ulogd2 (Debian's /etc/ulogd.conf) is not installed")


def importable(name: str) -> bool:
    try:
        registry.get(name)
    except Exception:
        return False
    return True


def debian_all_stacks(tmp: Path) -> tuple[str, list[str], list[str]]:
    """The config text with every stack on, the stacks kept, and those skipped (plugin pending)."""
    text = DEBIAN.read_text()
    kept: list[str] = []
    skipped: list[str] = []
    out = []
    for line in text.splitlines():
        m = re.match(r"^#?stack=(.*)$", line)
        if m:
            spec = m.group(1)
            names = {n for _i, n in parse_stack_spec(spec, "x", None)}
            if "ULOG" in names:
                out.append("#" + line.lstrip("#"))
                continue
            if all(importable(n) for n in names):
                kept.append(spec)
                out.append("stack=" + spec)
            else:
                skipped.append(spec)
                out.append("#" + line.lstrip("#"))
            continue
        line = re.sub(r'^logfile=".*"$', f'logfile="{tmp}/ulogd.log"', line)
        line = re.sub(r'^(file|db)\s*=\s*"?(/var/log/[^"]*/)?([^"/]+)"?$', lambda m: f'{m[1]}="{tmp}/{m[3]}"', line)
        line = re.sub(r'^directory="/var/log/ulog/"$', f'directory="{tmp}/"', line)
        line = re.sub(r'^socket_path=".*"$', f'socket_path="{tmp}/nuauth_ulogd2.sock"', line)
        out.append(line)
        sec = re.match(r"^\[((mysql|pgsql|dbi|sqlite3_|sys|graphite)\w*)\]$", line)
        if sec:  # spools (SQL, and the network outputs': issue 12) in the temporary directory, not /var/spool/pyulogd
            out.append(f'spool_dir="{tmp}/spool-{sec.group(1)}"')
    # Sections Debian's stacks use but leave commented (JSON file, PCAP file, NACCT file).
    body = "\n".join(out) + "\n"
    body = body.replace("[json1]\n", f'[json1]\nfile="{tmp}/ulogd.json"\n', 1)
    body = body.replace("[pcap1]\n", f'[pcap1]\nfile="{tmp}/ulogd.pcap"\n', 1)
    body = body.replace("[nacct1]\n", f'[nacct1]\nfile="{tmp}/nacct.log"\n', 1)
    if "\n[sys1]\n" not in body:  # Debian's sys1 has no section: its defaults, but not its spool
        body += f'\n[sys1]\nspool_dir="{tmp}/spool-sys1"\n'

    return body, kept, skipped


# Plugins other engineers are still writing: their stacks are skipped, not failed.
PENDING = {"SYSLOG", "PCAP", "GRAPHITE", "IPFIX", "NACCT", "XML", "GPRINT", "OPRINT"}


def sqlite_peer(tmp: Path) -> None:
    """The SQLite database Debian's sqlite3 stacks name, made from Debian's own schema."""
    schema = Path("/usr/share/doc/ulogd2/sqlite3.table")
    if not schema.exists():
        schema = Path(__file__).resolve().parents[2] / "examples" / "sqlite3.table"
    con = sqlite3.connect(tmp / "ulogd.sqlite3db")
    con.executescript(schema.read_text())
    con.close()


def test_every_debian_stack_builds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body, kept, skipped = debian_all_stacks(tmp_path)
    sqlite_peer(tmp_path)
    assert len(kept) + len(skipped) == 23  # the 24 stacks Debian ships, minus ULOG's
    pending = {n for s in skipped for _i, n in parse_stack_spec(s, "x", None) if not importable(n)}
    assert pending <= PENDING, f"stacks skipped for plugins that should exist: {sorted(pending - PENDING)}"
    ctx = Context(loop=Loop())
    svc = Service(str(tmp_path / "ulogd.conf"), ctx)
    svc.load_config(parse_text(body, str(tmp_path / "ulogd.conf")))
    assert [s.spec for s in svc.stacks] == kept
    # Shared inputs as Debian names them: one instance per input id.
    assert set(svc.sources) <= {"log1", "log2", "log3", "ct1", "acct1", "nuauth1"}
    with capsys.disabled():
        if skipped:
            print(f"\n[debian ulogd.conf] {len(kept)} stacks built; skipped (plugin pending: "
                  f"{', '.join(sorted(pending))}):\n  " + "\n  ".join(skipped))  # fmt: skip


def test_ulog_stack_refused_with_reason(tmp_path: Path) -> None:
    text = DEBIAN.read_text().replace("#stack=ulog1:ULOG", "stack=ulog1:ULOG")
    text = re.sub(r'^logfile=".*"$', f'logfile="{tmp_path}/ulogd.log"', text, flags=re.M)
    text = re.sub(r'^file="/var/log/ulog/syslogemu.log"$', f'file="{tmp_path}/emu.log"', text, flags=re.M)
    svc = Service(str(tmp_path / "ulogd.conf"), Context(loop=Loop()))
    with pytest.raises(ConfigError) as ei:
        svc.load_config(parse_text(text, str(DEBIAN)))
    msg = str(ei.value)
    assert "ULOG" in msg and "3.17" in msg and "NFLOG" in msg
    assert re.search(rf"{DEBIAN}:\d+: ", msg)  # file and line of the stack
