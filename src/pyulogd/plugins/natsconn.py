"""What the NATS output and the NATSIN input share: the connection options and nats-py.

nats-py (``pip install 'pyulogd[nats]'``) is imported here, lazily, and only the two NATS
plugins import this module; no other part of pyulogd knows NATS. Connection options:
``servers`` (several, comma-separated, for a cluster: the client moves to another one when
its server goes away), credentials (``user`` with ``pass``/``pass_file``/``pass_env``, an
NKey seed file, or a ``.creds`` file), TLS (``tls_ca``; ``tls_cert`` and ``tls_key`` for a
client certificate, the key in ``tls_cert`` when ``tls_key`` is empty; ``tls_server_name`` to
check another name): the names the stream outputs use for the same files (io/tls.py).
"""

from __future__ import annotations

import asyncio
import importlib
import ssl
from typing import Any

from pyulogd.core.errors import ConfigError
from pyulogd.core.options import Duration, Path, Str
from pyulogd.core.plugin import Option
from pyulogd.db.options import SECRETS, password

MISSING = "the NATS plugins need nats-py: pip install 'pyulogd[nats]'"

CONNECTION = (
    Option("servers", Str(), "nats://127.0.0.1:4222", extra=True,
           help="server URLs, comma-separated (several for a cluster)"),
    Option("user", Str(), "", extra=True, help="user name (password from pass, pass_file or pass_env)"),
    Option("pass", Str(), "", extra=True, help="password"),
    *SECRETS,
    Option("nkey_seed_file", Path(), "", extra=True, help="NKey seed file (per-node credentials)"),
    Option("creds_file", Path(), "", extra=True, help="NATS credentials file (JWT and NKey seed)"),
    Option("tls_ca", Path(), "", extra=True, help="CA certificates that sign the servers' certificates (TLS)"),
    Option("tls_cert", Path(), "", extra=True, help="client certificate (TLS)"),
    Option("tls_key", Path(), "", extra=True, help="client certificate's key (TLS; empty: in tls_cert)"),
    Option("tls_server_name", Str(), "", extra=True, help="the name the server certificate must carry"),
    Option("connect_timeout", Duration(positive=True), "2", extra=True, help="seconds a connection attempt may take"),
    Option("stream", Str(), "PYULOGD", extra=True, help="JetStream stream name"),
)


def nats_modules() -> tuple[Any, Any, Any]:
    """(nats, nats.js.api, nats.js.errors); ConfigError when nats-py is not installed."""
    try:
        return (importlib.import_module("nats"), importlib.import_module("nats.js.api"),
                importlib.import_module("nats.js.errors"))
    except ImportError:
        raise ConfigError(MISSING) from None


def servers(config: dict[str, Any], label: str) -> list[str]:
    found = [s.strip() for s in config["servers"].split(",") if s.strip()]
    if not found:
        raise ConfigError(f"{label}: servers: give at least one server URL")
    for s in found:
        if "://" not in s:
            raise ConfigError(f"{label}: servers: '{s}' is not a URL (nats://HOST:PORT, tls://HOST:PORT)")
    return found


def connect_options(config: dict[str, Any], label: str) -> dict[str, Any]:
    """The keyword arguments of ``nats.connect`` from the plugin's options (read at configure:
    secrets as root, before -u; a bad combination is a ConfigError)."""
    kw: dict[str, Any] = {
        "servers": servers(config, label),
        "connect_timeout": max(1, int(config["connect_timeout"] + 0.999)),
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "name": f"pyulogd {label}",
    }
    creds = [n for n in ("user", "nkey_seed_file", "creds_file") if config.get(n)]
    if len(creds) > 1:
        raise ConfigError(f"{label}: give only one of {', '.join(creds)}")
    if config.get("user"):
        kw["user"] = config["user"]
        kw["password"] = password(config, label)
    elif config.get("pass") or config.get("pass_file") or config.get("pass_env"):
        raise ConfigError(f"{label}: a password needs a user")
    for opt, arg in (("nkey_seed_file", "nkeys_seed"), ("creds_file", "user_credentials")):
        path = config.get(opt)
        if path:
            try:
                with open(path, "rb"):
                    pass
            except OSError as e:
                raise ConfigError(f"{label}: cannot read {opt} '{path}': {e.strerror}") from None
            kw[arg] = path
    ca, cert, key = config.get("tls_ca"), config.get("tls_cert"), config.get("tls_key")
    if key and not cert:
        raise ConfigError(f"{label}: tls_key needs tls_cert")
    if ca or cert:
        try:
            tls = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca or None)
            if cert:
                tls.load_cert_chain(cert, key or None)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"{label}: TLS files: {e}") from None
        kw["tls"] = tls
        if config.get("tls_server_name"):
            kw["tls_hostname"] = config["tls_server_name"]
    return kw


async def _quiet(*_args: Any) -> None:
    """nats-py's callbacks: the plugins log outages themselves, once per outage (its default
    prints a traceback for every failed reconnection attempt)."""


async def connect(kw: dict[str, Any]) -> Any:
    """A connected nats-py client (raises what nats-py raises, TimeoutError when no server
    answered). With ``max_reconnect_attempts=-1`` (reconnect for ever once connected) nats-py's
    first connection also tries for ever, so it is bounded here: one ``connect_timeout`` per
    server, and the caller backs off and spools meanwhile."""
    nats, _api, _errors = nats_modules()
    bound = kw["connect_timeout"] * len(kw["servers"]) + 1.0
    return await asyncio.wait_for(
        nats.connect(error_cb=_quiet, disconnected_cb=_quiet, reconnected_cb=_quiet, closed_cb=_quiet, **kw), bound)
