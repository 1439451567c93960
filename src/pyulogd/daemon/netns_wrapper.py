"""pyulogd-netns-wrapper: a drop-in for ``ip`` that runs one pyulogd per network namespace.

Operators who run one logging daemon per Neutron router put a wrapper in place of ``ip``
in the rootwrap filters.  This is that wrapper (docs/netns-wrapper.md):

* every command is handed to the real ``ip`` unchanged (same arguments, same stdin, stdout,
  stderr and environment; for anything but ``netns add/attach/delete`` the wrapper simply
  ``exec``s it), and the exit status is ip's;
* ``ip netns add NAME`` (and ``attach``) where NAME matches the configured globs (default
  ``qrouter-*``) and is a safe name (letters, digits, ``_ . -``): once ip succeeded,
  ``ip netns exec NAME pyulogd -d -c RUNDIR/ns-HASH.conf -p RUNDIR/ns-HASH.pid``, the config
  rendered from a template with ``@NETNS@`` placeholders;
* ``ip netns delete NAME``: that namespace's daemon is stopped (SIGTERM, SIGKILL after
  ``stop_timeout``) and its files removed *before* ip runs; ``ip -all netns delete`` stops
  every daemon the wrapper started.

The wrapper runs as root on behalf of whoever may call ``ip`` (an agent behind rootwrap), so
nothing that caller controls may steer what root runs or which files root writes: the
namespace name is checked against a strict character set before it goes anywhere near a
config, the wrapper's files are named by a hash of the name, and the settings come only from
a root-owned file (``/etc/pyulogd/netns-wrapper.conf``), never from the environment.

Nothing the wrapper does for the daemons changes ip's exit status or its output on success:
problems are reported on stderr and to syslog.  Four options of its own, which ``ip`` would
reject anyway: ``--wrapper-check``, ``--wrapper-status``, ``--wrapper-start NAME...``,
``--wrapper-stop NAME...``.
"""

from __future__ import annotations

# Imported lazily where needed (subprocess, shlex, sysconfig, syslog, hashlib, re): the wrapper
# runs for every ip command the agent issues, and a pass-through should cost little more than
# Python's start-up.
import errno
import fcntl
import fnmatch
import os
import shutil
import signal
import stat
import sys
import time
from collections.abc import Sequence
from types import TracebackType

PROG = "pyulogd-netns-wrapper"
DEFAULT_CONFIG = "/etc/pyulogd/netns-wrapper.conf"
KEYS = ("ip", "match", "template", "rundir", "daemon", "start_timeout", "stop_timeout", "syslog")
# Variables that earlier versions read.  They are ignored now (the caller's environment must
# not choose what root runs); --wrapper-check names any that are set so nobody relies on them.
IGNORED_ENV_PREFIX = "PYULOGD_NETNS_"
# ip's own places, in this order; PATH is not searched: it is the caller's.
IP_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
# The daemon's whole environment (plus PROCESS_TAG): the caller's environment must not reach a
# root daemon (PYTHONPATH alone would run the caller's code).
DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_SETTINGS_BYTES = 1 << 20


# --------------------------------------------------------------------------- trusted files


class Untrusted(Exception):
    """A file or directory that root would read or write, but that someone else could change."""


