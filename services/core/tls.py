"""TLS for NATS beyond loopback (ADR 0010): a home CA, the server certificate, client contexts.

``openchat init`` (and ``openchat up`` when it listens beyond loopback) keeps, in
``$OPENCHAT_HOME/tls``:

- ``ca.pem`` / ``ca-key.pem``: a CA of this home server only (ECDSA P-256, 20 years). The CA
  certificate goes into every member's connection file: the desktop trusts *this* CA and no
  other (pinned), so a machine on the household network cannot pose as the home server;
- ``server.pem`` / ``server-key.pem``: the NATS server's certificate, signed by that CA, for every
  name a client dials: the public host name(s), the compose service name, ``localhost``,
  ``127.0.0.1`` and ``::1`` (the stack's own processes dial a local address). It is re-issued
  when a needed name is missing; the CA stays, so existing connection files keep working.

Private keys are written with mode 0600. Nothing here does network I/O.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.core.paths import write_atomic

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
CA_DAYS = 20 * 365
SERVER_DAYS = 10 * 365


@dataclass(frozen=True)
class TlsFiles:
    """The files of ``$OPENCHAT_HOME/tls``."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca-key.pem"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "server-key.pem"

    def ca_pem(self) -> str:
        return self.ca_cert.read_text()

    def exists(self) -> bool:
        return all(p.exists() for p in (self.ca_cert, self.ca_key, self.server_cert, self.server_key))


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_host(url: str) -> str | None:
    """The host of the first URL of a (comma-separated) NATS URL."""
    first = url.split(",", 1)[0].strip()
    if "://" not in first:
        first = "nats://" + first
    return urlsplit(first).hostname


def url_hosts(urls: str | None) -> list[str]:
    out: list[str] = []
    for part in (urls or "").split(","):
        host = url_host(part) if part.strip() else None
        if host:
            out.append(host)
    return out


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(host.lower()))
    return x509.SubjectAlternativeName(names)


def cert_hosts(cert: x509.Certificate) -> set[str]:
    """The DNS names and IP addresses a certificate is valid for."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return {n.lower() for n in san.get_values_for_type(x509.DNSName)} | ips


def _normalise(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host.lower()


def _new_ca(files: TlsFiles, now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "OpenChat home server CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    files.root.mkdir(parents=True, exist_ok=True)
    write_atomic(files.ca_key, _key_pem(key), 0o600)
    write_atomic(files.ca_cert, _cert_pem(cert), 0o644)
    return cert, key


def _new_server(
    files: TlsFiles, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, hosts: list[str], now: datetime
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_atomic(files.server_key, _key_pem(key), 0o600)
    write_atomic(files.server_cert, _cert_pem(cert), 0o644)


def ensure_certificates(
    root: Path, hosts: list[str], *, now: datetime | None = None
) -> tuple[TlsFiles, bool]:
    """The CA (created once) and a server certificate covering ``hosts`` plus the local names
    (re-issued when one is missing or it expires within 30 days). Returns the files and whether
    the server certificate was (re)issued."""
    now = now or datetime.now(UTC)
    files = TlsFiles(root)
    wanted: list[str] = []
    for host in [*hosts, *LOCAL_NAMES]:
        norm = _normalise(host)
        if norm and norm not in wanted:
            wanted.append(norm)
    if files.ca_cert.exists() and files.ca_key.exists():
        ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        loaded = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{files.ca_key} is not an EC private key")
        ca_key = loaded
    else:
        ca, ca_key = _new_ca(files, now)
    if files.server_cert.exists() and files.server_key.exists():
        current = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
        fresh = current.not_valid_after_utc > now + timedelta(days=30)
        same_ca = current.issuer == ca.subject
        if fresh and same_ca and set(wanted) <= cert_hosts(current):
            return files, False
    _new_server(files, ca, ca_key, wanted, now)
    return files, True


def client_context(ca_pem: str) -> ssl.SSLContext:
    """A client context that trusts exactly ``ca_pem`` (the home's CA), checks the host name,
    and speaks TLS 1.2 or newer."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def render_nats_tls_block(files: TlsFiles, timeout_s: float = 5.0) -> str:
    """The ``tls {}`` block of a nats-server config: TLS required, handshake first (the very
    first byte on the port is TLS; no plaintext INFO)."""
    return "\n".join(
        [
            "tls {",
            f"  cert_file: {_q(files.server_cert)}",
            f"  key_file: {_q(files.server_key)}",
            "  handshake_first: true",
            f"  timeout: {timeout_s:g}",
            "}",
        ]
    )


def _q(path: Path) -> str:
    import json

    return json.dumps(str(path))
