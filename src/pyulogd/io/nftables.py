"""nftables as a library: list the ruleset and apply changes, in a given network namespace.

Rule texts and our own marking table go through libnftables, nft's own library, with its
JSON API (Debian's ``python3-nftables``: pure Python over ``libnftables.so.1`` with ctypes),
never through our own encoding of rule expressions. That module is installed for Debian's
system Python (``/usr/lib/python3/dist-packages``), not for the interpreter pyulogd may run
on (a pyenv or venv Python): :func:`load_module` imports it normally when it is on
``sys.path``, and otherwise loads that one package from Debian's directory by its file path,
after checking that root owns it and nobody else can write it (root imports it), without
adding the whole directory to ``sys.path``. Where neither works, the ``nft`` command does the
same work as a subprocess with a fixed argument vector (JSON on stdin, never a shell): about
5 ms per call instead of 1-2 ms (docs/nftrace.md, "Measured").

``iptables-nft-save`` / ``ip6tables-nft-save`` (fixed argv, no input) give the rules of the
tables iptables-nft manages as iptables writes them.

A libnftables context keeps the netlink socket of the namespace it was created in; every call
is still made inside the namespace (:func:`~pyulogd.io.netns.in_netns`), for library versions
that reopen it, and so that a subprocess (which inherits the calling thread's namespace) runs
there too. After ``-u``, CAP_NET_ADMIN is raised around each library call (its netlink socket
is opened and its requests sent there, core/caps.py); a subprocess does not inherit it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from types import ModuleType
from typing import Any

from pyulogd.core import caps
from pyulogd.io.netns import NetnsHandle, in_netns

DEBIAN_MODULE_DIR = "/usr/lib/python3/dist-packages/nftables"
# Where the commands are looked for: fixed directories, not $PATH (root runs them).
SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
COMMAND_TIMEOUT = 30.0  # a command that hangs must not hang the daemon forever

_module: ModuleType | None = None
_module_tried = False


class NftError(Exception):
    """libnftables or nft refused a command (the text is nft's message)."""


def _root_only(path: str) -> str | None:
    """Why ``path`` is not safe for root to import (None: it is): owned by root, writable by
    nobody else, and so is every directory above it."""
    p = os.path.abspath(path)
    while True:
        try:
            st = os.lstat(p)
        except OSError as e:
            return f"{p}: {e.strerror}"
        if stat.S_ISLNK(st.st_mode):
            target = os.path.realpath(p)
            return _root_only(target)
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{p} is not owned by root or is writable by others"
        parent = os.path.dirname(p)
        if parent == p:
            return None
        p = parent


def load_module() -> ModuleType | None:
    """The ``nftables`` module (python3-nftables), or None where it cannot be had."""
    global _module, _module_tried
    if _module_tried:
        return _module
    _module_tried = True
    try:
        import nftables  # type: ignore[import-not-found]

        _module = nftables
        return _module
    except ImportError:
        pass
    init = os.path.join(DEBIAN_MODULE_DIR, "__init__.py")
    if not os.path.exists(init):
        return None
    for f in (init, os.path.join(DEBIAN_MODULE_DIR, "nftables.py")):
        if _root_only(f) is not None:
            return None
    spec = importlib.util.spec_from_file_location("nftables", init, submodule_search_locations=[DEBIAN_MODULE_DIR])
    if spec is None or spec.loader is None:
        return None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["nftables"] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception:  # a broken install must not stop the daemon: the command is the fallback
        sys.modules.pop("nftables", None)
        return None
    _module = mod
    return mod


def find_command(name: str) -> str | None:
    for d in SBIN_DIRS:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK) and _root_only(p) is None:
            return p
    return None