def _owner_problem(st: os.stat_result, *, sticky_ok: bool = False) -> str | None:
    """Why a file or directory with this ``stat`` cannot be trusted by root, or None."""
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & 0o022 and not (sticky_ok and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _check_ancestors(real: str) -> None:
    """Every directory above the resolved path ``real`` is root's and writable by nobody else.

    Otherwise someone could rename a checked file away and put their own in its place.  A
    sticky directory (``/tmp``) is accepted: others may add entries there, but cannot rename
    or remove root's.
    """
    chain: list[str] = []
    d = os.path.dirname(real)
    while True:
        chain.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    for d in reversed(chain):
        st = os.stat(d)
        problem = _owner_problem(st, sticky_ok=True)
        if problem:
            raise Untrusted(f"{d}: {problem}")


def read_trusted(path: str, limit: int = MAX_SETTINGS_BYTES) -> str:
    """The text of a root-owned file that only root can change (settings file, template).

    FileNotFoundError if it (or a directory above it) does not exist; Untrusted if anybody
    but root could have written it; UnicodeDecodeError if it is not UTF-8.
    """
    real = os.path.realpath(path)
    _check_ancestors(real)
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Untrusted(f"{path}: not a regular file")
        problem = _owner_problem(st)
        if problem:
            raise Untrusted(f"{path}: {problem}")
        data = os.read(fd, limit + 1)
        if len(data) > limit:
            raise Untrusted(f"{path}: larger than {limit} bytes")
    finally:
        os.close(fd)
    return data.decode("utf-8")


# --------------------------------------------------------------------------- settings


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


def _absolute(key: str, value: str) -> str:
    if not os.path.isabs(value):
        raise ValueError(f"{value!r} is not an absolute path (root runs or reads it; no search path applies)")
    return value


def _apply(s: Settings, key: str, value: str, where: str) -> None:
    try:
        if key == "ip":
            s.ip = _absolute(key, value) if value else ""
        elif key == "match":
            s.match = [p for p in value.replace(",", " ").split() if p]
        elif key == "template":
            s.template = _absolute(key, value)
        elif key == "rundir":
            # It is rendered into the daemons' configs (@RUNDIR@, @PIDFILE@): same rule as names.
            s.rundir = check_config_value(_absolute(key, value.rstrip("/") or "/"))
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


# --------------------------------------------------------------------------- finding things


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


# --------------------------------------------------------------------------- the ip command line


# ip's global options in the order ip.c tries them (an abbreviation takes the first match),
# with whether they take an argument.  -4 -6 -0 -I -D -M -B are compared exactly.
_IP_OPTIONS: tuple[tuple[str, bool], ...] = (
    ("-loops", True), ("-family", True), ("-human", False), ("-human-readable", False), ("-iec", False),
    ("-stats", False), ("-statistics", False), ("-details", False), ("-resolve", False), ("-oneline", False),
    ("-timestamp", False), ("-tshort", False), ("-Version", False), ("-force", False), ("-batch", True),
    ("-brief", False), ("-json", False), ("-pretty", False), ("-rcvbuf", True), ("-color", False),
    ("-help", False), ("-netns", True), ("-Numeric", False), ("-all", False),
)
_IP_EXACT = {"-4", "-6", "-0", "-I", "-D", "-M", "-B", "-echo"}
# ip's objects in the order ip.c tries them, up to netns: "n"/"ne" mean neighbor, "net" netns.
_IP_OBJECTS_BEFORE_NETNS = (
    "address", "addrlabel", "maddress", "route", "rule", "neighbor", "neighbour", "ntable", "ntbl", "link",
    "l2tp", "fou", "ila", "macsec", "tunnel", "tunl", "tuntap", "tap", "token", "tcpmetrics", "tcp_metrics",
    "monitor", "xfrm", "mroute", "mrule",
)
# ip netns subcommands in the order ipnetns.c tries them.
_NETNS_COMMANDS = ("list", "show", "lst", "list-id", "help", "add", "set", "delete", "identify", "pids", "exec",
                   "monitor", "attach")


def _matches(word: str, full: str) -> bool:
    """iproute2's matches(): a non-empty prefix."""
    return bool(word) and full.startswith(word)


class IpCommand:
    """What an ip command line does, as far as the wrapper cares."""

    def __init__(self, kind: str, name: str = "", why: str = "") -> None:
        self.kind = kind  # "other", "add", "delete", "delete-all"
        self.name = name
        self.why = why  # for "other": why it is not handled (batch mode, ...)

    def __repr__(self) -> str:
        return f"IpCommand({self.kind!r}, {self.name!r}, {self.why!r})"


def classify(args: Sequence[str]) -> IpCommand:
    """Parse ip's command line as ip does: global options, then object, then ``netns`` subcommand."""
    i, do_all, batch, other_ns = 0, False, False, False
    while i < len(args):
        opt = args[i]
        if opt == "--":
            i += 1
            break
        if not opt.startswith("-"):
            break
        if opt.startswith("--"):
            opt = opt[1:]
        takes_arg = False
        if opt in _IP_EXACT:
            pass
        else:
            base = opt.split("=", 1)[0]
            hit = next((o for o in _IP_OPTIONS if _matches(opt, o[0]) or (o[0] == "-color" and _matches(base, o[0]))),
                       None)
            if hit is None:
                return IpCommand("other", why=f"unknown option {args[i]}")  # ip fails on it
            if hit[0] in ("-Version", "-help"):
                return IpCommand("other")
            do_all = do_all or hit[0] == "-all"
            batch = batch or hit[0] == "-batch"
            other_ns = other_ns or hit[0] == "-netns"
            takes_arg = hit[1]
        i += 2 if takes_arg else 1
    if batch:
        return IpCommand("other", why="batch mode (-batch): netns commands in the batch are not followed")
    if i >= len(args):
        return IpCommand("other")
    obj = args[i]
    if not _matches(obj, "netns") or any(_matches(obj, o) for o in _IP_OBJECTS_BEFORE_NETNS):
        return IpCommand("other")
    rest = args[i + 1:]
    if not rest:
        return IpCommand("other")
    sub = next((c for c in _NETNS_COMMANDS if _matches(rest[0], c)), None)
    if sub in ("add", "attach") and not do_all and len(rest) >= 2:
        if other_ns:  # ip -n X netns add Y: made from inside X's mount namespace; left alone
            return IpCommand("other", why="-netns with netns add: not followed")
        return IpCommand("add", rest[1])
    if sub == "delete":
        if do_all:
            return IpCommand("delete-all")
        if len(rest) >= 2:
            return IpCommand("delete", rest[1])
    return IpCommand("other")


# --------------------------------------------------------------------------- namespace names
#
# ip accepts any name but "", ".", ".." and names with "/" (up to 255 bytes), including quotes,
# line breaks and bytes that are not UTF-8.  The name becomes part of a config that a root
# daemon reads, a file name in the run directory and log lines, so a daemon is started only
# for names made of the characters Neutron uses (``<prefix>-<uuid>``); other names are passed
# to ip and refused here, with the reason.

NAME_MAX = 255  # bytes: ip's own limit (a file name under /run/netns)
NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_NAME_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
# What may be substituted into the daemon's config: ulogd.conf has no escape for a quote or a
# line break inside a value, so escaping is refusing.  These characters cannot end a line
# (str.splitlines() also ends one at \r, \v, \f, \x1c-\x1e, \x85, \u2028, \u2029), a quoted
# word (") or an unquoted one (blanks, =), nor start a comment or a section where a value starts.
_VALUE_CHARS = NAME_CHARS | frozenset("/")


def name_problem(name: str) -> str | None:
    """Why the wrapper starts no daemon for namespace ``name``, or None if the name is safe.

    Safe: 1 to 255 bytes of ASCII letters, digits, ``_``, ``.`` and ``-``, beginning with a
    letter or digit, with no ``..`` (so no part of it, e.g. @NETNS_ID@, can be a ``..`` path
    component either).
    """
    if not name:
        return "empty name"
    bad = next((c for c in name if c not in NAME_CHARS), None)
    if bad is not None:
        return f"character {shown(bad)} (only letters, digits, '_', '.' and '-' are accepted)"
    if len(name) > NAME_MAX:  # ASCII from here on: characters are bytes
        return f"{len(name)} bytes long (at most {NAME_MAX})"
    if name[0] not in _NAME_FIRST:
        return "does not begin with a letter or digit"
    if ".." in name:
        return "contains '..'"
    return None


def check_config_value(value: str) -> str:
    """``value`` if it can go into a ulogd.conf value as it is; ValueError otherwise."""
    bad = next((c for c in value if c not in _VALUE_CHARS), None)
    if bad is not None:
        raise ValueError(f"{shown(value)} contains {shown(bad)}, which cannot be put into a config value safely "
                         "(only letters, digits, '_', '.', '-' and '/')")
    return value


def _raw(text: str) -> bytes:
    """The bytes behind a str from argv or the file system (undecodable bytes are surrogates)."""
    try:
        return os.fsencode(text)
    except UnicodeEncodeError:  # a str that did not come from bytes
        return text.encode("utf-8", "surrogatepass")


def shown(text: str, limit: int = 256) -> str:
    """``text`` quoted for a log line, with every byte outside printable ASCII escaped.

    Repr-style (``\\n``, ``\\r``, ``\\t``, ``\\xNN`` per byte, ``\\'``, ``\\\\``), so a log line never
    carries a raw control character or a byte that is not UTF-8; at most ``limit`` bytes of
    the text are shown.
    """
    raw = _raw(text)
    out = []
    for b in raw[:limit]:
        if b == 0x5C:
            out.append("\\\\")
        elif b == 0x27:
            out.append("\\'")
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        elif b == 0x0A:
            out.append("\\n")
        elif b == 0x0D:
            out.append("\\r")
        elif b == 0x09:
            out.append("\\t")
        else:
            out.append(f"\\x{b:02x}")
    more = f"... ({len(raw)} bytes)" if len(raw) > limit else ""
    return "'" + "".join(out) + "'" + more


def file_stem(name: str) -> str:
    """The base name of the wrapper's files for namespace ``name``: ``ns-`` and 32 hex digits.

    A hash rather than the name: whatever the name, the file names are short (a 255-byte name
    plus ``.conf`` would not be a valid file name) and cannot contain anything but hex digits.
    """
    import hashlib

    return "ns-" + hashlib.sha256(_raw(name)).hexdigest()[:32]


def render(template_text: str, name: str, s: Settings) -> str:
    """The daemon's config: ``template_text`` with the placeholders substituted, in one pass.

    ValueError if ``name`` is not safe or a value cannot be put into a config (the rundir is
    checked when the settings are read; this checks again).
    """
    import re

    problem = name_problem(name)
    if problem is not None:
        raise ValueError(f"unsafe namespace name {shown(name)}: {problem}")
    prefix, _, ident = name.partition("-")
    values = {
        "NETNS": name,
        "NETNS_PREFIX": prefix if ident else "",
        "NETNS_ID": ident if ident else name,
        "RUNDIR": s.rundir,
        "PIDFILE": os.path.join(s.rundir, file_stem(name) + ".pid"),
    }
    for v in values.values():
        check_config_value(v)
    return re.sub(r"@(NETNS|NETNS_PREFIX|NETNS_ID|RUNDIR|PIDFILE)@", lambda m: values[m.group(1)], template_text)


# --------------------------------------------------------------------------- logging


def log_safe(msg: str) -> str:
    """``msg`` as one line of printable text: control characters and undecodable bytes escaped.

    Every message passes through here on its way to stderr and syslog, so that nothing taken
    from a caller (a name, ip's or the daemon's output) can forge or split a log line.
    """
    if msg.isprintable():
        return msg
    out = []
    for c in msg:
        o = ord(c)
        if c.isprintable():
            out.append(c)
        elif c in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[c])
        elif 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        else:
            out.append(f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out)


