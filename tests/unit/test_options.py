"""Typed options (core/options.py): what each kind reads, what it refuses and why, and that a
config file hands plugins typed values or stops with the file, the line and the reason."""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Any

import pytest

from pyulogd.core import registry
from pyulogd.core.config import option_values, parse_text
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.core.info import describe
from pyulogd.core.options import Address, Bool, Choice, Duration, Int, OptionKind, Path, Port, Size, Str
from pyulogd.core.plugin import Option, OptionType
from pyulogd.daemon.service import Service
from pyulogd.io.loop import Loop


def refused(kind: OptionKind[Any], text: str) -> str:
    with pytest.raises(ValueError) as e:
        kind.parse(text)
    return str(e.value)


# -- the kinds


@pytest.mark.parametrize(
    ("text", "value"), [("10", 10), ("0x10", 16), ("0600", 0o600), ("-1", -1), ("4294967295", 2**32 - 1)]
)
def test_int_keeps_ulogds_syntax(text: str, value: int) -> None:
    assert Int().parse(text) == value


def test_int_bounds_and_reasons() -> None:
    assert refused(Int(), "12abc") == "needs an integer, not '12abc'"
    assert refused(Int(), "1.5") == "needs an integer, not '1.5'"
    assert refused(Int(0, 0xFFFF), "70000") == "must be between 0 and 65535"
    assert refused(Int(1), "0") == "must be at least 1"
    assert refused(Int(0, 0o7777, octal=True), "010000") == (
        "must be between 0 and 07777 (a file mode: write it in octal, e.g. 0660)")  # fmt: skip
    assert Int(0, 0o7777, octal=True).parse("0660") == 0o660


@pytest.mark.parametrize(("text", "value"), [("0", False), ("1", True), ("0x1", True), ("yes", True), ("No", False),
                                             ("true", True), ("OFF", False), ("on", True)])  # fmt: skip
def test_bool_reads_ulogds_0_and_1_and_words(text: str, value: bool) -> None:
    assert Bool().parse(text) is value


@pytest.mark.parametrize("text", ["2", "-1", "maybe", ""])
def test_bool_refuses_other_values(text: str) -> None:
    assert refused(Bool(), text).startswith("needs 0 or 1 (or yes/no, true/false, on/off)")


@pytest.mark.parametrize(("text", "value"), [
    ("150000", 150000), ("0x100", 256), ("010", 8),  # bare: ulogd's integers, bytes
    ("64K", 64 << 10), ("64k", 64 << 10), ("64KiB", 64 << 10), ("64kb", 64 << 10), ("512M", 512 << 20),
    ("1G", 1 << 30), ("2T", 2 << 40), ("1.5G", 3 << 29), ("100B", 100),
])  # fmt: skip
def test_size_units_are_powers_of_1024(text: str, value: int) -> None:
    assert Size().parse(text) == value


@pytest.mark.parametrize("text", ["lots", "1.5", "1KK", "K", "1 parsec", "1Gb2"])
def test_size_refuses_what_is_not_a_size(text: str) -> None:
    assert refused(Size(), text).startswith("needs a size in bytes")


def test_size_bounds() -> None:
    assert refused(Size(), "-1") == "must not be negative"
    assert refused(Size(64, 1 << 30), "32") == "must be between 64 and 1073741824"
    assert refused(Size(0, 0xFFFF), "64K") == "must be between 0 and 65535"
    assert Size(0, 0xFFFF).parse("63K") == 63 << 10


@pytest.mark.parametrize(("text", "seconds"), [
    ("60", 60.0), ("010", 8.0), ("0x10", 16.0), ("0.5", 0.5),  # bare: the option's unit (seconds)
    ("250ms", 0.25), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1.5h", 5400.0), ("250MS", 0.25),
])  # fmt: skip
def test_duration_bare_numbers_keep_their_unit(text: str, seconds: float) -> None:
    assert Duration().parse(text) == seconds


def test_duration_in_another_unit_and_refusals() -> None:
    ms = Duration(unit="ms")
    assert ms.parse("250") == 0.25 and ms.parse("2s") == 2.0 and ms.show(0.25) == "250"
    assert refused(Duration(), "5x").startswith("needs a duration (e.g. 5 for seconds, 250ms")
    assert refused(Duration(), "-1") == "must not be negative"
    assert refused(Duration(positive=True), "0") == "must be greater than 0"
    assert refused(Duration(1), "500ms") == "must be at least 1"
    assert refused(Duration(hi=60), "2m") == "must be between 0 and 60"


