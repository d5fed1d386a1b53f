"""The official MCP conformance suite, the TypeScript SDK client and the MCP Inspector CLI,
each against the real server (executor as root, frontend as nobody).

They run on the Node 22 that tests/run installs into tests/node/node_modules (see
tests/node/package.json); MYMCP_NODE_DIR names that directory. Without it these tests are
skipped, so `pytest tests/e2e` still works on a machine without Node; tests/run always sets it.

The conformance suite sends no bearer token, and mymcp refuses unauthenticated requests, so it
talks to the server through tests/node/token-proxy.mjs, a test-only proxy that adds
`Authorization: Bearer <token>` and passes everything else through unchanged (Host and Origin
included, so the DNS-rebinding checks see what the suite sent).
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from test_oauth import chromium, landing  # noqa: F401 (fixtures)

NODE_DIR = os.environ.get("MYMCP_NODE_DIR")
pytestmark = pytest.mark.skipif(not NODE_DIR, reason="MYMCP_NODE_DIR not set (tests/run sets it)")

# Every revision the suite has scenarios for; 2024-11-05 has none (it predates Streamable HTTP).
CONFORMANCE_VERSIONS = ["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"]


def node_dir() -> Path:
    return Path(NODE_DIR)


def node_env(home: Path) -> dict:
    bin_dir = node_dir() / "node_modules" / ".bin"
    # The clients keep state under $HOME (the Inspector's catalog): a scratch one each.
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", HOME=str(home), NO_COLOR="1")


def node(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(node_dir() / "node_modules" / ".bin" / "node"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=node_env(home),
        cwd=node_dir(),
    )


@pytest.fixture(scope="module")
def proxy(server, tmp_path_factory):
    """The token injector in front of the server: (url, process)."""
    home = tmp_path_factory.mktemp("proxy-home")
    proc = subprocess.Popen(
        [
            str(node_dir() / "node_modules" / ".bin" / "node"),
            str(node_dir() / "token-proxy.mjs"),
            server.url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(node_env(home), MYMCP_PROXY_TOKEN=server.rw_token),
    )
    line = proc.stdout.readline()
    m = re.match(r"listening on (http://127\.0\.0\.1:\d+)", line)
    assert m, f"token proxy did not start: {line!r} {proc.stderr.read() if proc.poll() else ''}"
    yield f"{m.group(1)}/mcp"
    proc.terminate()
    proc.wait(10)


@pytest.mark.parametrize("version", CONFORMANCE_VERSIONS)
def test_official_conformance_suite(proxy, version, tmp_path):
    """Every scenario of the suite for this revision runs; only the checks listed, with the
    reason, in tests/node/conformance/expected-failures-<version>.yml may fail (and must)."""
    cli = node_dir() / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    args = [str(cli), "server", "--url", proxy, "--suite", "all", "--spec-version", version]
    args += ["-o", str(tmp_path / "results")]
    baseline = node_dir() / "conformance" / f"expected-failures-{version}.yml"
    if baseline.exists():
        args += ["--expected-failures", str(baseline)]
    r = node(tmp_path, *args)
    summary = r.stdout[r.stdout.find("=== SUMMARY ===") :]
    print(summary)
    assert r.returncode == 0, f"conformance {version} failed:\n{r.stdout[-6000:]}\n{r.stderr[-2000:]}"
    # The suite ran scenarios, and the ones that apply to every tools-only server passed.
    assert re.search(r"Total: [1-9]\d* passed", summary), summary
    applicable = {
        "2025-03-26": [],
        "2025-06-18": ["server-initialize", "ping", "tools-list"],
        "2025-11-25": ["server-initialize", "ping", "tools-list", "dns-rebinding-protection"],
        "2026-07-28": ["tools-list", "dns-rebinding-protection", "http-header-validation"],
    }[version]
    for scenario in applicable:
        assert re.search(rf"✓ {re.escape(scenario)}: \d+ passed, 0 failed", summary), scenario


def test_typescript_sdk_client_lists_and_calls_every_tool(server, tmp_path):
    scratch = tmp_path / "files"
    scratch.mkdir()
    r = node(tmp_path, "sdk-client.mjs", server.url, server.rw_token, str(scratch), timeout=120)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["ok"]
    assert report["server"]["name"] == "mymcp"
    assert report["instructions"]
    assert sorted(set(report["calls"])) == sorted(report["tools"])


def test_typescript_sdk_runs_bash_execute_as_a_task(server, tmp_path):
    """MCP tasks (2025-11-25) through the SDK's client-side task support: created, polled,
    completed, result fetched (twice), a cancelled task stays cancelled."""
    r = node(tmp_path, "sdk-tasks.mjs", server.url, server.rw_token, timeout=120)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["ok"]
    assert report["seen"][0] == "taskCreated"
    assert "status:working" in report["seen"]
    assert report["seen"][-2:] == ["status:completed", "result"]


def inspector(home: Path, server, *args: str) -> subprocess.CompletedProcess:
    bin_inspector = node_dir() / "node_modules" / ".bin" / "inspector"
    return subprocess.run(
        [str(bin_inspector), "--cli", server.url, "--transport", "http",
         "--header", f"Authorization: Bearer {server.rw_token}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=node_env(home),
        cwd=node_dir(),
    )


def test_mcp_inspector_cli_lists_and_calls_every_tool(server, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    scratch = tmp_path / "files"
    scratch.mkdir()

    # --strict: the Inspector's tool-schema portability report must have nothing to say.
    r = inspector(home, server, "--method", "tools/list", "--strict")
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stderr and "Error" not in r.stderr, r.stderr
    tools = json.loads(r.stdout)["tools"]
    names = [t["name"] for t in tools]

    def call(name: str, *pairs: str) -> dict:
        args = ["--method", "tools/call", "--tool-name", name]
        for p in pairs:
            args += ["--tool-arg", p]
        r = inspector(home, server, *args)
        assert r.returncode == 0, f"{name}: {r.stdout}\n{r.stderr}"
        result = json.loads(r.stdout)
        assert result["isError"] is False, result
        tool_json = json.loads(result["content"][0]["text"])
        assert result["structuredContent"] == tool_json
        return tool_json

    path = scratch / "inspector.txt"
    called = []

    def do(name: str, *pairs: str) -> dict:
        called.append(name)
        return call(name, *pairs)

    assert do("bash_execute", "command=echo from-inspector")["stdout"] == "from-inspector\n"
    assert do("write_file", f"file_path={path}", "content=inspected")["bytes_written"] == 9
    assert "inspected" in do("read_file", f"file_path={path}")["content"]
    assert do("edit_file", f"file_path={path}", "old_string=inspected", "new_string=seen")["replacements"] == 1
    assert str(path) in do("glob", "pattern=*.txt", f"path={scratch}")["files"]
    assert do("grep", "pattern=seen", f"path={scratch}")["match_count"] == 1
    job = do("bash_execute", "command=echo job-from-inspector", "background=true")
    assert "job-from-inspector" in do("job_output", f"job_id={job['job_id']}", "wait_seconds=10")["stdout"]
    assert do("job_status", f"job_id={job['job_id']}")["job_id"] == job["job_id"]
    assert do("job_kill", f"job_id={job['job_id']}")["running"] is False
    assert do("prepare_upload", f"dest_path={scratch / 'up.bin'}", "max_bytes=10")["method"] == "PUT"
    assert do("prepare_download", f"src_path={path}")["method"] == "GET"
    assert do("server_overview")["overview"].startswith("# ")
    # cat on a terminal: the line discipline echoes what is typed, no Enter needed.
    term = do("terminal_open", "command=cat")["terminal_id"]
    assert do("terminal_send", f"terminal_id={term}", "text=from-inspector")["success"] is True
    assert do("terminal_read", f"terminal_id={term}", "wait_for=from-inspector", "timeout=10")["matched"] is True
    assert do("terminal_resize", f"terminal_id={term}", "rows=30", "cols=100")["rows"] == 30
    assert any(t["terminal_id"] == term for t in do("terminal_list")["terminals"])
    assert do("terminal_close", f"terminal_id={term}")["running"] is False
    assert sorted(set(called)) == sorted(names)


def test_typescript_sdk_oauth_client_registers_is_approved_and_refreshes(tmp_path, chromium, landing):
    """The TypeScript SDK's OAuth client (registration by RFC 7591, PKCE, refresh) through the
    whole flow, its consent page in a headless Chromium, approved with `mymcpctl oauth
    approve` as a real account made here; its tools then run as that account."""
    from selenium.webdriver.common.by import By

    from conftest import make_account, remove_account, start_server, stop_server, wait_until

    account = make_account("ot")
    s = start_server({"MYMCP_OAUTH_ENABLED": "true"})
    redirect, got = landing
    try:
        proc = subprocess.Popen(
            [str(node_dir() / "node_modules" / ".bin" / "node"), "sdk-oauth.mjs", s.url, redirect],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=node_env(tmp_path), cwd=node_dir())
        line = proc.stdout.readline()
        assert line.startswith("AUTHORIZE "), line + proc.stderr.read()
        chromium.get(line.split(" ", 1)[1].strip())
        assert "ts sdk e2e asks to connect" in chromium.find_element(By.TAG_NAME, "h1").text
        code = chromium.find_element(By.CSS_SELECTOR, "code.approval").text
        approved = s.ctl("oauth", "approve", code, "--user", account.pw_name, "--role", "rw")
        assert approved.returncode == 0, approved.stderr
        assert wait_until(lambda: got, 15), chromium.page_source
        out, err = proc.communicate(got[0]["code"] + "\n", timeout=60)
        assert proc.returncode == 0, out + err
        result = json.loads(out.strip().splitlines()[-1])
        me = account.pw_name + "\n"
        assert result == {"ok": True, "stdout": me, "again": me, "refreshed": True}, result
    finally:
        stop_server(s)
        remove_account(account)


def test_mcp_remote_goes_through_the_oauth_flow_headless(tmp_path):
    """Claude Desktop's bridge with OAuth: it registers, prints the authorization URL (its
    browser is `true` here), and waits on its loopback callback; the person's part is played
    here, and the browser's last step is the GET of the callback the page redirects to."""
    import re
    import threading
    import time
    import urllib.request

    import anyio
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    from conftest import start_server, stop_server, tool_json
    from test_oauth import Browser

    s = start_server({"MYMCP_OAUTH_ENABLED": "true"})
    log_path = tmp_path / "mcp-remote.log"
    env = dict(node_env(tmp_path), BROWSER="true", MCP_REMOTE_CONFIG_DIR=str(tmp_path / "auth"))
    person: dict = {}

    def play_the_person():
        try:
            end = time.monotonic() + 60
            while time.monotonic() < end:
                m = re.search(r"Please authorize this client by visiting:\s*(\S+)",
                              log_path.read_text() if log_path.exists() else "")
                if m:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError("mcp-remote printed no authorization URL")
            browser = Browser(int(s.url.rsplit(":", 1)[1].split("/")[0]))
            code = browser.open(m.group(1))
            approved = s.ctl("oauth", "approve", code, "--user", "root", "--role", "rw")
            assert approved.returncode == 0, approved.stderr
            callback = browser.decided()
            assert callback.startswith("http://localhost:") and "code=" in callback, callback
            with urllib.request.urlopen(callback, timeout=10) as r:
                person["callback"] = r.status
        except BaseException as e:  # reported by the test below
            person["error"] = e

    async def bridge():
        params = StdioServerParameters(
            command=str(node_dir() / "node_modules" / ".bin" / "node"),
            args=[str(node_dir() / "node_modules" / "mcp-remote" / "dist" / "proxy.js"), s.url,
                  "--transport", "http-only", "--allow-http"],
            env=env)
        with open(log_path, "w") as log, anyio.fail_after(90):
            async with stdio_client(params, errlog=log) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    return tool_json(await session.call_tool("bash_execute", {"command": "id -un"}))

    thread = threading.Thread(target=play_the_person, daemon=True)
    thread.start()
    try:
        out = anyio.run(bridge)
    finally:
        thread.join(30)
        stop_server(s)
    assert "error" not in person, person.get("error")
    assert person["callback"] == 200 and out["stdout"] == "root\n", (person, out)