class Log:
    def __init__(self, use_syslog: bool) -> None:
        self.use_syslog = use_syslog
        self._opened = False

    def _syslog(self, prio: int, msg: str) -> None:
        if not self.use_syslog:
            return
        try:
            import syslog

            if not self._opened:
                syslog.openlog(PROG, syslog.LOG_PID, syslog.LOG_DAEMON)
                self._opened = True
            syslog.syslog(prio, log_safe(msg))
        except Exception:  # syslog is best effort
            pass

    def info(self, msg: str) -> None:
        """Success: syslog only, so that ip's output stays what ip printed."""
        self._syslog(6, msg)

    def notice(self, msg: str) -> None:
        """Worth an audit trail, but not the caller's business: syslog only."""
        self._syslog(5, msg)

    def warning(self, msg: str) -> None:
        self._stderr(msg)
        self._syslog(4, msg)

    def error(self, msg: str) -> None:
        self._stderr(msg)
        self._syslog(3, msg)

    @staticmethod
    def _stderr(msg: str) -> None:
        try:
            sys.stderr.write(f"{PROG}: {log_safe(msg)}\n")
            sys.stderr.flush()
        except OSError:
            pass


# --------------------------------------------------------------------------- the run directory


def _make_dirs(path: str) -> None:
    """``mkdir -p`` with mode 0755 for every directory made (os.makedirs gives parents 0777 & ~umask)."""
    missing = []
    p = os.path.abspath(path)
    while not os.path.lexists(p):
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o755)
        except FileExistsError:
            pass


