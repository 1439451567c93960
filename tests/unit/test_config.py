"""The ulogd.conf grammar and the checks that refuse a bad config with file and line."""

from __future__ import annotations

import pytest

from pyulogd.core import registry
from pyulogd.core.config import option_values, parse_int, parse_text
from pyulogd.core.errors import ConfigError
from pyulogd.core.options import Port
from pyulogd.core.plugin import Option, OptionType

OPTS = (
    Option("file", OptionType.STRING, "/var/log/x.log"),
    Option("sync", OptionType.INT, 0),
    Option("table", OptionType.STRING, "", required=True),
)


def test_sections_keys_values_and_comments() -> None:
    cfg = parse_text(
        "# comment\n"
        "[global]\n"
        'logfile="/tmp/a b.log"\n'
        "loglevel = 3\n"
        "stack=log1:NFLOG,emu1:LOGEMU\n"
        "  [ emu1 ]  # trailing\n"
        "file /tmp/x # ignored after the value\n"
        "sync==1\n"
        '  # indented: a key named "#", as in ulogd\n'
        "[other]\n"
        "x=1",  # no final newline: fine here (ulogd2 refuses it)
        "t.conf",
    )
    glob = cfg.section("global")
    assert glob is not None
    assert [(e.key, e.value, e.line) for e in glob.entries] == [
        ("logfile", "/tmp/a b.log", 3),
        ("loglevel", "3", 4),
        ("stack", "log1:NFLOG,emu1:LOGEMU", 5),
    ]
    emu = cfg.section("emu1")
    assert emu is not None
    assert [(e.key, e.value) for e in emu.entries][:2] == [("file", "/tmp/x"), ("sync", "1")]
    assert cfg.section("other") is not None


def test_duplicate_section_first_wins() -> None:
    cfg = parse_text("[a]\nx=1\n[a]\nx=2\n")
    sec = cfg.section("a")
    assert sec is not None and sec.entries[0].value == "1"
    assert len(cfg.duplicates) == 1


def test_key_without_value_and_unterminated_quote() -> None:
    cfg = parse_text('[a]\nfile=\nname="open\n')
    sec = cfg.section("a")
    assert sec is not None
    assert [(e.key, e.value) for e in sec.entries] == [("file", None), ("name", None)]


@pytest.mark.parametrize(
    ("text", "value"),
    [("10", 10), ("0x10", 16), ("0600", 0o600), ("600", 600), ("0", 0), ("0xffffffff", 2**32 - 1), ("-1", -1)],
)
def test_parse_int(text: str, value: int) -> None:
    assert parse_int(text) == value


@pytest.mark.parametrize("text", ["yes", "12abc", "", "0x1ffffffff", "1.5"])
def test_parse_int_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_int(text)


def test_option_values_defaults_and_types() -> None:
    cfg = parse_text("[emu1]\nsync=1\ntable=t\n", "u.conf")
    vals = option_values(OPTS, cfg.section("emu1"), cfg, "emu1", "LOGEMU")
    assert vals == {"file": "/var/log/x.log", "sync": 1, "table": "t"}


def test_unknown_option_names_file_line_and_choices() -> None:
    cfg = parse_text("[emu1]\ntable=t\nsnyc=1\n", "u.conf")
    with pytest.raises(ConfigError) as ei:
        option_values(OPTS, cfg.section("emu1"), cfg, "emu1", "LOGEMU")
    assert ei.value.file == "u.conf" and ei.value.line == 3
    msg = str(ei.value)
    assert msg.startswith("u.conf:3: ") and "snyc" in msg and "file, sync, table" in msg


def test_bad_integer_refused() -> None:
    cfg = parse_text("[emu1]\ntable=t\nsync=yes\n", "u.conf")
    with pytest.raises(ConfigError, match="integer") as ei:
        option_values(OPTS, cfg.section("emu1"), cfg, "emu1", "LOGEMU")
    assert ei.value.line == 3


def test_missing_required_and_duplicate() -> None:
    cfg = parse_text("[emu1]\nsync=1\n", "u.conf")
    with pytest.raises(ConfigError, match="needs option 'table'"):
        option_values(OPTS, cfg.section("emu1"), cfg, "emu1", "LOGEMU")
    with pytest.raises(ConfigError, match="no \\[emu1\\] section"):
        option_values(OPTS, None, cfg, "emu1", "LOGEMU")
    cfg = parse_text("[emu1]\ntable=a\ntable=b\n", "u.conf")
    with pytest.raises(ConfigError, match="more than once") as ei:
        option_values(OPTS, cfg.section("emu1"), cfg, "emu1", "LOGEMU")
    assert ei.value.line == 3


def test_missing_value_keeps_default_with_warning() -> None:
    warnings: list[str] = []
    cfg = parse_text("[emu1]\ntable=t\nfile=\n", "u.conf")
    vals = option_values(OPTS, cfg.section("emu1"), cfg, "emu1", "LOGEMU", warn=warnings.append)
    assert vals["file"] == "/var/log/x.log"
    assert warnings and "malformed" in warnings[0]


