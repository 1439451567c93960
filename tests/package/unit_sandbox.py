"""The shipped systemd unit's restrictions, read from the unit file and imposed without
systemd (this machine's PID 1 is not systemd), so a test can run the daemon under them.

What is imposed, and how:

* ``User=`` and capabilities (``AmbientCapabilities=``, ``CapabilityBoundingSet=``,
  ``NoNewPrivileges=``): setpriv;
* ``SystemCallFilter=`` (groups expanded by ``systemd-analyze syscall-filter``, so the list
  is systemd's own, with ``@default`` always allowed as systemd does), with
  ``SystemCallErrorNumber=``; ``RestrictAddressFamilies=``; ``RestrictNamespaces=``;
  ``MemoryDenyWriteExecute=``; ``RestrictRealtime=``: seccomp filters built with libseccomp
  by ``seccomp_exec.py`` the way systemd builds them (one filter per option; the kernel
  applies the strictest answer), before the daemon is executed;
* ``ProtectSystem=strict`` with ``ReadWritePaths=``: a mount namespace (a slave of the
  host's, as systemd makes it, so namespaces mounted later in /run/netns show up) whose
  root is read-only but for the test's output directory;
* ``UMask=``: the shell's umask.

Not imposed: ``PrivateTmp``, ``PrivateDevices``, ``ProtectHome``, ``ProtectKernel*``,
``ProtectProc`` (mount and /proc details that the daemon's file rules do not meet in these
tests), ``Nice=``.
"""

from __future__ import annotations

import json
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "debian" / "pyulogd.service"
NETNS_DROPIN = ROOT / "debian" / "netns.conf"
SECCOMP_EXEC = Path(__file__).resolve().parent / "seccomp_exec.py"

ERRNOS = {"EPERM": 1, "EACCES": 13, "ENOSYS": 38}


def service_settings(*files: Path) -> list[tuple[str, str]]:
    """(key, value) of every assignment in the [Service] sections, in order (a drop-in
    after the unit, as systemd reads them); comments and continuation-free lines only."""
    out: list[tuple[str, str]] = []
    for f in files:
        section = ""
        for raw in f.read_text().splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line
                continue
            if section == "[Service]" and "=" in line:
                key, value = line.split("=", 1)
                out.append((key.strip(), value.strip()))
    return out


def syscall_groups() -> dict[str, list[str]]:
    """systemd's @groups and their members, from `systemd-analyze syscall-filter`."""
    text = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.split()[0], [])
        elif current is not None and line.startswith("    ") and not line.strip().startswith("#"):
            current.append(line.strip())
        elif not line.strip():
            current = None
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for name in names:
        if name.startswith("@"):
            out |= expand(groups[name], groups)
        else:
            out.add(name)
    return out


NAMESPACE_FLAGS = {"cgroup": 0x02000000, "ipc": 0x08000000, "net": 0x40000000, "mnt": 0x00020000,
                   "pid": 0x20000000, "user": 0x10000000, "uts": 0x04000000}  # fmt: skip


@dataclass
class Sandbox:
    """The restrictions of a unit (plus drop-ins), ready for setpriv and seccomp_exec.py."""

    user: str = "root"
    capabilities: set[str] = field(default_factory=set)
    bounding: set[str] = field(default_factory=set)
    no_new_privileges: bool = False
    allow: set[str] | None = None
    errno: int = 1
    families: list[str] | None = None
    namespaces_allowed: int | None = None
    mdwe: bool = False
    restrict_realtime: bool = False
    umask: str = "0022"
    protect_system: str = ""
    read_write_paths: list[str] = field(default_factory=list)

    @classmethod
    def from_unit(cls, *files: Path) -> Sandbox:
        sb = cls()
        groups: dict[str, list[str]] | None = None
        for key, value in service_settings(*files):
            words = value.split()
            if key == "User":
                sb.user = value
            elif key == "AmbientCapabilities":
                sb.capabilities |= set(words)
            elif key == "CapabilityBoundingSet":
                sb.bounding |= set(words)
            elif key == "NoNewPrivileges":
                sb.no_new_privileges = value == "yes"
            elif key == "SystemCallFilter":
                groups = groups or syscall_groups()
                deny = value.startswith("~")
                names = expand(value.lstrip("~").split(), groups)
                if sb.allow is None:
                    # An allow list starts from what systemd always permits.
                    sb.allow = set() if deny else expand(["@default"], groups)
                sb.allow = sb.allow - names if deny else sb.allow | names
            elif key == "SystemCallErrorNumber":
                sb.errno = ERRNOS[value]
            elif key == "RestrictAddressFamilies":
                sb.families = words
            elif key == "RestrictNamespaces":
                allowed = 0 if value == "yes" else sum(NAMESPACE_FLAGS[w] for w in words)
                sb.namespaces_allowed = allowed | (sb.namespaces_allowed or 0)
            elif key == "MemoryDenyWriteExecute":
                sb.mdwe = value == "yes"
            elif key == "RestrictRealtime":
                sb.restrict_realtime = value == "yes"
            elif key == "UMask":
                sb.umask = value
            elif key == "ProtectSystem":
                sb.protect_system = value
            elif key == "ReadWritePaths":
                sb.read_write_paths += words
        return sb

    def seccomp_spec(self) -> str:
        return json.dumps({
            "allow": sorted(self.allow) if self.allow is not None else None,
            "errno": self.errno,
            "families": self.families,
            "namespaces_allowed": self.namespaces_allowed,
            "namespace_flags": NAMESPACE_FLAGS,
            "mdwe": self.mdwe,
            "restrict_realtime": self.restrict_realtime,
        })  # fmt: skip

    def argv(self, spec_file: Path, rw_dirs: list[Path], command: list[str]) -> list[str]:
        """The command line that runs ``command`` under these restrictions (as root)."""
        caps = ",".join("+" + c.removeprefix("CAP_").lower() for c in sorted(self.capabilities))
        bounding = ",".join(["-all"] + ["+" + c.removeprefix("CAP_").lower() for c in sorted(self.bounding)])
        pw = pwd.getpwnam(self.user)
        setpriv = [shutil.which("setpriv") or "setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                   "--clear-groups", f"--inh-caps=-all{',' + caps if caps else ''}",
                   f"--ambient-caps={caps or '-all'}", f"--bounding-set={bounding}"]  # fmt: skip
        if self.no_new_privileges:
            setpriv.append("--no-new-privs")
        inner = [*setpriv, "/usr/bin/python3", str(SECCOMP_EXEC), str(spec_file), "--", *command]
        # Positional parameters carry every path: nothing is pasted into the script.
        script = 'umask "$1"; shift; n=$1; shift\n'
        if self.protect_system == "strict":
            script += ('i=0; while [ $i -lt "$n" ]; do mount --bind "$1" "$1"; shift; i=$((i+1)); done\n'
                       "mount -o remount,bind,ro /\n")  # fmt: skip
        else:
            script += 'shift "$n"\n'
        script += 'exec "$@"\n'
        return ["unshare", "--mount", "--propagation", "slave", "sh", "-c", script, "sh", self.umask,
                str(len(rw_dirs)), *map(str, rw_dirs), *inner]  # fmt: skip


def cap_mask(names: set[str]) -> int:
    numbers = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21}
    return sum(1 << numbers[n] for n in names)


def status_fields(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(re.findall(r"^(\w+):\s*(.*)$", text, re.M))
