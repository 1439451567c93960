"""``pyulogd --check-config FILE``: is this config one the daemon will start with?

For the unit's ``ExecStartPre`` and for configuration management, before a config is put
in place. The check reads the file, builds and wires every stack exactly as the daemon
does (the same code: ``Service.load``), and checks the paths the daemon would open, but
opens nothing: no socket, no netlink, no database connection, no file created, no
privilege needed beyond reading the file (``Context.checking``; a test runs it under an
audit hook that fails on any of these).

Errors are collected rather than stopping at the first one: every [global] line, every
stack, every option of every plugin section a stack names (each on its own), and every
path. Each is printed as ``file:line: reason`` on standard error; warnings (what the
daemon only logs) as ``file:line: warning: reason``. Exit status: 0 good, 1 errors, 2
usage (the command line itself is wrong).
"""

from __future__ import annotations

import io
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from pyulogd.core import registry, safefile
from pyulogd.core.config import ConfigFile, Section, option_values
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.core.escape import escape_text
from pyulogd.core.plugin import Plugin
from pyulogd.core.stack import parse_stack_spec
from pyulogd.daemon.ops import check_control_path
from pyulogd.daemon.service import Service
from pyulogd.io.loop import Loop


@dataclass(frozen=True)
class PathOption:
    """An option that names something the daemon opens, and how it opens it."""

    how: str  # "append": a file appended to; "dir": a directory files are made in;
    # "parent": something made in an existing directory; "read": a file read at start;
    # "read_if_needed": read only in some cases (a warning); "netns": a namespace file
    applies: Callable[[dict[str, object]], bool] = lambda config: True


_APPEND = PathOption("append")
# How the daemon uses each path option (the option kinds say which options are paths: a
# test checks that every Path option of every plugin is here or in NOT_CHECKED). "*": any plugin.
PATH_OPTIONS: dict[tuple[str, str], PathOption] = {
    ("LOGEMU", "file"): _APPEND,
    ("GPRINT", "file"): _APPEND,
    ("OPRINT", "file"): _APPEND,
    ("NACCT", "file"): _APPEND,
    ("PCAP", "file"): _APPEND,
    ("ECS", "file"): _APPEND,
    ("NEUTRONLOG", "file"): _APPEND,
    ("JSON", "file"): PathOption("append", lambda c: str(c.get("mode", "")).lower() == "file"),
    ("XML", "directory"): PathOption("dir"),
    ("SQLITE3", "db"): PathOption("parent"),
    ("DBI", "db"): PathOption("parent", lambda c: str(c.get("dbtype", "")).lower() == "sqlite3"),
    ("UNIXSOCK", "socket_path"): PathOption("parent"),
    ("*", "pass_file"): PathOption("read"),
    ("*", "schema_file"): PathOption("read_if_needed"),
    ("*", "network_namespace_path"): PathOption("netns"),
    # The HMAC key of tamper-evident chaining (io/chain.py): read at start, root-only.
    ("*", "chain_key"): PathOption("read", lambda c: bool(c.get("chain_key"))),
    # NEUTRON's mapping file (its content is checked when the stack is built)
    ("NEUTRON", "mapping"): PathOption("read"),
    # TLS files of the network outputs (io/tls.py) and the NATS plugins: read at start, as root
    ("*", "tls_ca"): PathOption("read", lambda c: bool(c.get("tls_ca"))),
    ("*", "tls_cert"): PathOption("read", lambda c: bool(c.get("tls_cert"))),
    ("*", "tls_key"): PathOption("read", lambda c: bool(c.get("tls_key"))),
    # The NATS plugins' credentials and TLS files (plugins/natsconn.py): read at start.
    ("*", "nkey_seed_file"): PathOption("read"),
    ("*", "creds_file"): PathOption("read"),
}
# Path options the check leaves alone, and why.
NOT_CHECKED: dict[tuple[str, str], str] = {
    ("SYSLOG", "socket"): "connected at run time, and again after every failure: a missing socket is an outage",
    ("JSON", "file"): "in mode unix, a socket connected at run time (mode file is checked)",
    ("*", "spool_dir"): "created at start, with its parents (network outputs: at the first spill, or at start with -u)",
    ("*", "netns_dir"): "may appear later (ip netns creates it); watched for",
    ("NEUTRON", "ha_confs"): "exists on HA network nodes only; read again every ha_poll, a missing one is no HA router",
}


