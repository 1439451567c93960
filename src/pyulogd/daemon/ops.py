"""What the daemon offers its operators besides logging: systemd notify, metrics, status.

* ``[global] metrics="127.0.0.1:9317"`` (off by default): the counters in Prometheus'
  text format at ``http://HOST:PORT/metrics`` (daemon/metrics.py, daemon/endpoints.py).
  Only on a loopback address unless ``metrics_allow_remote=1``: the endpoint has no
  authentication and no TLS, and what it tells (namespace names, rates) is for the host's
  own scraper or a local proxy.
* ``[global] control_socket="/run/pyulogd/control.sock"``: a unix socket, mode 0600, in a
  root's directory, answering ``status`` (stacks, followed namespaces, counters, as JSON)
  and ``metrics`` to ``pyulogdctl`` (ctl/status.py). Read-only: no command changes
  anything. Unset, it is ``$RUNTIME_DIRECTORY/control.sock`` when systemd gives the
  service a runtime directory (``RuntimeDirectory=pyulogd``), else off;
  ``control_socket=""`` turns it off.
* systemd notify (daemon/notify.py) when ``NOTIFY_SOCKET`` is set.

Everything here is read at start, listens before ``-u`` drops root (a port below 1024, a
socket in /run), and afterwards only reads what the daemon keeps anyway.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyulogd import __version__
from pyulogd.core import safefile
from pyulogd.core.errors import ConfigError, PluginError
from pyulogd.daemon import metrics
from pyulogd.daemon.endpoints import BUSY, TOO_BIG, Endpoint, http_answer, listen_tcp, listen_unix, peer_is_owner
from pyulogd.daemon.notify import Notifier
from pyulogd.io.output import Output
from pyulogd.netns.source import NetnsSource

if TYPE_CHECKING:
    from pyulogd.daemon.service import Service

OPS_KEYS = ("metrics", "metrics_allow_remote", "control_socket")
CONTROL_NAME = "control.sock"
# Where pyulogdctl looks when told nothing (RuntimeDirectory=pyulogd).
DEFAULT_CONTROL = "/run/pyulogd/" + CONTROL_NAME
# A rendered scrape is reused this long: many scrapers cost one rendering per second.
RENDER_CACHE = 1.0
MAX_HTTP_REQUEST = 8192
MAX_CONTROL_REQUEST = 256


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` with an IP address (IPv6 in brackets: ``[::1]:9317``) or ``localhost``;
    ValueError with the reason."""
    t = text.strip()
    if t.startswith("["):
        host, sep, port = t[1:].partition("]:")
        if not sep:
            raise ValueError(f"'{text}' is not [IPv6 address]:port")
    else:
        host, sep, port = t.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"'{text}' is not host:port (an IPv6 address goes in brackets: [::1]:9317)")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"'{host}' is not an IP address (or localhost)") from None
    if t.startswith("[") and addr.version != 6:
        raise ValueError(f"'{host}' in brackets is not an IPv6 address")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"'{port}' is not a port (0..65535; 0: any free port, logged at start)")
    return str(addr), int(port)


def is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


@dataclass
class OpsSettings:
    """The [global] keys of this module, as read from the config."""

    metrics: tuple[str, int] | None = None
    metrics_allow_remote: bool = False
    control_socket: str | None = None  # the value given; None: not given
    lines: dict[str, int] = field(default_factory=dict)

    def set(self, key: str, value: str, line: int) -> None:
        """One [global] line; ValueError with the reason."""
        self.lines[key] = line
        if key == "metrics":
            self.metrics = parse_listen(value)
        elif key == "metrics_allow_remote":
            if value not in ("0", "1"):
                raise ValueError(f"needs 0 or 1, not '{value}'")
            self.metrics_allow_remote = value == "1"
        elif key == "control_socket":
            if value and not value.startswith("/"):
                raise ValueError(f"'{value}' is not an absolute path")
            if "\0" in value:
                raise ValueError("a path cannot contain a NUL byte")
            self.control_socket = value

    def check(self, path: str) -> None:
        """What only the keys together tell (ConfigError with the line)."""
        if self.metrics is not None and not self.metrics_allow_remote and not is_loopback(self.metrics[0]):
            raise ConfigError(
                f"metrics: {self.metrics[0]} is not a loopback address; the endpoint has no authentication "
                "and no TLS: set metrics_allow_remote=1 to serve it there anyway", path, self.lines.get("metrics"))

    def control_path(self, environ: Mapping[str, str]) -> str | None:
        """The control socket's path, or None (off)."""
        if self.control_socket is not None:
            return self.control_socket or None
        runtime = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
        return os.path.join(runtime, CONTROL_NAME) if runtime.startswith("/") else None


