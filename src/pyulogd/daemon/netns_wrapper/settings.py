"""The wrapper's settings: ``key = value`` lines from a root-owned file, never the environment;
and what they point at (the real ip, the daemon command)."""

from __future__ import annotations

import fnmatch
import os
import shutil
import sys

from pyulogd.daemon.netns_wrapper.log import PROG
from pyulogd.daemon.netns_wrapper.names import check_config_value, shown
from pyulogd.daemon.netns_wrapper.trust import Untrusted, read_trusted

DEFAULT_CONFIG = "/etc/pyulogd/netns-wrapper.conf"
KEYS = ("ip", "match", "template", "rundir", "daemon", "start_timeout", "stop_timeout", "syslog")
# ip's own places, in this order; PATH is not searched: it is the caller's.
IP_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


class Settings:
    def __init__(self, rundir: str = "/run/pyulogd") -> None:
        self.ip = ""  # empty: look for it in IP_DIRS, never ourselves
        self.match = ["qrouter-*"]
        self.template = "/etc/pyulogd/netns-ulogd.conf.in"
        self.rundir = rundir
        self.daemon: list[str] = []  # empty: the pyulogd installed next to this Python
        self.start_timeout = 10.0
        self.stop_timeout = 5.0
        self.syslog = True
        self.source: list[str] = []  # where the values came from (for --wrapper-check)

    def matches(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) for pat in self.match)


class SettingsError(Exception):
    pass


def _parse_config(text: str, where: str) -> dict[str, str]:
    """``key = value`` lines; ``#``/``;`` comments; ``[section]`` lines are ignored."""
    out: dict[str, str] = {}
    # split("\n"), not splitlines(): a \r or \x0c inside a value is an error below, not a new line.
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.strip(" \t\r")
        if not line or line[0] in "#;" or (line.startswith("[") and line.endswith("]")):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().lower().replace("-", "_")
        if not sep or key not in KEYS:
            raise SettingsError(f"{where}:{n}: expected one of {', '.join(KEYS)} = value, got {shown(line)}")
        value = value.strip(" \t")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if not value.isprintable():
            raise SettingsError(f"{where}:{n}: control character in the value of {key}: {shown(value)}")
        out[key] = value
    return out


def _absolute(value: str) -> str:
    if not os.path.isabs(value):
        raise ValueError(f"{value!r} is not an absolute path (root runs or reads it; no search path applies)")
    return value


def _apply(s: Settings, key: str, value: str, where: str) -> None:
    try:
        if key == "ip":
            s.ip = _absolute(value) if value else ""
        elif key == "match":
            s.match = [p for p in value.replace(",", " ").split() if p]
        elif key == "template":
            s.template = _absolute(value)
        elif key == "rundir":
            # It is rendered into the daemons' configs (@RUNDIR@, @PIDFILE@): same rule as names.
            s.rundir = check_config_value(_absolute(value.rstrip("/") or "/"))
        elif key == "daemon":
            import shlex

            s.daemon = shlex.split(value)
        elif key == "start_timeout":
            s.start_timeout = float(value)
        elif key == "stop_timeout":
            s.stop_timeout = float(value)
        elif key == "syslog":
            if value.lower() not in ("1", "0", "yes", "no", "true", "false", "on", "off"):
                raise ValueError(value)
            s.syslog = value.lower() in ("1", "yes", "true", "on")
    except ValueError as e:
        raise SettingsError(f"{where}: bad value for {key}: {e}") from None


def load_settings(path: str | None = DEFAULT_CONFIG) -> Settings:
    """Defaults, then the settings file ``path`` (None: defaults only).

    The file must belong to root and be writable by nobody else, and so must the directories
    above it: it decides what root runs.  A missing file means the defaults.  The environment
    plays no part (it is the caller's, and the caller is who this file protects against).
    """
    s = Settings()
    if path is None:
        return s
    try:
        text = read_trusted(path)
    except FileNotFoundError:
        return s
    except Untrusted as e:
        raise SettingsError(f"{e}; refusing to use it") from None
    except UnicodeDecodeError as e:
        raise SettingsError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise SettingsError(f"{path}: {e.strerror}") from None
    lines = _parse_config(text, path)
    for key, value in lines.items():
        _apply(s, key, value, path)
    s.source.append(path)
    return s


def _is_self(path: str) -> bool:
    """True if ``path`` is this wrapper (the console script, a symlink to it, or a shim calling it)."""
    real = os.path.realpath(path)
    for me in (sys.argv[0], shutil.which(PROG) or ""):
        if me and os.path.realpath(me) == real:
            return True
    try:
        with open(real, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return not head.startswith(b"\x7fELF") and (b"netns_wrapper" in head or PROG.encode() in head)


def find_ip(configured: str = "") -> str | None:
    """The real ip: the configured absolute path, else the first of IP_DIRS that is not us."""
    if configured:
        return configured if os.access(configured, os.X_OK) and not _is_self(configured) else None
    for d in IP_DIRS:
        cand = os.path.join(d, "ip")
        if os.path.isfile(cand) and os.access(cand, os.X_OK) and not _is_self(cand):
            return cand
    return None


def daemon_command(s: Settings) -> list[str]:
    if s.daemon:
        return list(s.daemon)
    import sysconfig

    for d in (os.path.dirname(sys.executable), sysconfig.get_path("scripts")):
        cand = os.path.join(d, "pyulogd")
        if os.access(cand, os.X_OK):
            return [cand]
    return [sys.executable, "-m", "pyulogd"]
