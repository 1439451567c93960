"""pyulogd-netns-wrapper: a drop-in for ``ip`` that runs one pyulogd per network namespace.

Operators who run one logging daemon per Neutron router put a wrapper in place of ``ip``
in the rootwrap filters.  This is that wrapper (docs/netns-wrapper.md):

* every command is handed to the real ``ip`` unchanged (same arguments, same stdin, stdout,
  stderr and environment; for anything but ``netns add/attach/delete`` the wrapper simply
  ``exec``s it), and the exit status is ip's;
* ``ip netns add NAME`` (and ``attach``) where NAME matches the configured globs (default
  ``qrouter-*``): once ip succeeded, ``ip netns exec NAME pyulogd -d -c RUNDIR/NAME.conf -p
  RUNDIR/NAME.pid``, the config rendered from a template with ``@NETNS@`` placeholders;
* ``ip netns delete NAME``: that namespace's daemon is stopped (SIGTERM, SIGKILL after
  ``stop_timeout``) and its files removed *before* ip runs; ``ip -all netns delete`` stops
  every daemon the wrapper started.

Nothing the wrapper does for the daemons changes ip's exit status or its output on success:
problems are reported on stderr and to syslog.  Settings come from
``/etc/pyulogd/netns-wrapper.conf`` (``key = value``) and ``PYULOGD_NETNS_*`` environment
variables, which win.  Four options of its own, which ``ip`` would reject anyway:
``--wrapper-check``, ``--wrapper-status``, ``--wrapper-start NAME...``, ``--wrapper-stop NAME...``.
"""

from __future__ import annotations

# Imported lazily where needed (subprocess, shlex, sysconfig, syslog): the wrapper runs for every
# ip command the agent issues, and a pass-through should cost little more than Python's start-up.
import errno
import fcntl
import fnmatch
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from types import TracebackType

PROG = "pyulogd-netns-wrapper"
DEFAULT_CONFIG = "/etc/pyulogd/netns-wrapper.conf"
CONFIG_ENV = "PYULOGD_NETNS_WRAPPER_CONF"
ENV_PREFIX = "PYULOGD_NETNS_"
KEYS = ("ip", "match", "template", "rundir", "daemon", "start_timeout", "stop_timeout", "syslog")


# --------------------------------------------------------------------------- settings


