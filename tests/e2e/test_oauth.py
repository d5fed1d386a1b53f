"""OAuth 2.1 through the real binaries (`mymcpctl serve` with MYMCP_OAUTH_ENABLED=true, which
serves it under its own URL): a client registers, a person approves it on the host with the code
its consent page shows, the client exchanges the code and calls tools acting as the approved
Unix account; what the host person does (`mymcpctl oauth …`) takes effect at once.

One client is the official MCP Python SDK's `OAuthClientProvider` (discovery from the 401,
registration by RFC 7591, PKCE, the token exchange and the `iss` check are all the SDK's); the
others speak HTTP as those clients do, to reach the refusals. The person's browser is plain HTTP
here: the page needs no script (its continuation is a meta refresh)."""

import base64
import hashlib
import http.client
import json
import os
import re
import subprocess
import urllib.parse
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata, OAuthToken

from conftest import (make_account, pids_with_cmdline, remove_account, shadow, start_server,
                      stop_server, tool_json, wait_until)

REDIRECT = "http://127.0.0.1:9/cb"


@pytest.fixture(scope="module")
def carol():
    a = make_account("oc")
    yield a
    remove_account(a)


@pytest.fixture(scope="module")
def oauth_server():
    s = start_server({"MYMCP_OAUTH_ENABLED": "true"})
    s.base = s.url.rsplit("/mcp", 1)[0]
    s.port = urllib.parse.urlparse(s.base).port
    yield s
    stop_server(s)


def request(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()


def mcp(port, token, payload):
    return request(port, "POST", "/mcp", json.dumps(payload), {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-06-18",
        "Authorization": f"Bearer {token}",
    })


def whoami(port, token):
    status, _, body = mcp(port, token, {
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "bash_execute", "arguments": {"command": "id -un"}}})
    return status, (json.loads(body)["result"]["structuredContent"]["stdout"].strip()
                    if status == 200 else None)


def form(port, path, fields):
    status, headers, body = request(port, "POST", path, urllib.parse.urlencode(fields),
                                    {"Content-Type": "application/x-www-form-urlencoded"})
    return status, headers, json.loads(body) if body else None


class Browser:
    """What a person's browser does with an authorization URL: follows it to the consent page
    (keeping its cookie), reads the approval code, and reloads until the page sends it on."""

    def __init__(self, port):
        self.port = port

    def open(self, authorize_url):
        u = urllib.parse.urlparse(authorize_url)
        status, headers, body = request(self.port, "GET", f"{u.path}?{u.query}")
        assert status == 303, body
        self.page, self.cookie = headers["location"], headers["set-cookie"].split(";")[0]
        status, headers, page = request(self.port, "GET", self.page, headers={"Cookie": self.cookie})
        assert status == 200, page
        self.headers, self.html = headers, page
        return re.search(r'class="approval">([A-Z0-9-]+)<', page).group(1)

    def decided(self):
        """Where the page sends the browser once decided."""
        status, headers, page = request(self.port, "GET", self.page, headers={"Cookie": self.cookie})
        assert status == 303, page
        return headers["location"]

    def reload(self):
        """The query of the redirect to REDIRECT the page sends the browser to once decided."""
        back = urllib.parse.urlparse(self.decided())
        assert f"{back.scheme}://{back.netloc}{back.path}" == REDIRECT
        return {k: v[0] for k, v in urllib.parse.parse_qs(back.query).items()}


class Storage:
    def __init__(self):
        self.tokens, self.client = None, None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, info):
        self.client = info


def sdk_provider(s, name, storage, person, redirect=REDIRECT, metadata_url=None):
    """The official Python SDK's OAuth client for `s`, as the client `name` (registering, or
    identified by `metadata_url`); when the SDK sends the person to the authorization URL,
    `person(url)` plays them and returns the query the browser landed back with."""
    urls = []

    async def redirect_handler(url):
        urls.append(url)

    async def callback_handler():
        params = await anyio.to_thread.run_sync(lambda: person(urls.pop()))
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"),
                                       iss=params.get("iss"))

    return OAuthClientProvider(
        server_url=s.url,
        client_metadata=OAuthClientMetadata(
            client_name=name, redirect_uris=[redirect], grant_types=["authorization_code", "refresh_token"],
            response_types=["code"], token_endpoint_auth_method="none"),
        storage=storage, redirect_handler=redirect_handler, callback_handler=callback_handler,
        client_metadata_url=metadata_url)