@dataclass
class Finding:
    error: ConfigError
    warning: bool = False

    def __str__(self) -> str:
        if not self.warning:
            return str(self.error)
        e = self.error
        where = f"{e.file}:{e.line}: " if e.line is not None else f"{e.file}: "
        return f"{where}warning: {e.reason}"


def check_config(path: str, run_as: safefile.RunAs | None = None) -> list[Finding]:
    """Every error and warning the config at ``path`` has, in line order."""
    loop = Loop()
    try:
        return _check(path, Context(loop=loop, checking=True, run_as=run_as))
    finally:
        loop.close()


def _check(path: str, ctx: Context) -> list[Finding]:
    run_as = ctx.run_as
    ctx.log.stream = io.StringIO()  # the daemon's notices are not findings: not shown
    errors: list[ConfigError] = []
    service = Service(os.path.abspath(path), ctx)
    try:
        service.load(errors)
    except ConfigError as unreadable:  # the file cannot be read, or is not text: nothing else to check
        return [Finding(unreadable)]
    cfg = service.config
    assert cfg is not None
    findings = [Finding(e) for e in errors]
    seen = {str(e) for e in errors}

    def add(err: ConfigError, warning: bool = False) -> None:
        if str(err) not in seen:
            seen.add(str(err))
            findings.append(Finding(err, warning))

    for text in cfg.warnings:
        add(_located(text, cfg.path), warning=True)
    for dup in cfg.duplicates:
        add(ConfigError(f"section [{dup.name}] appears again; only the first is read", cfg.path, dup.line), True)
    glob = cfg.section("global")
    for entry in glob.entries if glob is not None else ():
        if entry.value is None:
            add(ConfigError(f"ignoring malformed config directive '{entry.key}' (no value)", cfg.path, entry.line),
                True)
    option_errors: list[ConfigError] = []
    option_warnings: list[str] = []
    found = _instances(cfg, option_errors, option_warnings)
    for err in option_errors:
        add(err)
    for text in option_warnings:
        add(_located(text, cfg.path), warning=True)
    for err, warning in _paths(cfg, found, run_as):
        add(err, warning)
    control = service.ops.control_socket
    if control:
        problem = check_control_path(control)
        if problem:
            line = service.ops.lines.get("control_socket")
            add(ConfigError(f"control_socket '{control}': {problem}", cfg.path, line))
    ctx.log.close()
    findings.sort(key=lambda f: (f.error.line or 0, f.warning))
    return findings


def _located(text: str, path: str) -> ConfigError:
    """A warning the parser wrote as ``file:line: text``, back to file, line and reason."""
    head = f"{path}:"
    if text.startswith(head):
        num, _, reason = text[len(head):].partition(": ")
        if num.isdigit():
            return ConfigError(reason, path, int(num))
    return ConfigError(text, path)


@dataclass
class _Instance:
    """A plugin section a stack names, with the values of its good lines."""

    inst_id: str
    cls: type[Plugin]
    values: dict[str, object]
    stack_line: int


