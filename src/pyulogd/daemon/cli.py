"""ulogd's command line: -c -d -p -u -v -l -i -V -h, with ulogd's exit codes."""

from __future__ import annotations

import argparse
import os
import pwd
import signal
import sys
from collections.abc import Mapping

from pyulogd import __version__
from pyulogd.core import registry, safefile
from pyulogd.core.caps import StillPrivileged
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError, PluginError
from pyulogd.core.escape import escape_text
from pyulogd.core.info import describe
from pyulogd.ctl import status
from pyulogd.daemon import caps, check, process
from pyulogd.daemon.ops import Operations
from pyulogd.daemon.service import Service
from pyulogd.io import netns
from pyulogd.io.loop import Loop

DEFAULT_CONFIG = "/etc/ulogd.conf"

USAGE = f"""pyulogd Version {__version__} (drop-in for ulogd 2.0.8)

Parameters:
\t-h --help\tThis help page
\t-V --version\tPrint version information
\t-d --daemon\tDaemonize (fork into background)
\t-v --verbose\tOutput info on standard output
\t-l --loglevel\tSet log level
\t-c --configfile\tUse alternative Configfile
\t-p --pidfile\tRecord ulogd PID in file
\t-u --uid\tChange UID/GID
\t-i --info\tDisplay infos about plugin
"""


class _Parser(argparse.ArgumentParser):
    # ulogd exits 1 on a bad command line; --check-config is for scripts, which tell a
    # usage error (2) from a bad config (1).
    usage_status = 1

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"pyulogd: {message}\n")
        sys.stdout.write(USAGE)
        sys.exit(self.usage_status)