class RunDir:
    """The run directory, opened once and checked: root's, writable by nobody else, and so are
    the directories above it.

    Every file operation goes through the directory's descriptor with O_NOFOLLOW, new files
    are written to a fresh name (O_EXCL) and renamed into place, so even a directory that
    changed after the check could not make root follow a planted link.
    """

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def open(cls, path: str, create: bool) -> RunDir | None:
        """The checked run directory; None if it does not exist and ``create`` is false.

        Untrusted if it (or a directory above it) could be changed by anybody but root.
        """
        if create:
            _make_dirs(path)
        real = os.path.realpath(path)
        try:
            _check_ancestors(real)
            fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            if create:
                raise
            return None
        problem = _owner_problem(os.fstat(fd))
        if problem:
            os.close(fd)
            raise Untrusted(f"run directory {path}: {problem}")
        return cls(path, fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def path_of(self, fname: str) -> str:
        return os.path.join(self.path, fname)

    def read(self, fname: str, limit: int = 4096) -> bytes | None:
        """The start of a regular file of ours; None if there is none (or it is anything else)."""
        try:
            fd = os.open(fname, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            return os.read(fd, limit)
        except OSError:
            return None
        finally:
            os.close(fd)

    def write(self, fname: str, data: bytes, mode: int = 0o644) -> None:
        """Replace ``fname`` with ``data``, atomically: a new file (O_EXCL) renamed over it."""
        tmp = f".{fname}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd)
        try:
            try:
                os.fchmod(fd, mode)  # whatever the umask
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, fname, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            self.unlink(tmp)
            raise

    def unlink(self, fname: str) -> None:
        try:
            os.unlink(fname, dir_fd=self.fd)
        except FileNotFoundError:
            pass

    def exists(self, fname: str) -> bool:
        try:
            os.stat(fname, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return False
        return True

    def listdir(self) -> list[str]:
        return os.listdir(self.fd)


class NsFiles:
    """The wrapper's files for one namespace, all named by ``file_stem(name)``:
    ``STEM.conf`` (rendered config), ``STEM.pid`` (the daemon's pidfile), ``STEM.name`` (the
    name, for --wrapper-status and ``ip -all netns delete``) and ``.STEM.lock``."""

    def __init__(self, stem: str, name: str | None) -> None:
        self.stem = stem
        self.name = name  # None: the .name file is missing or does not belong to the stem
        self.conf = f"{stem}.conf"
        self.pid = f"{stem}.pid"
        self.meta = f"{stem}.name"
        self.lock = f".{stem}.lock"

    @classmethod
    def of(cls, name: str) -> NsFiles:
        return cls(file_stem(name), name)

    @classmethod
    def legacy(cls, name: str) -> NsFiles:
        """The files of a daemon started by a version that named them ``NAME.conf``/``NAME.pid``
        (and locked ``.NAME.lock``): still stopped on delete, so an upgrade leaves none behind."""
        return cls(name, name)

    @property
    def label(self) -> str:
        return self.name if self.name is not None else f"(unknown name, files {self.stem}.*)"


def is_stem(stem: str) -> bool:
    return len(stem) == 35 and stem.startswith("ns-") and all(c in "0123456789abcdef" for c in stem[3:])


def managed(rd: RunDir) -> list[NsFiles]:
    """Every namespace that has files of ours in the run directory, with its name when known
    (and those of an earlier version, whose files were named after a safe name)."""
    try:
        entries = rd.listdir()
    except OSError:
        return []
    stems = {e.rsplit(".", 1)[0] for e in entries if e.endswith((".pid", ".conf", ".name"))}
    out = []
    for stem in sorted(stems):
        if is_stem(stem):
            text = (rd.read(f"{stem}.name", NAME_MAX + 2) or b"").decode("ascii", "replace").removesuffix("\n")
            known = name_problem(text) is None and file_stem(text) == stem
            out.append(NsFiles(stem, text if known else None))
        elif name_problem(stem) is None and (rd.exists(f"{stem}.pid") or rd.exists(f"{stem}.conf")):
            out.append(NsFiles.legacy(stem))
    return out


def files_of(name: str) -> list[NsFiles]:
    """Where a daemon for ``name`` (a safe name) may have its files: ours, then an earlier version's."""
    return [NsFiles.of(name), NsFiles.legacy(name)]


class name_lock:  # noqa: N801 - used like a function: `with name_lock(rd, files):`
    """Serialise the wrapper's work on one namespace name (parallel rootwrap calls)."""

    def __init__(self, rd: RunDir, f: NsFiles) -> None:
        self.rd = rd
        self.fname = f.lock
        self.fd = -1

    def __enter__(self) -> None:
        dfd = self.rd.fd
        while True:
            fd = os.open(self.fname, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(self.fname, dir_fd=dfd, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return
            os.close(fd)  # removed by a holder that finished: lock the new file

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        try:
            os.unlink(self.fname, dir_fd=self.rd.fd)  # still holding the lock: a waiter sees the inode change
        except OSError:
            pass
        os.close(self.fd)


# --------------------------------------------------------------------------- the daemons


def read_pid(rd: RunDir, fname: str) -> int | None:
    text = (rd.read(fname, 64) or b"").decode("ascii", "replace").strip()
    return int(text) if text.isdigit() and int(text) > 1 else None


def _pidfile_locked(rd: RunDir, fname: str) -> bool:
    """A live daemon holds a lock on its pidfile (pyulogd: flock; ulogd2: fcntl)."""
    try:
        fd = os.open(fname, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=rd.fd)
    except OSError:
        return False
    try:
        for lock in (fcntl.flock, fcntl.lockf):
            try:
                lock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    return True
                continue
            lock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def running_daemon(rd: RunDir, f: NsFiles) -> int | None:
    """The pid of the daemon the wrapper started for these files, if it still runs.

    Only a pid whose pidfile is still locked, or whose command line names our rendered
    config, counts: a stale pidfile never gets an unrelated process signalled.
    """
    pid = read_pid(rd, f.pid)
    if pid is None or not _alive(pid):
        return None
    if _pidfile_locked(rd, f.pid) or rd.path_of(f.conf) in _cmdline(pid):
        return pid
    return None


def _wait_gone(pid: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while True:
        if not _alive(pid):
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.02)


def stop_daemon(s: Settings, rd: RunDir, f: NsFiles, log: Log) -> bool:
    """Stop the namespace's daemon and remove its files; True if nothing is left running."""
    ok = True
    pid = running_daemon(rd, f)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if _wait_gone(pid, s.stop_timeout):
            log.info(f"stopped pyulogd for netns {f.label} (pid {pid})")
        else:
            log.warning(f"pyulogd for netns {f.label} (pid {pid}) still running {s.stop_timeout:g} s after SIGTERM: "
                        "sending SIGKILL")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            ok = _wait_gone(pid, 2.0)
            if not ok:
                log.error(f"pyulogd for netns {f.label} (pid {pid}) survived SIGKILL")
    for fname in (f.pid, f.conf, f.meta):
        try:
            rd.unlink(fname)
        except OSError as e:
            log.warning(f"cannot remove {rd.path_of(fname)}: {e.strerror}")
    return ok


def daemon_environment(name: str) -> dict[str, str]:
    """The daemon's whole environment: a fixed PATH and Neutron's PROCESS_TAG, nothing of the caller's."""
    return {"PATH": DAEMON_PATH, "PROCESS_TAG": f"pyulogd-{name}"}


def start_daemon(s: Settings, rd: RunDir, ip: str, name: str, log: Log) -> bool:
    """``ip netns exec NAME pyulogd -d -c RUNDIR/STEM.conf -p RUNDIR/STEM.pid``; True if it started.

    ``name`` must have passed name_problem(); render() checks it again.
    """
    import shlex
    import subprocess

    try:
        template = read_trusted(s.template)
    except Untrusted as e:
        log.error(f"netns {name}: no pyulogd started: refusing the template: {e}")
        return False
    except UnicodeDecodeError as e:
        log.error(f"netns {name}: no pyulogd started: template {s.template} is not UTF-8 ({e.reason})")
        return False
    except OSError as e:
        log.error(f"netns {name}: no pyulogd started: cannot read template {s.template}: {e.strerror}")
        return False
    try:
        text = render(template, name, s)
    except ValueError as e:
        log.error(f"netns {name}: no pyulogd started: {e}")
        return False
    f = NsFiles.of(name)
    if running_daemon(rd, f) is not None:  # a namespace of the same name was deleted behind our back
        log.warning(f"netns {name}: a pyulogd for an earlier namespace of this name still runs: stopping it")
        stop_daemon(s, rd, f, log)
    rd.write(f.meta, f"{name}\n".encode("ascii"))
    rd.write(f.conf, text.encode("utf-8"))
    conf, pidf = rd.path_of(f.conf), rd.path_of(f.pid)
    cmd = [ip, "netns", "exec", name, *daemon_command(s), "-d", "-c", conf, "-p", pidf]
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             close_fds=True, start_new_session=True, env=daemon_environment(name), cwd="/")
    except OSError as e:
        log.error(f"netns {name}: cannot run {shlex.join(cmd)}: {e.strerror}")
        rd.unlink(f.conf)
        rd.unlink(f.meta)
        return False
    try:
        out, _ = p.communicate(timeout=s.start_timeout)
    except subprocess.TimeoutExpired:
        # Left running: `pyulogd -d` returns once the daemon reports that it started.
        log.error(f"netns {name}: pyulogd did not report a start within {s.start_timeout:g} s "
                  f"(still starting? see {pidf})")
        return False
    text = out.decode(errors="replace").strip()
    if p.returncode != 0:
        log.error(f"netns {name}: pyulogd failed to start (exit {p.returncode}): {text or 'no message'}")
        rd.unlink(f.conf)
        rd.unlink(f.meta)
        return False
    pid = read_pid(rd, f.pid)
    log.info(f"started pyulogd for netns {name} (pid {pid if pid is not None else '?'}, config {conf})")
    return True


# --------------------------------------------------------------------------- running ip


def run_ip(ip: str, args: Sequence[str]) -> int:
    """Run ip as a child with our stdin/stdout/stderr; its exit status, or -signal if it was killed."""
    import subprocess

    sys.stdout.flush()
    sys.stderr.flush()
    p = subprocess.Popen([ip, *args], close_fds=False)
    # Like a shell: ^C/^\ reach ip (same process group); we wait for it instead of dying first.
    # A SIGTERM/SIGHUP sent to the wrapper alone is handed on to ip.
    old: dict[int, signal._HANDLER] = {}

    def forward(signum: int, _frame: object) -> None:
        try:
            p.send_signal(signum)
        except OSError:
            pass

    for sig in (signal.SIGINT, signal.SIGQUIT):
        old[sig] = signal.signal(sig, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        old[sig] = signal.signal(sig, forward)
    try:
        while True:
            try:
                return p.wait()
            except InterruptedError:
                continue
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)


def exit_like(rc: int) -> int:
    """Leave with ip's status; if ip died of a signal, die of the same signal."""
    if rc < 0:
        sig = -rc
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        except (OSError, ValueError):
            pass
        return 128 + sig
    return rc


def exec_ip(ip: str, args: Sequence[str]) -> int:
    """Become ip: the purest pass-through there is."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(ip, [ip, *args])  # argv[0] = ip's own path: ip reads the object from a longer basename
    except OSError as e:
        sys.stderr.write(f"{PROG}: cannot execute {ip}: {e.strerror}\n")
        return 126 if e.errno in (errno.EACCES, errno.ENOEXEC) else 127


# --------------------------------------------------------------------------- main


def _ignored_environment() -> list[str]:
    return sorted(k for k in os.environ if k.startswith(IGNORED_ENV_PREFIX))


def _check(s: Settings, ip: str | None) -> int:
    import shlex

    ok = bool(ip)
    print(f"settings from: {', '.join(s.source) or 'defaults'}")
    print(f"real ip:       {ip or 'NOT FOUND'}")
    print(f"match:         {', '.join(s.match)}")
    try:
        read_trusted(s.template)
        state = ""
    except FileNotFoundError:
        state, ok = "  (MISSING)", False
    except (Untrusted, UnicodeDecodeError, OSError) as e:
        state, ok = f"  (REFUSED: {e})", False
    print(log_safe(f"template:      {s.template}{state}"))
    try:
        rd = RunDir.open(s.rundir, create=False)
    except (Untrusted, OSError) as e:
        state, ok = f"  (REFUSED: {e})", False
    else:
        state = "  (created on the first netns add)" if rd is None else ""
        if rd is not None:
            rd.close()
    print(log_safe(f"rundir:        {s.rundir}{state}"))
    print(f"daemon:        {shlex.join(daemon_command(s))} -d -c RUNDIR/ns-HASH.conf -p RUNDIR/ns-HASH.pid")
    print(f"timeouts:      start {s.start_timeout:g} s, stop {s.stop_timeout:g} s; syslog {s.syslog}")
    ignored = _ignored_environment()
    if ignored:
        print(f"ignored:       {', '.join(ignored)} (settings come from the settings file only)")
    return 0 if ok else 1


def _wrapper_command(args: list[str], s: Settings | None, ip: str | None, log: Log) -> int:
    if s is None:
        return 1
    cmd, names = args[0], args[1:]
    if cmd == "--wrapper-check":
        return _check(s, ip)
    create = cmd == "--wrapper-start"
    try:
        rd = RunDir.open(s.rundir, create=create and bool(names))
    except (Untrusted, OSError) as e:
        log.error(f"run directory {s.rundir}: {e}")
        return 1
    try:
        if cmd == "--wrapper-status":
            for f in managed(rd) if rd is not None else []:
                pid = running_daemon(rd, f)  # type: ignore[arg-type]
                ns_exists = f.name is not None and os.path.exists(os.path.join("/run/netns", f.name))
                print(f"{f.label}\t{'running pid ' + str(pid) if pid else 'NOT running'}\t"
                      f"{'netns present' if ns_exists else 'netns GONE'}")
            return 0
        if ip is None:
            log.error("cannot find the real ip command (set ip= in the settings file)")
            return 127
        rc = 0
        for name in names:
            problem = name_problem(name)
            if problem is not None:
                log.error(f"invalid namespace name {shown(name)}: {problem}")
                rc = 1
                continue
            if rd is None:  # --wrapper-stop with no run directory: nothing of ours runs
                continue
            if create:
                f = NsFiles.of(name)
                with name_lock(rd, f):
                    if not os.path.exists(os.path.join("/run/netns", name)):
                        log.error(f"netns {name} does not exist")
                        rc = 1
                    elif running_daemon(rd, f) is None and not start_daemon(s, rd, ip, name, log):
                        rc = 1
                continue
            for f in files_of(name):
                if rd.exists(f.pid) or rd.exists(f.conf):
                    with name_lock(rd, f):
                        if not stop_daemon(s, rd, f, log):
                            rc = 1
        return rc
    finally:
        if rd is not None:
            rd.close()


def _add(s: Settings, ip: str, args: list[str], name: str, log: Log) -> int:
    """ip first; if it succeeded and the name is safe, start the namespace's daemon."""
    if not s.matches(name):
        if name_problem(name) is not None:
            log.notice(f"netns add of an unsafe name, not matched by the globs: {shown(name)}")
        return exec_ip(ip, args)
    problem = name_problem(name)
    if problem is not None:
        log.error(f"netns {shown(name)}: not starting pyulogd: unsafe name: {problem}")
        return exec_ip(ip, args)
    try:  # a failure here must still run ip
        rd = RunDir.open(s.rundir, create=True)
        assert rd is not None
    except (Untrusted, OSError) as e:
        log.error(f"netns {name}: not starting pyulogd: run directory {s.rundir}: {e}")
        return exec_ip(ip, args)
    with rd:
        lock = name_lock(rd, NsFiles.of(name))
        try:  # by hand rather than `with`: a lock failure must still run ip
            lock.__enter__()
        except OSError as e:
            log.error(f"netns {name}: cannot lock in {s.rundir}: {e.strerror}; not starting pyulogd")
            return exit_like(run_ip(ip, args))
        try:
            rc = run_ip(ip, args)
            if rc == 0:
                try:
                    start_daemon(s, rd, ip, name, log)
                except Exception as e:  # never let the daemon change ip's result
                    log.error(f"netns {name}: starting pyulogd failed: {type(e).__name__}: {e}")
        finally:
            lock.__exit__(None, None, None)
    return exit_like(rc)


def _delete(s: Settings, ip: str, args: list[str], name: str | None, log: Log) -> int:
    """Stop the daemon of ``name`` (None: of every namespace), then let ip delete."""
    if name is not None and name_problem(name) is not None:
        return exec_ip(ip, args)  # the wrapper never started anything for such a name
    try:
        rd = RunDir.open(s.rundir, create=False)
    except (Untrusted, OSError) as e:
        log.error(f"not stopping any pyulogd: run directory {s.rundir}: {e}")
        return exec_ip(ip, args)
    if rd is None:
        return exec_ip(ip, args)
    with rd:
        for f in files_of(name) if name is not None else managed(rd):
            if not (rd.exists(f.pid) or rd.exists(f.conf)):
                continue  # not one of ours
            try:
                with name_lock(rd, f):
                    stop_daemon(s, rd, f, log)
            except Exception as e:
                log.error(f"netns {f.label}: stopping pyulogd failed: {type(e).__name__}: {e}")
    return exit_like(run_ip(ip, args))


def main(argv: list[str] | None = None, config: str | None = DEFAULT_CONFIG) -> int:
    """The wrapper.  ``config``: the settings file; another one only through this argument, from
    a launcher root wrote (a command-line option would be the caller's choice, as ip's arguments are)."""
    args = list(sys.argv[1:] if argv is None else argv)
    config_error = ""
    try:
        settings: Settings | None = load_settings(config)
    except SettingsError as e:
        settings, config_error = None, f"configuration error, not managing any pyulogd: {e}"
    log = Log(settings.syslog if settings is not None else True)
    ip = find_ip(settings.ip if settings is not None else "")
    if args and args[0] in ("--wrapper-check", "--wrapper-status", "--wrapper-start", "--wrapper-stop"):
        if config_error:
            log.error(config_error)
        return _wrapper_command(args, settings, ip, log)
    if ip is None:
        sys.stderr.write(f"{PROG}: cannot find the real ip command"
                         f"{' ' + shown(settings.ip) if settings is not None and settings.ip else ''}\n")
        return 127
    what = classify(args)
    if settings is None:
        # Said on stderr only where a daemon should have been managed; other commands keep ip's output.
        (log.error if what.kind != "other" else log.info)(config_error)
        return exec_ip(ip, args)
    if what.kind == "other":
        if what.why and not what.why.startswith("unknown"):
            log.info(what.why)
        return exec_ip(ip, args)
    if what.kind == "add":
        return _add(settings, ip, args, what.name, log)
    return _delete(settings, ip, args, what.name if what.kind == "delete" else None, log)


if __name__ == "__main__":
    sys.exit(main())
