"""The ip command line: what it asks for, as iproute2 parses it, and running the real ip."""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Sequence

from pyulogd.daemon.netns_wrapper.log import PROG

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
