"""pyulogdctl (ctl/status.py): where it looks for the socket, what it prints, how it fails."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from pyulogd.ctl import status
from pyulogd.daemon.cli import main as pyulogd_main

DOC = {
    "version": "0.1.0", "pid": 4242, "config": "/etc/pyulogd/ulogd.conf", "started": 1.0,
    "started_text": "2026-12-05 16:51:02 +0000", "uptime_seconds": 183845.2,
    "metrics_url": "http://127.0.0.1:9317/metrics", "watchdog_seconds": 15.0,
    "stacks": [{"line": 12, "spec": "log1:NFLOG,emu1:LOGEMU", "fused": True,
                "plugins": [{"id": "log1", "plugin": "NFLOG"}, {"id": "emu1", "plugin": "LOGEMU"}]}],
    "inputs": [{"id": "log1", "plugin": "NFLOG", "netns": "qrouter-*", "netns_dir": "/run/netns",
                "namespaces": ["qrouter-a", "qrouter-\x1b]0;owned\x07\nFAKE LINE"]}],
    "totals": {"records_in": 10, "written": 0, "lost": 2, "kernel_overruns": 1, "log_lines_lost": 0},
    "counters": {"nflog.log1.packets": 10, "nflog.log1.qrouter-\x1b[2J.enobufs": 1},
}  # fmt: skip


def test_status_for_a_terminal_escapes_what_came_from_outside() -> None:
    text = status.format_status(DOC)
    assert text.startswith("pyulogd 0.1.0, pid 4242, up 2d 3h 4m 5s (since 2026-12-05 16:51:02 +0000)\n")
    assert "records: 10 in, 2 lost, 1 kernel overruns\n" in text
    assert "  line 12: log1:NFLOG,emu1:LOGEMU (fused)\n" in text
    assert "log1 (NFLOG): following qrouter-* in /run/netns: 2 namespace(s)\n  qrouter-a\n" in text
    assert "  qrouter-\\x1b]0;owned\\x07\\nFAKE LINE\n" in text
    assert "nflog.log1.qrouter-\\x1b[2J.enobufs" in text
    assert "\x1b" not in text and "\x07" not in text
    assert not any(line.startswith("FAKE") for line in text.splitlines())


def test_where_the_socket_is(tmp_path: Path) -> None:
    p = argparse.Namespace
    conf = tmp_path / "u.conf"
    conf.write_text('[global]\ncontrol_socket="/run/x/c.sock"\nstack=log1:NFLOG,emu1:LOGEMU\n')
    assert status.socket_path(p(socket=None, config=str(conf))) == "/run/x/c.sock"
    assert status.socket_path(p(socket="/s", config=str(conf))) == "/s"
    assert status.socket_path(p(socket=None, config=None)) == status.DEFAULT_SOCKET
    conf.write_text('[global]\nstack=log1:NFLOG,emu1:LOGEMU\n')
    assert status.socket_path(p(socket=None, config=str(conf))) == status.DEFAULT_SOCKET
    conf.write_text('[global]\ncontrol_socket=""\n')
    with pytest.raises(status.CtlError, match="turned off"):
        status.socket_path(p(socket=None, config=str(conf)))


def test_no_daemon_is_a_message_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert status.main(["-s", str(tmp_path / "none.sock"), "status"], out=io.StringIO()) == 1
    assert "no control socket at" in capsys.readouterr().err
    # pyulogd --status is the same command, with the socket of -c's config.
    conf = tmp_path / "u.conf"
    conf.write_text(f'[global]\ncontrol_socket="{tmp_path}/c.sock"\n')
    assert pyulogd_main(["-c", str(conf), "--status"]) == 1
    assert f"no control socket at {tmp_path}/c.sock" in capsys.readouterr().err