class Nft:
    """libnftables (or the nft command) working in one network namespace.

    ``api``: ``auto`` (the library where it loads, else the command), ``libnftables`` or
    ``nft`` (only that one). Raises :class:`NftError` when the chosen way is not available.
    """

    def __init__(self, netns: NetnsHandle | None = None, api: str = "auto") -> None:
        self.netns = netns
        self._ctx: Any = None
        self._cmd: str | None = None
        mod = load_module() if api in ("auto", "libnftables") else None
        if mod is not None:
            try:
                with in_netns(netns), caps.raised("CAP_NET_ADMIN"):  # its socket is opened here
                    ctx = mod.Nftables()
                ctx.set_json_output(True)
                ctx.set_handle_output(True)
                ctx.set_stateless_output(True)
                self._ctx = ctx
            except OSError:
                self._ctx = None
        if self._ctx is None and api in ("auto", "nft"):
            self._cmd = find_command("nft")
        if self._ctx is None and self._cmd is None:
            raise NftError("neither libnftables (Debian: python3-nftables) nor the nft command is available"
                           if api == "auto" else f"{api} is not available")  # fmt: skip
        self.how = "libnftables" if self._ctx is not None else f"the nft command ({self._cmd})"

    # -- listing

    def list_json(self, what: str = "ruleset") -> dict[str, Any]:
        """``list <what>`` as decoded JSON (``what`` is ours: ``ruleset``, ``table inet NAME``)."""
        if self._ctx is not None:
            with in_netns(self.netns), caps.raised("CAP_NET_ADMIN"):
                rc, out, err = self._ctx.cmd(f"list {what}")
        else:
            rc, out, err = self._run(["-j", "-s", "list", *what.split()])
        if rc != 0:
            raise NftError(_first_line(err) or f"list {what} failed ({rc})")
        try:
            doc = json.loads(out) if out.strip() else {"nftables": []}
        except ValueError as e:
            raise NftError(f"list {what}: nft printed no JSON: {e}") from None
        if not isinstance(doc, dict):
            raise NftError(f"list {what}: nft printed no JSON object")
        return doc

    def list_text(self) -> str:
        """``list ruleset`` as nft writes it, stateless, with ``# handle N`` after each rule."""
        if self._ctx is not None:
            ctx = self._ctx
            ctx.set_json_output(False)
            try:
                with in_netns(self.netns), caps.raised("CAP_NET_ADMIN"):
                    rc, out, err = ctx.cmd("list ruleset")
            finally:
                ctx.set_json_output(True)
        else:
            rc, out, err = self._run(["-a", "-s", "list", "ruleset"])
        if rc != 0:
            raise NftError(_first_line(err) or f"list ruleset failed ({rc})")
        return str(out)

    # -- changes

    def apply(self, commands: list[dict[str, Any]]) -> None:
        """Apply JSON commands (``{"add": {...}}``...) as one transaction: all or nothing."""
        doc = {"nftables": commands}
        if self._ctx is not None:
            with in_netns(self.netns), caps.raised("CAP_NET_ADMIN"):
                rc, _out, err = self._ctx.json_cmd(doc)
        else:
            rc, _out, err = self._run(["-j", "-f", "-"], json.dumps(doc))
        if rc != 0:
            raise NftError(_first_line(err) or f"nft refused the change ({rc})")

    def add_rule_text(self, family: str, table: str, chain: str, expression: str) -> None:
        """``add rule FAMILY TABLE CHAIN EXPRESSION``: the one place a text is handed to nft's
        parser, for an operator's rule from the root-owned config that the caller checked
        (one command: no ``;``, newline or ``#``) and reads back as JSON to check again."""
        if any(c in expression for c in ";#\n\r"):
            raise NftError("refusing an expression that is not one command")
        line = f"add rule {family} {table} {chain} {expression}"
        if self._ctx is not None:
            self._ctx.set_json_output(False)
            try:
                with in_netns(self.netns), caps.raised("CAP_NET_ADMIN"):
                    rc, _out, err = self._ctx.cmd(line)
            finally:
                self._ctx.set_json_output(True)
        else:
            rc, _out, err = self._run(["-f", "-"], line + "\n")
        if rc != 0:
            raise NftError(_first_line(err) or f"nft refused the rule ({rc})")

    # -- iptables-nft

    def iptables_save(self, family: str) -> str | None:
        """``iptables-nft-save`` (``ip``) or ``ip6tables-nft-save`` (``ip6``) output, or None
        when the command is missing or fails."""
        name = {"ip": "iptables-nft-save", "ip6": "ip6tables-nft-save"}.get(family)
        path = None if name is None else find_command(name)
        if path is None:
            return None
        rc, out, _err = self._exec([path])
        return out if rc == 0 else None

    def _run(self, args: list[str], stdin: str | None = None) -> tuple[int, str, str]:
        assert self._cmd is not None
        return self._exec([self._cmd, *args], stdin)

    def _exec(self, argv: list[str], stdin: str | None = None) -> tuple[int, str, str]:
        env = {"PATH": ":".join(SBIN_DIRS), "LC_ALL": "C"}
        try:
            with in_netns(self.netns):  # the child inherits this thread's namespace
                p = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env,
                                   timeout=COMMAND_TIMEOUT, check=False, close_fds=True)  # fmt: skip
        except (OSError, subprocess.SubprocessError) as e:
            return 127, "", str(e)
        return p.returncode, p.stdout, p.stderr


def _first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""
