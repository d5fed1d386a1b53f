"""End to end: the official MCP Python SDK client against the real frontend and executor."""

import json
import os
import urllib.error
import urllib.request

from conftest import tool_json, wait_until, with_session, start_server, stop_server


def call(session_fn_name, *args):
    async def fn(session, _init):
        return await getattr(session, session_fn_name)(*args)

    return fn


def test_initialize_negotiates_a_supported_version(server):
    async def fn(session, init):
        return init

    init = with_session(server.url, server.rw_token, fn)
    assert init.protocol_version in {"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"}
    assert init.server_info.name == "mymcp"
    assert init.capabilities.tools is not None


def test_rw_token_lists_every_tool(server):
    tools = with_session(server.url, server.rw_token, call("list_tools")).tools
    names = [t.name for t in tools]
    assert names == [
        "bash_execute", "read_file", "write_file", "edit_file", "glob", "grep",
        "job_status", "job_output", "job_kill", "prepare_upload", "prepare_download",
        "server_overview", "terminal_open", "terminal_send", "terminal_read", "terminal_resize", "terminal_list", "terminal_close",
    ]
    bash = next(t for t in tools if t.name == "bash_execute")
    assert bash.input_schema["required"] == ["command"]
    assert bash.input_schema["properties"]["timeout"]["type"] == "integer"


def test_ro_token_lists_only_read_tools(server, ro_token):
    tools = with_session(server.url, ro_token, call("list_tools")).tools
    assert [t.name for t in tools] == [
        "read_file", "glob", "grep", "prepare_download", "server_overview"]


def test_bash_execute_runs_as_root_with_output_and_exit_code(server):
    r = with_session(
        server.url,
        server.rw_token,
        call("call_tool", "bash_execute", {"command": "echo hello; echo oops >&2; id -u; exit 3"}),
    )
    out = tool_json(r)
    assert out == {"stdout": "hello\n0\n", "stderr": "oops\n", "exit_code": 3, "timed_out": False}
    assert r.is_error is False


def test_bash_execute_is_bash_in_the_working_dir(server):
    r = with_session(
        server.url,
        server.rw_token,
        call("call_tool", "bash_execute", {"command": "[[ 1 == 1 ]] && pwd", "working_dir": "/usr"}),
    )
    assert tool_json(r)["stdout"] == "/usr\n"


def test_bash_execute_truncates_output_with_the_reference_marker(server):
    r = with_session(
        server.url,
        server.rw_token,
        call("call_tool", "bash_execute", {"command": "head -c 5000 /dev/zero | tr '\\0' a", "max_output_bytes": 10}),
    )
    out = tool_json(r)
    assert out["stdout"] == "a" * 10 + "\n[TRUNCATED: total 5000 bytes, showing first 10 bytes]"


def test_bash_execute_timeout_returns_on_time_with_partial_output(server):
    import time

    t = time.monotonic()
    r = with_session(
        server.url,
        server.rw_token,
        call("call_tool", "bash_execute", {"command": "echo started; sleep 1000 & wait", "timeout": 1}),
    )
    elapsed = time.monotonic() - t
    out = tool_json(r)
    assert out["timed_out"] is True
    assert out["stdout"] == "started\n"
    assert "Command timed out after 1s" in out["stderr"]
    assert elapsed < 1 + 2 + 1 + 2, elapsed


def test_read_file_pages_with_line_numbers(server, tmp_path):
    p = tmp_path / "lines.txt"
    p.write_bytes(b"one\r\ntwo\nthree\nfour\n")
    os.chmod(tmp_path, 0o755)
    r = with_session(
        server.url, server.rw_token, call("call_tool", "read_file", {"file_path": str(p), "offset": 2, "limit": 2})
    )
    assert tool_json(r) == {"content": "   2\ttwo\n   3\tthree", "total_lines": 4, "truncated": True}
    r = with_session(server.url, server.rw_token, call("call_tool", "read_file", {"file_path": str(p)}))
    assert tool_json(r) == {"content": "   1\tone\n   2\ttwo\n   3\tthree\n   4\tfour", "total_lines": 4, "truncated": False}


def test_read_file_errors_are_typed(server, ro_token, tmp_path):
    def read(path):
        r = with_session(server.url, ro_token, call("call_tool", "read_file", {"file_path": path}))
        assert r.is_error is True
        return tool_json(r)

    missing = read(str(tmp_path / "nope"))
    assert missing["success"] is False and missing["error"] == "FileNotFoundError"
    assert missing["message"] == f"File not found: {tmp_path / 'nope'}"
    assert read("relative.txt")["error"] == "InvalidPath"
    assert read(str(tmp_path))["error"] == "IsADirectoryError"
    assert read("/dev/zero")["error"] == "NotARegularFile"


