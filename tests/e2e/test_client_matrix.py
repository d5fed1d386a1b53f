"""The client matrix: the clients people use, each driven through its own real code against
the quick try (`mymcpctl serve`, and `serve --tls` trusting its throwaway certificate), and
what the model (or the user) receives back.

| client | how it runs headless | its model API |
|---|---|---|
| Claude Code | `claude -p`, `--mcp-config`, `--allowedTools mcp__mymcp` | Anthropic Messages (`ANTHROPIC_BASE_URL`) |
| Gemini CLI | `gemini -p --yolo`, `~/.gemini/settings.json` | Gemini API (`GOOGLE_GEMINI_BASE_URL`) |
| Codex CLI | `codex exec`, `$CODEX_HOME/config.toml` | OpenAI Responses (`model_providers`) |
| mcp-remote | the stdio bridge Claude Desktop uses, driven by the MCP Python SDK's stdio client | – |
| MCP Inspector | `inspector --cli … --method tools/call` | – |

The three coding CLIs talk to `model_standin.StandIn`, a scripted model served on loopback:
it makes each CLI call `read_file` of a file the test wrote (the result text must reach the
model) and `read_file` of a relative path (the server's own message, "file_path must be an
absolute path: …", must reach the model — not a client's schema complaint), then ends the
turn. Over HTTPS, Node clients trust the certificate through `NODE_EXTRA_CA_CERTS`, Codex (a
native binary) through `SSL_CERT_FILE`.

No recorder runs with the quick try, so `server_overview` must not be offered to any model.

The clients come pinned from tests/node/package.json (installed by tests/run, no install
scripts: Claude Code's native binary is run from its platform package). They are told not to
phone home: API-key auth with dummy keys, telemetry, error reporting and update checks off.
"""

import json
import os
import platform
import subprocess
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from conftest import start_server, stop_server
from model_standin import Call, StandIn

NODE_DIR = os.environ.get("MYMCP_NODE_DIR")
pytestmark = pytest.mark.skipif(not NODE_DIR, reason="MYMCP_NODE_DIR not set (tests/run sets it)")

CONTENT = "hello from the client matrix"
ABSOLUTE_PATH_MESSAGE = "file_path must be an absolute path: relative.txt"
SCHEMA_COMPLAINT = "does not match the tool's output schema"
PROMPT = "Read the file the test wrote, then the relative one."

# Inherited variables that would steer a client elsewhere (a developer's own keys, a CI's CA
# bundle, a client's nested-session markers): removed before each run.
STRIPPED_PREFIXES = ("ANTHROPIC_", "CLAUDE", "OPENAI_", "CODEX_", "GEMINI_", "GOOGLE_", "MCP_")
STRIPPED = {"NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_OPTIONS",
            "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"}


def node_modules() -> Path:
    return Path(NODE_DIR) / "node_modules"


def node() -> str:
    return str(node_modules() / ".bin" / "node")


@pytest.fixture(scope="module", params=["http", "https"])
def quick_try(request, tmp_path_factory):
    """The quick try as a new user starts it; no recorder (an empty data directory)."""
    recorder = tmp_path_factory.mktemp("no-recorder")
    args = ("--tls",) if request.param == "https" else ()
    s = start_server({"MYMCP_RECORDER_DATA_DIR": str(recorder)}, args=args)
    assert s.url.startswith(f"{request.param}://"), s.url
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("matrix-files")
    (d / "hello.txt").write_text(CONTENT + "\n")
    return d


