"""Throw-away NATS servers with JetStream for tests: one server or a cluster of three, on
ephemeral loopback ports, in a temporary directory; killed, stopped and started again at will.

The machine's own nats-server (127.0.0.1:4222) is never touched. Each server gets a client
port, a cluster port (clusters) and a monitoring port; :meth:`NatsCluster.wait_ready` polls
``/healthz?js-enabled-only=true`` of the monitoring port, so a test waits for the real event
(JetStream up, meta leader elected) with a deadline, never a fixed sleep.

Environment, so that the same tests run against another broker or beside another run:

- ``PYULOGD_TEST_NATS_SERVER``: the nats-server binary to run (default: ``nats-server`` on
  PATH, else /usr/sbin/nats-server). The broker's defects after a whole-cluster stop depend on
  its version (docs/central.md), so an operator can try the one they deploy;
  :func:`nats_server_version` says which one ran (pytest's header shows it, the end-to-end
  test's failure message too).
- ``PYULOGD_TEST_NATS_PORT_BASE``: take the servers' ports from this one upwards (100 of them,
  in turn, skipping ports in use) instead of ephemeral ones, so that a run can keep to a range
  of its own and never pick a port that a concurrent run picked and has not bound yet.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

NATS_SERVER = os.environ.get("PYULOGD_TEST_NATS_SERVER") or shutil.which("nats-server") or "/usr/sbin/nats-server"
PORT_BASE = int(os.environ.get("PYULOGD_TEST_NATS_PORT_BASE") or 0)
PORT_SPAN = 100
_next_port = 0  # PORT_BASE set: the offset of the next port to try


def have_nats_server() -> str | None:
    """None when nats-server can run here, else why not."""
    if not os.path.exists(NATS_SERVER):
        return (f"nats-server is not installed at {NATS_SERVER} (apt-get install nats-server; "
                "scripts/install-deps.sh test; or set PYULOGD_TEST_NATS_SERVER)")
    return None


def nats_server_version() -> str:
    """The binary the tests run and what it says of its version (``nats-server: v2.9.10``)."""
    try:
        out = subprocess.run([NATS_SERVER, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{NATS_SERVER}: no version ({type(e).__name__})"
    return f"{NATS_SERVER}: {(out.stdout or out.stderr).strip()}"


def free_ports(n: int) -> list[int]:
    """``n`` loopback ports nothing listens on: ephemeral ones, or from PORT_BASE upwards."""
    if PORT_BASE:
        return _ports_from_base(n)
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _ports_from_base(n: int) -> list[int]:
    """The next ``n`` free ports of PORT_BASE..PORT_BASE+99, in turn (wrapping), so that two
    clusters of one run (one made, not started yet) never get the same ones."""
    global _next_port
    found: list[int] = []
    for _ in range(PORT_SPAN):
        port = PORT_BASE + _next_port
        _next_port = (_next_port + 1) % PORT_SPAN
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == n:
            return found
    raise RuntimeError(f"no {n} free ports in {PORT_BASE}..{PORT_BASE + PORT_SPAN - 1} (PYULOGD_TEST_NATS_PORT_BASE)")


class NatsCluster:
    """``size`` JetStream servers (1: a single server without clustering); ``extra`` is added
    to every server's configuration (authorization, TLS)."""

    def __init__(self, size: int = 1, name: str = "pyn4", extra: str = "") -> None:
        self.size = size
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="pyn4-nats-")
        ports = free_ports(3 * size)
        self.client_ports = ports[:size]
        self.cluster_ports = ports[size : 2 * size]
        self.http_ports = ports[2 * size :]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.cluster_ports)
        for i in range(size):
            store = os.path.join(self.dir, f"js{i}")
            conf = [
                f'server_name: "{name}-n{i}"',
                f"listen: 127.0.0.1:{self.client_ports[i]}",
                f"http: 127.0.0.1:{self.http_ports[i]}",
                f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 1GB }}',
            ]
            if extra:
                conf.append(extra)
            if size > 1:
                conf.append(f'cluster {{ name: "{name}", listen: 127.0.0.1:{self.cluster_ports[i]}, '
                            f"routes: [{routes}] }}")
            with open(self.conf(i), "w") as f:
                f.write("\n".join(conf) + "\n")

    def conf(self, i: int) -> str:
        return os.path.join(self.dir, f"server{i}.conf")

    @property
    def urls(self) -> str:
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.client_ports)

    def start(self, i: int | None = None) -> None:
        for n in range(self.size) if i is None else [i]:
            if self.procs[n] is None:
                log = open(os.path.join(self.dir, f"server{n}.log"), "ab")  # noqa: SIM115 - the process keeps it
                self.procs[n] = subprocess.Popen([NATS_SERVER, "-c", self.conf(n)], stdout=log, stderr=log)
                log.close()

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        p = self.procs[i]
        if p is not None:
            p.send_signal(sig)
            p.wait(30)
            self.procs[i] = None

    def stop(self, i: int | None = None) -> None:
        for n in range(self.size) if i is None else [i]:
            self.kill(n, signal.SIGTERM)

    def healthy(self, i: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_ports[i]}/healthz?js-enabled-only=true",
                                        timeout=2) as r:
                return bool(json.loads(r.read()).get("status") == "ok")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def wait_ready(self, timeout: float = 60.0, which: list[int] | None = None) -> None:
        deadline = time.monotonic() + timeout
        which = list(range(self.size)) if which is None else which
        while time.monotonic() < deadline:
            if all(self.healthy(i) for i in which) and self.meta_leader():
                return
            time.sleep(0.1)
        raise TimeoutError(f"NATS servers {which} not ready within {timeout}s (logs in {self.dir})")

    def meta_leader(self) -> bool:
        """A JetStream meta leader is elected (always true for a single server)."""
        if self.size == 1:
            return True
        for i in range(self.size):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_ports[i]}/jsz", timeout=2) as r:
                    meta = json.loads(r.read()).get("meta_cluster") or {}
                    if meta.get("leader"):
                        return True
            except (OSError, ValueError, urllib.error.URLError):
                continue
        return False

    def close(self) -> None:
        for n in range(self.size):
            try:
                self.kill(n, signal.SIGKILL)
            except (OSError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
