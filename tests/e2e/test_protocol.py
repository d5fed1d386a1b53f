"""MCP protocol completeness with the official Python SDK: both eras (an `initialize` session
and a 2026-07-28 `server/discover` session), structured results validated against every
tool's published outputSchema with a JSON Schema validator, instructions, annotations."""

import json
import re
import urllib.request
from urllib.error import HTTPError

import anyio
import pytest
from jsonschema import Draft202012Validator
from mcp import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

from conftest import start_server, stop_server, tool_json, wait_until

ERAS = ["initialize", "discover"]


async def _session(url: str, token: str, era: str, fn):
    headers = {"Authorization": f"Bearer {token}"}
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                opened = await (session.initialize() if era == "initialize" else session.discover())
                return await fn(session, opened)


def run_session(url: str, token: str, era: str, fn):
    return anyio.run(_session, url, token, era, fn)


def sample_calls(scratch) -> list:
    """(tool, arguments) that succeed, covering every tool; jobs are filled in as they run."""
    path = str(scratch / "proto.txt")
    return [
        ("bash_execute", {"command": "printf 'a\\nb\\n'; echo err >&2"}),
        ("write_file", {"file_path": path, "content": "one\ntwo\nthree\n"}),
        ("read_file", {"file_path": path, "offset": 2, "limit": 1}),
        ("edit_file", {"file_path": path, "old_string": "two", "new_string": "2"}),
        ("glob", {"pattern": "*.txt", "path": str(scratch)}),
        ("grep", {"pattern": "t", "path": str(scratch), "context_lines": 1}),
        ("grep", {"pattern": "t", "path": str(scratch), "output_mode": "count"}),
        ("bash_execute", {"command": "echo job; sleep 30", "background": True}),
        ("job_output", {"job_id": None, "wait_seconds": 5}),
        ("job_status", {"job_id": None}),
        ("job_kill", {"job_id": None}),
        ("job_status", {"job_id": None}),
        ("prepare_upload", {"dest_path": str(scratch / "up.bin"), "max_bytes": 10}),
        ("prepare_download", {"src_path": path}),
        ("server_overview", {}),
        ("terminal_open", {"command": "cat", "rows": 10, "cols": 40}),
        ("terminal_send", {"terminal_id": None, "text": "hi", "keys": ["Enter"]}),
        ("terminal_read", {"terminal_id": None, "wait_for": "hi", "timeout": 10}),
        ("terminal_resize", {"terminal_id": None, "rows": 12, "cols": 50}),
        ("terminal_list", {}),
        ("terminal_close", {"terminal_id": None}),
    ]


@pytest.mark.parametrize("era", ERAS)
def test_every_tool_result_matches_its_output_schema(server, tmp_path, era):
    async def scenario(session: ClientSession, opened):
        tools = {t.name: t for t in (await session.list_tools()).tools}
        for tool in tools.values():
            # Both schemas are valid JSON Schema 2020-12 (the spec's default dialect).
            Draft202012Validator.check_schema(tool.input_schema)
            Draft202012Validator.check_schema(tool.output_schema)
            assert tool.output_schema["type"] == "object"
            assert tool.title and tool.description
        called = set()
        job_id = terminal_id = None
        for name, args in sample_calls(tmp_path):
            if "job_id" in args:
                args = dict(args, job_id=job_id)
            if "terminal_id" in args:
                args = dict(args, terminal_id=terminal_id)
            result = await session.call_tool(name, args)
            assert result.is_error is False, (name, result)
            data = tool_json(result)
            # The structured value is the text's JSON, and it validates.
            assert result.structured_content == data, name
            errors = list(Draft202012Validator(tools[name].output_schema).iter_errors(data))
            assert not errors, (name, [e.message for e in errors], data)
            if era == "discover":
                assert result.result_type == "complete"
                assert result.meta["io.modelcontextprotocol/serverInfo"]["name"] == "mymcp"
            if name == "bash_execute" and args.get("background"):
                job_id = data["job_id"]
            if name == "terminal_open":
                terminal_id = data["terminal_id"]
            called.add(name)
        assert called == set(tools), set(tools) - called

    run_session(server.url, server.rw_token, era, scenario)


@pytest.mark.parametrize("era", ERAS)
def test_every_failure_has_one_shape_that_the_output_schema_describes(server, era):
    async def scenario(session: ClientSession, opened):
        tools = {t.name: t for t in (await session.list_tools()).tools}
        failures = [
            ("read_file", {"file_path": "/nonexistent/file"}, "FileNotFoundError"),
            ("read_file", {"file_path": "relative.txt"}, "InvalidPath"),
            # Arguments are validated against the input schema, naming the field.
            ("read_file", {"file_path": "/etc/hostname", "limit": "x"}, "InvalidArguments"),
            ("bash_execute", {}, "InvalidArguments"),
            ("write_file", {"file_path": "relative", "content": "x"}, "InvalidPath"),
            ("job_status", {"job_id": "nope"}, None),
        ]
        for name, args, code in failures:
            result = await session.call_tool(name, args)
            assert result.is_error is True, (name, result)
            data = tool_json(result)
            assert result.structured_content == data, name
            assert data["success"] is False and data["message"], data
            if code:
                assert data["error"] == code, data
            errors = list(Draft202012Validator(tools[name].output_schema).iter_errors(data))
            assert not errors, (name, [e.message for e in errors], data)
        result = await session.call_tool("read_file", {"file_path": "/etc/hostname", "limit": "x"})
        assert "'limit' must be an integer" in tool_json(result)["message"]
        result = await session.call_tool("read_file", {"file_path": "relative.txt"})
        assert tool_json(result)["message"] == "file_path must be an absolute path: relative.txt"

    run_session(server.url, server.rw_token, era, scenario)


