"""The fault matrix's parts: a namespace that logs what it sends (and counts it in nft), a
traffic thread, a TCP peer that can go away and come back on its port, a throw-away
PostgreSQL, a tmpfs to fill, the daemon, and a row of the matrix with its accounting.

Everything is named with the prefix ``pyf3`` and removed in ``finally`` blocks.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyulogd.io.netns import NetnsHandle, in_netns, setns
from tests.linux.lab import lines, sh, wait_for

PREFIX = "pyf3 "
GROUP = 31
# The outages the issue names; PYULOGD_FAULT_OUTAGE shortens them for a quick local run.
OUTAGE = float(os.environ.get("PYULOGD_FAULT_OUTAGE", "20"))
STOP_TIME = float(os.environ.get("PYULOGD_FAULT_SIGSTOP", "30"))
RESULTS = os.environ.get("PYULOGD_FAULT_RESULTS", "")


class FaultNs:
    """``ip netns add pyf3-<random>``, lo up, ``udp dport 9 counter log group GROUP``: the nft
    counter is what the kernel logged, counted apart from the daemon."""

    def __init__(self) -> None:
        self.name = f"pyf3-{secrets.token_hex(4)}"
        self.path = Path("/run/netns") / self.name
        sh("ip", "netns", "add", self.name)
        try:
            rules = f"""table inet pyf3 {{
  chain out {{ type filter hook output priority 0; policy accept;
    udp dport 9 counter log prefix "{PREFIX}" group {GROUP}
  }}
}}"""
            sh("ip", "link", "set", "lo", "up", ns=self.name)
            sh("nft", "-f", "-", input=rules, ns=self.name)
        except BaseException:
            self.delete()
            raise
        h = NetnsHandle.open(str(self.path))
        try:
            with in_netns(h):
                self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        finally:
            h.close()

    def logged(self) -> int:
        """Packets the log rule matched: what the kernel handed to NFLOG."""
        out = sh("nft", "list", "table", "inet", "pyf3", ns=self.name).stdout
        m = re.search(r"counter packets (\d+)", out)
        assert m is not None, out
        return int(m[1])

    def bound(self) -> bool:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            out = subprocess.run(["cat", "/proc/net/netfilter/nfnetlink_log"], text=True, capture_output=True,
                                 preexec_fn=lambda: setns(fd), pass_fds=(fd,)).stdout  # fmt: skip
        finally:
            os.close(fd)
        return any(x.split()[:1] == [str(GROUP)] for x in out.splitlines())

    def send(self, n: int) -> None:
        for i in range(n):
            self.sock.sendto(b"%d" % i, ("127.0.0.1", 9))

    @contextmanager
    def traffic(self, rate: float) -> Iterator[None]:
        """Packets at ``rate`` per second for as long as the block runs (paced in real time:
        this is the load, not a wait for an event)."""
        stop = threading.Event()

        def run() -> None:
            t0 = time.monotonic()
            sent = 0
            while not stop.is_set():
                due = int((time.monotonic() - t0) * rate) + 1
                if due > sent:
                    self.send(due - sent)
                    sent = due
                stop.wait(0.01)

        th = threading.Thread(target=run, daemon=True)
        th.start()
        try:
            yield
        finally:
            stop.set()
            th.join(10)

    def delete(self) -> None:
        sock = getattr(self, "sock", None)
        if sock is not None:
            sock.close()
        sh("ip", "netns", "del", self.name, check=False)


class Peer:
    """A TCP peer on loopback keeping every whole line it received; ``down()`` reads what its
    connections hold, then closes the listener and every connection (the daemon sees its peer
    go away), ``up()`` listens on the same port again. A line cut by a closed connection is
    not kept (the daemon resends from the first line the peer did not take)."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.partial = 0  # pieces of lines left by closed connections
        self.port = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.up()

    def up(self) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(8)
        self.port = srv.getsockname()[1]
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(srv,), daemon=True)
        self._thread.start()

    def _take(self, buf: bytearray, chunk: bytes) -> None:
        buf += chunk
        cut = buf.rfind(b"\n")
        if cut >= 0:
            with self._lock:
                self.got.extend(bytes(buf[:cut]).split(b"\n"))
            del buf[: cut + 1]

    def _run(self, srv: socket.socket) -> None:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(srv, selectors.EVENT_READ)
        bufs: dict[socket.socket, bytearray] = {}
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(0.05):
                    if key.fileobj is srv:
                        c, _addr = srv.accept()
                        bufs[c] = bytearray()
                        sel.register(c, selectors.EVENT_READ)
                        continue
                    c = key.fileobj  # type: ignore[assignment]
                    try:
                        chunk = c.recv(1 << 16)
                    except OSError:
                        chunk = b""
                    if chunk:
                        self._take(bufs[c], chunk)
                        continue
                    sel.unregister(c)
                    self.partial += bool(bufs.pop(c))
                    c.close()
            # Down: take what the connections hold, then reset them (the daemon's next send fails).
            for c, buf in bufs.items():
                c.setblocking(False)
                while True:
                    try:
                        chunk = c.recv(1 << 16)
                    except OSError:
                        break
                    if not chunk:
                        break
                    self._take(buf, chunk)
                self.partial += bool(buf)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                c.close()
        finally:
            sel.close()
            srv.close()

    def down(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def lines(self) -> list[bytes]:
        with self._lock:
            return list(self.got)

    def close(self) -> None:
        self.down()


@contextmanager
def tmpfs(directory: Path, size: str = "1m") -> Iterator[Path]:
    """A small tmpfs mounted on ``directory`` (made here), unmounted at the end."""
    directory.mkdir()
    sh("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "pyf3", str(directory))
    try:
        yield directory
    finally:
        if subprocess.run(["umount", str(directory)], capture_output=True).returncode != 0:
            sh("umount", "-l", str(directory), check=False)


def fill(directory: Path) -> None:
    """Take every free block of the filesystem (``directory/filler``; unlink it for room)."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        chunk = b"\0" * 65536
        while chunk:
            try:
                os.write(fd, chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)


class FaultDaemon:
    """``python -m pyulogd -c CONF`` in the daemon's own namespace (its NFLOG input works in the
    test's namespace through ``network_namespace_path``); standard error kept in a file."""

    def __init__(self, out: Path, config: str, ns: FaultNs, log: Path) -> None:
        self.out, self.ns, self.log = out, ns, log
        self.conf = out / "pyulogd.conf"
        self.conf.write_text(config)
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.runs += 1
        self.stderr_path = self.out / f"daemon.{self.runs}.stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "pyulogd", "-c", str(self.conf), "--no-realtime"],
                                         stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
        try:
            wait_for(lambda: self.ns.bound() or self.proc is None or self.proc.poll() is not None, 20,
                     "the daemon to bind its NFLOG group")  # fmt: skip
        except AssertionError:
            self.kill()
            raise
        assert self.proc.poll() is None, self.stderr_path.read_text()

    def text(self) -> str:
        """The daemon's log file and every run's standard error."""
        parts = lines(self.log)
        for n in range(1, self.runs + 1):
            p = self.out / f"daemon.{n}.stderr"
            if p.exists():
                parts += p.read_bytes().decode("utf-8", "backslashreplace").splitlines()
        return "\n".join(parts)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
            wait_for(lambda: not self.ns.bound(), 10, "the NFLOG group to be released")

    def exits(self) -> list[tuple[dict[str, int], dict[str, dict[str, int]]]]:
        """For every run that exited cleanly: its counters and each output's counters."""
        runs = []
        text = self.text()
        for m in re.finditer(r"counters at exit: (.*)", text):
            stats = {k: int(v) for k, v in (kv.rsplit("=", 1) for kv in m.group(1).split(", "))}
            runs.append((stats, {}))
        outs = re.findall(r"output \S+ '([^']+)' at exit: (.*)", text)
        # Each run logs its outputs' lines just before its counters' line: give each run the
        # output lines before it.
        pos = [m.start() for m in re.finditer(r"counters at exit: ", text)]
        opos = [m.start() for m in re.finditer(r"output \S+ '[^']+' at exit: ", text)]
        for (oid, body), at in zip(outs, opos, strict=True):
            later = [i for i, p in enumerate(pos) if p > at]
            if not later:
                continue
            run = later[0]
            runs[run][1][oid] = {k: int(v) for k, v in (kv.rsplit("=", 1) for kv in body.split(", "))}
        return runs


@dataclass
class Row:
    """One row of the matrix: the fault, the output, and the numbers the daemon reported."""

    fault: str
    output: str
    logged: int = 0  # the nft counter: what the kernel handed to NFLOG
    received: int = 0
    written: int = 0
    spooled: int = 0
    unspooled: int = 0  # of spooled, written from the spool later
    spooled_exact: int = 0  # spooled as the output's exact counters have it (0: not kept there)
    replayed: int = 0
    dropped: int = 0
    kernel_lost: int = 0  # NFLOG sequence gaps (records the kernel dropped before the daemon read them)
    unnumbered: int = 0  # records the kernel dropped without a gap in its numbers (nft counter - the rest)
    enobufs: int = 0  # overruns the trail reported on their own (reason enobufs: a lower bound)
    audit: int = 0  # audit records (loss records, heartbeats) the output took
    at_destination: int = 0  # data records found in the file, table or peer
    loss_recorded: int = 0  # the sum of the loss records' counts found at the destination
    causes: dict[str, int] = field(default_factory=dict)
    verdict: str = "?"
    notes: list[str] = field(default_factory=list)
    saved: bool = False

    def table_line(self) -> str:  # fault, output, logged, kernel lost, received, written, ...
        return (f"| {self.fault} | {self.output} | {self.logged} | {self.kernel_lost + self.unnumbered} | "
                f"{self.received} | "
                f"{self.written} | {self.spooled} | {self.replayed} | {self.dropped} | {self.loss_recorded} | "
                f"{self.verdict} |")

    def save(self) -> None:
        if self.saved:
            return
        self.saved = True
        if RESULTS:
            with open(RESULTS, "a") as f:
                f.write(json.dumps(self.__dict__, sort_keys=True) + "\n")
        print("\nfault matrix: " + self.table_line())


def from_run(row: Row, stats: dict[str, int], out: dict[str, int], prefix: str) -> None:
    """Fill ``row`` from one clean run's counters (``prefix``: the output's counter prefix)."""
    row.received += out.get("received", 0)
    row.audit += out.get("audit", 0)
    row.written += out.get("written", 0)
    dropped = {k.split(".", 1)[1]: v for k, v in out.items() if k.startswith("dropped.")}
    for k, v in dropped.items():
        row.causes[k] = row.causes.get(k, 0) + v
    row.dropped += sum(dropped.values())
    # The exact counters (io/sink.py SinkCounters: received = written + spooled + dropped + in
    # memory) where the output keeps spooled there (the SQL outputs); a network output's spill
    # is counted in ctx.stats only (``<prefix>.spooled``), its records ``written`` once sent
    # from the spool: shown in the table, not part of the identity.
    row.spooled_exact += out.get("spooled", 0)
    row.spooled += out.get("spooled", stats.get(f"{prefix}.spooled", 0))
    row.unspooled += out.get("unspooled", 0)
    row.replayed += out.get("replayed", 0)
    row.kernel_lost += stats.get("nflog.log1.seq_lost", 0)


def json_records(lines_: list[bytes] | list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(data records, audit records) of JSON lines."""
    data, audit = [], []
    for raw in lines_:
        obj = json.loads(raw)
        (audit if "audit.status" in obj else data).append(obj)
    return data, audit


def loss_sum(audit: list[dict[str, Any]]) -> int:
    return sum(a.get("audit.loss.count", 0) for a in audit if a.get("audit.status") == "SKIPDATA")
