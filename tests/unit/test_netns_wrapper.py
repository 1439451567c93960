"""pyulogd-netns-wrapper's handling of untrusted input: namespace names, its settings file and
its run directory (no root or kernel needed; the live tests are in tests/linux).

Issue 10: a namespace name chosen by the caller used to be pasted into the root daemon's
config.  The property checked here for every name, hostile or not: either the wrapper refuses
it, or the rendered config has exactly the template's sections and keys.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyulogd.core.config import parse_text
from pyulogd.core.errors import ConfigError
from pyulogd.daemon import netns_wrapper as w

# The name from the issue: it turned the root daemon's config into one with a world-writable
# UNIXSOCK input writing to a JSON file of the caller's choice.
EXPLOIT = ('qrouter-e"\nstack=ux9:UNIXSOCK,j9:JSON\n[ux9]\nsocket_path="pyulogd-evil.sock"\nperms=0666\n'
           '[j9]\nfile="pyulogd-evil.json"\n[zz\n#')
RID = "4f0c2e3a-9b1d-4c55-8a2e-1f2d3c4b5a69"

# Placeholders in a comment, quoted values, unquoted values, a path built from parts.
TEMPLATE = """# per-namespace config for @NETNS@ (router @NETNS_ID@)
[global]
logfile="/var/log/pyulogd/@NETNS@.log"
loglevel=5
stack=log1:NFLOG,base1:BASE,json1:JSON

[log1]
group=10

[json1]
file=/var/log/pyulogd/@NETNS_PREFIX@/@NETNS_ID@.json
sync=1
# pidfile @PIDFILE@ in @RUNDIR@
"""
EXAMPLE_TEMPLATE = (Path(__file__).resolve().parents[2] / "examples" / "netns-wrapper"
                    / "netns-ulogd.conf.in").read_text()


def shape(text: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Sections in order (duplicates too) with their keys and values, as the daemon reads them."""
    cfg = parse_text(text)
    sections = sorted([*cfg.sections.values(), *cfg.duplicates], key=lambda s: s.line)
    return [(s.name, [(e.key, e.value) for e in s.entries]) for s in sections]


def expected_shape(template: str, name: str, s: w.Settings) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """The template's own sections and keys, each value with the placeholders substituted."""
    prefix, _, ident = name.partition("-")
    subst = {"@NETNS_PREFIX@": prefix if ident else "", "@NETNS_ID@": ident or name, "@NETNS@": name,
             "@RUNDIR@": s.rundir, "@PIDFILE@": os.path.join(s.rundir, w.file_stem(name) + ".pid")}

    def sub(v: str | None) -> str | None:
        if v is None:
            return None
        for k, x in subst.items():
            v = v.replace(k, x)
        return v

    return [(sec, [(k, sub(v)) for k, v in entries]) for sec, entries in shape(template)]


def check_name(name: str) -> None:
    """The property: refused, or the rendered configs keep exactly the templates' keys."""
    s = w.Settings(rundir="/run/pyulogd")
    shown = w.shown(name)
    assert shown.isascii() and shown.isprintable()
    if w.name_problem(name) is not None:
        with pytest.raises(ValueError):
            w.render(TEMPLATE, name, s)
        return
    assert name.isascii() and name.isprintable() and len(name.encode()) <= w.NAME_MAX
    for template in (TEMPLATE, EXAMPLE_TEMPLATE):
        assert shape(w.render(template, name, s)) == expected_shape(template, name, s)
    assert len(w.file_stem(name) + ".conf") <= 40


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", [
    f"qrouter-{RID}", f"snat-{RID}", f"fip-{RID}", f"qdhcp-{RID}", f"ovnmeta-{RID}", "qrouter-", "plain",
    "a", "0", "a.b", "ns_1.x-2", "A" * 255,
])
def test_neutron_like_names_are_accepted(name: str) -> None:
    assert w.name_problem(name) is None
    check_name(name)


