"""Issue 12, item 3: TLS for JSON over tcp against a real TLS peer (Python's ssl server, in a
thread), with certificates made here: records arrive intact; an untrusted CA or a wrong
server name is refused, counted and logged, and the records stay queued (not lost); a client
certificate is presented when given; every option error names its file, line and reason.
SYSLOG over TLS (RFC 5425) against rsyslog's gtls driver: tests/linux/test_syslog_rsyslog.py."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyulogd.core.config import parse_text
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.core.stack import build_stack
from pyulogd.io.loop import Loop
from pyulogd.io.sender import ReliableSender
from pyulogd.plugins.outputs.json import JsonOutput
from tests.helpers import make_stack, stop_stack
from tests.tlspeer import Pki, TlsLineServer, make_pki
from tests.unit.test_json import Src


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), ["peer.pyulogd.test", "127.0.0.1"])


@pytest.fixture()
def peer(pki: Pki) -> Iterator[TlsLineServer]:
    s = TlsLineServer(pki)
    s.start()
    try:
        yield s
    finally:
        s.close()


def run(ctx: Context, stack: Any, until: Callable[[], object], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < end, "timed out"
        ctx.loop.run_once(0.02)
        stack.sink.flush()


def tls_stack(tmp_path: Path, port: int, **opts: Any) -> tuple[Context, Any, ReliableSender]:
    ctx = Context(loop=Loop())
    ctx.log.set_destination(str(tmp_path / "daemon.log"))
    stack = make_stack([Src, (JsonOutput, {"mode": "tcp", "host": "127.0.0.1", "port": str(port), "tls": "1",
                                           "spool_dir": str(tmp_path / "spool"), **opts})], ctx)  # fmt: skip
    return ctx, stack, stack.sink.out.sender


@pytest.mark.parametrize("name", ["", "peer.pyulogd.test"])  # "": host (127.0.0.1) is checked
def test_json_over_tls_arrives_intact(tmp_path: Path, pki: Pki, peer: TlsLineServer, name: str) -> None:
    ctx, stack, sender = tls_stack(tmp_path, peer.port, tls_ca=str(pki.ca), tls_server_name=name)
    prefixes = [f"tls {i} é\u2028\"\\" for i in range(200)]
    for p in prefixes:
        stack.source.push(prefix=p)
    stack.sink.flush()
    run(ctx, stack, lambda: len(peer.lines()) >= 200)
    stop_stack(stack)
    assert [json.loads(x)["oob.prefix"] for x in peer.lines()] == prefixes
    assert sender.counters.snapshot() == {"received": 200, "written": 200}
    assert ctx.stats.get("json.json1.tls_failures") == 0 and peer.failed == 0 and peer.connections == 1


@pytest.mark.parametrize(("opts", "why"), [
    ({"tls_server_name": "wrong.pyulogd.test"}, "Hostname mismatch"),
    ({"tls_ca": "other"}, "unable to get local issuer certificate"),
    ({"tls_ca": ""}, "unable to get local issuer certificate"),  # the system's CAs do not know the test CA
])  # fmt: skip
def test_refused_certificate_is_counted_logged_and_loses_nothing(
    tmp_path: Path, pki: Pki, peer: TlsLineServer, opts: dict[str, str], why: str
) -> None:
    opts = {"tls_ca": str(pki.ca), **opts}
    if opts["tls_ca"] == "other":
        opts["tls_ca"] = str(pki.other_ca)
    ctx, stack, sender = tls_stack(tmp_path, peer.port, **opts)
    for i in range(5):
        stack.source.push(prefix=f"kept {i}")
    stack.sink.flush()
    start = time.monotonic()
    run(ctx, stack, lambda: ctx.stats.get("json.json1.tls_failures") >= 3)  # refused, and again after the back-off
    # the back-off paces the attempts (0.125 s at least after the first failure, then 0.25, ...)
    assert time.monotonic() - start >= 0.125 + 0.25
    assert peer.lines() == [] and sender.backlog == 5 and sender.counters.lost == 0
    log = (tmp_path / "daemon.log").read_text()
    assert "TLS: certificate refused" in log and why in log
    stop_stack(stack)
    # at stop the records go to the spool: kept for a start with a certificate that is trusted
    assert sender.counters.lost == 0 and ctx.stats.get("json.json1.spooled") == 5


def test_verify_off_encrypts_without_checking(tmp_path: Path, pki: Pki, peer: TlsLineServer) -> None:
    ctx, stack, _ = tls_stack(tmp_path, peer.port, tls_ca=str(pki.other_ca), tls_verify="0")
    stack.source.push(prefix="unchecked")
    stack.sink.flush()
    run(ctx, stack, lambda: peer.lines())
    stop_stack(stack)
    assert json.loads(peer.lines()[0])["oob.prefix"] == "unchecked"


def test_client_certificate(tmp_path: Path, pki: Pki) -> None:
    peer = TlsLineServer(pki, client_ca=pki.ca)
    peer.start()
    try:
        ctx, stack, _ = tls_stack(tmp_path, peer.port, tls_ca=str(pki.ca), tls_cert=str(pki.client_cert),
                                  tls_key=str(pki.client_key))  # fmt: skip
        stack.source.push(prefix="with a client certificate")
        stack.sink.flush()
        run(ctx, stack, lambda: peer.lines())
        stop_stack(stack)
    finally:
        peer.close()
    assert peer.peers == ["pyulogd-client"]


def test_peer_without_tls_is_a_failed_attempt(tmp_path: Path, pki: Pki) -> None:
    """A plain TCP peer (it closes without a word of TLS): a failed handshake, counted."""
    import socket

    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen(8)
        ctx, stack, sender = tls_stack(tmp_path, plain.getsockname()[1], tls_ca=str(pki.ca))
        stack.source.push(prefix="x")
        stack.sink.flush()
        conn, _ = plain.accept()
        conn.close()
        run(ctx, stack, lambda: ctx.stats.get("json.json1.tls_failures") >= 1)
        assert sender.backlog == 1 and sender.counters.lost == 0
        stop_stack(stack)


# -- option errors: file, line, reason


def build(tmp_path: Path, body: str) -> None:
    path = tmp_path / "t.conf"
    cfg = parse_text("[global]\nstack=s:SRC,json1:JSON\n[json1]\n" + body, str(path))
    from pyulogd.core import registry

    registry.register(Src)
    try:
        build_stack(Context(loop=Loop(), checking=True), cfg, cfg.section("global").entries[0].value or "",  # type: ignore[union-attr]
                    2, {})  # fmt: skip
    finally:
        registry.unregister(Src.name)


def error(tmp_path: Path, body: str) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        build(tmp_path, body)
    assert ei.value.file == str(tmp_path / "t.conf")
    return ei.value


def test_option_errors_name_file_line_and_reason(tmp_path: Path, pki: Pki) -> None:
    (tmp_path / "empty.pem").write_text("nothing here\n")
    tcp = 'mode="tcp"\nhost="127.0.0.1"\n'
    cases = [
        # (body, line, reason)
        (tcp + f'tls_ca="{pki.ca}"\n', 2, "option 'tls_ca' needs tls=1"),  # the stack line: options together
        (tcp + "tls_verify=0\n", 2, "option 'tls_verify' needs tls=1"),
        ('mode="udp"\ntls=1\n', 2, "tls=1 needs a tcp peer"),
        ('mode="file"\ntls=1\n', 2, "tls=1 needs a tcp peer"),
        (tcp + f'tls=1\ntls_key="{pki.client_key}"\n', 2, "option 'tls_key' needs 'tls_cert'"),
        (tcp + f'tls=1\ntls_ca="{tmp_path}/missing.pem"\n', 7, "cannot read CA certificate"),
        (tcp + f'tls=1\ntls_ca="{tmp_path}/empty.pem"\n', 7, "holds no CA certificate"),
        (tcp + f'tls=1\ntls_cert="{pki.client_key}"\n', 7, "holds no certificate"),
        (tcp + f'tls=1\ntls_cert="{pki.client_cert}"\ntls_key="{pki.client_cert}"\n', 8, "holds no private key"),
        (tcp + f'tls=1\ntls_cert="{pki.client_cert}"\ntls_key="{pki.server_key}"\n', 2, "tls_cert/tls_key"),
        (tcp + "tls=maybe\n", 6, "option 'tls'"),
        (tcp + "tls_verify=2\n", 6, "option 'tls_verify'"),
        (tcp + "spool_max=lots\n", 6, "option 'spool_max'"),
        (tcp + "reconnect_max=0\n", 6, "option 'reconnect_max'"),
        (tcp + 'spool_dir="a\0b"\n', 6, "not text"),
    ]
    for body, line, reason in cases:
        e = error(tmp_path, body)
        assert (e.line, reason in e.reason) == (line, True), (body, str(e))
    build(tmp_path, tcp + f'tls=1\ntls_ca="{pki.ca}"\ntls_cert="{pki.client_cert}"\ntls_key="{pki.client_key}"\n')