def approving_host(s, approve):
    """A person whose browser (a `Browser`) opens the consent page, and who approves the code it
    shows with `approve(code)` on the host: (person, browser)."""
    browser = Browser(s.port)

    def person(url):
        approve(browser.open(url))
        return browser.reload()

    return person, browser


async def sdk_call(url, provider, name, arguments, before=None):
    """One session of the SDK through `provider`: initialize, `before()`, then one tool call's
    JSON."""
    async with httpx2.AsyncClient(auth=provider, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                if before:
                    before()
                return tool_json(await session.call_tool(name, arguments))


def test_the_python_sdk_is_approved_on_the_host_and_acts_as_the_account(oauth_server, carol):
    s = oauth_server
    storage = Storage()

    def approve(code):
        ok = s.ctl("oauth", "approve", code, "--user", carol.pw_name, "--role", "rw")
        assert ok.returncode == 0, ok.stderr
        assert f"act as {carol.pw_name} with role rw" in ok.stdout

    person, browser = approving_host(s, approve)
    provider = sdk_provider(s, "sdk e2e", storage, person)
    out = anyio.run(sdk_call, s.url, provider, "bash_execute", {"command": "id -un; echo $HOME"})
    assert out["stdout"] == f"{carol.pw_name}\n{carol.pw_dir}\n", out
    # The page named the client and what it asked for, and forbade framing and scripts.
    assert "sdk e2e" in browser.html and "frame-ancestors 'none'" in browser.headers["content-security-policy"]

    # The host person sees the client and its grant, and revoking it ends its tokens at once.
    clients = json.loads(s.ctl("oauth", "clients", "--json").stdout)
    mine = [c for c in clients if c["client_name"] == "sdk e2e"]
    assert len(mine) == 1 and mine[0]["grants"] == 1, clients
    grants = json.loads(s.ctl("oauth", "grants", "--json").stdout)
    grant = [g for g in grants if g["client_id"] == mine[0]["client_id"]]
    assert [(g["user"], g["role"]) for g in grant] == [(carol.pw_name, "Rw")], grants
    access = storage.tokens.access_token
    assert whoami(s.port, access) == (200, carol.pw_name)
    revoked = s.ctl("oauth", "revoke", grant[0]["id"])
    assert revoked.returncode == 0 and "revoked 1 grant(s)" in revoked.stdout, revoked.stderr
    assert whoami(s.port, access)[0] == 401
    again = s.ctl("oauth", "revoke", grant[0]["id"])
    assert again.returncode != 0 and "no live grant" in again.stderr

    records = [json.loads(line) for line in (Path(s.runtime_dir).parent / "audit" / "audit.log")
               .read_text().splitlines()]
    assert {"oauth_register", "oauth_authorize", "oauth_approve", "oauth_token", "oauth_revoke"} \
        <= {r.get("tool") for r in records}
    text = json.dumps(records)
    for secret in [access, storage.tokens.refresh_token]:
        assert secret not in text


def register(port):
    status, _, body = request(port, "POST", "/register", json.dumps(
        {"client_name": "e2e", "redirect_uris": [REDIRECT]}), {"Content-Type": "application/json"})
    assert status == 201, body
    return json.loads(body)["client_id"]


def authorize_url(client_id, challenge, **extra):
    return "/authorize?" + urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
        "code_challenge": challenge, "code_challenge_method": "S256", "scope": "mymcp:rw",
        "state": "s1", **extra})


def pkce(verifier):
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def approved_code(s, client_id, verifier, role="rw"):
    browser = Browser(s.port)
    code = browser.open(authorize_url(client_id, pkce(verifier)))
    assert s.ctl("oauth", "approve", code, "--user", "root", "--role", role).returncode == 0
    params = browser.reload()
    assert params["state"] == "s1" and params["iss"] == s.base
    return params["code"]