class Settings:
    def __init__(self, rundir: str = "/run/pyulogd") -> None:
        self.ip = ""  # empty: look for it (/usr/sbin/ip, /sbin/ip, PATH), never ourselves
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
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;" or (line.startswith("[") and line.endswith("]")):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().lower().replace("-", "_")
        if not sep or key not in KEYS:
            raise SettingsError(f"{where}:{n}: expected one of {', '.join(KEYS)} = value, got {raw.strip()!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key] = value
    return out


def _apply(s: Settings, key: str, value: str, where: str) -> None:
    try:
        if key == "ip":
            s.ip = value
        elif key == "match":
            s.match = [p for p in value.replace(",", " ").split() if p]
        elif key == "template":
            s.template = value
        elif key == "rundir":
            s.rundir = value
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


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Defaults, then the config file, then ``PYULOGD_NETNS_<KEY>`` environment variables."""
    env = dict(os.environ if environ is None else environ)
    s = Settings()
    path = env.get(CONFIG_ENV, DEFAULT_CONFIG)
    if path and path != "none":
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            if CONFIG_ENV in env:
                raise SettingsError(f"{path}: no such file ({CONFIG_ENV})") from None
        except OSError as e:
            raise SettingsError(f"{path}: {e.strerror}") from None
        else:
            for key, value in _parse_config(text, path).items():
                _apply(s, key, value, path)
            s.source.append(path)
    for key in KEYS:
        var = ENV_PREFIX + key.upper()
        if var in env:
            _apply(s, key, env[var], var)
            s.source.append(var)
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
    if configured:
        found = configured if "/" in configured else shutil.which(configured)
        return found if found and os.access(found, os.X_OK) and not _is_self(found) else None
    seen: set[str] = set()
    dirs = ["/usr/sbin", "/sbin", *os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/bin"]
    for d in dirs:
        if not d or d in seen:
            continue
        seen.add(d)
        cand = shutil.which("ip", path=d)
        if cand and not _is_self(cand):
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


def safe_name(name: str) -> bool:
    """A name ip accepts and that is safe as a file name in the run directory (the wrapper's
    lock files start with a dot, so names that do are left alone)."""
    return bool(name) and "/" not in name and "\0" not in name and not name.startswith(".") and len(name) <= 200


# --------------------------------------------------------------------------- logging


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
            syslog.syslog(prio, msg)
        except Exception:  # syslog is best effort
            pass

    def info(self, msg: str) -> None:
        """Success: syslog only, so that ip's output stays what ip printed."""
        self._syslog(6, msg)

    def warning(self, msg: str) -> None:
        self._stderr(msg)
        self._syslog(4, msg)

    def error(self, msg: str) -> None:
        self._stderr(msg)
        self._syslog(3, msg)

    @staticmethod
    def _stderr(msg: str) -> None:
        try:
            sys.stderr.write(f"{PROG}: {msg}\n")
            sys.stderr.flush()
        except OSError:
            pass


# --------------------------------------------------------------------------- the daemons


def conf_path(s: Settings, name: str) -> str:
    return os.path.join(s.rundir, f"{name}.conf")


def pid_path(s: Settings, name: str) -> str:
    return os.path.join(s.rundir, f"{name}.pid")


def render(template_text: str, name: str, s: Settings) -> str:
    prefix, _, ident = name.partition("-")
    values = {
        "@NETNS@": name,
        "@NETNS_PREFIX@": prefix if ident else "",
        "@NETNS_ID@": ident if ident else name,
        "@RUNDIR@": s.rundir,
        "@PIDFILE@": pid_path(s, name),
    }
    for k, v in values.items():
        template_text = template_text.replace(k, v)
    return template_text


class name_lock:  # noqa: N801 - used like a function: `with name_lock(s, name):`
    """Serialise the wrapper's work on one namespace name (parallel rootwrap calls)."""

    def __init__(self, s: Settings, name: str) -> None:
        self.path = os.path.join(s.rundir, f".{name}.lock")
        self.rundir = s.rundir
        self.fd = -1

    def __enter__(self) -> None:
        os.makedirs(self.rundir, mode=0o755, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return
            os.close(fd)  # removed by a holder that finished: lock the new file

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        try:
            os.unlink(self.path)  # still holding the lock: a waiter sees the inode change and retries
        except OSError:
            pass
        os.close(self.fd)


def _read_pid(path: str) -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read(64).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 1 else None


def _pidfile_locked(path: str) -> bool:
    """A live daemon holds a lock on its pidfile (pyulogd: flock; ulogd2: fcntl)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
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


def running_daemon(s: Settings, name: str) -> int | None:
    """The pid of the daemon the wrapper started for ``name``, if it still runs.

    Only a pid whose pidfile is still locked, or whose command line names our rendered
    config, counts: a stale pidfile never gets an unrelated process signalled.
    """
    pp = pid_path(s, name)
    pid = _read_pid(pp)
    if pid is None or not _alive(pid):
        return None
    if _pidfile_locked(pp) or conf_path(s, name) in _cmdline(pid):
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


def stop_daemon(s: Settings, name: str, log: Log) -> bool:
    """Stop ``name``'s daemon and remove its files; True if nothing is left running."""
    ok = True
    pid = running_daemon(s, name)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if _wait_gone(pid, s.stop_timeout):
            log.info(f"stopped pyulogd for netns {name} (pid {pid})")
        else:
            log.warning(f"pyulogd for netns {name} (pid {pid}) still running {s.stop_timeout:g} s after SIGTERM: "
                        "sending SIGKILL")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            ok = _wait_gone(pid, 2.0)
            if not ok:
                log.error(f"pyulogd for netns {name} (pid {pid}) survived SIGKILL")
    for path in (pid_path(s, name), conf_path(s, name)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning(f"cannot remove {path}: {e.strerror}")
    return ok


def start_daemon(s: Settings, ip: str, name: str, log: Log) -> bool:
    """``ip netns exec NAME pyulogd -d -c RUNDIR/NAME.conf -p RUNDIR/NAME.pid``; True if it started."""
    import shlex
    import subprocess
    try:
        with open(s.template, encoding="utf-8") as f:
            template = f.read()
    except OSError as e:
        log.error(f"netns {name}: no pyulogd started: cannot read template {s.template}: {e.strerror}")
        return False
    if running_daemon(s, name) is not None:  # a namespace of the same name was deleted behind our back
        log.warning(f"netns {name}: a pyulogd for an earlier namespace of this name still runs: stopping it")
        stop_daemon(s, name, log)
    os.makedirs(s.rundir, mode=0o755, exist_ok=True)
    conf, pidf = conf_path(s, name), pid_path(s, name)
    tmp = f"{conf}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(render(template, name, s))
    os.chmod(tmp, 0o644)
    os.replace(tmp, conf)
    cmd = [ip, "netns", "exec", name, *daemon_command(s), "-d", "-c", conf, "-p", pidf]
    env = dict(os.environ, PROCESS_TAG=f"pyulogd-{name}")
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             close_fds=True, start_new_session=True, env=env)
    except OSError as e:
        log.error(f"netns {name}: cannot run {shlex.join(cmd)}: {e.strerror}")
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
        try:
            os.unlink(conf)
        except OSError:
            pass
        return False
    pid = _read_pid(pidf)
    log.info(f"started pyulogd for netns {name} (pid {pid if pid is not None else '?'}, config {conf})")
    return True


def managed_names(s: Settings) -> list[str]:
    try:
        entries = os.listdir(s.rundir)
    except OSError:
        return []
    names = {e[:-4] for e in entries if e.endswith(".pid")} | {e[:-5] for e in entries if e.endswith(".conf")}
    return sorted(n for n in names if safe_name(n))


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


def _wrapper_command(args: list[str], s: Settings | None, ip: str | None, log: Log) -> int:
    if s is None:
        return 1
    cmd, names = args[0], args[1:]
    if cmd == "--wrapper-check":
        import shlex

        print(f"settings from: {', '.join(s.source) or 'defaults'}")
        print(f"real ip:       {ip or 'NOT FOUND'}")
        print(f"match:         {', '.join(s.match)}")
        print(f"template:      {s.template}{'' if os.path.isfile(s.template) else '  (MISSING)'}")
        print(f"rundir:        {s.rundir}")
        print(f"daemon:        {shlex.join(daemon_command(s))} -d -c RUNDIR/NAME.conf -p RUNDIR/NAME.pid")
        print(f"timeouts:      start {s.start_timeout:g} s, stop {s.stop_timeout:g} s; syslog {s.syslog}")
        return 0 if ip and os.path.isfile(s.template) else 1
    if cmd == "--wrapper-status":
        for name in managed_names(s):
            pid = running_daemon(s, name)
            ns_exists = os.path.exists(os.path.join("/run/netns", name))
            print(f"{name}\t{'running pid ' + str(pid) if pid else 'NOT running'}\t"
                  f"{'netns present' if ns_exists else 'netns GONE'}")
        return 0
    if ip is None:
        log.error("cannot find the real ip command (set ip= in the config)")
        return 127
    rc = 0
    for name in names:
        if not safe_name(name):
            log.error(f"invalid namespace name {name!r}")
            rc = 1
            continue
        with name_lock(s, name):
            if cmd == "--wrapper-start":
                if not os.path.exists(os.path.join("/run/netns", name)):
                    log.error(f"netns {name} does not exist")
                    rc = 1
                elif running_daemon(s, name) is None and not start_daemon(s, ip, name, log):
                    rc = 1
            elif not stop_daemon(s, name, log):
                rc = 1
    return rc


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    config_error = ""
    try:
        settings: Settings | None = load_settings()
    except (SettingsError, UnicodeDecodeError) as e:
        settings, config_error = None, f"configuration error, not managing any pyulogd: {e}"
    log = Log(settings.syslog if settings is not None else True)
    ip = find_ip(settings.ip if settings is not None else "")
    if args and args[0] in ("--wrapper-check", "--wrapper-status", "--wrapper-start", "--wrapper-stop"):
        if config_error:
            log.error(config_error)
        return _wrapper_command(args, settings, ip, log)
    if ip is None:
        sys.stderr.write(f"{PROG}: cannot find the real ip command"
                         f"{' ' + repr(settings.ip) if settings is not None and settings.ip else ''}\n")
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
    s = settings
    if what.kind == "add":
        if not (safe_name(what.name) and s.matches(what.name)):
            return exec_ip(ip, args)
        lock = name_lock(s, what.name)
        try:  # by hand rather than `with`: a lock failure must still run ip
            lock.__enter__()
        except OSError as e:
            log.error(f"netns {what.name}: cannot lock in {s.rundir}: {e.strerror}; not starting pyulogd")
            return exit_like(run_ip(ip, args))
        try:
            rc = run_ip(ip, args)
            if rc == 0:
                try:
                    start_daemon(s, ip, what.name, log)
                except Exception as e:  # never let the daemon change ip's result
                    log.error(f"netns {what.name}: starting pyulogd failed: {type(e).__name__}: {e}")
        finally:
            lock.__exit__(None, None, None)
        return exit_like(rc)
    # delete / delete-all: stop first, then let ip remove the namespace(s)
    if what.kind == "delete":
        names = [what.name] if safe_name(what.name) else []
    else:
        names = managed_names(s)
    for name in names:
        if not (os.path.exists(pid_path(s, name)) or os.path.exists(conf_path(s, name))):
            continue  # not one of ours
        try:
            with name_lock(s, name):
                stop_daemon(s, name, log)
        except Exception as e:
            log.error(f"netns {name}: stopping pyulogd failed: {type(e).__name__}: {e}")
    return exit_like(run_ip(ip, args))


if __name__ == "__main__":
    sys.exit(main())