def test_initialize_and_discover_give_instructions_and_capabilities(server):
    async def legacy(session: ClientSession, init):
        assert init.protocol_version == "2025-11-25"
        assert init.server_info.name == "mymcp"
        assert "absolute" in init.instructions
        assert init.capabilities.tools.list_changed is False
        return init.instructions

    async def modern(session: ClientSession, discovered):
        assert "2026-07-28" in discovered.supported_versions
        assert "2025-03-26" in discovered.supported_versions
        assert discovered.capabilities.tools is not None
        assert discovered.capabilities.prompts is None
        listed = await session.list_tools()
        assert listed.cache_scope == "private" and listed.ttl_ms > 0
        return discovered.instructions

    text = run_session(server.url, server.rw_token, "initialize", legacy)
    assert run_session(server.url, server.rw_token, "discover", modern) == text
    for topic in ["job_output", "ProtectedPath", "prepare_upload", "isError"]:
        assert topic in text, topic


def test_tools_are_listed_in_a_fixed_order_with_annotations(server, ro_token):
    async def names(session: ClientSession, _):
        first = [t.model_dump(by_alias=True) for t in (await session.list_tools()).tools]
        second = [t.model_dump(by_alias=True) for t in (await session.list_tools()).tools]
        assert first == second
        return {t["name"]: t["annotations"] for t in first}

    rw = run_session(server.url, server.rw_token, "discover", names)
    assert list(rw) == [
        "bash_execute", "read_file", "write_file", "edit_file", "glob", "grep",
        "job_status", "job_output", "job_kill", "prepare_upload", "prepare_download",
        "server_overview", "terminal_open", "terminal_send", "terminal_read", "terminal_resize", "terminal_list", "terminal_close",
    ]
    assert rw["read_file"]["readOnlyHint"] is True
    assert rw["bash_execute"]["destructiveHint"] is True
    assert rw["bash_execute"]["openWorldHint"] is True
    ro = run_session(server.url, ro_token, "initialize", names)
    assert list(ro) == ["read_file", "glob", "grep", "prepare_download", "server_overview"]


def test_a_modern_session_cannot_use_legacy_methods(server):
    from mcp.shared.exceptions import MCPError

    async def scenario(session: ClientSession, _):
        with pytest.raises(MCPError) as err:
            await session.send_ping()
        return err.value.error.code

    assert run_session(server.url, server.rw_token, "discover", scenario) == -32601


def post(url: str, token: str, body: dict, headers: dict) -> tuple:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    for k, v in {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                 "Accept": "application/json", **headers}.items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def echo_call(word: str) -> dict:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "bash_execute", "arguments": {"command": f"echo {word}"}}}


def logged_peer(server, word: str) -> str:
    """The client address the executor logged for the call that echoed `word`."""
    def find():
        for line in (re.sub(r"\x1b\[[0-9;]*m", "", raw) for raw in server.log):
            if "tool call" in line and "bash_execute" in line and f"request_id=req-{word}" in line:
                return line.split("peer=")[1].split()[0]
        return None
    assert wait_until(lambda: find() is not None), "\n".join(server.log[-20:])
    return find()


def test_forwarded_for_counts_only_from_trusted_proxies(server):
    # The default: X-Forwarded-For is ignored, the TCP peer is the client.
    status, body = post(server.url, server.rw_token, echo_call("untrusted"),
                        {"X-Forwarded-For": "203.0.113.7", "X-Request-ID": "req-untrusted"})
    assert status == 200, body
    assert logged_peer(server, "untrusted") == "127.0.0.1"


def test_a_same_host_reverse_proxy_works_when_configured():
    """nginx on the same host, forwarding the public Host and X-Forwarded-For (see README)."""
    s = start_server({
        "MYMCP_PUBLIC_BASE_URL": "https://mcp.example.test",
        "MYMCP_TRUSTED_PROXIES": "127.0.0.1",
    })
    try:
        proxied = {"Host": "mcp.example.test", "X-Forwarded-For": "198.51.100.1, 203.0.113.7",
                   "X-Forwarded-Proto": "https", "X-Request-ID": "req-proxied"}
        status, body = post(s.url, s.rw_token, echo_call("proxied"), proxied)
        assert status == 200, body
        assert json.loads(body["result"]["content"][0]["text"])["stdout"] == "proxied\n"
        # The rightmost address not a trusted proxy: what the proxy itself saw.
        assert logged_peer(s, "proxied") == "203.0.113.7"
        # A browser page of the public origin may call; a page elsewhere may not.
        status, _ = post(s.url, s.rw_token, echo_call("x"),
                         {"Host": "mcp.example.test", "Origin": "https://mcp.example.test"})
        assert status == 200
        status, body = post(s.url, s.rw_token, echo_call("x"),
                            {"Host": "mcp.example.test", "Origin": "https://evil.example"})
        assert status == 403 and body["error"]["code"] == -32600
        status, _ = post(s.url, s.rw_token, echo_call("x"), {"Host": "evil.example"})
        assert status == 403
    finally:
        stop_server(s)