def test_duration_shows_what_one_would_write() -> None:
    d = Duration()
    assert [d.show(v) for v in (60.0, 0.25, 1.5, 0.0)] == ["60", "250ms", "1500ms", "0"]
    assert all(d.parse(d.show(v)) == v for v in (60.0, 0.25, 1.5, 0.0001))


def test_choice_gives_the_declared_spelling_and_lists_the_choices() -> None:
    mode = Choice("file", "tcp", "udp", what="mode")
    assert mode.parse("TCP") == "tcp"
    assert refused(mode, "sctp") == "unknown mode 'sctp' (valid: file, tcp, udp)"
    exact = Choice("LOG_KERN", "LOG_USER", fold_case=False, what="facility")
    assert exact.parse("LOG_USER") == "LOG_USER"
    assert refused(exact, "log_user") == "unknown facility 'log_user' (valid: LOG_KERN, LOG_USER)"


def test_port() -> None:
    assert Port().parse("4739") == 4739 and Port().parse("0x10") == 16
    assert refused(Port(), "999999") == "must be between 1 and 65535"
    assert refused(Port(), "0") == "must be between 1 and 65535"
    assert Port(zero=True).parse("0") == 0
    assert refused(Port(), "syslog") == "needs a port number, not 'syslog'"
    named = Port(services=True)
    assert named.parse("http") == 80 and named.parse("12345") == 12345
    assert refused(named, "no-such-service-x").startswith("unknown service 'no-such-service-x'")


