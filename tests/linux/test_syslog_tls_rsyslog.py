"""SYSLOG over TLS (RFC 5425: octet-counted frames over TLS) to a real rsyslogd with its gtls
driver (Debian packages rsyslog and rsyslog-gnutls): a private instance with its own config,
port, pid file and work directory, in the foreground (``-n``); the machine's syslog is not
touched. Certificates are made by the test (tests/tlspeer.py).

* records arrive intact, facility and severity as configured (server authentication only,
  and with a client certificate rsyslog checks: ``x509/certvalid``);
* a wrong server name, or a CA that did not sign rsyslog's certificate, is refused: counted
  (``syslog.<id>.tls_failures``), logged, and the records stay queued (none lost)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyulogd.core.context import Context
from pyulogd.io.loop import Loop
from pyulogd.plugins.outputs.syslog import SyslogOutput
from tests.helpers import make_stack, stop_stack
from tests.linux.test_syslog_rsyslog import TEMPLATE, free_port
from tests.tlspeer import Pki, make_pki
from tests.unit.test_syslog import PrintSource

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
GTLS = Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so")
_gtls = GTLS.exists() or any(Path(p).exists() for p in ("/usr/lib/rsyslog/lmnsd_gtls.so",
                                                        "/usr/lib/aarch64-linux-gnu/rsyslog/lmnsd_gtls.so"))
pytestmark = [pytest.mark.linux,
              pytest.mark.skipif(not os.path.exists(RSYSLOGD) or not _gtls,
                                 reason="needs rsyslogd with the gtls driver (Debian packages rsyslog, "
                                        "rsyslog-gnutls)")]  # fmt: skip


class RsyslogTls:
    def __init__(self, d: Path, pki: Pki, authmode: str) -> None:
        self.dir = d
        self.authmode = authmode
        self.out = d / "out.log"
        self.port = free_port(1)  # socket.SOCK_STREAM
        self.proc: subprocess.Popen[bytes] | None = None
        (d / "rsyslog.conf").write_text(f"""
global(workDirectory="{d}"
       DefaultNetstreamDriver="gtls"
       DefaultNetstreamDriverCAFile="{pki.ca}"
       DefaultNetstreamDriverCertFile="{pki.server_cert}"
       DefaultNetstreamDriverKeyFile="{pki.server_key}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="{authmode}")
input(type="imtcp" address="127.0.0.1" port="{self.port}")
template(name="t" type="string" string="{TEMPLATE}")
*.* action(type="omfile" file="{self.out}" template="t")
""")

    def start(self) -> None:
        self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(self.dir / "rsyslog.conf"),
                                      "-i", str(self.dir / "rsyslogd.pid")],
                                     stdout=subprocess.DEVNULL, stderr=(self.dir / "rsyslogd.err").open("wb"))
        end = time.monotonic() + 10
        needle = f"0100007F:{self.port:04X} 00000000:0000 0A"  # 127.0.0.1:port, LISTEN
        while needle not in Path("/proc/net/tcp").read_text():
            assert time.monotonic() < end and self.proc.poll() is None, (self.dir / "rsyslogd.err").read_text()
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def lines(self) -> list[list[str]]:
        if not self.out.exists():
            return []
        return [line.split("|") for line in self.out.read_text().splitlines() if line.endswith("|")]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), ["syslog.pyulogd.test", "127.0.0.1"])


@pytest.fixture(params=["anon", "x509/certvalid"])
def rsyslog(request: pytest.FixtureRequest, tmp_path: Path, pki: Pki) -> Iterator[RsyslogTls]:
    r = RsyslogTls(tmp_path, pki, request.param)
    r.start()
    try:
        yield r
    finally:
        r.stop()


def run(ctx: Context, stack: Any, until: Callable[[], object], timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < end, "timed out"
        ctx.loop.run_once(0.05)
        stack.sink.flush()


def tls_stack(tmp_path: Path, port: int, **opts: str) -> tuple[Context, Any]:
    ctx = Context(loop=Loop())
    ctx.log.set_destination(str(tmp_path / "pyulogd.log"))
    stack = make_stack([PrintSource, (SyslogOutput, {"host": "127.0.0.1", "port": str(port), "proto": "tcp",
                                                     "facility": "LOG_LOCAL3", "tls": "1",
                                                     "spool_dir": str(tmp_path / "spool"), **opts})], ctx)  # fmt: skip
    return ctx, stack


def test_records_arrive_intact(tmp_path: Path, pki: Pki, rsyslog: RsyslogTls) -> None:
    opts = {"tls_ca": str(pki.ca), "tls_server_name": "syslog.pyulogd.test"}
    if rsyslog.authmode == "x509/certvalid":  # rsyslog asks for a client certificate and checks it
        opts |= {"tls_cert": str(pki.client_cert), "tls_key": str(pki.client_key)}
    ctx, stack = tls_stack(tmp_path, rsyslog.port, **opts)
    texts = [f"over TLS {i} SRC=10.0.0.{i} é ✓" for i in range(50)]
    for t in texts:
        stack.source.push(t + " \n")
    stack.sink.flush()
    run(ctx, stack, lambda: len(rsyslog.lines()) >= 50)
    stop_stack(stack)
    got = rsyslog.lines()
    assert [g[5].strip() for g in got] == texts
    assert all(g[:5] == ["157", "local3", "notice", "ulogd", str(os.getpid())] for g in got)
    assert ctx.stats.get("syslog.syslog1.tls_failures") == 0 and ctx.stats.get("syslog.syslog1.sent") == 50


@pytest.mark.parametrize(("which", "why"), [("name", "Hostname mismatch"),
                                            ("ca", "unable to get local issuer certificate")])  # fmt: skip
def test_wrong_name_or_untrusted_ca_is_refused_and_loses_nothing(tmp_path: Path, pki: Pki, which: str,
                                                                  why: str) -> None:  # fmt: skip
    r = RsyslogTls(tmp_path, pki, "anon")
    r.start()
    try:
        opts = {"tls_ca": str(pki.ca), "tls_server_name": "syslog.pyulogd.test"}
        if which == "name":
            opts["tls_server_name"] = "elsewhere.pyulogd.test"
        else:
            opts["tls_ca"] = str(pki.other_ca)
        ctx, stack = tls_stack(tmp_path, r.port, **opts)
        for i in range(3):
            stack.source.push(f"secret {i} \n")
        stack.sink.flush()
        run(ctx, stack, lambda: ctx.stats.get("syslog.syslog1.tls_failures") >= 2)
        sender = stack.sink.out.sender
        assert sender.backlog == 3 and sender.counters.lost == 0 and r.lines() == []
        log = (tmp_path / "pyulogd.log").read_text()
        assert "TLS: certificate refused" in log and why in log
        stop_stack(stack)
        assert ctx.stats.get("syslog.syslog1.spooled") == 3  # kept for the next start
    finally:
        r.stop()
