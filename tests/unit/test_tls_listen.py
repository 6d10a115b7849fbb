"""TLS files of the home (CA, server certificate), where ``openchat up`` listens, and the
reasons a connection failed (issue 11, ADR 0010)."""

from __future__ import annotations

import asyncio
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from services.cli.listen import plan
from services.core.connection import classify
from services.core.settings import Settings
from services.core.tls import cert_hosts, client_context, ensure_certificates, render_nats_tls_block


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_ca_and_server_certificate(tmp_path: Path) -> None:
    files, issued = ensure_certificates(tmp_path / "tls", ["homeserver.lan", "192.168.1.20"])
    assert issued
    server = _cert(files.server_cert)
    assert {"homeserver.lan", "192.168.1.20", "localhost", "127.0.0.1", "::1"} <= cert_hosts(server)
    assert server.issuer == _cert(files.ca_cert).subject
    for key in (files.ca_key, files.server_key):
        assert key.stat().st_mode & 0o077 == 0
    # the client context trusts exactly this CA
    ctx = client_context(files.ca_pem())
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert len(ctx.get_ca_certs()) == 1

    # idempotent; a new host name re-issues the server certificate with the SAME CA
    ca_before = files.ca_cert.read_bytes()
    assert ensure_certificates(tmp_path / "tls", ["homeserver.lan"])[1] is False
    _, issued = ensure_certificates(tmp_path / "tls", ["homeserver.lan", "nas.local"])
    assert issued and "nas.local" in cert_hosts(_cert(files.server_cert))
    assert files.ca_cert.read_bytes() == ca_before
    # close to expiry: re-issued
    later = datetime.now(UTC) + timedelta(days=10 * 365)
    assert ensure_certificates(tmp_path / "tls", ["homeserver.lan", "nas.local"], now=later)[1] is True
    block = render_nats_tls_block(files)
    assert "handshake_first: true" in block and str(files.server_key) in block


def _settings(**kw: str) -> Settings:
    return Settings(**kw)  # type: ignore[arg-type]


def test_listen_plan() -> None:
    default = plan(_settings())
    assert (default.host, default.tls, default.local_url(4222)) == (
        "127.0.0.1",
        False,
        "nats://127.0.0.1:4222",
    )
    public = plan(_settings(public_nats_url="nats://127.0.0.2:5000"))
    assert (public.host, public.port, public.tls) == ("127.0.0.2", 5000, False)
    tls = plan(_settings(public_nats_url="tls://127.0.0.2:5000"))
    assert tls.tls and tls.local_url(5000) == "tls://127.0.0.2:5000"
    lan = plan(_settings(public_nats_url="tls://homeserver.invalid:4222", nats_listen="0.0.0.0"))
    assert lan.host == "0.0.0.0" and lan.tls and lan.local_url(4222) == "tls://127.0.0.1:4222"
    # a plain public URL naming another machine still gets TLS (beyond loopback)
    assert plan(_settings(public_nats_url="nats://192.0.2.7:4222", nats_listen="0.0.0.0")).tls
    from services.cli.listen import ListenError

    with pytest.raises(ListenError, match="OPENCHAT_NATS_LISTEN"):
        plan(_settings(public_nats_url="tls://homeserver.invalid:4222"))


def test_classify_connect_errors(tmp_path: Path) -> None:
    assert classify(ConnectionRefusedError(111, "refused")) == "unreachable"
    assert classify(Exception("nats: 'Authorization Violation'")) == "revoked"
    # a real certificate verification failure: a TLS server with one CA, a client with another
    server_files, _ = ensure_certificates(tmp_path / "a", ["localhost"])
    other, _ = ensure_certificates(tmp_path / "b", ["localhost"])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server_files.server_cert, server_files.server_key)

    async def attempt() -> BaseException:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        srv = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
        port = srv.sockets[0].getsockname()[1]
        try:
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_context(other.ca_pem()), server_hostname="localhost"
            )
        except Exception as exc:
            return exc
        finally:
            srv.close()
        raise AssertionError("a client with another CA was accepted")

    assert classify(asyncio.run(attempt())) == "certificate"
