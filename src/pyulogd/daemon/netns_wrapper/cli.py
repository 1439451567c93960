"""The command: ip's arguments in, ip's status out; the daemons managed on the side; and the
wrapper's own ``--wrapper-*`` commands."""

from __future__ import annotations

import os
import sys

from pyulogd.daemon.netns_wrapper.daemons import running_daemon, start_daemon, stop_daemon
from pyulogd.daemon.netns_wrapper.ipcmd import classify, exec_ip, exit_like, run_ip
from pyulogd.daemon.netns_wrapper.log import PROG, Log, log_safe
from pyulogd.daemon.netns_wrapper.names import name_problem, shared_state, shown
from pyulogd.daemon.netns_wrapper.rundir import NsFiles, RunDir, files_of, managed, name_lock
from pyulogd.daemon.netns_wrapper.settings import (
    DEFAULT_CONFIG,
    Settings,
    SettingsError,
    daemon_command,
    find_ip,
    load_settings,
)
from pyulogd.daemon.netns_wrapper.trust import Untrusted, read_trusted

# Variables that earlier versions read.  They are ignored now (the caller's environment must
# not choose what root runs); --wrapper-check names any that are set so nobody relies on them.
IGNORED_ENV_PREFIX = "PYULOGD_NETNS_"


def _ignored_environment() -> list[str]:
    return sorted(k for k in os.environ if k.startswith(IGNORED_ENV_PREFIX))


def _check(s: Settings, ip: str | None) -> int:
    import shlex

    ok = bool(ip)
    print(f"settings from: {', '.join(s.source) or 'defaults'}")
    print(f"real ip:       {ip or 'NOT FOUND'}")
    print(f"match:         {', '.join(s.match)}")
    shared: list[str] = []
    try:
        shared = shared_state(read_trusted(s.template))
        state = ""
    except FileNotFoundError:
        state, ok = "  (MISSING)", False
    except (Untrusted, UnicodeDecodeError, OSError) as e:
        state, ok = f"  (REFUSED: {e})", False
    print(log_safe(f"template:      {s.template}{state}"))
    for line in shared:
        ok = False
        print(log_safe(f"  SHARED by every daemon (the second could not spool, or two nodes would have one id; "
                       f"put @NETNS@ in it or leave it to the per-daemon default): {line}"))
    try:
        rd = RunDir.existing(s.rundir)
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
        rd = RunDir.create(s.rundir) if create and names else RunDir.existing(s.rundir)
    except (Untrusted, OSError) as e:
        log.error(f"run directory {s.rundir}: {e}")
        return 1
    try:
        if cmd == "--wrapper-status":
            if rd is not None:
                for f in managed(rd):
                    pid = running_daemon(rd, f)
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
        rd = RunDir.create(s.rundir)
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
        rd = RunDir.existing(s.rundir)
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

