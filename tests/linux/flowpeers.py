"""Peers for the flow collector tests: a pyulogd daemon collecting with IPFIXIN into JSON, and
nfcapd/nfdump (Debian package nfdump) as the reference collector, both on loopback ports of
their own; and the comparison of what each decoded, flow by flow.

The daemon listens on ``port=0`` (a free port the kernel picks) and the test reads the port
from its log; nfcapd needs a number, so it gets one a socket just had (the one race left, as
in test_ipfix_nfcapd.py). Processes are stopped by their own pid, never by name.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.linux.lab import wait_for

ENV = dict(os.environ, TZ="UTC")
LISTENING = re.compile(r"IPFIXIN '(\S+)': listening on (udp|tcp) \S+ port (\d+)")


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop_proc(p: subprocess.Popen[Any], timeout: float = 10) -> int:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


class Pyulogd:
    """``python -m pyulogd`` with IPFIXIN -> IP2STR -> JSON (``records.json``); ``netns``:
    run inside that network namespace (``ip netns exec``)."""

    def __init__(self, d: Path, options: str = "", netns: str | None = None, extra_global: str = "",
                 extra_sections: str = "") -> None:  # fmt: skip
        self.d = d
        d.mkdir(parents=True, exist_ok=True)
        self.out = d / "records.json"
        self.log = d / "pyulogd.log"
        conf = d / "ulogd.conf"
        conf.write_text(f"""[global]
logfile="{self.log}"
loglevel=3
stack=f1:IPFIXIN,ip2str1:IP2STR,json1:JSON
{extra_global}
[f1]
port=0
{options}

[json1]
file="{self.out}"

{extra_sections}
""")
        cmd = [sys.executable, "-m", "pyulogd", "-c", str(conf)]
        if netns is not None:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL,
                                                              stderr=subprocess.PIPE)  # fmt: skip
        self.port = 0

        def listening() -> bool:
            assert self.proc.poll() is None, self.stderr()
            m = LISTENING.search(self.log.read_text()) if self.log.exists() else None
            if m is not None:
                self.port = int(m[3])
            return m is not None

        wait_for(listening, 20, "pyulogd to listen")

    def stderr(self) -> str:
        return self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""

    def stop(self) -> None:
        rc = stop_proc(self.proc)
        assert rc == 0, f"pyulogd exited with {rc}: {self.stderr()}\n{self.log.read_text()}"

    def records(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]

    def counters(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


class Nfcapd:
    """nfcapd on 127.0.0.1:``port`` writing to ``d/flows``; :meth:`flows` reads them back with nfdump."""

    def __init__(self, d: Path, netns: str | None = None) -> None:
        self.d = d
        (d / "flows").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        # -E prints every record it decodes: how a test knows nfcapd has read what was sent
        # (it does not drain its socket when it is told to stop).
        # (line-buffered: to a file its stdout would wait for 4 KiB)
        cmd = ["stdbuf", "-oL", "nfcapd", "-b", "127.0.0.1", "-p", str(self.port), "-w", str(d / "flows"), "-t", "600",
               "-E"]  # fmt: skip
        if netns is not None:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(cmd, env=ENV, stdout=(d / "nfcapd.log").open("wb"),
                                                              stderr=subprocess.STDOUT)  # fmt: skip
        wait_for(lambda: "Startup" in (d / "nfcapd.log").read_text() or self.proc.poll() is not None, 10,
                 "nfcapd to start")  # fmt: skip
        assert self.proc.poll() is None, (d / "nfcapd.log").read_text()

    def decoded(self) -> int:
        """Records nfcapd printed so far."""
        return (self.d / "nfcapd.log").read_text(errors="replace").count("Flow Record:")

    def wait(self, n: int, timeout: float = 15) -> None:
        wait_for(lambda: self.decoded() >= n, timeout, f"nfcapd to decode {n} records")

    def stop(self) -> None:
        stop_proc(self.proc)

    def flows(self) -> list[dict[str, Any]]:
        r = subprocess.run(["nfdump", "-R", str(self.d / "flows"), "-o", "json"], capture_output=True, text=True,
                           timeout=60, env=ENV)  # fmt: skip
        # nfdump 1.7.1 writes stray commas around an empty list or a record it skips.
        text = re.sub(r",\s*]", "]", re.sub(r"\[\s*,", "[", re.sub(r"}\s*,\s*,", "},", r.stdout.strip())))
        if not text or text == "[]":
            return []
        return list(json.loads(text))

    def info(self) -> str:
        return subprocess.run(["nfdump", "-R", str(self.d / "flows"), "-I"], capture_output=True, text=True,
                              timeout=60, env=ENV).stdout  # fmt: skip


def nf_time(text: str) -> int:
    """nfdump's "2026-11-27T07:07:18.577" (UTC with TZ=UTC) in microseconds since 1970."""
    dt = datetime.fromisoformat(text + "+00:00")
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


def py_time(r: dict[str, Any], which: str) -> int | None:
    sec = r.get(f"flow.{which}.sec")
    return None if sec is None else sec * 1_000_000 + r[f"flow.{which}.usec"]


def nf_key(f: dict[str, Any]) -> tuple[Any, ...]:
    icmp = f.get("icmp_type"), f.get("icmp_code")
    ports = (f.get("src_port"), f.get("dst_port")) if f["proto"] in (6, 17, 132) else (None, None)
    return (f.get("src4_addr") or f.get("src6_addr"), f.get("dst4_addr") or f.get("dst6_addr"), f["proto"],
            *ports, *(icmp if f["proto"] in (1, 58) else (None, None)))  # fmt: skip


def py_key(r: dict[str, Any]) -> tuple[Any, ...]:
    proto = r.get("orig.ip.protocol")
    if proto in (1, 58):
        v6 = proto == 58
        icmp = r.get("icmpv6.type" if v6 else "icmp.type"), r.get("icmpv6.code" if v6 else "icmp.code")
    else:
        icmp = (None, None)
    ports = (r.get("orig.l4.sport"), r.get("orig.l4.dport")) if proto in (6, 17, 132) else (None, None)
    return (r.get("src_ip"), r.get("dest_ip"), proto, *ports, *icmp)


def by_key(items: Sequence[dict[str, Any]], key: Any) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for it in items:
        out.setdefault(key(it), []).append(it)
    return out
