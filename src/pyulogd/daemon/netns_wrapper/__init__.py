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

One module per job: ``trust`` (which files root may rely on), ``settings`` (the settings file,
the real ip, the daemon command), ``names`` (which names are safe, showing and rendering them),
``ipcmd`` (ip's command line, running ip), ``log``, ``rundir`` (the run directory, per-name files,
locks, pidfiles), ``daemons`` (start and stop), ``cli`` (main).  The wrapper runs for every ip
command the agent issues, so anything not needed by a pass-through (subprocess, shlex, hashlib,
re, syslog, sysconfig) is imported where it is used.
"""

from __future__ import annotations

from pyulogd.daemon.netns_wrapper.cli import main
from pyulogd.daemon.netns_wrapper.daemons import (
    DAEMON_PATH,
    daemon_environment,
    running_daemon,
    start_daemon,
    stop_daemon,
)
from pyulogd.daemon.netns_wrapper.ipcmd import IpCommand, classify, exec_ip, exit_like, run_ip
from pyulogd.daemon.netns_wrapper.log import PROG, Log, log_safe
from pyulogd.daemon.netns_wrapper.names import (
    NAME_CHARS,
    NAME_MAX,
    check_config_value,
    file_stem,
    name_problem,
    render,
    shared_state,
    shown,
)
from pyulogd.daemon.netns_wrapper.rundir import (
    NsFiles,
    RunDir,
    files_of,
    is_stem,
    managed,
    name_lock,
    pidfile_locked,
    read_pid,
)
from pyulogd.daemon.netns_wrapper.settings import (
    DEFAULT_CONFIG,
    IP_DIRS,
    KEYS,
    Settings,
    SettingsError,
    daemon_command,
    find_ip,
    load_settings,
)
from pyulogd.daemon.netns_wrapper.trust import Untrusted, read_trusted

__all__ = [
    "DAEMON_PATH", "DEFAULT_CONFIG", "IP_DIRS", "KEYS", "NAME_CHARS", "NAME_MAX", "PROG", "IpCommand", "Log",
    "NsFiles", "RunDir", "Settings", "SettingsError", "Untrusted", "check_config_value", "classify",
    "daemon_command", "daemon_environment", "exec_ip", "exit_like", "file_stem", "files_of", "find_ip", "is_stem",
    "load_settings", "log_safe", "main", "managed", "name_lock", "name_problem", "pidfile_locked", "read_pid",
    "read_trusted", "render", "run_ip", "running_daemon", "shared_state", "shown", "start_daemon", "stop_daemon",
]
