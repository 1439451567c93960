"""A daemon run as root against a namespace of the test's own: the namespace (any name, bytes
that are not UTF-8 included), its log rule, traffic inside it over loopback, a TCP listener
for JSON-over-TCP, and the daemon process with its counters at exit.

Namespace names are made unique with a random suffix and removed by ``Namespace.delete``
(call it in a ``finally``); no traffic leaves the namespace.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from pyulogd.io.netns import NetnsHandle, in_netns, setns
from tests.linux.lab import lines, sh, wait_for

RUN = Path("/run/netns")


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


class Namespace:
    """``ip netns add NAME`` (NAME as bytes may be anything but ``/``), lo up, and an output
    rule logging UDP to port 9 to NFLOG ``group`` with ``prefix``."""

    def __init__(self, name: str, group: int, prefix: str = "qsec ") -> None:
        self.name = name  # str with surrogateescape for bytes that are not UTF-8
        self.path = RUN / name
        self.group = group
        sh("ip", "netns", "add", name)
        try:
            self._setup(prefix)
        except BaseException:
            self.delete()
            raise

    def _setup(self, prefix: str) -> None:
        rules = f"""table inet qsec {{
  chain out {{ type filter hook output priority 0; policy accept;
    udp dport 9 log prefix "{prefix}" group {self.group}
  }}
}}"""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for args, text in ((["ip", "link", "set", "lo", "up"], None), (["nft", "-f", "-"], rules)):
                subprocess.run(args, input=text, text=True, check=True, capture_output=True,
                               preexec_fn=lambda: setns(fd), pass_fds=(fd,))  # fmt: skip
        finally:
            os.close(fd)

    def nflog_bound(self) -> bool:
        """Whether someone listens to the group in the namespace."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            out = subprocess.run(["cat", "/proc/net/netfilter/nfnetlink_log"], text=True, capture_output=True,
                                 preexec_fn=lambda: setns(fd), pass_fds=(fd,)).stdout  # fmt: skip
        finally:
            os.close(fd)
        return any(line.split()[:1] == [str(self.group)] for line in out.splitlines())

    def send(self, n: int) -> None:
        """``n`` UDP datagrams to 127.0.0.1:9 inside the namespace (each one logged)."""
        h = NetnsHandle.open(str(self.path))
        try:
            with in_netns(h):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        finally:
            h.close()
        with s:
            for i in range(n):
                s.sendto(b"%d" % i, ("127.0.0.1", 9))

    def delete(self) -> None:
        sh("ip", "netns", "del", self.name, check=False)


class LineListener(threading.Thread):
    """A TCP listener on loopback that keeps every line it receives."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(4)
        self.port: int = self.server.getsockname()[1]
        self.data = b""
        self.stopped = False

    def run(self) -> None:
        self.server.settimeout(0.2)
        while not self.stopped:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(0.2)
                while not self.stopped:
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        continue
                    if not chunk:
                        break
                    self.data += chunk

    def lines(self) -> list[bytes]:
        return self.data.splitlines()

    def close(self) -> None:
        self.stopped = True
        self.join(5)
        self.server.close()


class Daemon:
    """``python -m pyulogd -c CONF --no-realtime`` with its standard error in a file; started
    once "entering main loop" appears in the daemon log or on standard error (or ``ready()``
    says so). ``wrapper``: a command line the daemon runs under."""

    def __init__(self, out: Path, config: str, log: Path | None, wrapper: Sequence[str] = (),
                 ready: Callable[[], bool] | None = None) -> None:  # fmt: skip
        self.conf = out / "pyulogd.conf"
        self.conf.write_text(config)
        self.stderr_path = out / "daemon.stderr"
        self.log = log
        argv = [*wrapper, sys.executable, "-m", "pyulogd", "-c", str(self.conf), "--no-realtime"]
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        started = ready or (lambda: "entering main loop" in self.text())
        try:
            wait_for(lambda: started() or self.proc.poll() is not None, 15, "the daemon to start")
        except AssertionError:
            self.kill()
            raise
        assert self.proc.poll() is None, self.stderr()

    def text(self) -> str:
        return "\n".join((lines(self.log) if self.log else []) + [self.stderr()])

    def stderr(self) -> str:
        return self.stderr_path.read_bytes().decode("utf-8", "backslashreplace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class DevLog(threading.Thread):
    """A /dev/log of our own: ``wrapper`` runs a command in a private mount namespace whose
    /dev/log is this datagram socket, so the daemon's syslog() lands here."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[bytes] = []
        self.stopped = False
        script = f'mount -t tmpfs none /dev && ln -s "{path}" /dev/log && exec "$@"'
        self.wrapper = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"]

    def run(self) -> None:
        while not self.stopped:
            try:
                self.messages.append(self.sock.recv(65536))
            except TimeoutError:
                continue

    def text(self) -> str:
        """Every message, each decoded as UTF-8 (raises if one is not)."""
        return "\n".join(m.decode("utf-8") for m in list(self.messages))

    def close(self) -> None:
        self.stopped = True
        self.join(5)
        self.sock.close()


def counters_at_exit(text: str) -> dict[str, int]:
    m = re.search(r"counters at exit: (.*)", text)
    assert m is not None, text[-2000:]
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split(", "))}