def check_log_destination(value: str, run_as: safefile.RunAs | None) -> str | None:
    """Why ``logfile=value`` could not be opened, found without opening it (None: fine)."""
    if value in ("syslog", "stdout"):
        return None
    if "\0" in value:
        return "a path cannot contain a NUL byte"
    try:
        safefile.check_append(value, run_as)
    except OSError as e:
        return str(e.strerror or e)
    return None


def check_control_path(path: str) -> str | None:
    """Why the control socket could not be made at ``path`` (None: fine), without making it."""
    head = os.path.dirname(path) or "."
    try:
        if os.path.isdir(head):
            os.close(safefile.open_dir(head, None))
        else:
            os.close(safefile.open_dir(os.path.dirname(head) or ".", None))
    except OSError as e:
        return str(e.strerror or e)
    return None


class Operations:
    """The notifier, the metrics endpoint and the control socket of one running daemon."""

    def __init__(self, service: Service, environ: Mapping[str, str]) -> None:
        self.service = service
        self.ctx = service.ctx
        self.environ = environ
        self.collector = metrics.Collector(self.ctx, service.started, service.journal)
        self.notifier: Notifier | None = None
        self.endpoints: list[Endpoint] = []
        self.metrics_url: str | None = None
        self.control_path: str | None = None
        self._control_ident: tuple[int, int] | None = None
        self._rendered: tuple[float, bytes] | None = None

    def open(self) -> None:
        """Listen (before -u drops root); PluginError when an address cannot be used."""
        settings = self.service.ops
        if settings.metrics is not None:
            host, port = settings.metrics
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            try:
                sock = listen_tcp(host, port)
            except OSError as e:
                raise PluginError(f"metrics: cannot listen on {shown}: {e.strerror or e}") from None
            port = sock.getsockname()[1]
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            self.metrics_url = f"http://{shown}/metrics"
            routes = {b"/metrics": (metrics.CONTENT_TYPE, self.metrics_text),
                      b"/": ("text/plain; charset=utf-8", lambda: b"pyulogd: metrics at /metrics\n")}  # fmt: skip
            self.endpoints.append(Endpoint(
                self.ctx, "metrics", sock, lambda req: http_answer(req, routes),
                max_request=MAX_HTTP_REQUEST, busy=BUSY, too_big=TOO_BIG))  # fmt: skip
            self.ctx.log.notice(f"metrics: serving {self.metrics_url}")
        path = settings.control_path(self.environ)
        if path:
            try:
                usock, self._control_ident = listen_unix(path)
            except OSError as e:
                raise PluginError(f"control socket '{path}': {e.strerror or e}") from None
            self.control_path = path
            self.endpoints.append(Endpoint(
                self.ctx, "control", usock, self.control_answer, max_request=MAX_CONTROL_REQUEST,
                max_clients=8, too_big=b'{"error": "request too large"}\n', peer_ok=peer_is_owner))  # fmt: skip
            self.ctx.log.notice(f"control socket: {path} (pyulogdctl status)")
        for ep in self.endpoints:
            ep.start()

    def ready(self) -> None:
        """Everything started: arm the timers, tell systemd. A daemon that serves nothing of
        this (no endpoint, no NOTIFY_SOCKET) gets no timer either."""
        self.notifier = Notifier.from_environ(self.ctx, self.environ)
        if self.endpoints or self.notifier is not None:
            self.collector.start()
        if self.notifier is not None:
            self.notifier.ready(self.status_line())
            self.notifier.start_timers(self.status_line)
            if self.notifier.watchdog is not None:
                self.ctx.log.info(f"systemd watchdog: pinging every {self.notifier.watchdog:g} s")

    def stopping(self) -> None:
        if self.notifier is not None:
            self.notifier.stopping()

    def close(self) -> None:
        self.collector.stop()
        if self.notifier is not None:
            self.notifier.close()
        for ep in self.endpoints:
            ep.close()
        self.endpoints.clear()
        if self.control_path and self._control_ident is not None:
            try:
                st = os.lstat(self.control_path)
                if (st.st_dev, st.st_ino) == self._control_ident:
                    os.unlink(self.control_path)
            except OSError:
                pass  # after -u the user may not remove it: the next start replaces it

    # -- what is served

    def namespaces(self) -> int:
        return sum(len(i.children or ()) for i in self.service.started if isinstance(i, NetnsSource))

    def status_line(self) -> str:
        return metrics.status_line(self.collector.collect(), self.namespaces())

    def metrics_text(self) -> bytes:
        """The answer to ``GET /metrics``."""
        self.ctx.stats.incr("metrics.requests")
        return self.rendered()

    def rendered(self) -> bytes:
        """The exposition text, rendered at most once per :data:`RENDER_CACHE` seconds (about
        30 ms of CPU for a daemon following 1000 namespaces), however many ask."""
        now = self.ctx.clock.monotonic()
        if self._rendered is None or now - self._rendered[0] >= RENDER_CACHE:
            self._rendered = (now, metrics.render(self.collector.collect()).encode("utf-8"))
        return self._rendered[1]

    def control_answer(self, request: bytes) -> bytes | None:
        """One command per connection, on one line: ``status`` (JSON) or ``metrics`` (text).
        Nothing here changes the daemon."""
        end = request.find(b"\n")
        if end < 0:
            return None
        command = request[:end].strip().decode("ascii", "replace")
        if command == "status":
            self.ctx.stats.incr("control.requests")
            return (json.dumps(self.status_document(), sort_keys=True) + "\n").encode("utf-8")
        if command == "metrics":
            self.ctx.stats.incr("control.requests")
            return self.rendered()
        self.ctx.stats.incr("control.bad_request")
        return (json.dumps({"error": "unknown command (valid: status, metrics)"}) + "\n").encode("utf-8")

    def status_document(self) -> dict[str, Any]:
        """The running daemon for a person at a terminal (pyulogdctl status formats it)."""
        svc, clock = self.service, self.ctx.clock
        col = self.collector.collect()
        stacks = []
        for stack in svc.stacks:
            stacks.append({
                "line": stack.line, "spec": stack.spec, "fused": stack.fused_by is not None,
                "plugins": [{"id": i.id, "plugin": i.name} for i in stack.instances],
            })  # fmt: skip
        inputs = []
        for inst in svc.started:
            if not isinstance(inst, NetnsSource):
                continue
            entry: dict[str, Any] = {"id": inst.id, "plugin": inst.name}
            if inst.follows:
                entry.update(netns=str(inst.config.get("netns", "")), netns_dir=str(inst.config.get("netns_dir", "")),
                             namespaces=sorted(inst.children or ()))  # fmt: skip
            elif inst.config.get("network_namespace_path"):
                entry["network_namespace_path"] = str(inst.config["network_namespace_path"])
            inputs.append(entry)
        return {
            "version": __version__,
            "pid": os.getpid(),
            "config": svc.config_path,
            "started": round(self.collector.start_wall, 3),
            "started_text": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(self.collector.start_wall)),
            "uptime_seconds": round(clock.wall() - self.collector.start_wall, 3),
            "metrics_url": self.metrics_url,
            "watchdog_seconds": self.notifier.watchdog if self.notifier is not None else None,
            "stacks": stacks,
            "inputs": inputs,
            "totals": {
                "records_in": int(col.total("pyulogd_input_records_total")),
                "written": int(col.total("pyulogd_output_written_total")),
                "lost": int(col.lost()),
                "kernel_overruns": int(col.total("pyulogd_kernel_overruns_total")),
                "log_lines_lost": int(col.total("pyulogd_log_lines_lost_total")),
            },
            "counters": self.ctx.stats.snapshot(),
            # What each output did with its records: received, written, dropped.<cause>.
            "outputs": [{"id": sink.id, "plugin": sink.name, **sink.counters.snapshot()}
                        for sink in svc.sinks if isinstance(sink, Output)],
        }