def _parser(usage_status: int = 1) -> argparse.ArgumentParser:
    p = _Parser(prog="pyulogd", add_help=False)
    p.usage_status = usage_status
    p.add_argument("-h", "--help", nargs="?", const=True, default=None)
    p.add_argument("-V", "--version", action="store_true")
    p.add_argument("-d", "--daemon", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-l", "--loglevel")
    p.add_argument("-c", "--configfile", default=DEFAULT_CONFIG)
    p.add_argument("-p", "--pidfile")
    p.add_argument("-u", "--uid")
    p.add_argument("-i", "--info")
    p.add_argument("--no-realtime", action="store_true")
    # pyulogd's speed-ups, off (as [global] fusion=0 / recvmmsg=0 do; docs/design.md).
    p.add_argument("--no-fusion", action="store_true")
    p.add_argument("--no-recvmmsg", action="store_true")
    # Operations (daemon/check.py, ctl/status.py).
    p.add_argument("--check-config", nargs="?", const=True, default=None, metavar="FILE")
    p.add_argument("--status", action="store_true")
    return p


def apply_switches(ctx: Context, args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """--no-fusion and --no-recvmmsg on the context (``[global]`` can turn them off too)."""
    env_fusion = _deprecated(ctx, environ, "PYULOGD_NO_FUSION", "--no-fusion or fusion=0")
    if args.no_fusion or env_fusion:
        ctx.fusion = False
    env_mmsg = _deprecated(ctx, environ, "PYULOGD_NO_RECVMMSG", "--no-recvmmsg or recvmmsg=0")
    if args.no_recvmmsg or env_mmsg:
        ctx.recvmmsg = False


def _deprecated(ctx: Context, environ: Mapping[str, str], var: str, instead: str) -> bool:
    """Whether ``var`` is set: an environment variable that turned a speed-up off before the
    settings existed, still honoured, with a notice."""
    if not environ.get(var):
        return False
    ctx.log.notice(f"{var} is deprecated: use {instead} in [global]")
    return True


def info(name: str) -> int:
    """-i accepts a ulogd .so path (as ulogd does) or a plugin name."""
    try:
        plugin = registry.plugin_for_so(name) if name.endswith(".so") else name
        cls = registry.get(plugin)
    except ConfigError as e:
        sys.stderr.write(f"pyulogd: {e.reason}\n")
        return 1
    sys.stdout.write(describe(cls))
    return 0


def check_config(args: argparse.Namespace, given: list[str]) -> int:
    """--check-config [FILE]: 0 good, 1 not, 2 usage."""
    path = args.configfile
    if isinstance(args.check_config, str):
        if any(a in ("-c", "--configfile") or a.startswith("--configfile=") for a in given) and (
            os.path.abspath(args.check_config) != os.path.abspath(args.configfile)
        ):
            sys.stderr.write("pyulogd: --check-config FILE and -c name two different files\n")
            return 2
        path = args.check_config
    if args.daemon or args.info or args.status:
        sys.stderr.write("pyulogd: --check-config checks a config; it cannot be combined with -d, -i or --status\n")
        return 2
    run_as = None
    if args.uid:
        try:
            user = pwd.getpwnam(args.uid)
        except KeyError:
            sys.stderr.write(f"pyulogd: unknown user {args.uid}\n")
            return 2
        run_as = safefile.RunAs.lookup(user.pw_name, user.pw_uid, user.pw_gid)
    return check.main(path, run_as)


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    checking = any(a == "--check-config" or a.startswith("--check-config=") for a in given)
    args = _parser(2 if checking else 1).parse_args(argv)
    if args.check_config is not None:
        return check_config(args, given)
    if args.status:
        ctl = ["status"]
        if any(a in ("-c", "--configfile") or a.startswith("--configfile=") for a in given):
            ctl = ["-c", args.configfile, *ctl]
        return status.main(ctl)
    if args.help is not None:
        sys.stdout.write(USAGE)
        return 0
    if args.version:
        sys.stdout.write(f"pyulogd Version {__version__} (compatible with ulogd Version 2.0.8)\n")
        return 0
    if args.info:
        return info(args.info)
    user = None
    if args.uid:
        try:
            user = pwd.getpwnam(args.uid)
        except KeyError:
            sys.stdout.write(f"Unknown user {args.uid}.\n")
            return 1
    ctx = Context(loop=Loop())
    if user is not None:
        # Known before anything is opened: what the user must write later is created for it.
        ctx.run_as = safefile.RunAs.lookup(user.pw_name, user.pw_uid, user.pw_gid)
        ctx.log.run_as = ctx.run_as
    if args.loglevel:
        try:
            level = int(args.loglevel)
        except ValueError:
            level = 0
        if level > 0:
            ctx.log.level = level
            ctx.log.level_forced = True
    # Resolve before daemonizing changes the directory to / (ulogd2 fails here).
    config = os.path.abspath(args.configfile)
    pidfile = os.path.abspath(args.pidfile) if args.pidfile else None
    if args.daemon and args.verbose:
        args.verbose = False
        ctx.log.error("suppressing verbose output (not compatible with daemon mode).")
    ctx.log.verbose = args.verbose
    apply_switches(ctx, args, os.environ)

    pid_lock = None
    if pidfile:
        try:
            pid_lock = process.PidFile(pidfile, ctx.run_as)
            pid_lock.acquire()
        except process.PidFileError as e:
            sys.stderr.write(f"pyulogd: {e}\n")
            return 1
    service = Service(config, ctx)
    ops: Operations | None = None
    try:
        try:
            service.load()
        except ConfigError as e:
            ctx.log.fatal(str(e))
            sys.stderr.write(f"pyulogd: configuration error: {e}\n")
            return 1
        # Daemonize after the config is known good, so a bad config fails the command itself.
        ready = process.daemonize() if args.daemon else None
        try:
            if pid_lock is not None:
                pid_lock.write_pid()
            # Before start: a SIGTERM during start-up is then handled by the loop (clean exit).
            service.install_signals()
            service.start()
            # Listening sockets (metrics, control) before -u drops root.
            ops = Operations(service, os.environ)
            ops.open()
            if not args.no_realtime:
                process.raise_priority(ctx.log)
            if user is not None:
                needs = caps.reasons(service.started)
                kept = process.drop_privileges(user, list(needs))
                ctx.log.notice(
                    f"changed to user {user.pw_name} (uid {user.pw_uid}, gid {user.pw_gid})"
                    + (f", keeping {', '.join(kept)}{_HELD}" if kept else "")
                )
                _log_capabilities(ctx, needs, kept)
            elif os.geteuid() != 0:
                # Never root, but given capabilities (systemd AmbientCapabilities=, setpriv):
                # hold what is needed the same way, drop the rest.
                needs = caps.reasons(service.started)
                held = caps.confine_unprivileged(list(needs))
                if held is not None:
                    ctx.log.notice(f"keeping {', '.join(held)}{_HELD}" if held else "dropping every capability "
                                   "(no input needs one after start)")  # fmt: skip
                    _log_capabilities(ctx, needs, held)
            # Threads (the SQL writers) start only now: they run, and open their files, as the user.
            service.running()
            # Every input bound, every output open: systemd hears READY=1 now (and, with -d,
            # from this child, the process that runs).
            ops.ready()
        except Exception as e:
            why = str(e) if isinstance(e, (PluginError, ConfigError, OSError)) else f"{type(e).__name__}: {e}"
            ctx.log.fatal(f"error starting: {why}")  # the log escapes it itself
            why = escape_text(why)  # may name a namespace: one printable line on stderr too
            if ready is not None:
                ready.fail(why)
            else:
                sys.stderr.write(f"pyulogd: error starting: {why}\n")
            if ops is not None:
                ops.close()
            service.stop()
            return 1
        if ready is not None:
            ready.ok()
        service.run()
        # A second SIGTERM while shutting down must not kill us: CPython restores the
        # default action while it exits, and an operator's retry would then end us by signal.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        ops.stopping()
        service.stop()
        ops.close()
        return 0
    except (netns.WrongNamespace, StillPrivileged) as e:
        # Nothing more may run in this thread (no stop(): it would talk to the wrong namespace,
        # or with a capability it could not drop).
        ctx.log.fatal(str(e))
        sys.stderr.write(f"pyulogd: {escape_text(str(e))}\n")
        return 1
    finally:
        if pid_lock is not None:
            pid_lock.release()
        ctx.log.close()


# How kept capabilities are held, as the start-up line says it (docs/security.md).
_HELD = " (permitted only: raised for each netlink request and setns(), then dropped)"


def _log_capabilities(ctx: Context, why: dict[str, list[str]], kept: list[str]) -> None:
    """Say what -u kept and for whom, and what could not be kept."""
    for cap, reasons in why.items():
        if cap in kept:
            for reason in reasons:
                ctx.log.notice(f"keeping {cap}: {reason}")
        else:
            ctx.log.error(f"could not keep {cap} (not permitted to this process); needed for "
                          + "; ".join(reasons))


if __name__ == "__main__":
    sys.exit(main())