def test_conformance_suite_authorization_server_scenarios(tmp_path):
    """The suite's scenarios for an authorization server (metadata; the authorization code
    grant with PKCE, state, iss and the token response) against mymcp's, with a client
    registered for the suite's callback; the person's part is played here."""
    import re
    import socket
    import time
    import urllib.error
    import urllib.request

    from conftest import start_server, stop_server
    from test_oauth import Browser, request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        callback_port = sock.getsockname()[1]
    s = start_server({"MYMCP_OAUTH_ENABLED": "true"})
    try:
        base = s.url.rsplit("/mcp", 1)[0]
        port = int(base.rsplit(":", 1)[1])
        status, _, body = request(port, "POST", "/register", json.dumps(
            {"client_name": "conformance", "redirect_uris": [f"http://127.0.0.1:{callback_port}/callback"]}),
            {"Content-Type": "application/json"})
        assert status == 201, body
        suite = subprocess.Popen(
            [str(node_dir() / "node_modules" / ".bin" / "node"),
             str(node_dir() / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"),
             "authorization", "--url", base, "--client-id", json.loads(body)["client_id"],
             "--resource", s.url, "--port", str(callback_port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=node_env(tmp_path),
            cwd=node_dir())
        seen = []
        for line in suite.stdout:
            seen.append(line)
            if line.startswith(f"{base}/authorize?"):
                break
        else:
            raise AssertionError("the suite printed no authorization URL:\n" + "".join(seen))
        browser = Browser(port)
        code = browser.open(line.strip())
        assert s.ctl("oauth", "approve", code, "--user", "root", "--role", "ro").returncode == 0
        callback = browser.decided()
        assert re.match(rf"http://127\.0\.0\.1:{callback_port}/callback\?code=", callback), callback
        # The suite's callback server may start a moment after it printed the URL.
        for _ in range(50):
            try:
                with urllib.request.urlopen(callback, timeout=10) as r:
                    assert r.status == 200
                break
            except urllib.error.URLError:
                time.sleep(0.1)
        out = "".join(seen) + suite.communicate(timeout=60)[0]
        assert suite.returncode == 0, out
        assert re.search(r"Total: (\d+) passed, 0 failed", out), out
        assert "authorization-code-grant: 1 passed, 0 failed" in out, out
    finally:
        stop_server(s)
