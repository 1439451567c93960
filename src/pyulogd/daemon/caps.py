"""Keep chosen capabilities across the ``-u`` switch from root to an unprivileged user,
permitted but not effective.

Every nfnetlink request is checked against CAP_NET_ADMIN of the *sender* at the time it
is sent (``netlink_net_capable()``), not only when the socket was opened: after a plain
setuid() an NFACCT dump on an already open socket fails with EPERM (tested; ulogd2 then
logs nothing at all), and so does every later NFLOG/NFCT request (re-binds, dumps, resyncs)
and SO_RCVBUFFORCE. Sockets already bound keep delivering. Following network namespaces
also needs CAP_SYS_ADMIN for ``setns()``.

The standard way out, as used by ntpd, chronyd and others: ``prctl(PR_SET_KEEPCAPS)``
before setuid() keeps the permitted set through the uid change, and a ``capset()``
right after it throws every other capability away. pyulogd then keeps the wanted ones in
the *permitted* set only, with an empty effective set, and raises one for the moment a
system call needs it (:mod:`pyulogd.core.caps`), so that they are not effective while the
daemon decodes packets and writes files. Also, after the switch: the bounding set is cut
down to what is kept and ``PR_SET_NO_NEW_PRIVS`` is set (an ``execve()``, of a setuid or
file-capability program included, can never gain anything), and nothing is inheritable or
ambient (a program the daemon started would get none).

Capabilities are per thread: call this from the thread that does the netlink work, before
any other thread starts (pyulogd's SQL writers start after it, and inherit the empty
effective set).

Use::

    with keep_capabilities(["CAP_NET_ADMIN"]) as kc:
        os.setgid(gid)
        os.initgroups(name, gid)
        os.setuid(uid)
    kc.kept  # ["CAP_NET_ADMIN"]

On leaving the block without an exception a process that is no longer root holds exactly
the named capabilities (those of them it had before), permitted only, and KEEPCAPS is off
again; one that is still root (``-u root``) keeps everything. OSError is raised if the
kernel refuses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from types import TracebackType

from pyulogd.core import caps as _core
from pyulogd.core.caps import CAPS, NAMES, Privileges, capability_mask, mask_names

__all__ = [
    "CAPS", "NAMES", "capability_mask", "mask_names", "reasons", "wanted", "get_capabilities",
    "set_capabilities", "set_keepcaps", "keep_capabilities", "confine", "confine_unprivileged",
]  # fmt: skip

_SETPCAP = 1 << CAPS["CAP_SETPCAP"]


def reasons(instances: Iterable[object]) -> dict[str, list[str]]:
    """What plugin instances need after start, and why: capability -> reasons, sorted.

    An instance decides (``needed_capabilities()``: NFLOG needs nothing in its own
    namespace, but CAP_SYS_ADMIN and CAP_NET_ADMIN when it follows namespaces); anything
    else (a class, a stand-in) is asked for its ``capabilities`` attribute."""
    found: dict[str, list[str]] = {}
    for inst in instances:
        ask = getattr(inst, "needed_capabilities", None)
        if ask is not None and not isinstance(inst, type):
            needed: dict[str, str] = ask()
        else:
            needed = {cap: f"{getattr(inst, 'name', '?')}" for cap in getattr(inst, "capabilities", ())}
        for cap, why in needed.items():
            if why not in found.setdefault(cap, []):
                found[cap].append(why)
    return dict(sorted(found.items()))


def wanted(instances: Iterable[object]) -> list[str]:
    """The capabilities that plugin instances need after start (see :func:`reasons`), sorted."""
    return list(reasons(instances))


def get_capabilities() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) masks of the calling thread."""
    return _core.privileges().kernel.get()


def set_capabilities(effective: int, permitted: int, inheritable: int = 0) -> None:
    """capset() of the calling thread; a thread can only lower its permitted set."""
    _core.privileges().kernel.set(effective, permitted, inheritable)


def set_keepcaps(on: bool) -> None:
    _core.privileges().kernel.prctl(_core.PR_SET_KEEPCAPS, 1 if on else 0)


def confine(keep: int, privs: Privileges | None = None) -> int:
    """After the switch to an unprivileged uid: bounding set cut down to ``keep`` (while the
    permitted set still has CAP_SETPCAP, which PR_CAPBSET_DROP needs), then permitted =
    ``keep`` (what of it the thread has), effective, inheritable and ambient empty, and
    ``PR_SET_NO_NEW_PRIVS``. Returns the mask kept."""
    privs = privs if privs is not None else _core.privileges()
    k = privs.kernel
    try:
        _eff, permitted, _inh = k.get()
        if permitted & _SETPCAP:
            k.set(_SETPCAP, permitted, 0)
            for cap in range(k.last_cap() + 1):
                if not keep >> cap & 1:
                    k.prctl(_core.PR_CAPBSET_DROP, cap)
    finally:
        kept = privs.lower(keep)  # whatever happened above: nothing stays effective
    try:
        k.prctl(_core.PR_CAP_AMBIENT, _core.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass  # Linux before 4.3 has no ambient set; the empty inheritable set empties it anyway
    k.prctl(_core.PR_SET_NO_NEW_PRIVS, 1)
    return kept


def confine_unprivileged(names: Iterable[str], privs: Privileges | None = None) -> list[str] | None:
    """For a daemon that never was root but was given capabilities (systemd's
    ``AmbientCapabilities=``, ``setpriv``): the same as after ``-u``, at the same point.
    Returns the names kept, or None when the process has no capability at all (nothing done)."""
    privs = privs if privs is not None else _core.privileges()
    _eff, permitted, _inh = privs.kernel.get()
    if not permitted:
        return None
    return mask_names(confine(capability_mask(names), privs))


class keep_capabilities:  # lower case: used like a function, as contextlib's helpers are
    """Context manager around a uid change; see the module docstring.

    ``kept`` (a list of names) tells afterwards what the process holds (permitted, raised
    on demand through :func:`pyulogd.core.caps.raised`). ``privs``: the :class:`Privileges`
    to lower (tests pass their own; default: the process's).
    """

    def __init__(self, names: Iterable[str], privs: Privileges | None = None) -> None:
        self.mask = capability_mask(names)
        self.privs = privs if privs is not None else _core.privileges()
        self.kept: list[str] = []
        self._armed = False

    def __enter__(self) -> keep_capabilities:
        _eff, permitted, _inh = self.privs.kernel.get()
        if permitted:
            # Even when nothing is to be kept: the bounding set can only be cut down with a
            # capability (CAP_SETPCAP) that a plain setuid() would take away first.
            self.privs.kernel.prctl(_core.PR_SET_KEEPCAPS, 1)
            self._armed = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        if not self._armed:
            return
        self._armed = False
        k = self.privs.kernel
        try:
            if exc_type is None:
                if os.geteuid() == 0:
                    # Still root (``-u root``): setuid() took nothing away, neither do we.
                    self.kept = mask_names(k.get()[1])
                else:
                    self.kept = mask_names(confine(self.mask, self.privs))
        finally:
            # A later setuid() or execve() must not keep anything by accident.
            try:
                k.prctl(_core.PR_SET_KEEPCAPS, 0)
            except OSError:
                if exc_type is None:
                    raise