@pytest.mark.parametrize(("name", "why"), [
    (EXPLOIT, "character '\"'"),
    ('qrouter-a"b', "character '\"'"),
    ("qrouter-a'b", "character '\\''"),
    ("qrouter-a\nb", "character '\\n'"),
    ("qrouter-a\rb", "character '\\r'"),  # the config reader ends a line at \r too
    ("qrouter-a\x0bb", "character '\\x0b'"),
    ("qrouter-a\x85b", "character '\\xc2\\x85'"),  # NEL: str.splitlines() ends a line there
    ("qrouter-a\u2028b", "character '\\xe2\\x80\\xa8'"),
    ("qrouter-#x", "character '#'"),
    ("#qrouter", "character '#'"),
    ("[qrouter]", "character '['"),
    ("qrouter-a b", "character ' '"),
    ("qrouter-a=b", "character '='"),
    ("qrouter-a\tb", "character '\\t'"),
    ("qrouter-@NETNS@", "character '@'"),
    ("qrouter-a/b", "character '/'"),
    ("qrouter-\x00", "character '\\x00'"),
    (os.fsdecode(b"qrouter-\xff\xfe"), "character '\\xff'"),  # not UTF-8: argv gives surrogates
    ("qrouter-é", "character '\\xc3\\xa9'"),
    ("A" * 256, "256 bytes long (at most 255)"),
    ("", "empty name"),
    (".", "does not begin"),
    ("..", "does not begin"),
    (".hidden", "does not begin"),
    ("-x", "does not begin"),
    ("_x", "does not begin"),
    ("qrouter-..", "contains '..'"),
    ("a..b", "contains '..'"),
])
def test_hostile_names_are_refused_with_a_reason(name: str, why: str) -> None:
    problem = w.name_problem(name)
    assert problem is not None and why in problem
    assert problem.isascii() and problem.isprintable()  # it goes into a log line as it is
    check_name(name)


def test_the_exploit_is_refused_and_shown_escaped() -> None:
    assert w.name_problem(EXPLOIT) is not None
    text = w.shown(EXPLOIT)
    assert text == ("'qrouter-e\"\\nstack=ux9:UNIXSOCK,j9:JSON\\n[ux9]\\nsocket_path=\"pyulogd-evil.sock\"\\n"
                    "perms=0666\\n[j9]\\nfile=\"pyulogd-evil.json\"\\n[zz\\n#'")
    with pytest.raises(ValueError, match="unsafe namespace name"):
        w.render(EXAMPLE_TEMPLATE, EXPLOIT, w.Settings())
    # What the old renderer produced. The config reader now refuses its unclosed "[zz" header
    # (issue 10, item 9), but with "[zz]" the same template grows a UNIXSOCK stack (the reason
    # for all this).
    naive = EXAMPLE_TEMPLATE.replace("@NETNS@", EXPLOIT)
    with pytest.raises(ConfigError, match="malformed section header '\\[zz'"):
        shape(naive)
    closed = EXAMPLE_TEMPLATE.replace("@NETNS@", EXPLOIT.replace("[zz", "[zz]"))
    assert shape(closed) != shape(EXAMPLE_TEMPLATE)
    assert "ux9" in [sec for sec, _ in shape(closed)]


def test_shown_escapes_every_byte_outside_printable_ascii() -> None:
    assert w.shown("qrouter-1") == "'qrouter-1'"
    assert w.shown("a'b\\c") == "'a\\'b\\\\c'"
    assert w.shown(os.fsdecode(b"a\xffb\x00\x1b[31m")) == "'a\\xffb\\x00\\x1b[31m'"
    assert w.shown("\ud800") == "'\\xed\\xa0\\x80'"  # a lone surrogate that did not come from bytes
    long = w.shown("x" * 1000)
    assert long == "'" + "x" * 256 + "'... (1000 bytes)"


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_any_bytes_are_refused_or_render_to_the_templates_keys(raw: bytes) -> None:
    check_name(os.fsdecode(raw))


# Mostly the characters that matter, so that many names pass and many fail on one character.
_NEAR = st.text(alphabet=sorted(w.NAME_CHARS) + list("\"'\n\r\x0b\x0c\x1c\x85\u2028#[]= \t@/\\\x00é"),
                max_size=300)


@given(st.one_of(_NEAR, st.text(max_size=60)))
@settings(max_examples=500, deadline=None)
def test_any_text_is_refused_or_renders_to_the_templates_keys(name: str) -> None:
    check_name(name)


def test_render_substitutes_in_one_pass() -> None:
    s = w.Settings(rundir="/run/x")
    text = w.render("@NETNS@ @NETNS_PREFIX@ @NETNS_ID@ @RUNDIR@ @PIDFILE@ @OTHER@", "qrouter-1234-ab", s)
    assert text == f"qrouter-1234-ab qrouter 1234-ab /run/x /run/x/{w.file_stem('qrouter-1234-ab')}.pid @OTHER@"
    assert w.render("@NETNS_ID@|@NETNS_PREFIX@", "plain", s) == "plain|"


@pytest.mark.parametrize("value", ['a"b', "a\nb", "a\rb", "a\x0cb", "a\x1cb", "a\x85b", "a\u2028b", "a b",
                                   "a=b", "a\tb", "#a", "[a", "a@b", "é"])
