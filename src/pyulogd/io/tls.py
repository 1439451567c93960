"""TLS for the stream outputs whose peer may be on another machine (JSON over tcp, SYSLOG over
tcp as RFC 5425): the options they share, declared once, and the client context they make.

An output declares ``*tls_options()`` and calls :func:`tls_settings` at ``configure()``; the
reliable sender (``io/sender.py``) wraps each new connection, handshakes without blocking
the loop, and only then sends. What each option means:

* ``tls`` (0/1): on or off (off by default: ulogd2 has no TLS, and a config that worked
  keeps working). The other ``tls_*`` options are refused while it is off, so a forgotten
  ``tls=1`` is a configuration error instead of records sent in clear text.
* ``tls_ca``: the PEM file of the certificate authorities the peer's certificate must chain
  to; empty: the system's (``/etc/ssl/certs``).
* ``tls_cert`` and ``tls_key``: the client certificate and its key (PEM), for a peer that
  asks for one (rsyslog ``x509/certvalid``, ``x509/name``); the key may be in the
  certificate's file.
* ``tls_server_name``: the name the peer's certificate must carry (and the SNI sent); empty:
  ``host``. An address as ``host`` is checked against the certificate's IP addresses.
* ``tls_verify`` (1): check the chain and the name. 0 encrypts without knowing who reads
  (for tests and labs only; logged as a warning at start).

Files are read once, at start, as root (before ``-u``): the key can stay readable by root
only, and a reconnect never reads a file. A failed handshake (an untrusted chain, a wrong
name, a peer that does not speak TLS) is a failed connection attempt: counted in
``<output>.<id>.tls_failures``, logged (the first of a run as an error), retried with the
back-off; the records wait in the queue or the spool and nothing is lost.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from pyulogd.core.errors import ConfigError
from pyulogd.core.options import Bool, Path, Str
from pyulogd.core.plugin import Option

__all__ = ["TLS_RECORD", "TlsSettings", "tls_options", "tls_settings"]

# Largest plaintext of one TLS record: a send never hands OpenSSL more, so that a send that
# must be retried is retried with the same bytes (OpenSSL requires it).
TLS_RECORD = 16 * 1024


def _pem_file(marker: str, what: str) -> Any:
    """A check for a PEM file option: readable now, and holding ``marker``."""

    def check(path: str) -> str | None:
        if not path:
            return None
        try:
            with open(path, "rb") as f:
                data = f.read(1 << 20)
        except OSError as e:
            return f"cannot read {what} '{path}': {e.strerror}"
        if marker.encode() not in data:
            return f"'{path}' holds no {what} (no PEM '{marker}')"
        return None

    return check


def tls_options() -> tuple[Option, ...]:
    """The options of every output that can speak TLS (pyulogd extras)."""
    return (
        Option("tls", Bool(), 0, extra=True, help="pyulogd extra: 1 sends over TLS (tcp only; SYSLOG: RFC 5425)"),
        Option("tls_ca", Path(), "", extra=True, check=_pem_file("-----BEGIN CERTIFICATE-----", "CA certificate"),
               help="pyulogd extra: PEM file of the CAs the peer's certificate must chain to (empty: the system's)"),
        Option("tls_cert", Path(), "", extra=True, check=_pem_file("-----BEGIN CERTIFICATE-----", "certificate"),
               help="pyulogd extra: PEM file of the client certificate, for a peer that asks for one"),
        Option("tls_key", Path(), "", extra=True, check=_pem_file("PRIVATE KEY-----", "private key"),
               help="pyulogd extra: PEM file of the client certificate's key (empty: in tls_cert)"),
        Option("tls_server_name", Str(), "", extra=True,
               help="pyulogd extra: the name the peer's certificate must carry (empty: host)"),
        Option("tls_verify", Bool(), 1, extra=True,
               help="pyulogd extra: check the peer's certificate chain and name (0: encrypt only, for tests)"),
    )


@dataclass(frozen=True)
class TlsSettings:
    """What the sender needs for each connection: the client context and the name to check."""

    context: ssl.SSLContext
    server_name: str | None
    verify: bool


def tls_settings(config: dict[str, Any], host: str, *, stream: bool) -> TlsSettings | None:
    """The TLS settings of an output's typed ``config`` (None: TLS off). ``stream``: whether
    the output's transport is a tcp stream. Raises ConfigError with the reason."""
    names = ("tls_ca", "tls_cert", "tls_key", "tls_server_name")
    if not config["tls"]:
        given = [n for n in names if config[n]] + ([] if config["tls_verify"] else ["tls_verify"])
        if given:
            raise ConfigError(f"option '{given[0]}' needs tls=1 (TLS is off: records would go in clear text)")
        return None
    if not stream or not host:
        raise ConfigError("tls=1 needs a tcp peer (host and a tcp transport)")
    cert, key = config["tls_cert"], config["tls_key"]
    if key and not cert:
        raise ConfigError("option 'tls_key' needs 'tls_cert' (the certificate the key belongs to)")
    verify = bool(config["tls_verify"])
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if config["tls_ca"]:
            ctx.load_verify_locations(cafile=config["tls_ca"])
        if cert:
            ctx.load_cert_chain(cert, key or None)
    except ssl.SSLError as e:
        what = "tls_cert/tls_key" if cert else "tls_ca"
        raise ConfigError(f"{what}: {e.reason or e}") from None
    except OSError as e:
        raise ConfigError(f"TLS files: {e.strerror or e}") from None
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    name = config["tls_server_name"] or host
    return TlsSettings(ctx, name, verify)