def test_lines_before_any_section_are_ignored_like_ulogd() -> None:
    cfg = parse_text("netlink_socket_buffer_maxsize=1\n[global]\nloglevel=3\n", "t.conf")
    assert cfg.warnings == ["t.conf:1: ignoring 'netlink_socket_buffer_maxsize' outside of any [section]"]
    glob = cfg.section("global")
    assert glob is not None and [e.key for e in glob.entries] == ["loglevel"]


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("\udcff\udcfe[global]\nstack=a:B\n", 1, "\\xff at column 1"),  # bytes that are not UTF-8
        ("\x00\x01[global]\n", 1, "\\x00 at column 1"),
        ("\ufeff[global]\n", 1, "\\ufeff at column 1"),  # a byte order mark: [global] would be missed
        ("[global]\nloglevel=3\nstack=a:B\x1b[2J\n", 3, "\\x1b at column 10"),
        ('[global]\nlogfile="/tmp/a\udce9.log"\n', 2, "\\xe9 at column 16"),
        ("[global]\n\x0c\nloglevel=3\n", 2, "\\x0c at column 1"),  # splitlines() would count it as a line
        ("[global]\rloglevel=3\n", 1, "\\r at column 9"),  # a CR that ends no line
        ("[global]\n# \x00 in a comment\n", 2, "\\x00 at column 3"),
        ("[global]\nstack=a:B\u2028x=1\n", 2, "\\u2028 at column 10"),
    ],
)
def test_junk_is_an_error_with_file_and_line(text: str, line: int, what: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_text(text, "j.conf")
    assert (e.value.file, e.value.line) == ("j.conf", line)
    assert str(e.value) == f"j.conf:{line}: not text: {what} (a config file is UTF-8 text without control characters)"


def test_text_that_is_not_junk() -> None:
    # CRLF line ends, tabs, UTF-8 anywhere, and bytes that are not UTF-8 in a comment line
    cfg = parse_text("# caf\udce9\r\n[global]\r\nloglevel\t=\t3\r\n# é\n[emu1]\nfile=\"/var/log/é.log\"", "t.conf")
    glob = cfg.section("global")
    assert glob is not None and [(e.key, e.value, e.line) for e in glob.entries] == [("loglevel", "3", 3)]
    emu = cfg.section("emu1")
    assert emu is not None and [(e.value, e.line) for e in emu.entries] == [("/var/log/é.log", 6)]


@pytest.mark.parametrize(
    "header",
    ["[global", "[a b]", "[a]]", "[[a]]", "[a] b", "[a]b", "[a];comment", "[a[b]"],
)
def test_malformed_section_headers_refused_with_file_and_line(header: str) -> None:
    """ulogd2 2.0.8 takes the first word of such a line ('[global' is [global], '[a b]' is [a]);
    each is a typo that would silently move options to another section."""
    with pytest.raises(ConfigError, match="malformed section header") as ei:
        parse_text(f"[global]\nloglevel=3\n{header}\nx=1\n", "h.conf")
    assert (ei.value.file, ei.value.line) == ("h.conf", 3)


@pytest.mark.parametrize("header", ["[]", "[ ]", "[", "[ ] # c"])
def test_empty_section_name_refused(header: str) -> None:
    with pytest.raises(ConfigError, match="empty section name") as ei:
        parse_text(f"[global]\n{header}\n", "h.conf")
    assert ei.value.line == 2


@pytest.mark.parametrize("header", ["[a]", "  [ a ]  ", "[a] # comment", "[a]# comment", "\t[\ta\t]"])
def test_section_headers_ulogd_writes(header: str) -> None:
    cfg = parse_text(f"{header}\nx=1\n")
    sec = cfg.section("a")
    assert sec is not None and [(e.key, e.value) for e in sec.entries] == [("x", "1")]


@pytest.mark.parametrize(
    ("plugin", "option", "value"),
    [("JSON", "port", "999999"), ("GRAPHITE", "port", "70000"), ("IPFIX", "port", "999999"),
     ("SYSLOG", "port", "0"), ("PGSQL", "port", "65536"), ("MYSQL", "port", "999999"), ("DBI", "port", "-1")],
)
def test_every_port_option_is_checked(plugin: str, option: str, value: str) -> None:
    cls = registry.get(plugin)
    cfg = parse_text(f"[x1]\n{option}={value}\n", "p.conf")
    with pytest.raises(ConfigError, match="must be between") as ei:
        option_values(cls.options, cfg.section("x1"), cfg, "x1", plugin)
    assert (ei.value.file, ei.value.line) == ("p.conf", 2)


def test_no_port_option_goes_unchecked() -> None:
    for name in registry.names():
        for opt in registry.get(name).options:
            if opt.name == "port" or opt.name.endswith("_port"):
                assert isinstance(opt.type, Port), (name, opt.name)
