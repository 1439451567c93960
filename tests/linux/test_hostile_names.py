"""Namespace names chosen by whoever can run ``ip netns add`` reach the daemon's text outputs.

Issue 10: a name that is not UTF-8 (``qtest-\\xff\\xfe``) killed the daemon when it logged
to syslog, its default (UnicodeEncodeError in core/log.py, exit 1); a name with a newline and
a fake syslog head produced a forged line in LOGEMU and in the daemon log. Both are escaped
now (pyulogd.core.escape): the daemon runs on, each record and each message is one line.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.linux.lab import have_root_and_tools, lines, wait_for
from tests.linux.nsdaemon import Daemon, DevLog, Namespace, counters_at_exit, unique

_skip = have_root_and_tools("unshare", "mount")
pytestmark = [pytest.mark.linux, pytest.mark.skipif(_skip is not None, reason=_skip or "")]

GROUP = 54
N = 5
FORGED = "\nDec  7 00:00:00 fakehost FORGED: IN=eth0 SRC=6.6.6.6"
LOG_LINE = re.compile(r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} <\d> \S+:\d+ ")
EMU_HEAD = re.compile(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ ")


def config(out: Path, follow: str, logfile: bool) -> str:
    log = f'logfile="{out}/daemon.log"\n' if logfile else ""  # without: syslog, the default
    return f"""[global]
{log}loglevel=3
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU

[log1]
group={GROUP}
netns="{follow}"
netlink_qthreshold=1

[emu1]
file="{out}/emu.log"
netns_prefix=1
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_a_name_that_is_not_utf8_with_the_log_on_syslog(tmp_path: Path) -> None:
    base = unique("qtest-")
    name = base + "-" + b"\xff\xfe".decode("utf-8", "surrogateescape")  # the bytes qtest-...-\xff\xfe
    escaped = base + "-\\xff\\xfe"
    devlog = DevLog(tmp_path / "devlog")
    devlog.start()
    # Before the daemon: its private mount namespace (for /dev/log) sees the namespaces of now.
    ns = Namespace(name, GROUP)
    daemon: Daemon | None = None
    try:
        daemon = Daemon(tmp_path, config(tmp_path, base + "*", logfile=False), None, wrapper=devlog.wrapper,
                        ready=lambda: "entering main loop" in devlog.text())  # fmt: skip
        wait_for(lambda: f"attached network namespace {escaped}" in devlog.text(), 10, "the attach message")
        wait_for(ns.nflog_bound, 10, "the NFLOG group to be bound")
        ns.send(N)
        wait_for(lambda: len(lines(tmp_path / "emu.log")) >= N, 10, f"{N} LOGEMU lines")
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0
    finally:
        if daemon is not None:
            daemon.kill()
        ns.delete()
        devlog.close()
    text = devlog.text()  # every message valid UTF-8
    assert all(m.startswith(b"<") and m.count(b"\n") == 0 for m in devlog.messages)
    assert f"NFLOG 'log1': attached network namespace {escaped} " in text
    assert counters_at_exit(text)["nflog.log1.packets"] == N
    emu = (tmp_path / "emu.log").read_bytes().decode("utf-8").splitlines()
    assert len(emu) == N and all(f" [{escaped}] qsec  IN= OUT=lo " in x for x in emu)


def test_a_name_with_a_newline_forges_no_line(tmp_path: Path) -> None:
    base = unique("qtest-")
    name = base + "-nl" + FORGED
    escaped = base + "-nl\\nDec  7 00:00:00 fakehost FORGED: IN=eth0 SRC=6.6.6.6"
    daemon = Daemon(tmp_path, config(tmp_path, base + "*", logfile=True), tmp_path / "daemon.log")
    ns: Namespace | None = None
    try:
        ns = Namespace(name, GROUP)  # while the daemon runs: attached when it appears
        wait_for(lambda: "attached network namespace" in daemon.text() and ns is not None and ns.nflog_bound(),
                 10, "the namespace to be attached")  # fmt: skip
        ns.send(N)
        wait_for(lambda: len(lines(tmp_path / "emu.log")) >= N, 10, f"{N} LOGEMU lines")
        assert daemon.stop() == 0
    finally:
        daemon.kill()
        if ns is not None:
            ns.delete()
    log = lines(tmp_path / "daemon.log")
    assert all(LOG_LINE.match(x) for x in log), [x for x in log if not LOG_LINE.match(x)]
    attached = [x for x in log if "attached network namespace" in x]
    assert len(attached) == 1 and f"attached network namespace {escaped} " in attached[0]
    emu = lines(tmp_path / "emu.log")
    assert len(emu) == N
    for line in emu:
        assert EMU_HEAD.match(line) and f" [{escaped}] qsec  IN= OUT=lo " in line, line