def _instances(cfg: ConfigFile, out: list[ConfigError], warnings: list[str]) -> list[_Instance]:
    """Every plugin section a stack names, each read line by line: the errors of every bad
    line go to ``out`` (building a stack stops at the first one of a section), the values
    of the good ones are kept for the path checks."""
    found: list[_Instance] = []
    glob = cfg.section("global")
    done: set[str] = set()
    for e in glob.entries if glob is not None else ():
        if e.key != "stack" or e.value is None:
            continue
        try:
            tokens = parse_stack_spec(e.value, cfg.path, e.line)
        except ConfigError:
            continue  # reported by the stack itself
        for inst_id, name in tokens:
            if inst_id in done:
                continue
            done.add(inst_id)
            try:
                cls = registry.get(name)
            except ConfigError:
                continue  # reported by the stack itself
            values: dict[str, object] = {o.name: o.default for o in cls.options}
            section = cfg.section(inst_id)
            for entry in section.entries if section is not None else ():
                one = Section(section.name, section.line, [entry]) if section is not None else None
                try:
                    got = option_values(cls.options, one, cfg, inst_id, name, warn=warnings.append)
                except ConfigError as err:
                    if "needs option" not in err.reason:  # a required option: the whole section tells
                        out.append(err)
                    continue
                if entry.value is not None and entry.key in got:
                    values[entry.key] = got[entry.key]
            found.append(_Instance(inst_id, cls, values, e.line))
    return found


def _option_line(cfg: ConfigFile, inst_id: str, option: str, stack_line: int | None) -> int | None:
    section = cfg.section(inst_id)
    for e in section.entries if section is not None else ():
        if e.key == option:
            return e.line
    return stack_line


def _paths(cfg: ConfigFile, found: list[_Instance], run_as: safefile.RunAs | None) -> list[tuple[ConfigError, bool]]:
    """Every path option of every plugin section, checked by the rules of the open that uses it."""
    out: list[tuple[ConfigError, bool]] = []
    for inst in found:
        name = inst.cls.name
        for opt in inst.cls.options:
            spec = PATH_OPTIONS.get((name, opt.name)) or PATH_OPTIONS.get(("*", opt.name))
            value = str(inst.values.get(opt.name) or "")
            if spec is None or not value or not spec.applies(inst.values):
                continue
            problem, warning = _check_path(spec.how, value, run_as)
            if problem:
                line = _option_line(cfg, inst.inst_id, opt.name, inst.stack_line)
                out.append((ConfigError(f"{name} '{inst.inst_id}': {opt.name} '{value}': {problem}", cfg.path, line),
                            warning))  # fmt: skip
    return out


def _check_path(how: str, path: str, run_as: safefile.RunAs | None) -> tuple[str | None, bool]:
    """Why ``path`` would fail when opened ``how`` (and whether that is only a warning)."""
    try:
        if how == "append":
            safefile.check_append(path, run_as)
        elif how == "dir":
            os.close(safefile.open_dir(path, run_as))
        elif how == "parent":
            os.close(safefile.open_dir(os.path.dirname(os.path.abspath(path)), run_as))
        elif how in ("read", "read_if_needed"):
            with open(path, "rb"):  # read-only: nothing is created
                pass
        elif how == "netns":
            st = os.stat(path)
            if stat.S_ISDIR(st.st_mode):
                return "is a directory, not a network namespace file", False
    except FileNotFoundError:
        if how in ("append", "parent"):
            return f"directory '{os.path.dirname(os.path.abspath(path))}' does not exist", False
        if how == "read_if_needed":
            return "does not exist; needed only if the table is missing", True
        # A namespace may be created after the config is checked: the start will tell.
        return "does not exist" + (" (yet)" if how == "netns" else ""), how == "netns"
    except OSError as e:
        if how == "read_if_needed":
            return f"cannot be read ({e.strerror or e}); needed only if the table is missing", True
        return str(e.strerror or e), False
    return None, False


def main(path: str, run_as: safefile.RunAs | None = None, out: TextIO | None = None,
         err: TextIO | None = None) -> int:  # fmt: skip
    """Print the findings; 0 when there is no error (warnings allowed), else 1."""
    out = out or sys.stdout
    err = err or sys.stderr
    findings = check_config(path, run_as)
    for f in findings:
        err.write(f"{_printable(str(f))}\n")
    errors = sum(1 for f in findings if not f.warning)
    if errors:
        err.write(f"{_printable(path)}: {errors} error(s)\n")
        return 1
    out.write(f"{_printable(path)}: OK\n")
    return 0


def _printable(text: str) -> str:
    """Findings quote the config's own text: one printable line each, whatever it holds."""
    return escape_text(text)