def test_config_values_that_could_add_a_line_or_key_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        w.check_config_value(value)
    assert w.check_config_value("/run/pyulogd-2/x_y.z") == "/run/pyulogd-2/x_y.z"


def test_file_stem_is_short_hex_and_differs_per_name() -> None:
    names = ["qrouter-1", "qrouter-2", "A" * 255, EXPLOIT, os.fsdecode(b"\xff"), "\ud800"]
    stems = [w.file_stem(n) for n in names]
    assert len(set(stems)) == len(names)
    assert all(len(s) == 35 and s.startswith("ns-") and w.is_stem(s) for s in stems)
    assert w.file_stem("qrouter-1") == w.file_stem("qrouter-1")


# --------------------------------------------------------------------------- settings


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_settings_file_is_read(tmp_path: Path) -> None:
    conf = write(tmp_path / "w.conf", "ip = /usr/sbin/ip\nmatch = qrouter-*, snat-*\nrundir = /run/x/\n"
                                      "daemon = /usr/bin/env A=1 /usr/local/bin/pyulogd\nsyslog = no\n")
    s = w.load_settings(str(conf))
    assert (s.ip, s.match, s.rundir, s.daemon, s.syslog) == (
        "/usr/sbin/ip", ["qrouter-*", "snat-*"], "/run/x", ["/usr/bin/env", "A=1", "/usr/local/bin/pyulogd"], False)
    assert s.source == [str(conf)]
    assert w.load_settings(str(tmp_path / "missing.conf")).source == []  # a missing file: the defaults


