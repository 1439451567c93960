"""Throw-away database servers for outage tests: started, stopped and started again at will.

The shared servers of the machine are never stopped: each outage test runs its own
PostgreSQL cluster (initdb in a temporary directory) or MariaDB instance
(mariadb-install-db), on a spare port, optionally inside a network namespace so that the
daemon under test reaches it at 127.0.0.1 from that namespace. Durability settings are off
(fsync): these servers hold test data only.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time


def _free_port(base: int) -> int:
    return base + os.getpid() % 2000


def _ns(ns: str | None) -> list[str]:
    return ["ip", "netns", "exec", ns] if ns else []


def pg_bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return os.path.dirname(found[-1]) if found else None


class PgCluster:
    def __init__(self, ns: str | None = None) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries are not installed")
        self.bin = bindir
        self.ns = ns
        # PYULOGD_TEST_PG_PORT: a port of the run's own (beside a concurrent run), else by pid.
        self.port = int(os.environ.get("PYULOGD_TEST_PG_PORT") or 0) or _free_port(25432)
        self.dir = tempfile.mkdtemp(prefix="pyulogd-pg-")
        os.chmod(self.dir, 0o755)
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = os.path.join(self.dir, "data")
        subprocess.run(["runuser", "-u", "postgres", "--", f"{self.bin}/initdb", "-D", self.data, "-A", "trust",
                        "-U", "postgres", "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=60)

    def _ctl(self, *args: str) -> None:
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off")
        subprocess.run([*_ns(self.ns), "runuser", "-u", "postgres", "--", f"{self.bin}/pg_ctl", "-D", self.data,
                        "-l", os.path.join(self.dir, "log"), "-o", opts, "-w", "-t", "60", *args],
                       check=True, capture_output=True, timeout=90)

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def psql(self, sql: str, db: str = "postgres") -> str:
        out = subprocess.run(["psql", "-h", self.dir, "-p", str(self.port), "-U", "postgres", "-d", db, "-Atq",
                              "-v", "ON_ERROR_STOP=1"], input=sql, text=True, check=True, capture_output=True)
        return out.stdout

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class MariadbInstance:
    def __init__(self, ns: str | None = None) -> None:
        if shutil.which("mariadb-install-db") is None or not os.path.exists("/usr/sbin/mariadbd"):
            raise RuntimeError("MariaDB server binaries are not installed")
        self.ns = ns
        self.port = _free_port(23306)
        self.dir = tempfile.mkdtemp(prefix="pyulogd-my-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.data, "sock")
        os.makedirs(self.data)
        shutil.chown(self.data, "mysql", "mysql")
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.data}", "--user=mysql",
                        "--skip-test-db", "--auth-root-authentication-method=normal"],
                       check=True, capture_output=True, timeout=120)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(os.path.join(self.dir, "log"), "ab")  # noqa: SIM115 - the server keeps it
        self.proc = subprocess.Popen(
            [*_ns(self.ns), "/usr/sbin/mariadbd", "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.sock}", "--user=mysql", "--skip-grant-tables",
             "--skip-log-bin", "--innodb-flush-log-at-trx-commit=0", "--innodb-buffer-pool-size=64M"],
            stdout=log, stderr=log)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited: see {self.dir}/log")
            if os.path.exists(self.sock) and self.mysql("SELECT 1", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("mariadbd did not start in 60 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        self.proc = None

    def mysql(self, sql: str, db: str = "", check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["mysql", "-S", self.sock, "-uroot", "-N", "-B", *([db] if db else [])], input=sql,
                              text=True, check=check, capture_output=True)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
