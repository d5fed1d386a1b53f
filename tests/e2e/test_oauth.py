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
import re
import urllib.parse
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata, OAuthToken

from conftest import make_account, remove_account, start_server, stop_server, tool_json, wait_until

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


def sdk_provider(s, name, storage, approve):
    """The official Python SDK's OAuth client for `s`, registering as `name`; `approve(code)`
    plays the person at the host when the SDK sends them to the consent page (opened by a
    `Browser`), after which the browser lands back at the client."""
    browser, urls = Browser(s.port), []

    async def redirect_handler(url):
        urls.append(url)

    async def callback_handler():
        def person():
            approve(browser.open(urls.pop()))
            return browser.reload()

        params = await anyio.to_thread.run_sync(person)
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"),
                                       iss=params.get("iss"))

    provider = OAuthClientProvider(
        server_url=s.url,
        client_metadata=OAuthClientMetadata(
            client_name=name, redirect_uris=[REDIRECT], grant_types=["authorization_code", "refresh_token"],
            response_types=["code"], token_endpoint_auth_method="none"),
        storage=storage, redirect_handler=redirect_handler, callback_handler=callback_handler)
    return provider, browser


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

    provider, browser = sdk_provider(s, "sdk e2e", storage, approve)
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

    provider, _ = sdk_provider(s, "step-up e2e", storage, approve)
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
