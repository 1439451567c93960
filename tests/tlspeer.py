"""Certificates and a TLS peer for the tests of the network outputs' TLS (io/tls.py).

:func:`make_pki` writes a throw-away CA, a server certificate for given names (DNS names and
IP addresses) and a client certificate, with the ``cryptography`` package; a second,
unrelated CA stands for "a CA we do not trust". :class:`TlsLineServer` is a TLS listener on
loopback (Python's ssl module) that keeps every byte it reads, optionally asking for a client
certificate signed by the CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Pki:
    ca: Path  # the CA's certificate (PEM)
    other_ca: Path  # a CA that signed nothing here
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))  # fmt: skip
    path.chmod(0o600)


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))  # fmt: skip
    return cert, key


def _leaf(cn: str, names: list[str], ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
          usage: x509.ObjectIdentifier) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:  # fmt: skip
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if alt:
        b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return b.sign(ca_key, hashes.SHA256()), key


def make_pki(d: Path, server_names: list[str]) -> Pki:
    """A CA, a server certificate for ``server_names``, a client certificate, another CA."""
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca("pyulogd test CA")
    other, _ = _ca("someone else's CA")
    server, server_key = _leaf(server_names[0], server_names, ca, ca_key, ExtendedKeyUsageOID.SERVER_AUTH)
    client, client_key = _leaf("pyulogd-client", ["pyulogd-client"], ca, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH)
    pem = serialization.Encoding.PEM
    p = Pki(d / "ca.pem", d / "other-ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")
    p.ca.write_bytes(ca.public_bytes(pem))
    p.other_ca.write_bytes(other.public_bytes(pem))
    p.server_cert.write_bytes(server.public_bytes(pem))
    p.client_cert.write_bytes(client.public_bytes(pem))
    _write_key(p.server_key, server_key)
    _write_key(p.client_key, client_key)
    return p


class TlsLineServer(threading.Thread):
    """A TLS listener on 127.0.0.1 (an ephemeral port) that keeps what it reads. With
    ``client_ca`` it requires a client certificate signed by that CA. Handshakes that fail
    are counted in ``failed``; ``peers`` holds the client certificates' subjects."""

    def __init__(self, pki: Pki, client_ca: Path | None = None) -> None:
        super().__init__(daemon=True)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.server_cert, pki.server_key)
        if client_ca is not None:
            ctx.load_verify_locations(cafile=str(client_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx = ctx
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.server.settimeout(0.1)
        self.port: int = self.server.getsockname()[1]
        self.data = b""  # what every connection brought, one after the other
        self.connections = 0
        self.failed = 0
        self.peers: list[str] = []
        self.stopped = False
        self.lock = threading.Lock()
        self.conn: ssl.SSLSocket | None = None

    def run(self) -> None:
        while not self.stopped:
            try:
                raw, _ = self.server.accept()
            except TimeoutError:
                continue
            raw.settimeout(5)
            try:
                conn = self.ctx.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                self.failed += 1
                raw.close()
                continue
            cert = conn.getpeercert()
            if cert:
                self.peers.append(dict(x[0] for x in cert["subject"])["commonName"])
            self.connections += 1
            conn.settimeout(None)  # close() shuts the connection down to end the read
            self.conn = conn
            with conn:
                while not self.stopped:
                    try:
                        chunk = conn.recv(65536)
                    except (ssl.SSLError, OSError):
                        break
                    if not chunk:
                        break
                    with self.lock:
                        self.data += chunk

    def lines(self) -> list[bytes]:
        with self.lock:
            return self.data.splitlines()

    def close(self) -> None:
        self.stopped = True
        if self.conn is not None:
            try:
                self.conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.join(5)
        self.server.close()
