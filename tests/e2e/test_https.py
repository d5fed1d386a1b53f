"""HTTPS end to end: `mymcpctl serve --tls` and the official MCP Python SDK over TLS, the
printed fingerprint, and a certificate reload on SIGHUP that keeps an open connection."""

import datetime
import hashlib
import ipaddress
import os
import signal
import ssl
import urllib.parse

import anyio
import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from conftest import start_server, stop_server, tool_json, wait_until


@pytest.fixture(scope="module")
def tls_server():
    s = start_server(args=("--tls",))
    yield s
    stop_server(s)


def fingerprint(der: bytes) -> str:
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def served_cert(url: str, cafile: str | None = None) -> bytes:
    """The DER certificate a fresh TLS connection gets (verified against `cafile` if given)."""
    u = urllib.parse.urlsplit(url)
    if cafile:
        ctx = ssl.create_default_context(cafile=cafile)
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    import socket

    with socket.create_connection((u.hostname, u.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=u.hostname) as tls:
            return tls.getpeercert(binary_form=True)


def test_the_printed_fingerprint_is_the_served_certificate(tls_server):
    assert tls_server.url.startswith("https://127.0.0.1:")
    assert tls_server.cert and os.path.isfile(tls_server.cert)
    der = served_cert(tls_server.url, tls_server.cert)
    assert fingerprint(der) == tls_server.fingerprint
    pem = open(tls_server.cert).read()
    assert ssl.DER_cert_to_PEM_cert(der).strip() == pem.strip()


def test_mcp_sdk_over_https_trusting_the_certificate(tls_server):
    ctx = ssl.create_default_context(cafile=tls_server.cert)

    async def run():
        headers = {"Authorization": f"Bearer {tls_server.rw_token}"}
        timeout = httpx2.Timeout(30, read=300)
        async with httpx2.AsyncClient(headers=headers, verify=ctx, timeout=timeout) as http:
            async with streamable_http_client(tls_server.url, http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    tools = {t.name for t in (await session.list_tools()).tools}
                    assert "bash_execute" in tools
                    r = await session.call_tool("bash_execute", {"command": "echo over-tls"})
                    return tool_json(r)

    assert anyio.run(run)["stdout"] == "over-tls\n"


def test_a_client_that_does_not_trust_the_certificate_is_refused(tls_server):
    with pytest.raises(httpx2.ConnectError):
        with httpx2.Client() as http:  # the system's CAs only
            http.get(tls_server.url.rsplit("/mcp", 1)[0] + "/health")


def new_certificate(path_cert: str, path_key: str) -> bytes:
    """Writes a fresh self-signed certificate for the loopback names over the files (in place,
    so their owner and mode stay); returns its DER form."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mymcp e2e renewed")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    with open(path_key, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(path_cert, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return cert.public_bytes(serialization.Encoding.DER)


def test_sighup_reloads_the_certificate_and_keeps_the_open_connection(tmp_path):
    s = start_server(args=("--tls",))
    try:
        old_ca = str(tmp_path / "old.pem")
        with open(s.cert) as src, open(old_ca, "w") as dst:
            dst.write(src.read())
        health = s.url.rsplit("/mcp", 1)[0] + "/health"
        seen = []
        with httpx2.Client(verify=ssl.create_default_context(cafile=old_ca)) as http:

            def get():
                r = http.get(health)
                assert r.status_code == 200, r.text
                stream = r.extensions["network_stream"]
                seen.append(stream)
                return stream.get_extra_info("ssl_object").getpeercert(True)

            before = get()
            assert fingerprint(before) == s.fingerprint

            renewed = new_certificate(s.cert, os.path.join(os.path.dirname(s.cert), "key.pem"))
            frontend = [pid for pid, comm in s.children().items() if comm == "mymcp-frontend"]
            assert len(frontend) == 1, s.children()
            os.kill(frontend[0], signal.SIGHUP)
            assert wait_until(lambda: any("certificate reloaded" in l for l in s.log), 10), s.log
            assert any(fingerprint(renewed) in l for l in s.log if "certificate reloaded" in l)

            # The open connection goes on, with the session (and certificate) it had.
            after = get()
            assert seen[0] is seen[1], "the keep-alive connection was not reused"
            assert after == before

        # New connections get the renewed certificate; the old one is no longer served.
        assert served_cert(s.url, s.cert) == renewed
        with pytest.raises(ssl.SSLCertVerificationError):
            served_cert(s.url, old_ca)
        assert s.proc.poll() is None
    finally:
        stop_server(s)
