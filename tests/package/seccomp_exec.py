"""seccomp_exec.py SPEC.json -- COMMAND...: load the seccomp filters a systemd unit's options
describe (SPEC from unit_sandbox.Sandbox.seccomp_spec), then execute COMMAND under them.

Built with libseccomp through ctypes, one filter per option as systemd does (the kernel
runs every filter and applies the strictest answer):

* SystemCallFilter: allow list, everything else fails with SystemCallErrorNumber;
* RestrictAddressFamilies: socket() of another family fails with EAFNOSUPPORT;
* RestrictNamespaces: unshare()/clone() with a namespace flag not allowed, setns() into a
  type not allowed or of unspecified type (0) fail with EPERM, clone3() with ENOSYS (its
  flags are in memory a filter cannot read; libc then falls back to clone());
* MemoryDenyWriteExecute: mmap() writable and executable, mprotect()/pkey_mprotect() adding
  execute, shmat(SHM_EXEC) fail with EPERM;
* RestrictRealtime: sched_setscheduler() to SCHED_FIFO/SCHED_RR fails with EPERM.

Run as the user the unit names, with no_new_privs set (setpriv --no-new-privs).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import sys

ALLOW = 0x7FFF0000
CMP_EQ, CMP_MASKED_EQ = 4, 7
PROT_WRITE, PROT_EXEC = 0x2, 0x4
SHM_EXEC = 0o100000
SCHED_FIFO, SCHED_RR = 1, 2
AF_MAX = 46
FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16, "AF_PACKET": 17}


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]  # fmt: skip


lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                       ctypes.POINTER(ArgCmp)]  # fmt: skip
lib.seccomp_load.argtypes = [ctypes.c_void_p]
lib.seccomp_release.argtypes = [ctypes.c_void_p]


def errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class Filter:
    def __init__(self, default: int) -> None:
        self.ctx = lib.seccomp_init(default)
        if not self.ctx:
            raise OSError("seccomp_init failed")

    def rule(self, action: int, name: str, *cmps: tuple[int, int, int, int]) -> bool:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return False  # not a system call of this architecture (e.g. a 32-bit one)
        arr = (ArgCmp * max(1, len(cmps)))(*[ArgCmp(*c) for c in cmps])
        rc = lib.seccomp_rule_add_array(self.ctx, action, nr, len(cmps), arr)
        if rc < 0:
            raise OSError(-rc, f"seccomp_rule_add {name}: {os.strerror(-rc)}")
        return True

    def load(self) -> None:
        rc = lib.seccomp_load(self.ctx)
        if rc < 0:
            raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")
        lib.seccomp_release(self.ctx)


def build(spec: dict[str, object]) -> list[Filter]:
    filters: list[Filter] = []
    allow = spec["allow"]
    if allow is not None:
        assert isinstance(allow, list)
        f = Filter(errno_action(int(spec["errno"])))  # type: ignore[call-overload]
        added = sum(f.rule(ALLOW, name) for name in allow)
        assert added > 100, f"only {added} system calls resolved"
        filters.append(f)
    families = spec["families"]
    if families is not None:
        assert isinstance(families, list)
        allowed = {FAMILIES[name] for name in families}
        f = Filter(ALLOW)
        for af in range(AF_MAX):
            if af not in allowed:
                f.rule(errno_action(errno.EAFNOSUPPORT), "socket", (0, CMP_EQ, af, 0))
        filters.append(f)
    ns_allowed = spec["namespaces_allowed"]
    if ns_allowed is not None:
        flags = spec["namespace_flags"]
        assert isinstance(flags, dict) and isinstance(ns_allowed, int)
        f = Filter(ALLOW)
        for flag in flags.values():
            if flag & ns_allowed:
                continue
            for call, arg in (("unshare", 0), ("clone", 0), ("setns", 1)):
                f.rule(errno_action(errno.EPERM), call, (arg, CMP_MASKED_EQ, flag, flag))
        f.rule(errno_action(errno.EPERM), "setns", (1, CMP_EQ, 0, 0))
        f.rule(errno_action(errno.ENOSYS), "clone3")
        filters.append(f)
    if spec["mdwe"]:
        f = Filter(ALLOW)
        wx = PROT_WRITE | PROT_EXEC
        f.rule(errno_action(errno.EPERM), "mmap", (2, CMP_MASKED_EQ, wx, wx))
        for call in ("mprotect", "pkey_mprotect"):
            f.rule(errno_action(errno.EPERM), call, (2, CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
        f.rule(errno_action(errno.EPERM), "shmat", (2, CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
        filters.append(f)
    if spec["restrict_realtime"]:
        f = Filter(ALLOW)
        for policy in (SCHED_FIFO, SCHED_RR):
            f.rule(errno_action(errno.EPERM), "sched_setscheduler", (1, CMP_EQ, policy, 0))
        filters.append(f)
    return filters


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write(__doc__ or "")
        return 2
    with open(argv[1]) as f:
        spec = json.load(f)
    # The allow list last: loading a filter is itself a system call it might not allow.
    for flt in reversed(build(spec)):
        flt.load()
    os.execv(argv[3], argv[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
