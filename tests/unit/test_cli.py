"""The command line without a kernel: help, version, --info, refusals and their exit codes."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from pyulogd.core import registry
from pyulogd.core.context import Context
from pyulogd.core.info import describe
from pyulogd.daemon.cli import apply_switches, main
from pyulogd.io.loop import Loop


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-h"]) == 0
    out = capsys.readouterr().out
    for flag in ("-c --configfile", "-d --daemon", "-p --pidfile", "-u --uid", "-i --info", "-l --loglevel"):
        assert flag in out
    assert main(["-V"]) == 0
    assert "2.0.8" in capsys.readouterr().out


def test_unknown_option_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["-x"])
    assert ei.value.code == 1


def test_unknown_user(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-u", "no-such-user-xyz", "-c", "/dev/null"]) == 1
    assert "Unknown user no-such-user-xyz." in capsys.readouterr().out


@pytest.mark.parametrize("name", registry.names())
def test_info_for_every_plugin(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-i", name]) == 0
    out = capsys.readouterr().out
    assert out == describe(registry.get(name))
    assert out.startswith(f"Name: {name}\n") and "Input keys:\n" in out and "Output keys:\n" in out


def test_info_by_so_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-i", "/usr/lib/x86_64-linux-gnu/ulogd/ulogd_output_LOGEMU.so"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Name: LOGEMU\nConfig options:\n\tVar: file (String, Default: ")
    assert "\tVar: sync (Integer, Default: 0)\n" in out
    assert "\tKey: print (string)\n" in out and "\tKey: oob.time.sec (unsigned int 32, optional)\n" in out
    assert out.endswith("Output keys:\n\tOutput plugin, No keys\n")


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        ("[global]\nstack=log1:NFLOG,emu1:LOGEMU\n[log1]\ngroup=abc\n", 4, ["integer", "abc"]),
        ("[global]\nstack=log1:NFLOG,x1:NOPE,emu1:LOGEMU\n", 2, ["NOPE"]),
        ("[global]\nstack=log1:NFLOG,base1:BASE,ip1:IP2STR,p1:PRINTPKT,emu1:LOGEMU\n[log1]\ngroupp=1\n", 4,
         ["groupp", "valid options", "group"]),
    ],
)
def test_bad_config_refused_with_file_line_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, line: int, words: list[str]
) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text(body)
    assert main(["-c", str(conf)]) == 1
    err = capsys.readouterr().err
    assert f"{conf}:{line}: " in err
    for w in words:
        assert w in err


def test_junk_before_global_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's case: bytes that are not text before [global] gave a traceback (the
    notice about the ignored line raised in syslog())."""
    conf = tmp_path / "junk.conf"
    conf.write_bytes(b"\xff\xfe\x00junk\n[global]\nstack=log1:NFLOG,emu1:LOGEMU\n")
    assert main(["-c", str(conf)]) == 1
    err = capsys.readouterr().err
    assert err == f"pyulogd: configuration error: {conf}:1: not text: \\xff at column 1 (a config file is UTF-8 " \
        "text without control characters)\n"


def test_start_error_on_stderr_is_one_printable_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A start error may name a namespace: escaped on standard error as in the log."""
    conf = tmp_path / "ns.conf"
    conf.write_text(f'[global]\nlogfile="{tmp_path}/l.log"\nstack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,'
                    'ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU\n[log1]\ngroup=77\n'
                    f'network_namespace_path="{tmp_path}/\u202eabc"\n[emu1]\nfile="{tmp_path}/e.log"\n')
    assert main(["-c", str(conf), "--no-realtime"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pyulogd: error starting: NFLOG 'log1': cannot use network namespace ")
    assert f"{tmp_path}/\\u202eabc: " in err and "\u202e" not in err
    assert f"{tmp_path}/\\u202eabc: " in (tmp_path / "l.log").read_text()


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(tmp_path / "nope.conf")]) == 1
    assert "nope.conf" in capsys.readouterr().err


def test_debian_ulogd_conf_loads_unmodified() -> None:
    """Debian's /etc/ulogd.conf: every section it ships parses, its default stack builds."""
    from pyulogd.core.context import Context
    from pyulogd.daemon.service import Service

    conf = Path("/etc/ulogd.conf")
    if not conf.exists():
        pytest.skip("ulogd2 is not installed")
    svc = Service(str(conf), Context(loop=Loop()))
    svc.ctx.log.set_destination("stdout")  # keep the test off syslog
    svc.load()
    assert [s.spec for s in svc.stacks] == [
        "log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU"
    ]


def _switched(flags: dict[str, bool], environ: dict[str, str]) -> tuple[Context, str]:
    ctx = Context(loop=Loop())
    ctx.log.stream = io.StringIO()
    ctx.log.path = "test"
    apply_switches(ctx, argparse.Namespace(**{"no_fusion": False, "no_recvmmsg": False, **flags}), environ)
    assert isinstance(ctx.log.stream, io.StringIO)
    return ctx, ctx.log.stream.getvalue()


def test_speed_up_switches(capsys: pytest.CaptureFixture[str]) -> None:
    """--no-fusion / --no-recvmmsg turn each off alone; the old environment variables still
    do, with a deprecation notice."""
    assert main(["--no-fusion", "--no-recvmmsg", "-V"]) == 0  # the parser knows them
    capsys.readouterr()
    ctx, log = _switched({}, {})
    assert (ctx.fusion, ctx.recvmmsg, log) == (True, True, "")
    ctx, log = _switched({"no_fusion": True}, {})
    assert (ctx.fusion, ctx.recvmmsg, log) == (False, True, "")
    ctx, log = _switched({"no_recvmmsg": True}, {"PYULOGD_NO_FUSION": ""})
    assert (ctx.fusion, ctx.recvmmsg, log) == (True, False, "")
    ctx, log = _switched({}, {"PYULOGD_NO_FUSION": "1", "PYULOGD_NO_RECVMMSG": "1"})
    assert (ctx.fusion, ctx.recvmmsg) == (False, False)
    assert "PYULOGD_NO_FUSION is deprecated: use --no-fusion or fusion=0 in [global]" in log
    assert "PYULOGD_NO_RECVMMSG is deprecated: use --no-recvmmsg or recvmmsg=0 in [global]" in log