@pytest.mark.parametrize(("text", "value"), [
    ("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("[2001:db8::1]", "2001:db8::1"), ("fe80::1%eth0", "fe80::1%eth0"),
    ("localhost", "localhost"), ("carbon.example.com.", "carbon.example.com."), ("db_1.internal", "db_1.internal"),
    ("", ""),  # not set: the plugin decides
])  # fmt: skip
def test_address(text: str, value: str) -> None:
    assert Address().parse(text) == value


@pytest.mark.parametrize("text", ["a..b", "-a.example", "a-.example", "x/y", "host:2003", "[10.0.0.1]", "a" * 64])
def test_address_refuses(text: str) -> None:
    assert "is not" in refused(Address(), text)


def test_address_with_socket_paths() -> None:
    assert Address(paths=True).parse("/run/mysqld/mysqld.sock") == "/run/mysqld/mysqld.sock"
    assert "or an absolute socket path" in refused(Address(paths=True), "a..b")
    assert "is not" in refused(Address(), "/run/mysqld/mysqld.sock")


def test_path_and_str() -> None:
    assert Path().parse("/var/log/ulogd.json") == "/var/log/ulogd.json" and Path().parse("rel/x") == "rel/x"
    assert refused(Path(), "/tmp/a\0b") == "a path cannot contain a NUL byte"
    assert Str().parse("any thing") == "any thing"


# -- declarations


def test_default_declared_once_typed_or_as_written() -> None:
    written = Option("spool_max", Size(), "1G")
    assert written.default == 1 << 30 and written.default_text == "1G"
    typed = Option("sync", Bool(), 0)
    assert typed.default is False and typed.default_text == "0"
    unset = Option("port", Port(services=True), None)
    assert unset.default is None and unset.default_text == ""
    # ulogd2's two types stay usable by name.
    assert Option("n", OptionType.INT, 5).parse("0x10") == 16 and OptionType.STRING.name == "String"


def test_a_check_beyond_the_kind_still_applies() -> None:
    opt = Option("even", Int(0, 100), 0, check=lambda v: None if v % 2 == 0 else "must be even")
    assert opt.parse("4") == 4
    with pytest.raises(ValueError, match="must be even"):
        opt.parse("5")
    with pytest.raises(ValueError, match="between 0 and 100"):
        opt.parse("102")


def test_info_prints_ulogd2s_words_for_ulogd2s_options() -> None:
    """``-i`` may differ from ulogd2's only by the new type names, and only for pyulogd's own options."""
    for name in registry.names():
        cls = registry.get(name)
        text = describe(cls)
        for o in cls.options:
            word = o.type.name if o.extra else o.type.ulogd_word
            assert f"\tVar: {o.name} ({word}, Default: {o.default_text}" in text
            if not o.extra:
                assert word in ("Integer", "String"), (name, o.name)
    nflog = describe(registry.get("NFLOG"))
    assert "\tVar: bufsize (Integer, Default: 150000)\n" in nflog and "\tVar: unbind (Integer, Default: 1)\n" in nflog
    assert "\tVar: copy_range (Size, Default: 65535)\n" in nflog
    assert "\tVar: netns_rescan (Duration, Default: 5)\n" in nflog
    sql = describe(registry.get("PGSQL"))
    assert "\tVar: spool_max (Size, Default: 1G)\n" in sql and "\tVar: batch_timeout (Duration, Default: 1)\n" in sql
    assert "\tVar: port (Integer, Default: 0)\n" in sql
    assert "\tVar: port (String, Default: 12345)\n" in describe(registry.get("JSON"))  # a service name too


# -- through a config file

OPTS = (
    Option("port", Port(), 4739),
    Option("mode", Choice("file", "tcp", "udp", what="mode"), "file"),
    Option("queue", Size(), 1 << 20),
    Option("timeout", Duration(), "1"),
    Option("sync", Bool(), 0),
)


def values(body: str) -> dict[str, Any]:
    cfg = parse_text(f"[out1]\n{body}", "t.conf")
    return option_values(OPTS, cfg.section("out1"), cfg, "out1", "TEST")


def test_config_gives_typed_values() -> None:
    assert values("port=2055\nmode=UDP\nqueue=64M\ntimeout=250ms\nsync=yes\n") == {
        "port": 2055, "mode": "udp", "queue": 64 << 20, "timeout": 0.25, "sync": True,
    }  # fmt: skip
    assert values("") == {"port": 4739, "mode": "file", "queue": 1 << 20, "timeout": 1.0, "sync": False}


@pytest.mark.parametrize(("body", "line", "reason"), [
    ("mode=tcp\nport=999999\n", 3, "option 'port' of 'out1': must be between 1 and 65535"),
    ("mode=sctp\n", 2, "option 'mode' of 'out1': unknown mode 'sctp' (valid: file, tcp, udp)"),
    ("queue=lots\n", 2, "option 'queue' of 'out1': needs a size in bytes"),
    ("timeout=-5\n", 2, "option 'timeout' of 'out1': must not be negative"),
    ("sync=2\n", 2, "option 'sync' of 'out1': needs 0 or 1"),
])  # fmt: skip
def test_config_errors_name_file_line_and_reason(body: str, line: int, reason: str) -> None:
    with pytest.raises(ConfigError) as e:
        values(body)
    assert (e.value.file, e.value.line) == ("t.conf", line)
    assert str(e.value).startswith(f"t.conf:{line}: {reason}")


def _service(tmp: FsPath, text: str) -> Service:
    svc = Service(str(tmp / "t.conf"), Context(loop=Loop()))
    svc.ctx.log.set_destination("stdout")  # keep the test off syslog
    svc.load_config(parse_text(text.replace("@DIR@", str(tmp)), str(tmp / "t.conf")))
    return svc


def test_plugins_get_typed_values_from_a_real_config(tmp_path: FsPath) -> None:
    svc = _service(tmp_path, "[global]\nstack=log1:NFLOG,base1:BASE,json1:JSON\n"
                   "[log1]\ngroup=7\nbufsize=256K\nnetlink_socket_buffer_maxsize=8M\nnetns_rescan=2m\n"
                   "[json1]\nmode=TCP\nhost=[::1]\nport=http\nqueue=4M\nreconnect_max=90s\nsync=on\n")
    source, json = svc.stacks[0].source, svc.stacks[0].sink
    assert {k: source.config[k] for k in ("group", "bufsize", "netlink_socket_buffer_maxsize", "netns_rescan")} == {
        "group": 7, "bufsize": 256 << 10, "netlink_socket_buffer_maxsize": 8 << 20, "netns_rescan": 120.0,
    }  # fmt: skip
    assert {k: json.config[k] for k in ("mode", "host", "port", "queue", "reconnect_max", "sync")} == {
        "mode": "tcp", "host": "::1", "port": 80, "queue": 4 << 20, "reconnect_max": 90.0, "sync": True,
    }  # fmt: skip


@pytest.mark.parametrize(("section", "line", "words"), [
    ("[ipfix1]\noid=1\nhost=127.0.0.1\nport=999999\n", 7, ["'port'", "between 1 and 65535"]),
    ("[ipfix1]\noid=1\nhost=collector..example\n", 6, ["'host'", "not a host name"]),
    ("[ipfix1]\noid=1\nhost=127.0.0.1\nproto=sctp\n", 7, ["unknown protocol 'sctp'", "valid: tcp, udp"]),
])  # fmt: skip
def test_plugin_option_refused_at_its_line(tmp_path: FsPath, section: str, line: int, words: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        _service(tmp_path, "[global]\nstack=ct1:NFCT,ipfix1:IPFIX\n\n" + section)
    assert (e.value.file, e.value.line) == (str(tmp_path / "t.conf"), line)
    assert all(w in str(e.value) for w in words)