def exchange(s, client_id, code, verifier):
    return form(s.port, "/token", {"grant_type": "authorization_code", "code": code,
                                   "client_id": client_id, "redirect_uri": REDIRECT,
                                   "code_verifier": verifier})


def test_the_401_points_at_the_metadata_and_the_metadata_at_each_other(oauth_server):
    s = oauth_server
    status, headers, _ = mcp(s.port, "tok_unknown", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert status == 401
    assert f'resource_metadata="{s.base}/.well-known/oauth-protected-resource/mcp"' in headers["www-authenticate"]
    resource = json.loads(request(s.port, "GET", "/.well-known/oauth-protected-resource/mcp")[2])
    assert resource["resource"] == s.url and resource["authorization_servers"] == [s.base]
    meta = json.loads(request(s.port, "GET", "/.well-known/oauth-authorization-server")[2])
    assert meta["issuer"] == s.base and meta["code_challenge_methods_supported"] == ["S256"]


def test_a_replayed_code_is_refused_and_ends_what_it_gave(oauth_server):
    s = oauth_server
    client_id, verifier = register(s.port), "v" * 50
    code = approved_code(s, client_id, verifier)
    status, headers, tokens = exchange(s, client_id, code, verifier)
    assert status == 200 and headers["cache-control"] == "no-store", tokens
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "mymcp:ro mymcp:rw"
    assert whoami(s.port, tokens["access_token"]) == (200, "root")
    status, _, body = exchange(s, client_id, code, verifier)
    assert status == 400 and body["error"] == "invalid_grant"
    assert whoami(s.port, tokens["access_token"])[0] == 401


def test_a_wrong_verifier_or_redirect_gets_nothing(oauth_server):
    s = oauth_server
    client_id, verifier = register(s.port), "w" * 50
    code = approved_code(s, client_id, verifier)
    status, _, body = exchange(s, client_id, code, "x" * 50)
    assert status == 400 and body["error"] == "invalid_grant"
    # A code is tried once: the right verifier after a wrong one gets nothing either.
    assert exchange(s, client_id, code, verifier)[0] == 400
    # A redirect URI the client did not register: shown, never followed.
    status, headers, page = request(s.port, "GET", authorize_url(
        client_id, pkce(verifier)).replace(urllib.parse.quote(REDIRECT, safe=""),
                                           urllib.parse.quote("https://evil.example/cb", safe="")))
    assert status == 400 and "location" not in headers and "redirect_uri" in page


def test_a_reused_refresh_token_revokes_the_grant(oauth_server):
    s = oauth_server
    client_id, verifier = register(s.port), "r" * 50
    _, _, first = exchange(s, client_id, approved_code(s, client_id, verifier), verifier)
    refresh = {"grant_type": "refresh_token", "client_id": client_id}
    status, _, second = form(s.port, "/token", {**refresh, "refresh_token": first["refresh_token"]})
    assert status == 200 and second["refresh_token"] != first["refresh_token"]
    assert whoami(s.port, first["access_token"])[0] == 401
    assert whoami(s.port, second["access_token"]) == (200, "root")
    # The rotated-away token again: someone has a copy. The whole grant ends.
    status, _, body = form(s.port, "/token", {**refresh, "refresh_token": first["refresh_token"]})
    assert status == 400 and body["error"] == "invalid_grant"
    assert whoami(s.port, second["access_token"])[0] == 401
    assert form(s.port, "/token", {**refresh, "refresh_token": second["refresh_token"]})[0] == 400


def test_a_token_for_another_resource_is_refused(oauth_server):
    s = oauth_server
    client_id, verifier = register(s.port), "a" * 50
    status, headers, _ = request(s.port, "GET", authorize_url(
        client_id, pkce(verifier), resource="https://other.example/mcp"))
    assert status == 303
    back = urllib.parse.parse_qs(urllib.parse.urlparse(headers["location"]).query)
    assert back["error"] == ["invalid_target"] and "code" not in back


def test_denied_on_the_host_the_client_is_told_and_gets_nothing(oauth_server):
    s = oauth_server
    client_id = register(s.port)
    browser = Browser(s.port)
    code = browser.open(authorize_url(client_id, pkce("d" * 50)))
    waiting = s.ctl("oauth", "pending")
    assert client_id in waiting.stdout and code not in waiting.stdout
    denied = s.ctl("oauth", "deny", code)
    assert denied.returncode == 0, denied.stderr
    params = browser.reload()
    assert params["error"] == "access_denied" and "code" not in params
    # The code is spent: approving it now finds nothing.
    late = s.ctl("oauth", "approve", code, "--user", "root", "--role", "rw")
    assert late.returncode != 0 and "no request is waiting" in late.stderr


def test_a_consent_post_without_its_csrf_token_changes_nothing(oauth_server):
    s = oauth_server
    client_id = register(s.port)
    browser = Browser(s.port)
    code = browser.open(authorize_url(client_id, pkce("c" * 50)))
    status, _, _ = request(s.port, "POST", browser.page, "action=deny",
                           {"Cookie": browser.cookie, "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400
    status, _, _ = request(s.port, "POST", browser.page, "action=deny&csrf=" + "0" * 64,
                           {"Cookie": browser.cookie, "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400
    # Another browser (no cookie) sees nothing of the request.
    assert request(s.port, "GET", browser.page)[0] == 400
    assert s.ctl("oauth", "approve", code, "--user", "root", "--role", "ro").returncode == 0
    assert "code" in browser.reload()


@pytest.fixture
def chromium():
    """Headless Chromium (Debian's chromium and chromium-driver) through WebDriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run"]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def landing():
    """The client's redirect target: records the query of every GET it gets."""
    import http.server
    import threading

    got = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            got.append(dict(urllib.parse.parse_qsl(urllib.parse.urlparse(self.path).query)))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"back at the client")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cb", got
    server.shutdown()


def test_in_a_real_browser_the_page_continues_by_itself_after_the_approval(oauth_server, carol, chromium, landing):
    from selenium.webdriver.common.by import By

    s = oauth_server
    redirect, got = landing
    status, _, body = request(s.port, "POST", "/register", json.dumps(
        {"client_name": "browser e2e", "redirect_uris": [redirect]}), {"Content-Type": "application/json"})
    client_id, verifier = json.loads(body)["client_id"], "b" * 50
    chromium.get(s.base + authorize_url(client_id, pkce(verifier)).replace(
        urllib.parse.quote(REDIRECT, safe=""), urllib.parse.quote(redirect, safe="")))
    assert "browser e2e asks to connect" in chromium.find_element(By.TAG_NAME, "h1").text
    code = chromium.find_element(By.CSS_SELECTOR, "code.approval").text
    ok = s.ctl("oauth", "approve", code, "--user", carol.pw_name, "--role", "rw")
    assert ok.returncode == 0, ok.stderr
    # No click: the page reloads itself (meta refresh, no script) and the browser lands back
    # at the client, its cookie having held the request.
    assert wait_until(lambda: got, 15), chromium.page_source
    assert got[0]["state"] == "s1" and got[0]["iss"] == s.base
    status, _, tokens = form(s.port, "/token", {
        "grant_type": "authorization_code", "code": got[0]["code"], "client_id": client_id,
        "redirect_uri": redirect, "code_verifier": verifier})
    assert status == 200, tokens
    assert whoami(s.port, tokens["access_token"]) == (200, carol.pw_name)


def test_in_a_real_browser_deny_posts_the_form_and_the_client_is_told(oauth_server, chromium, landing):
    from selenium.webdriver.common.by import By

    s = oauth_server
    redirect, got = landing
    status, _, body = request(s.port, "POST", "/register", json.dumps(
        {"client_name": "browser e2e", "redirect_uris": [redirect]}), {"Content-Type": "application/json"})
    client_id = json.loads(body)["client_id"]
    chromium.get(s.base + authorize_url(client_id, pkce("n" * 50)).replace(
        urllib.parse.quote(REDIRECT, safe=""), urllib.parse.quote(redirect, safe="")))
    chromium.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert wait_until(lambda: got, 15), chromium.page_source
    assert got[0]["error"] == "access_denied" and "code" not in got[0]


def test_a_client_approved_read_only_steps_up_when_it_needs_more(oauth_server, carol):
    """The host approves read-only; the SDK's bash_execute gets 403 insufficient_scope, the
    SDK asks the person again, the host approves rw, and the call goes through. A static ro
    token keeps the reference's answer (a tool error, HTTP 200)."""
    s = oauth_server
    storage, roles, seen = Storage(), ["ro", "rw"], {}

    def approve(code):
        assert s.ctl("oauth", "approve", code, "--user", carol.pw_name, "--role", roles.pop(0)).returncode == 0

    provider = sdk_provider(s, "step-up e2e", storage, approving_host(s, approve)[0])
    out = anyio.run(sdk_call, s.url, provider, "bash_execute", {"command": "id -un"},
                    lambda: seen.setdefault("read_only", storage.tokens.access_token))
    read_only = seen["read_only"]
    assert roles == [] and out["stdout"] == f"{carol.pw_name}\n", out
    assert "mymcp:rw" in storage.tokens.scope
    status, headers, _ = mcp(s.port, read_only, {
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "bash_execute", "arguments": {"command": "id -un"}}})
    assert status == 403
    challenge = headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="mymcp:ro mymcp:rw"' in challenge
    assert f'resource_metadata="{s.base}/.well-known/oauth-protected-resource/mcp"' in challenge

    static_ro = s.add_token("static-reader", "ro")
    status, _, body = mcp(s.port, static_ro, {
        "jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "bash_execute", "arguments": {"command": "id -un"}}})
    assert status == 200 and json.loads(body)["result"]["structuredContent"]["error"] == "PermissionDenied"

def test_the_admin_api_lists_and_revokes_grants_but_approves_nothing(oauth_server):
    s = oauth_server
    client_id, verifier = register(s.port), "m" * 50
    _, _, tokens = exchange(s, client_id, approved_code(s, client_id, verifier), verifier)
    admin = {"Authorization": f"Bearer {s.admin_token}"}

    status, _, body = request(s.port, "GET", "/admin/oauth/grants", headers=admin)
    grants = [g for g in json.loads(body) if g["client_id"] == client_id]
    assert status == 200 and [(g["user"], g["role"]) for g in grants] == [("root", "rw")], body
    status, _, body = request(s.port, "GET", "/admin/oauth/clients", headers=admin)
    assert status == 200 and any(c["client_id"] == client_id and c["grants"] == 1 for c in json.loads(body))
    # Only an admin token may ask.
    status, _, _ = request(s.port, "GET", "/admin/oauth/grants",
                           headers={"Authorization": f"Bearer {s.rw_token}"})
    assert status == 403

    status, _, body = request(s.port, "DELETE", f"/admin/oauth/{client_id}", headers=admin)
    assert status == 200 and json.loads(body) == {"revoked": client_id, "clients": 1, "grants": 1}, body
    assert whoami(s.port, tokens["access_token"])[0] == 401
    assert request(s.port, "DELETE", f"/admin/oauth/{client_id}", headers=admin)[0] == 404
    assert request(s.port, "DELETE", "/admin/oauth/" + "x" * 600, headers=admin)[0] == 404
    # The executor still serves after the oversized selector.
    assert whoami(s.port, s.rw_token) == (200, "root")
    records = [json.loads(line) for line in (Path(s.runtime_dir).parent / "audit" / "audit.log")
               .read_text().splitlines()]
    assert any(r.get("tool") == "oauth_revoke" and r.get("params", {}).get("selector") == client_id
               for r in records)


# Client ID Metadata Documents ------------------------------------------------------------------
#
# The client's `client_id` is the https URL of its metadata document, which the frontend fetches
# (from 127.0.0.1 here: allowed by MYMCP_OAUTH_CIMD_ALLOWED_NETWORKS, refused without it), over
# TLS it verifies against a throwaway CA given as MYMCP_OUTBOUND_CA_FILE.


def make_ca_and_certificate(directory: Path):
    """A CA and a certificate for 127.0.0.1 that it signed: (ca.pem, cert.pem, key.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mymcp e2e CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(valid[0]).not_valid_after(valid[1])
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid[0]).not_valid_after(valid[1])
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class DocumentServer:
    """HTTPS on 127.0.0.1 from a thread: serves `documents` (path → JSON text) and records the
    path of every request it gets."""

    def __init__(self, cert, key):
        import http.server
        import ssl
        import threading

        self.documents, self.requests = {}, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                body = outer.documents.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "max-age=600")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.base = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def publish(self, path, **fields):
        """Serves a document at `path` (its client_id its own URL unless given); its URL."""
        url = self.base + path
        self.documents[path] = json.dumps({"client_id": url, "redirect_uris": [REDIRECT],
                                           "token_endpoint_auth_method": "none", **fields})
        return url

    def seen(self, path):
        return self.requests.count(path)


@pytest.fixture(scope="module")
def documents():
    import shutil
    import tempfile

    # Readable by the frontend's user (nobody): it reads the CA file.
    directory = Path(tempfile.mkdtemp(prefix="mymcp-cimd-"))
    directory.chmod(0o755)
    ca, cert, key = make_ca_and_certificate(directory)
    ca.chmod(0o644)
    server = DocumentServer(cert, key)
    server.ca = ca
    yield server
    server.httpd.shutdown()
    shutil.rmtree(directory)


@pytest.fixture(scope="module")
def cimd_server(documents):
    s = start_server({"MYMCP_OAUTH_ENABLED": "true",
                      "MYMCP_OAUTH_CIMD_ALLOWED_NETWORKS": "127.0.0.1/32",
                      "MYMCP_OUTBOUND_CA_FILE": str(documents.ca)})
    s.base = s.url.rsplit("/mcp", 1)[0]
    s.port = urllib.parse.urlparse(s.base).port
    yield s
    stop_server(s)


def refusal(s, client_id, **extra):
    """The error page `GET /authorize` answers for `client_id`: never a redirect."""
    status, headers, page = request(s.port, "GET", authorize_url(client_id, pkce("m" * 50), **extra))
    assert status == 400 and "location" not in headers, (status, headers, page)
    return page


def test_a_document_that_does_not_fit_is_refused_on_the_page(cimd_server, documents):
    s = cimd_server
    other = documents.publish("/other.json", client_id=documents.base + "/someone-else.json")
    assert "names another client_id" in refusal(s, other)
    big = documents.publish("/big.json", padding="x" * 6000)
    assert "larger than 5 KiB" in refusal(s, big)
    confidential = documents.publish("/secret.json", token_endpoint_auth_method="client_secret_basic")
    assert "only public clients" in refusal(s, confidential)
    assert "not 200" in refusal(s, documents.base + "/missing.json")
    # The refusal is remembered: the URL is not fetched again at once.
    assert "larger than 5 KiB" in refusal(s, big)
    assert documents.seen("/big.json") == 1

    good = documents.publish("/good.json", client_name="good")
    page = refusal(s, good, redirect_uri="https://evil.example/cb")
    assert "redirect_uri is not one of the client" in page
    # A document whose redirect URI the executor would not register.
    bad_uri = documents.publish("/js.json", redirect_uris=[REDIRECT, "javascript:alert(1)"])
    assert "scheme cannot be a redirect URI" in refusal(s, bad_uri)

    plain = documents.base.replace("https://", "http://") + "/good.json"
    assert "must be https" in refusal(s, plain)
    assert "needs a path" in refusal(s, documents.base + "/")
    # None of these was fetched over http, nor the root.
    assert documents.seen("/") == 0


def test_a_document_on_a_loopback_address_is_not_fetched_unless_allowed(documents):
    s = start_server({"MYMCP_OAUTH_ENABLED": "true", "MYMCP_OUTBOUND_CA_FILE": str(documents.ca)})
    try:
        s.port = urllib.parse.urlparse(s.url).port
        url = documents.publish("/unallowed.json")
        page = refusal(s, url)
        assert "on a loopback address" in page and "MYMCP_OAUTH_CIMD_ALLOWED_NETWORKS" in page
        assert documents.seen("/unallowed.json") == 0
    finally:
        stop_server(s)

# The account's password through PAM (MYMCP_OAUTH_PAM) -------------------------------------------

PAM_PASSWORD = "Correct-horse-7"


@pytest.fixture(scope="module")
def pam_accounts():
    """For the password login: a group of its own, a PAM service file of its own (pam_unix), a
    member and a non-member with passwords set by chpasswd: (group, service, member, outsider)."""
    tag = f"{os.getpid():x}"
    group, service = f"mmgrp{tag}", f"mymcp-e2e-{tag}"
    pam_file = Path("/etc/pam.d") / service
    assert shadow("groupadd", group).returncode == 0
    member, outsider = make_account("pm"), make_account("pn")
    try:
        assert shadow("gpasswd", "-a", member.pw_name, group).returncode == 0
        for a in (member, outsider):
            r = subprocess.run(["chpasswd"], input=f"{a.pw_name}:{PAM_PASSWORD}\n", text=True,
                               capture_output=True)
            assert r.returncode == 0, r.stderr
        pam_file.write_text("auth required pam_unix.so\naccount required pam_unix.so\n")
        yield group, service, member.pw_name, outsider.pw_name
    finally:
        pam_file.unlink(missing_ok=True)
        remove_account(member)
        remove_account(outsider)
        shadow("groupdel", group)


@pytest.fixture
def pam_server(pam_accounts, documents):
    """A server of its own (its login limits start afresh) with the password login on for
    `pam_accounts`; it fetches client metadata documents from the test's HTTPS server too."""
    group, service, member, outsider = pam_accounts
    s = start_server({"MYMCP_OAUTH_ENABLED": "true", "MYMCP_OAUTH_PAM": "true",
                      "MYMCP_OAUTH_PAM_GROUP": group, "MYMCP_OAUTH_PAM_SERVICE": service,
                      "MYMCP_OAUTH_CIMD_ALLOWED_NETWORKS": "127.0.0.1/32",
                      "MYMCP_OUTBOUND_CA_FILE": str(documents.ca)})
    s.base = s.url.rsplit("/mcp", 1)[0]
    s.port = urllib.parse.urlparse(s.base).port
    s.member, s.outsider = member, outsider
    yield s
    stop_server(s)


def log_in(browser, user, password):
    """Posts the page's login form: (status, headers, page)."""
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', browser.html).group(1)
    status, headers, page = request(
        browser.port, "POST", browser.page + "/login",
        urllib.parse.urlencode({"csrf": csrf, "user": user, "password": password}),
        {"Cookie": browser.cookie, "Content-Type": "application/x-www-form-urlencoded"})
    if status == 200:
        browser.html = page
    return status, headers, page


REFUSED = "Wrong account or password, or this account may not approve."


def audit_records(s):
    return [json.loads(line) for line in (Path(s.runtime_dir).parent / "audit" / "audit.log")
            .read_text().splitlines()]


def test_the_accounts_password_approves_only_members_and_is_rate_limited(pam_server):
    s = pam_server
    client_id, verifier = register(s.port), "p" * 50
    browser = Browser(s.port)
    browser.open(authorize_url(client_id, pkce(verifier)))
    assert 'type="password" name="password"' in browser.html
    assert 'http-equiv="refresh"' not in browser.html, "the page must not reload while typing"

    # A wrong password, and a non-member's right one: the same refusal, nothing granted.
    for user, password in [(s.member, "wrong-password"), (s.outsider, PAM_PASSWORD),
                           ("mm-no-such-user", PAM_PASSWORD)]:
        status, _, page = log_in(browser, user, password)
        assert status == 200 and REFUSED in page, page
    assert json.loads(s.ctl("oauth", "grants", "--json").stdout) == []
    assert "code" not in request(s.port, "GET", browser.page, headers={"Cookie": browser.cookie})[1].get(
        "location", "")

    # The member's right password: the page sends the browser back with a code.
    status, headers, page = log_in(browser, s.member, PAM_PASSWORD)
    assert status == 303, page
    back = urllib.parse.urlparse(headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == REDIRECT
    params = {k: v[0] for k, v in urllib.parse.parse_qs(back.query).items()}
    assert params["state"] == "s1" and params["iss"] == s.base
    status, _, tokens = exchange(s, client_id, params["code"], verifier)
    assert status == 200 and tokens["scope"] == "mymcp:ro mymcp:rw", tokens
    assert whoami(s.port, tokens["access_token"]) == (200, s.member)
    grants = json.loads(s.ctl("oauth", "grants", "--json").stdout)
    assert [(g["user"], g["role"]) for g in grants] == [(s.member, "Rw")], grants

    # Five wrong passwords: then the right one is refused too, without PAM being asked.
    browser = Browser(s.port)
    browser.open(authorize_url(client_id, pkce(verifier)))
    for _ in range(5):
        status, _, page = log_in(browser, s.member, "wrong-again")
        assert status == 200 and REFUSED in page
    status, _, page = log_in(browser, s.member, PAM_PASSWORD)
    assert status == 200 and "Too many failed logins" in page, page
    assert len(json.loads(s.ctl("oauth", "grants", "--json").stdout)) == 1
    # The host's approval by code still works.
    code = re.search(r'class="approval">([A-Z0-9-]+)<', browser.html).group(1)
    assert s.ctl("oauth", "approve", code, "--user", "root", "--role", "ro").returncode == 0
    assert "code" in browser.reload()

    # Each attempt is an oauth_login record with the account, the address and the result;
    # never a password. No helper is left running.
    logins = [r for r in audit_records(s) if r.get("tool") == "oauth_login" and "result" in r]
    assert len(logins) == 10, logins
    assert all(r["ip"] == "127.0.0.1" for r in logins)
    ok = [r for r in logins if r["result"] == "ok"]
    assert [r["params"]["user"] for r in ok] == [s.member]
    assert ok[0]["params"]["client_id"] == client_id
    codes = [r.get("error_code") for r in logins if r["result"] != "ok"]
    assert codes.count("access_denied") == 8 and codes.count("rate_limited") == 1, codes
    refused_users = {r["params"]["user"] for r in logins if r.get("error_code") == "access_denied"}
    assert refused_users == {s.member, s.outsider, "mm-no-such-user"}
    text = (Path(s.runtime_dir).parent / "audit" / "audit.log").read_text()
    for secret in [PAM_PASSWORD, "wrong-password", "wrong-again"]:
        assert secret not in text
    assert pids_with_cmdline("--oauth-pam-helper") == []


def test_the_python_sdk_identified_by_its_document_is_approved_by_a_password_in_chromium(
        pam_server, documents, chromium, landing):
    """The official Python SDK with a Client ID Metadata Document the test serves over HTTPS
    (no registration), its consent page in a headless Chromium where the person signs in with
    their Unix account's password (PAM); the SDK's tools then run as that account."""
    from selenium.webdriver.common.by import By

    s = pam_server
    redirect, got = landing
    meta = json.loads(request(s.port, "GET", "/.well-known/oauth-authorization-server")[2])
    assert meta["client_id_metadata_document_supported"] is True
    url = documents.publish("/sdk/client.json", client_name="sdk cimd e2e",
                            redirect_uris=[redirect],
                            grant_types=["authorization_code", "refresh_token"],
                            response_types=["code"])
    storage, pages = Storage(), []

    def person(authorize):
        chromium.get(authorize)
        pages.append(chromium.page_source)
        chromium.find_element(By.NAME, "user").send_keys(s.member)
        chromium.find_element(By.NAME, "password").send_keys(PAM_PASSWORD)
        chromium.find_element(By.XPATH, "//button[text()='Approve as this account']").click()
        assert wait_until(lambda: got, 20), chromium.page_source
        return got[-1]

    provider = sdk_provider(s, "sdk cimd e2e", storage, person, redirect, metadata_url=url)
    out = anyio.run(sdk_call, s.url, provider, "bash_execute", {"command": "id -un"})
    assert out["stdout"] == f"{s.member}\n", out
    # The SDK did not register: its client_id is the URL, and the page named the client as the
    # document does, fetched once.
    assert storage.client.client_id == url
    assert "sdk cimd e2e" in pages[0] and url in pages[0]
    assert documents.seen("/sdk/client.json") == 1
    assert whoami(s.port, storage.tokens.access_token) == (200, s.member)
