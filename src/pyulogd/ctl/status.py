"""``pyulogdctl``: ask a running pyulogd what it is doing, from its control socket.

    pyulogdctl status                      # stacks, followed namespaces, counters
    pyulogdctl status --json               # the same, as the daemon sends it
    pyulogdctl metrics                     # the Prometheus text of /metrics
    pyulogdctl -c /etc/pyulogd/ulogd.conf status   # the socket that config names
    pyulogdctl -s /run/pyulogd/control.sock status

The socket is the daemon's ``[global] control_socket`` (``-s``, or read from the config
given with ``-c``), else ``/run/pyulogd/control.sock`` (where the daemon puts it when
systemd gives it ``RuntimeDirectory=pyulogd``). It is the owner's only (mode 0600: run
this as root, or as the daemon's user). Nothing here changes the daemon: the socket
answers questions, it takes no orders.

Everything printed that came from outside (namespace names, stack lines, paths) is
escaped (core/escape.py): a namespace name cannot write to the terminal.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any, TextIO

from pyulogd.core.config import parse_file
from pyulogd.core.errors import ConfigError
from pyulogd.core.escape import escape_text

DEFAULT_SOCKET = "/run/pyulogd/control.sock"
MAX_ANSWER = 64 << 20
TIMEOUT = 10.0


class CtlError(Exception):
    pass


def socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    if args.config:
        try:
            cfg = parse_file(args.config)
        except ConfigError as err:
            raise CtlError(str(err)) from None
        glob = cfg.section("global")
        for entry in glob.entries if glob is not None else ():
            if entry.key == "control_socket" and entry.value is not None:
                if not entry.value:
                    raise CtlError(f"{args.config}:{entry.line}: control_socket is turned off")
                return entry.value
    return DEFAULT_SOCKET


def ask(path: str, command: str, timeout: float = TIMEOUT) -> bytes:
    """Send one command, read the whole answer (the daemon closes after it)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise CtlError(f"no control socket at {path}: is pyulogd running with control_socket set?") from None
        except PermissionError:
            raise CtlError(f"{path}: permission denied (the control socket is root's: use sudo)") from None
        except ConnectionRefusedError:
            raise CtlError(f"{path}: nobody answers (pyulogd is not running; a stale socket)") from None
        sock.sendall(command.encode("ascii") + b"\n")
        chunks: list[bytes] = []
        size = 0
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
            size += len(data)
            if size > MAX_ANSWER:
                raise CtlError("the answer is too large")
        return b"".join(chunks)
    except TimeoutError:
        raise CtlError(f"{path}: no answer within {timeout:g} s") from None
    except OSError as e:
        raise CtlError(f"{path}: {e.strerror or e}") from None
    finally:
        sock.close()


def _t(value: Any) -> str:
    """An outside string for the terminal."""
    return escape_text(str(value))


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + (f"{h}h " if d or h else "") + f"{m}m {s}s"


def format_status(doc: dict[str, Any]) -> str:
    """The status document for a person at a terminal."""
    out: list[str] = []
    out.append(f"pyulogd {_t(doc.get('version'))}, pid {_t(doc.get('pid'))}, up "
               f"{_duration(float(doc.get('uptime_seconds') or 0))} (since {_t(doc.get('started_text'))})")
    out.append(f"config: {_t(doc.get('config'))}")
    if doc.get("metrics_url"):
        out.append(f"metrics: {_t(doc['metrics_url'])}")
    if doc.get("watchdog_seconds"):
        out.append(f"systemd watchdog: ping every {_t(doc['watchdog_seconds'])} s")
    tot = doc.get("totals") or {}
    line = f"records: {_t(tot.get('records_in', 0))} in, {_t(tot.get('lost', 0))} lost"
    if tot.get("written"):
        line += f", {_t(tot['written'])} sent by network and SQL outputs"
    if tot.get("kernel_overruns"):
        line += f", {_t(tot['kernel_overruns'])} kernel overruns"
    if tot.get("log_lines_lost"):
        line += f", {_t(tot['log_lines_lost'])} log lines lost"
    out.append(line)
    out.append("")
    out.append("stacks:")
    for st in doc.get("stacks") or []:
        fused = " (fused)" if st.get("fused") else ""
        out.append(f"  line {_t(st.get('line'))}: {_t(st.get('spec'))}{fused}")
    for inp in doc.get("inputs") or []:
        name = f"{_t(inp.get('id'))} ({_t(inp.get('plugin'))})"
        if "netns" in inp:
            spaces = inp.get("namespaces") or []
            out.append("")
            out.append(f"{name}: following {_t(inp['netns'])} in {_t(inp.get('netns_dir'))}: "
                       f"{len(spaces)} namespace(s)")  # fmt: skip
            out.extend(f"  {_t(ns)}" for ns in spaces)
        elif "network_namespace_path" in inp:
            out.append("")
            out.append(f"{name}: in network namespace {_t(inp['network_namespace_path'])}")
    counters = doc.get("counters") or {}
    out.append("")
    out.append("counters:" if counters else "counters: none yet (nothing counted)")
    width = max((len(_t(k)) for k in counters), default=0)
    for k, v in counters.items():
        out.append(f"  {_t(k).ljust(width)}  {_t(v)}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    p = argparse.ArgumentParser(prog="pyulogdctl", description="Ask a running pyulogd (read-only).")
    p.add_argument("-s", "--socket", help=f"the daemon's control socket (default: {DEFAULT_SOCKET})")
    p.add_argument("-c", "--config", help="read control_socket from this config")
    p.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds to wait for the answer")
    sub = p.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="stacks, followed namespaces and counters")
    st.add_argument("--json", action="store_true", help="the daemon's JSON, as it sends it")
    sub.add_parser("metrics", help="the counters in Prometheus' text format")
    args = p.parse_args(argv)
    try:
        path = socket_path(args)
        answer = ask(path, args.command, args.timeout)
    except CtlError as e:
        sys.stderr.write(f"pyulogdctl: {_t(e)}\n")
        return 1
    if args.command == "metrics":
        out.write(answer.decode("utf-8", "replace"))
        return 0
    try:
        doc = json.loads(answer)
    except ValueError:
        sys.stderr.write("pyulogdctl: the daemon's answer is not JSON\n")
        return 1
    if not isinstance(doc, dict) or "error" in doc:
        sys.stderr.write(f"pyulogdctl: {_t(doc.get('error') if isinstance(doc, dict) else doc)}\n")
        return 1
    if args.json:
        out.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    else:
        out.write(format_status(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
