"""The metrics endpoint and the control socket (daemon/endpoints.py) on a loop with a
FakeClock: answers, bad requests, slow and silent clients, too many clients, timeouts.
Clients are real sockets; the test turns the loop itself, so a client that would stall it
stalls the test."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyulogd.core.config import parse_text
from pyulogd.core.context import Context
from pyulogd.core.errors import PluginError
from pyulogd.daemon.endpoints import BUSY, TOO_BIG, Endpoint, http_answer, listen_tcp, listen_unix, peer_is_owner
from pyulogd.daemon.ops import Operations, OpsSettings, parse_listen
from pyulogd.daemon.service import Service
from tests.clocked import fake_clock, fake_context
from tests.privs import as_nobody, reachable_tmp, why_skip

ROUTES = {b"/metrics": ("text/plain; version=0.0.4", lambda: b"m 1\n")}


def answer(req: bytes) -> bytes | None:
    return http_answer(req, ROUTES)


def turn(ctx: Context, rounds: int = 20) -> None:
    for _ in range(rounds):
        ctx.loop.run_once(0.01)


def read_all(sock: socket.socket, ctx: Context, limit: int = 200) -> bytes:
    """Everything the server sends until it closes, turning the loop meanwhile."""
    sock.setblocking(False)
    data = b""
    for _ in range(limit):
        ctx.loop.run_once(0.01)
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            continue
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"the server did not close (got {data[:80]!r})")


@pytest.fixture()
def server() -> Iterator[tuple[Context, Endpoint]]:
    ctx, _clock = fake_context()
    ep = Endpoint(ctx, "metrics", listen_tcp("127.0.0.1", 0), answer, max_request=1024, max_clients=3,
                  timeout=10.0, busy=BUSY, too_big=TOO_BIG)  # fmt: skip
    ep.start()
    yield ctx, ep
    ep.close()


def connect(ep: Endpoint) -> socket.socket:
    return socket.create_connection(ep.sock.getsockname()[:2], timeout=5)


def ask(ctx: Context, ep: Endpoint, request: bytes) -> bytes:
    with connect(ep) as c:
        c.sendall(request)
        return read_all(c, ctx)


def test_get_head_and_errors(server: tuple[Context, Endpoint]) -> None:
    ctx, ep = server
    got = ask(ctx, ep, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
    head, body = got.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 4" in head and body == b"m 1\n"
    assert b"Content-Type: text/plain; version=0.0.4" in head and b"Connection: close" in head
    got = ask(ctx, ep, b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200 OK") and got.endswith(b"\r\n\r\n") and b"Content-Length: 4" in got
    assert ask(ctx, ep, b"GET /nope HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    got = ask(ctx, ep, b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
    assert got.startswith(b"HTTP/1.1 405 ") and b"Allow: GET, HEAD" in got
    for junk in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", b"GET\r\n\r\n", b"GET /x SPDY/3\r\n\r\n",
                 b"GET metrics HTTP/1.1\r\n\r\n", b"\r\n\r\n"):  # fmt: skip
        assert ask(ctx, ep, junk).startswith(b"HTTP/1.1 400 "), junk
    assert ctx.stats.get("metrics.bad_request") == 0  # answered with an error, not refused
    turn(ctx)  # each client closed after the answer: the server notices and forgets it
    assert ep.clients == set()


def test_a_request_too_large_is_refused(server: tuple[Context, Endpoint]) -> None:
    ctx, ep = server
    got = ask(ctx, ep, b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 5000 + b"\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 431 ")
    assert ctx.stats.get("metrics.bad_request") == 1


def test_silent_clients_do_not_hold_others_and_are_closed_at_the_deadline(server: tuple[Context, Endpoint]) -> None:
    ctx, ep = server
    clock = fake_clock(ctx)
    silent = [connect(ep), connect(ep)]
    silent[0].sendall(b"GET /metr")  # half a request, then nothing
    turn(ctx)
    assert len(ep.clients) == 2
    # Meanwhile a well-behaved client is answered at once.
    assert ask(ctx, ep, b"GET /metrics HTTP/1.1\r\n\r\n").endswith(b"m 1\n")
    clock.advance(10.0)
    turn(ctx)
    assert ep.clients == set()
    assert ctx.stats.get("metrics.timeout") == 2
    for s in silent:
        s.setblocking(False)
        assert s.recv(100) == b""  # closed by the server
        s.close()


def test_more_clients_than_allowed_get_busy(server: tuple[Context, Endpoint]) -> None:
    ctx, ep = server
    held = [connect(ep) for _ in range(3)]
    turn(ctx)
    assert len(ep.clients) == 3
    with connect(ep) as extra:
        got = read_all(extra, ctx)
    assert got.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in got
    assert ctx.stats.get("metrics.busy") == 1
    for s in held:
        s.close()
    turn(ctx)
    assert ep.clients == set()  # gone clients are noticed and forgotten
    assert ask(ctx, ep, b"GET /metrics HTTP/1.1\r\n\r\n").endswith(b"m 1\n")


def test_a_client_that_does_not_read_a_big_answer_does_not_hold_the_loop() -> None:
    ctx, clock = fake_context()
    big = b"x" * (16 << 20)
    ep = Endpoint(ctx, "metrics", listen_tcp("127.0.0.1", 0), lambda r: http_answer(r, {b"/": ("t", lambda: big)}),
                  max_request=1024, timeout=10.0)  # fmt: skip
    ep.start()
    try:
        slow = connect(ep)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.sendall(b"GET / HTTP/1.1\r\n\r\n")
        turn(ctx)  # the loop keeps turning: the rest waits for the socket to be writable
        assert len(ep.clients) == 1
        # Another client is served meanwhile.
        with connect(ep) as other:
            other.sendall(b"GET /nothing HTTP/1.1\r\n\r\n")
            assert read_all(other, ctx).startswith(b"HTTP/1.1 404")
        clock.advance(10.0)
        turn(ctx)
        assert ep.clients == set() and ctx.stats.get("metrics.timeout") == 1
        slow.close()
    finally:
        ep.close()


def test_an_answer_that_raises_closes_the_connection_without_a_traceback() -> None:
    ctx, _clock = fake_context()

    def broken(req: bytes) -> bytes | None:
        raise RuntimeError("bug")

    ep = Endpoint(ctx, "control", listen_tcp("127.0.0.1", 0), broken, max_request=64)
    ep.start()
    try:
        assert ask(ctx, ep, b"status\n") == b""
        assert ctx.stats.get("control.bad_request") == 1
    finally:
        ep.close()


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:9317") == ("127.0.0.1", 9317)
    assert parse_listen("localhost:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:9317") == ("::1", 9317)
    for bad in ("9317", "::1:9317", "[127.0.0.1]:1", "host.example:9317", "127.0.0.1:70000", "127.0.0.1:x",
                "[::1]9317", "127.0.0.1:"):  # fmt: skip
        with pytest.raises(ValueError):
            parse_listen(bad)
    s = OpsSettings()
    s.set("metrics", "192.0.2.1:9317", 4)
    with pytest.raises(Exception, match=r"cfg:4: metrics: 192.0.2.1 is not a loopback address"):
        s.check("cfg")
    s.set("metrics_allow_remote", "1", 5)
    s.check("cfg")
    with pytest.raises(ValueError):
        s.set("control_socket", "relative.sock", 6)


def test_control_socket_path_defaults() -> None:
    s = OpsSettings()
    assert s.control_path({}) is None
    assert s.control_path({"RUNTIME_DIRECTORY": "/run/pyulogd:/run/other"}) == "/run/pyulogd/control.sock"
    s.set("control_socket", "", 1)
    assert s.control_path({"RUNTIME_DIRECTORY": "/run/pyulogd"}) is None
    s.set("control_socket", "/run/x/c.sock", 1)
    assert s.control_path({}) == "/run/x/c.sock"


# -- the control socket


@pytest.mark.skipif(why_skip() is not None, reason=why_skip() or "")
def test_control_socket_is_owner_only_in_a_root_directory() -> None:
    with reachable_tmp() as d:
        path = d / "run" / "control.sock"
        sock, ident = listen_unix(str(path))
        try:
            dst = os.stat(path.parent)
            assert stat.S_IMODE(dst.st_mode) == 0o755 and dst.st_uid == 0
            st = os.lstat(path)
            assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
            assert (st.st_dev, st.st_ino) == ident

            def connect_as_nobody() -> None:
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                with pytest.raises(PermissionError):
                    c.connect(str(path))

            as_nobody(connect_as_nobody)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                c.connect(str(path))
                conn, _ = sock.accept()
                assert peer_is_owner(conn)
                conn.close()
            # A second daemon on the same path is refused while the first listens.
            with pytest.raises(PluginError, match="another daemon answers there"):
                listen_unix(str(path))
        finally:
            sock.close()
        # Gone: the stale socket is replaced.
        sock2, _ = listen_unix(str(path))
        sock2.close()
        path.unlink()
        path.write_text("not a socket")
        with pytest.raises(PluginError, match="not a socket"):
            listen_unix(str(path))
        assert path.read_text() == "not a socket"


@pytest.mark.skipif(why_skip() is not None, reason=why_skip() or "")
def test_control_socket_in_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    with reachable_tmp() as d:
        (d / "open").mkdir(mode=0o777)
        os.chmod(d / "open", 0o777)
        with pytest.raises(OSError, match="writable by every user"):
            listen_unix(str(d / "open" / "control.sock"))


CONF = """[global]
control_socket="TMP/control.sock"
stack=us1:UNIXSOCK,base1:BASE,ip2str1:IP2STR,json1:JSON