def test_ro_token_may_read_but_not_run_commands(server, ro_token, tmp_path):
    marker = tmp_path / "ro-ran"
    r = with_session(server.url, ro_token, call("call_tool", "bash_execute", {"command": f"touch {marker}"}))
    out = tool_json(r)
    assert out["error"] == "PermissionDenied"
    assert out["message"] == "Permission denied: tool 'bash_execute' requires rw role"
    assert not marker.exists()
    r = with_session(server.url, ro_token, call("call_tool", "read_file", {"file_path": "/etc/os-release"}))
    assert "content" in tool_json(r)


def test_invalid_arguments_name_the_field(server):
    r = with_session(server.url, server.rw_token, call("call_tool", "read_file", {"offset": 2}))
    assert r.is_error is True
    assert "file_path" in r.content[0].text


def post(url, body, headers):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def test_missing_or_unknown_token_gets_401(server):
    status, headers, body = post(server.url, PING, JSON_HEADERS)
    assert status == 401
    assert json.loads(body) == {"detail": "Missing Bearer token"}
    assert headers.get("www-authenticate", "").startswith("Bearer")

    status, _, body = post(server.url, PING, dict(JSON_HEADERS, Authorization="Bearer tok_unknown"))
    assert status == 401
    assert json.loads(body) == {"detail": "Invalid or disabled token"}

    # The admin token is for management only, never for tools.
    status, _, _ = post(server.url, PING, dict(JSON_HEADERS, Authorization=f"Bearer {server.admin_token}"))
    assert status == 401

    status, _, body = post(server.url, PING, dict(JSON_HEADERS, Authorization=f"bearer {server.rw_token}"))
    assert status == 200 and json.loads(body)["result"] == {}


def test_revoked_token_is_refused_at_once(server):
    token = server.add_token("short-lived", "rw")
    auth = dict(JSON_HEADERS, Authorization=f"Bearer {token}")
    assert post(server.url, PING, auth)[0] == 200
    listing = json.loads(server.ctl("token", "list", "--json").stdout)
    entry = next(t for t in listing if t["name"] == "short-lived")
    assert "token" not in entry and token not in json.dumps(listing)
    r = server.ctl("token", "revoke", entry["id"])
    assert r.returncode == 0, r.stderr
    assert post(server.url, PING, auth)[0] == 401


def test_health_and_version_need_no_token(server):
    base = server.url.rsplit("/mcp", 1)[0]
    with urllib.request.urlopen(base + "/health", timeout=5) as r:
        h = json.loads(r.read())
    assert h["status"] == "ok" and h["executor"] == "connected"
    with urllib.request.urlopen(base + "/version", timeout=5) as r:
        assert json.loads(r.read())["version"] == h["version"]


def _proc_status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def test_frontend_runs_without_privileges_and_executor_as_root(server):
    kids = server.children()
    frontend = [p for p, c in kids.items() if c == "mymcp-frontend"]
    executor = [p for p, c in kids.items() if c == "mymcp-executor"]
    assert len(frontend) == 1 and len(executor) == 1, kids
    st = _proc_status(frontend[0])
    uids = st["Uid"].split()
    assert all(u == "65534" for u in uids), st["Uid"]
    assert all(g == "65534" for g in st["Gid"].split()), st["Gid"]
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]:
        assert int(st[cap], 16) == 0, f"{cap}={st[cap]}"
    assert st["NoNewPrivs"] == "1"
    assert st["Groups"] == ""
    assert _proc_status(executor[0])["Uid"].split()[0] == "0"


def test_stopping_the_quick_try_deletes_its_state():
    s = start_server()
    state_dir = os.path.dirname(s.runtime_dir)
    assert os.path.isdir(state_dir)
    assert os.stat(state_dir).st_mode & 0o777 == 0o710
    kids = s.children()
    assert sorted(kids.values()) == ["mymcp-executor", "mymcp-frontend"], kids
    for pid in kids:
        # mymcpctl waits for signals with them blocked; its children must not inherit that.
        # (glibc blocks all signals for an instant while a thread starts, so one reading with
        # SIGTERM unblocked is the proof; an inherited mask would show in every reading.)
        def term_unblocked():
            return int(_proc_status(pid)["SigBlk"], 16) & (1 << 14) == 0

        assert wait_until(term_unblocked, 2.0), f"SIGTERM blocked in {kids[pid]}"
    assert stop_server(s) == 0
    assert not os.path.exists(state_dir), "the temporary tokens must vanish with the server"
    assert wait_until(lambda: not any(os.path.exists(f"/proc/{p}") for p in kids))
    # The executor shut down on SIGTERM (it logs "stopped"), rather than being killed.
    assert any("stopped" in line for line in s.log), "\n".join(s.log[-20:])