def client_env(home: Path, server, **extra) -> dict:
    """A clean environment for one client run: its own HOME, the pinned Node first on PATH,
    the quick try's certificate trusted when it serves HTTPS."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(STRIPPED_PREFIXES) and k not in STRIPPED}
    env.update(HOME=str(home), NO_COLOR="1", TERM="dumb",
               PATH=f"{node_modules() / '.bin'}:{env.get('PATH', '/usr/bin:/bin')}")
    if server.cert:
        env["NODE_EXTRA_CA_CERTS"] = server.cert
    env.update(extra)
    return env


def run(argv: list, env: dict, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)


def script(files: Path) -> list:
    return [Call("read_file", {"file_path": str(files / "hello.txt")}),
            Call("read_file", {"file_path": "relative.txt"})]


def assert_the_model_saw_both_results(standin: StandIn, proc: subprocess.CompletedProcess):
    """What every CLI must hand its model: the file's text, then the server's message."""
    why = (f"exit {proc.returncode}\nstdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}\n"
           f"model API requests: {[r.path for r in standin.requests]}\noffered: {standin.offered}")
    assert standin.wait_finished(10), f"the model did not get both tool results\n{why}"
    ok, failed = standin.results[0], standin.results[1]
    assert CONTENT in ok.text, (ok, why)
    assert ABSOLUTE_PATH_MESSAGE in failed.text, (failed, why)
    assert SCHEMA_COMPLAINT not in failed.text, (failed, why)
    # The quick try has no overview: no model is told about server_overview.
    assert standin.offered and not any(n.endswith("server_overview") for n in standin.offered), \
        standin.offered


@pytest.fixture
def standin(files):
    s = StandIn(script(files)).start()
    yield s
    s.stop()


def test_claude_code(quick_try, standin, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"mymcp": {
        "type": "http", "url": quick_try.url,
        "headers": {"Authorization": f"Bearer {quick_try.rw_token}"}}}}))
    arch = {"x86_64": "x64", "aarch64": "arm64"}[platform.machine()]
    # --ignore-scripts leaves the wrapper's bin a stub: the native binary is in its platform
    # package.
    claude = node_modules() / "@anthropic-ai" / f"claude-code-linux-{arch}" / "claude"
    env = client_env(
        home, quick_try,
        ANTHROPIC_BASE_URL=standin.url,
        ANTHROPIC_API_KEY="sk-ant-standin",
        DISABLE_TELEMETRY="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_ERROR_REPORTING="1",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        # MCP tools in the first request rather than behind a ToolSearch call.
        ENABLE_TOOL_SEARCH="false",
    )
    proc = run([str(claude), "-p", PROMPT, "--mcp-config", str(config), "--strict-mcp-config",
                "--allowedTools", "mcp__mymcp", "--output-format", "json"], env, tmp_path)
    assert_the_model_saw_both_results(standin, proc)
    assert standin.results[1].is_error is True, standin.results[1]
    assert "mcp__mymcp__read_file" in standin.offered


def test_gemini_cli(quick_try, standin, tmp_path):
    home = tmp_path / "home"
    (home / ".gemini").mkdir(parents=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps({
        # Streamable HTTP is `httpUrl` (Gemini's `url` is the old SSE transport).
        "mcpServers": {"mymcp": {"httpUrl": quick_try.url, "trust": True,
                                 "headers": {"Authorization": f"Bearer {quick_try.rw_token}"}}},
        "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
        "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
    }))
    env = client_env(home, quick_try, GEMINI_API_KEY="standin", GOOGLE_GEMINI_BASE_URL=standin.url)
    gemini = node_modules() / "@google" / "gemini-cli" / "bundle" / "gemini.js"
    proc = run([node(), str(gemini), "-p", PROMPT, "--yolo", "--output-format", "json"],
               env, tmp_path)
    assert_the_model_saw_both_results(standin, proc)
    assert "mcp_mymcp_read_file" in standin.offered


def test_codex_cli(quick_try, standin, tmp_path):
    home = tmp_path / "home"
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True)
    (codex_home / "config.toml").write_text(f"""\
model = "gpt-standin"
model_provider = "standin"
approval_policy = "never"
check_for_update_on_startup = false

[analytics]
enabled = false

[feedback]
enabled = false

[model_providers.standin]
name = "stand-in"
base_url = "{standin.url}/v1"
wire_api = "responses"
env_key = "STANDIN_API_KEY"

