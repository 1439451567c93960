"""Starting a namespace's daemon inside it and stopping it (SIGTERM, then SIGKILL), never
signalling a process that is not the one the wrapper started."""

from __future__ import annotations

import os
import signal
import time

from pyulogd.daemon.netns_wrapper.log import Log
from pyulogd.daemon.netns_wrapper.names import render
from pyulogd.daemon.netns_wrapper.rundir import NsFiles, RunDir, pidfile_locked, read_pid
from pyulogd.daemon.netns_wrapper.settings import Settings, daemon_command
from pyulogd.daemon.netns_wrapper.trust import Untrusted, read_trusted

# The daemon's whole environment (plus PROCESS_TAG): the caller's environment must not reach a
# root daemon (PYTHONPATH alone would run the caller's code).
DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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
    if pidfile_locked(rd, f.pid) or rd.path_of(f.conf) in _cmdline(pid):
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
