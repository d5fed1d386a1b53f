"""OAuth 2.1 (issue 23, being built) through the real binaries: a client registers, a person
approves it on the host with the code its consent page shows, the client exchanges the code
and calls a tool acting as the account; a replayed code revokes what it gave.

Plain HTTP on loopback (what the quick try serves); the client is this test, speaking HTTP as
the MCP SDKs' OAuth clients do."""

import base64
import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from conftest import bin_dir, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def oauth_server():
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, MYMCP_FRONTEND_USER="nobody", MYMCP_OAUTH_ENABLED="true",
               MYMCP_PUBLIC_BASE_URL=base)
    proc = subprocess.Popen([str(bin_dir() / "mymcpctl"), "serve", "--port", str(port)],
                            stderr=subprocess.PIPE, text=True, env=env)
    run = None
    for line in proc.stderr:
        m = re.search(r"more tokens: mymcpctl --runtime-dir (\S+)", line)
        if m:
            run = m.group(1)
            break
    assert run, "mymcpctl serve did not start"

    def up() -> bool:
        try:
            return b'"executor":"connected"' in request(port, "GET", "/health")[2].encode()
        except OSError:
            return False

    assert wait_until(up, 20)
    yield port, base, run
    proc.terminate()
    proc.wait(30)


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


def test_a_client_approved_on_the_host_acts_as_the_account_and_a_replayed_code_ends_it(oauth_server):
    port, base, run = oauth_server
    status, headers, _ = mcp(port, "tok_unknown", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert status == 401
    assert f'resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"' in headers["www-authenticate"]
    meta = json.loads(request(port, "GET", "/.well-known/oauth-authorization-server")[2])
    assert meta["issuer"] == base and meta["code_challenge_methods_supported"] == ["S256"]

    redirect = "http://127.0.0.1:9/cb"
    status, _, body = request(port, "POST", "/register", json.dumps(
        {"client_name": "e2e", "redirect_uris": [redirect]}), {"Content-Type": "application/json"})
    assert status == 201, body
    client_id = json.loads(body)["client_id"]

    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect,
        "code_challenge": challenge, "code_challenge_method": "S256", "scope": "mymcp:rw",
        "state": "s1"})
    status, headers, _ = request(port, "GET", "/authorize?" + query)
    assert status == 303
    page_url, cookie = headers["location"], headers["set-cookie"].split(";")[0]
    status, headers, page = request(port, "GET", page_url, headers={"Cookie": cookie})
    assert status == 200 and "frame-ancestors 'none'" in headers["content-security-policy"]
    code = re.search(r'class="approval">([A-Z0-9-]+)<', page).group(1)
    # Another browser (no cookie) sees nothing.
    assert request(port, "GET", page_url)[0] == 400

    ctl = [str(bin_dir() / "mymcpctl"), "--runtime-dir", run, "oauth", "approve"]
    wrong = subprocess.run(ctl + ["ZZZZ-ZZZZ", "--user", "root", "--role", "rw"],
                           capture_output=True, text=True)
    assert wrong.returncode != 0 and "no request is waiting" in wrong.stderr
    ok = subprocess.run(ctl + [code.lower(), "--user", "root", "--role", "rw"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr

    status, headers, _ = request(port, "GET", page_url, headers={"Cookie": cookie})
    assert status == 303
    back = urllib.parse.urlparse(headers["location"])
    params = urllib.parse.parse_qs(back.query)
    assert back.netloc == "127.0.0.1:9" and params["state"] == ["s1"] and params["iss"] == [base]

    form = urllib.parse.urlencode({
        "grant_type": "authorization_code", "code": params["code"][0], "client_id": client_id,
        "redirect_uri": redirect, "code_verifier": verifier})
    status, headers, body = request(port, "POST", "/token", form,
                                    {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and headers["cache-control"] == "no-store", body
    tokens = json.loads(body)
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "mymcp:ro mymcp:rw"

    status, _, body = mcp(port, tokens["access_token"], {
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "bash_execute", "arguments": {"command": "id -un"}}})
    assert status == 200 and json.loads(body)["result"]["structuredContent"]["stdout"] == "root\n"

    # The code again: refused, and the tokens it gave stop working.
    status, _, body = request(port, "POST", "/token", form,
                              {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and json.loads(body)["error"] == "invalid_grant"
    assert mcp(port, tokens["access_token"], {"jsonrpc": "2.0", "id": 3, "method": "tools/list"})[0] == 401

    # Every step that changed something is in the audit log; no code or token value is.
    state = Path(run).parent
    records = [json.loads(line) for line in (state / "audit" / "audit.log").read_text().splitlines()]
    tools = [r.get("tool") for r in records]
    for tool in ["oauth_register", "oauth_authorize", "oauth_approve", "oauth_token"]:
        assert tool in tools, tools
    text = json.dumps(records)
    for secret in [params["code"][0], tokens["access_token"], tokens["refresh_token"], code]:
        assert secret not in text