def test_environment_chooses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables earlier versions read (and the issue's PYULOGD_NETNS_DAEMON) are ignored."""
    other = write(tmp_path / "other.conf", "daemon = /bin/sh -c 'touch /tmp/owned'\n")
    for key, value in [("PYULOGD_NETNS_DAEMON", "/bin/sh -c 'touch /tmp/owned'"),
                       ("PYULOGD_NETNS_IP", "/tmp/evil-ip"), ("PYULOGD_NETNS_TEMPLATE", "/tmp/evil.in"),
                       ("PYULOGD_NETNS_RUNDIR", "/tmp/evil"), ("PYULOGD_NETNS_MATCH", "*"),
                       ("PYULOGD_NETNS_WRAPPER_CONF", str(other)), ("PATH", f"{tmp_path}:/usr/bin")]:
        monkeypatch.setenv(key, value)
    (tmp_path / "ip").write_text("#!/bin/sh\n")
    (tmp_path / "ip").chmod(0o755)
    conf = write(tmp_path / "w.conf", "syslog = no\n")
    for s in (w.load_settings(str(conf)), w.load_settings(None)):
        assert (s.ip, s.match, s.template, s.rundir, s.daemon) == (
            "", ["qrouter-*"], "/etc/pyulogd/netns-ulogd.conf.in", "/run/pyulogd", [])
        assert w.daemon_command(s)[0] != "/bin/sh"
    found = w.find_ip()
    assert found is None or os.path.dirname(found) in w.IP_DIRS
    env = w.daemon_environment("qrouter-1")
    assert env == {"PATH": w.DAEMON_PATH, "PROCESS_TAG": "pyulogd-qrouter-1"}


@pytest.mark.parametrize(("text", "error"), [
    ("daemon = /bin/x\rrundir = /tmp/evil\n", "control character"),
    ("match = a\x0cb\n", "control character"),
    ("ip = ip\n", "not an absolute path"),
    ("template = netns.conf.in\n", "not an absolute path"),
    ('rundir = /run/py"ulogd\n', "cannot be put into a config value"),
    ("rundir = /run/pyulogd x\n", "cannot be put into a config value"),
    ("nosuchkey = 1\n", "expected one of"),
])
def test_bad_settings_are_refused_with_file_and_line(tmp_path: Path, text: str, error: str) -> None:
    conf = write(tmp_path / "w.conf", "# settings\n" + text)
    with pytest.raises(w.SettingsError) as e:
        w.load_settings(str(conf))
    assert error in str(e.value) and str(conf) in str(e.value)
    assert "\r" not in str(e.value) and "\x0c" not in str(e.value)


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_settings_file_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    conf = write(tmp_path / "w.conf", "syslog = no\n", mode)
    with pytest.raises(w.SettingsError, match="writable by group or others"):
        w.load_settings(str(conf))


def test_settings_file_in_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir()
    conf = write(d / "w.conf", "syslog = no\n")
    d.chmod(0o777)
    with pytest.raises(w.SettingsError, match="writable by group or others"):
        w.load_settings(str(conf))
    d.chmod(0o1777)  # sticky, like /tmp: others cannot rename root's file away
    assert w.load_settings(str(conf)).syslog is False


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file away")
def test_settings_file_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    conf = write(tmp_path / "w.conf", "syslog = no\n")
    os.chown(conf, 65534, 65534)
    with pytest.raises(w.SettingsError, match="owned by uid 65534"):
        w.load_settings(str(conf))


def test_settings_through_a_symlink_are_checked_where_they_lie(tmp_path: Path) -> None:
    real = write(tmp_path / "real.conf", "syslog = no\n")
    link = tmp_path / "link.conf"
    link.symlink_to(real)
    assert w.load_settings(str(link)).syslog is False
    real.chmod(0o666)
    with pytest.raises(w.SettingsError, match="writable by group or others"):
        w.load_settings(str(link))


# --------------------------------------------------------------------------- run directory


def test_rundir_is_created_root_only(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        rd = w.RunDir.create(str(tmp_path / "a" / "b"))
    finally:
        os.umask(old)
    rd.close()
    for d in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755
    assert w.RunDir.existing(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o1777])
def test_rundir_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    d = tmp_path / "run"
    d.mkdir()
    d.chmod(mode)
    with pytest.raises(w.Untrusted, match="writable by group or others"):
        w.RunDir.create(str(d))


def test_rundir_below_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir()
    d.chmod(0o777)
    with pytest.raises(w.Untrusted, match="open: writable by group or others"):
        w.RunDir.create(str(d / "run"))


def test_rundir_files_never_follow_a_planted_link(tmp_path: Path) -> None:
    victim = write(tmp_path / "victim", "root's file\n")
    rd = w.RunDir.create(str(tmp_path / "run"))
    with rd:
        f = w.NsFiles.of("qrouter-1")
        for fname in (f.conf, f.pid, f.meta):
            (tmp_path / "run" / fname).symlink_to(victim)
        assert rd.read(f.pid) is None and w.read_pid(rd, f.pid) is None
        rd.write(f.conf, b"[global]\n")
        rd.write(f.meta, b"qrouter-1\n")
        assert victim.read_text() == "root's file\n"
        assert not (tmp_path / "run" / f.conf).is_symlink()
        assert (tmp_path / "run" / f.conf).read_text() == "[global]\n"
        assert stat.S_IMODE((tmp_path / "run" / f.conf).stat().st_mode) == 0o644
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted([f.conf, f.meta, f.pid])


def test_rundir_given_as_a_symlink_is_followed_then_checked(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o755)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    rd = w.RunDir.existing(str(tmp_path / "link"))
    assert rd is not None
    rd.close()
    (tmp_path / "real").chmod(0o777)
    with pytest.raises(w.Untrusted):
        w.RunDir.existing(str(tmp_path / "link"))


def test_managed_names_come_from_name_files_that_match_their_hash(tmp_path: Path) -> None:
    rd = w.RunDir.create(str(tmp_path / "run"))
    with rd:
        good, forged = w.NsFiles.of("qrouter-1"), w.NsFiles.of("qrouter-2")
        rd.write(good.meta, b"qrouter-1\n")
        rd.write(good.pid, b"12345\n")
        rd.write(forged.meta, b"qrouter-1\n")  # a name file that does not belong to its stem
        rd.write(forged.conf, b"")
        rd.write("qrouter-3.pid", b"1\n")  # an earlier version's files: named after a safe name
        rd.write("qrouter 4.pid", b"1\n")  # not a safe name: never one of ours
        rd.write(".qrouter-5.lock", b"")
        found = {f.stem: f.name for f in w.managed(rd)}
    assert found == {good.stem: "qrouter-1", forged.stem: None, "qrouter-3": "qrouter-3"}
    assert [(f.conf, f.pid, f.lock) for f in w.files_of("qrouter-3")] == [
        (f"{w.file_stem('qrouter-3')}.conf", f"{w.file_stem('qrouter-3')}.pid", f".{w.file_stem('qrouter-3')}.lock"),
        ("qrouter-3.conf", "qrouter-3.pid", ".qrouter-3.lock")]
    assert w.NsFiles(forged.stem, None).label == f"(unknown name, files {forged.stem}.*)"


# --------------------------------------------------------------------------- log lines


def test_log_lines_carry_no_raw_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    log = w.Log(use_syslog=False)
    log.error(f"netns {w.shown(EXPLOIT)}: refused")
    log.warning("daemon said: line one\nline two\r\x1b[2J" + os.fsdecode(b"\xff"))
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "\r" not in err and "\x1b" not in err
    assert err.splitlines()[1] == "pyulogd-netns-wrapper: daemon said: line one\\nline two\\r\\x1b[2J\\xff"


def test_the_example_settings_file_loads(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "examples" / "netns-wrapper" / "netns-wrapper.conf").read_text()
    s = w.load_settings(str(write(tmp_path / "netns-wrapper.conf", text)))
    assert (s.match, s.template, s.rundir, s.daemon, s.syslog) == (
        ["qrouter-*"], "/etc/pyulogd/netns-ulogd.conf.in", "/run/pyulogd", [], True)


# -- one daemon per namespace: each keeps its own state (spools, write-ahead log, node id)

STATE_TEMPLATE = """[global]
logfile="@RUNDIR@/@NETNS@.log"
wal=1
stack=log1:NFLOG,base1:BASE,ip2str1:IP2STR,json1:JSON
stack=log1:NFLOG,base1:BASE,ip2str1:IP2STR,pg1:PGSQL

[log1]
group=10

[json1]
mode=tcp
host=127.0.0.1
port=1

[pg1]
db=nodb
host=127.0.0.1
port=1
table=ulog
procedure=INSERT_PACKET_FULL
user=nobody
pass=x
"""


def _state_of(conf: Path) -> tuple[str, str, str, str]:
    """What the daemon started with ``conf`` would use: the network output's spool, the SQL
    output's spool, the write-ahead log's directory, the node id (as --check-config builds it:
    nothing opened)."""
    from pyulogd.core.context import Context
    from pyulogd.daemon.service import Service
    from pyulogd.io.loop import Loop

    svc = Service(str(conf), Context(loop=Loop(), checking=True))
    svc.load()
    outs = {st.sink.id: st.sink for st in svc.stacks}
    json1, pg1 = outs["json1"], outs["pg1"]
    spool = json1.out.sender.spool_settings  # type: ignore[attr-defined]
    assert spool is not None
    return spool.path, pg1.spool_dir, svc.wal.path, svc.ctx.node_id  # type: ignore[attr-defined]


def test_each_namespaces_daemon_has_its_own_spools_and_write_ahead_log(tmp_path: Path) -> None:
    """The wrapper renders one config per namespace (RUNDIR/ns-HASH.conf) from one template, so
    every instance id is the same in all of them: the defaults of the spools, the write-ahead
    log and the node id are named after the config file, hence one per namespace. (One spool
    directory shared by two daemons: the second cannot lock it, so it could not spill.)"""
    from pyulogd.io.spool import Spool, SpoolError

    rundir = tmp_path / "run"
    rundir.mkdir()
    s = w.Settings(rundir=str(rundir))
    states = []
    for name in (f"qrouter-{RID}", "qrouter-0b9e9d51-7a55-4f4e-9d4b-0c8f2b1c7e10"):
        conf = rundir / f"{w.file_stem(name)}.conf"
        conf.write_text(w.render(STATE_TEMPLATE, name, s))
        states.append((w.file_stem(name), _state_of(conf)))
    (stem_a, a), (stem_b, b) = states
    for stem, state in states:
        assert all(stem in path for path in state[:3]) and state[3].endswith("." + stem)
    assert len({*a, *b}) == 8  # nothing in common
    assert a[0] != a[1]  # the network and the SQL output of one daemon: two spools
    # Both daemons' spools can be held at once (each is locked by the daemon that uses it).
    spools = [Spool(path, 1 << 20) for path in (a[0], b[0], a[1], b[1])]
    try:
        for sp in spools:
            os.makedirs(sp.path, exist_ok=True)
            sp.open()
        with pytest.raises(SpoolError):  # what the second daemon met with one shared directory
            Spool(a[0], 1 << 20).open()
    finally:
        for sp in spools:
            sp.close()


def test_wrapper_check_reports_state_a_template_would_share() -> None:
    template = ('[global]\nwal_dir="/var/lib/pyulogd/wal/routers"\nnode_id=@NETNS@\n[json1]\n'
                'spool_dir=/var/spool/pyulogd/@NETNS_ID@/json1\n[pg1]\nspool_dir = "/var/spool/pg"\n'
                "# spool_dir=/var/spool/commented\n")  # fmt: skip
    assert w.shared_state(template) == ['line 2: wal_dir="/var/lib/pyulogd/wal/routers"',
                                        'line 7: spool_dir = "/var/spool/pg"']  # fmt: skip
    assert w.shared_state(STATE_TEMPLATE) == []