[mcp_servers.mymcp]
url = "{quick_try.url}"
http_headers = {{ Authorization = "Bearer {quick_try.rw_token}" }}
""")
    # Codex is a native binary (rustls): it trusts an extra CA through SSL_CERT_FILE.
    extra = {"SSL_CERT_FILE": quick_try.cert} if quick_try.cert else {}
    env = client_env(home, quick_try, CODEX_HOME=str(codex_home), STANDIN_API_KEY="standin",
                     **extra)
    codex = node_modules() / "@openai" / "codex" / "bin" / "codex.js"
    proc = run([node(), str(codex), "exec", "--skip-git-repo-check", PROMPT], env, tmp_path)
    assert_the_model_saw_both_results(standin, proc)


async def _through_mcp_remote(quick_try, env: dict, files: Path) -> dict:
    bridge = node_modules() / "mcp-remote" / "dist" / "proxy.js"
    params = StdioServerParameters(
        command=node(),
        args=[str(bridge), quick_try.url, "--header", f"Authorization: Bearer {quick_try.rw_token}",
              "--transport", "http-only"],
        env=env,
    )
    out = {}
    with open(Path(env["HOME"]) / "mcp-remote.log", "w") as log, anyio.fail_after(60):
        async with stdio_client(params, errlog=log) as (read, write):
            async with ClientSession(read, write) as session:
                out["init"] = await session.initialize()
                out["tools"] = [t.name for t in (await session.list_tools()).tools]
                out["ok"] = await session.call_tool("read_file", {"file_path": str(files / "hello.txt")})
                out["relative"] = await session.call_tool("read_file", {"file_path": "relative.txt"})
                out["invalid"] = await session.call_tool("read_file", {"limit": 1})
    return out


def test_mcp_remote(quick_try, files, tmp_path):
    """Claude Desktop's bridge: a stdio MCP server in front of the HTTP(S) endpoint."""
    home = tmp_path / "home"
    home.mkdir()
    out = anyio.run(_through_mcp_remote, quick_try, client_env(home, quick_try), files)
    assert out["init"].server_info.name == "mymcp"
    assert "read_file" in out["tools"] and "server_overview" not in out["tools"]
    assert "server_overview" not in (out["init"].instructions or "")
    ok = out["ok"]
    assert ok.is_error is False
    assert CONTENT in ok.content[0].text
    assert ok.structured_content == json.loads(ok.content[0].text)
    for name, code, message in [
        ("relative", "InvalidPath", ABSOLUTE_PATH_MESSAGE),
        ("invalid", "InvalidArguments", "Input validation error: 'file_path' is a required property"),
    ]:
        r = out[name]
        assert r.is_error is True, r
        assert json.loads(r.content[0].text) == r.structured_content, r
        assert r.structured_content == {"success": False, "error": code, "message": message}, r


def test_inspector_cli(quick_try, files, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = client_env(home, quick_try)
    inspector = node_modules() / ".bin" / "inspector"

    def call(*args: str, status: int = 0) -> dict:
        """The result the Inspector prints; it exits 5 for a result with isError."""
        proc = run([str(inspector), "--cli", quick_try.url, "--transport", "http",
                    "--header", f"Authorization: Bearer {quick_try.rw_token}", *args], env, tmp_path)
        assert proc.returncode == status, f"{args}: {proc.stdout}\n{proc.stderr}"
        return json.loads(proc.stdout)

    tools = [t["name"] for t in call("--method", "tools/list")["tools"]]
    assert "read_file" in tools and "server_overview" not in tools
    ok = call("--method", "tools/call", "--tool-name", "read_file",
              "--tool-arg", f"file_path={files / 'hello.txt'}")
    assert ok["isError"] is False and CONTENT in ok["content"][0]["text"], ok
    failed = call("--method", "tools/call", "--tool-name", "read_file",
                  "--tool-arg", "file_path=relative.txt", status=5)
    assert failed["isError"] is True, failed
    assert failed["structuredContent"] == {"success": False, "error": "InvalidPath",
                                           "message": ABSOLUTE_PATH_MESSAGE}, failed
    assert json.loads(failed["content"][0]["text"]) == failed["structuredContent"]