[us1]
socket_path="TMP/us.sock"

[json1]
file="TMP/out.json"
"""


@pytest.mark.skipif(why_skip() is not None, reason=why_skip() or "")
def test_control_answers_status_and_metrics_and_nothing_else() -> None:
    with reachable_tmp() as d:
        ctx, _clock = fake_context()
        svc = Service(str(d / "ulogd.conf"), ctx)
        svc.load_config(parse_text(CONF.replace("TMP", str(d)), svc.config_path))
        svc.start()
        ops = Operations(svc, {})
        ops.open()
        ops.ready()
        try:
            def command(text: bytes) -> bytes:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                    c.connect(str(d / "control.sock"))
                    c.sendall(text)
                    return read_all(c, ctx)

            doc = json.loads(command(b"status\n"))
            assert doc["config"] == str(d / "ulogd.conf") and doc["pid"] == os.getpid()
            assert [s["spec"] for s in doc["stacks"]] == ["us1:UNIXSOCK,base1:BASE,ip2str1:IP2STR,json1:JSON"]
            assert doc["totals"] == {"records_in": 0, "written": 0, "lost": 0, "kernel_overruns": 0,
                                     "log_lines_lost": 0}  # fmt: skip
            text = command(b"metrics\n").decode()
            assert 'pyulogd_input_records_total{plugin="UNIXSOCK",id="us1"} 0' in text
            for bad in (b"stop\n", b"reload\n", b"status; stop\n", b"\xff\xfe\n"):
                assert "error" in json.loads(command(bad))
            assert command(b"x" * 300) == b'{"error": "request too large"}\n'
            assert ctx.stats.get("control.requests") == 2 and ctx.stats.get("control.bad_request") == 5
        finally:
            ops.close()
            svc.stop()
        assert not (d / "control.sock").exists()


def test_out_of_descriptors_pauses_accepting_instead_of_spinning() -> None:
    import resource

    ctx, clock = fake_context()
    ep = Endpoint(ctx, "metrics", listen_tcp("127.0.0.1", 0), answer, max_request=1024)
    ep.start()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    filler: list[int] = []
    try:
        c = connect(ep)
        # Use up every descriptor, so that accept() fails with EMFILE.
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
        try:
            while True:
                filler.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        listening = ep.sock.fileno()
        assert listening in ctx.loop.selector.get_map()
        ctx.loop.run_once(0.05)
        # accept() failed: the listening socket is off the loop for a second (still readable,
        # it would have the loop call accept() again and again).
        assert listening not in ctx.loop.selector.get_map()
        ctx.loop.run_once(0)
        assert listening not in ctx.loop.selector.get_map()
        for fd in filler:
            os.close(fd)
        filler.clear()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        clock.advance(1.0)
        c.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        assert read_all(c, ctx).endswith(b"m 1\n")  # accepted once the second has passed
        assert listening in ctx.loop.selector.get_map()
        c.close()
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        ep.close()


def test_a_metrics_address_in_use_refuses_the_start(tmp_path: Path) -> None:
    taken = listen_tcp("127.0.0.1", 0)
    port = taken.getsockname()[1]
    ctx, _clock = fake_context()
    svc = Service(str(tmp_path / "u.conf"), ctx)
    svc.ops.set("metrics", f"127.0.0.1:{port}", 3)
    ops = Operations(svc, {})
    try:
        with pytest.raises(PluginError, match=rf"metrics: cannot listen on 127.0.0.1:{port}: Address already in use"):
            ops.open()
    finally:
        ops.close()
        taken.close()


@pytest.mark.skipif(not socket.has_ipv6, reason="needs IPv6")
def test_metrics_on_ipv6_loopback(tmp_path: Path) -> None:
    ctx, _clock = fake_context()
    svc = Service(str(tmp_path / "u.conf"), ctx)
    svc.ops.set("metrics", "[::1]:0", 3)
    ops = Operations(svc, {})
    try:
        ops.open()
        assert ops.metrics_url is not None and ops.metrics_url.startswith("http://[::1]:")
        port = int(ops.metrics_url.rsplit(":", 1)[1].split("/")[0])
        with socket.create_connection(("::1", port), timeout=5) as c:
            c.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            got = read_all(c, ctx)
        assert got.startswith(b"HTTP/1.1 200 OK") and b"# TYPE process_start_time_seconds gauge" in got
    finally:
        ops.close()
