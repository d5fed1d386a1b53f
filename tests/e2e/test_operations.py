"""Operations through the real quick try: /metrics parsed by the Prometheus parser, the admin
API used over HTTP next to the MCP SDK, the audit log verified, the example env file."""

import json
import subprocess
import urllib.error
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from conftest import bin_dir, tool_json, with_session


def base(server) -> str:
    return server.url.rsplit("/mcp", 1)[0]


def http(server, method, path, token=None, body=None, accept=None):
    """(status, headers, text) of one request."""
    req = urllib.request.Request(base(server) + path, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if accept is not None:
        req.add_header("Accept", accept)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, data=data, timeout=30) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def scrape(server, token, openmetrics=False) -> dict:
    """Samples by (name, frozen labels) from a parsed /metrics: the classic text format that
    every Prometheus client library answers by default, or OpenMetrics when asked for."""
    accept = "application/openmetrics-text; version=1.0.0" if openmetrics else None
    status, headers, text = http(server, "GET", "/metrics", token, accept=accept)
    assert status == 200, text
    if openmetrics:
        assert headers["Content-Type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8"
        assert text.endswith("# EOF\n")
        families = list(parse_openmetrics(text))
    else:
        assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert "# EOF" not in text and "# TYPE mymcp_audit_write_failures_total counter\n" in text
        families = list(parse_text(text))
        # Every sample belongs to a typed family (a counter announced without `_total` would
        # leave its samples untyped).
        assert all(f.type != "unknown" for f in families), [f.name for f in families]
    samples = {}
    for family in families:
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def metrics_token(server) -> str:
    r = server.ctl("token", "rotate-metrics")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_metrics_are_valid_in_both_formats_and_move_with_calls(server, tmp_path):
    token = metrics_token(server)
    before = scrape(server, token)
    assert value(before, "mymcp_executor_connected") == 1
    assert value(before, "mymcp_build_info", version="0.1.0", wire_version="1") == 1

    f = tmp_path / "m.txt"
    f.write_text("one\ntwo\n")

    async def calls(session, _init):
        await session.call_tool("read_file", {"file_path": str(f)})
        await session.call_tool("read_file", {"file_path": str(f)})
        # An unknown tool name never becomes a label value.
        await session.call_tool("rm -rf /", {})

    with_session(server.url, server.rw_token, calls)
    after = scrape(server, token)
    calls_name = "mymcp_tool_calls_total"
    ok = dict(tool="read_file", role="rw", result="ok")
    assert value(after, calls_name, **ok) == value(before, calls_name, **ok) + 2
    hist = "mymcp_tool_duration_seconds_count"
    assert value(after, hist, tool="read_file") == value(before, hist, tool="read_file") + 2
    inf = dict(tool="read_file", le="+Inf")
    assert value(after, "mymcp_tool_duration_seconds_bucket", **inf) == value(after, hist, tool="read_file")
    unknown = dict(tool="unknown", role="rw", result="denied")
    assert value(after, calls_name, **unknown) >= 1
    tools = {dict(labels).get("tool") for (name, labels) in after if name == calls_name}
    assert "rm -rf /" not in tools
    assert tools <= {"bash_execute", "read_file", "write_file", "edit_file", "glob", "grep",
                     "job_status", "job_output", "job_kill", "prepare_upload", "prepare_download",
                     "server_overview", "unknown", "terminal_open", "terminal_send", "terminal_read", "terminal_resize", "terminal_list", "terminal_close"}
    http_ok = dict(path="/mcp", method="POST", status="200")
    assert value(after, "mymcp_http_requests_total", **http_ok) > value(
        before, "mymcp_http_requests_total", **http_ok
    )
    assert value(after, "mymcp_tokens_count", role="metrics") == 1

    # A wrong token: 401, counted.
    status, _, text = http(server, "GET", "/metrics", server.rw_token)
    assert (status, json.loads(text)) == (401, {"detail": "Unauthorized"})
    later = scrape(server, token)
    assert value(later, "mymcp_auth_failures_total", endpoint="metrics") >= 1

    # The same series in OpenMetrics (the gauges of in-flight requests aside).
    om = scrape(server, token, openmetrics=True)
    text = scrape(server, token)
    moving = {"mymcp_http_requests_total", "mymcp_http_requests_in_flight"}
    assert {k for k in om if k[0] not in moving} == {k for k in text if k[0] not in moving}


def test_admin_api_tokens_work_in_the_mcp_sdk_at_once_and_stop_at_once(server):
    status, _, text = http(server, "POST", "/admin/tokens", server.admin_token, {"name": "sdk-reader"})
    assert status == 200, text
    created = json.loads(text)
    assert created["role"] == "ro" and created["token"].startswith("tok_")

    async def tools(session, _init):
        return [t.name for t in (await session.list_tools()).tools]

    assert with_session(server.url, created["token"], tools) == [
        "read_file", "glob", "grep", "prepare_download", "server_overview"]

    status, _, text = http(server, "GET", "/admin/tokens", server.admin_token)
    listing = json.loads(text)
    assert created["id"] in listing and "tok_" not in text

    status, _, _ = http(server, "DELETE", f"/admin/tokens/{created['id']}", server.admin_token)
    assert status == 200
    status, _, text = http(server, "POST", "/mcp", created["token"],
                           {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert (status, json.loads(text)) == (401, {"detail": "Invalid or disabled token"})
    status, _, text = http(server, "POST", "/admin/tokens", server.rw_token, {"name": "x"})
    assert (status, json.loads(text)) == (403, {"detail": "Admin token required"})


def test_the_quick_try_audit_log_verifies_and_status_shows_it(server):
    async def call(session, _init):
        return tool_json(await session.call_tool("bash_execute", {"command": "echo audited"}))

    assert with_session(server.url, server.rw_token, call)["stdout"] == "audited\n"
    key = next(line.split()[-1] for line in server.log if "audit install key:" in line)
    r = server.ctl("audit", "verify", "--key", key, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] and report["live_head_checked"] and report["lines"] >= 2
    r = server.ctl("status", "--json")
    assert r.returncode == 0, r.stdout
    status = json.loads(r.stdout)
    assert status["audit"]["enabled"] and status["audit"]["head_seq"] >= 2


def test_config_example_names_every_reference_setting():
    out = subprocess.run([str(bin_dir() / "mymcpctl"), "config", "example"],
                         capture_output=True, text=True, check=True).stdout
    for name in ["MYMCP_HOST", "MYMCP_PORT", "MYMCP_ADMIN_TOKEN", "MYMCP_METRICS_TOKEN",
                 "MYMCP_TOKEN_FILE", "MYMCP_BASH_MAX_OUTPUT_BYTES", "MYMCP_READ_FILE_MAX_LIMIT",
                 "MYMCP_WRITE_FILE_MAX_BYTES", "MYMCP_GREP_MAX_RESULTS", "MYMCP_AUDIT_ENABLED",
                 "MYMCP_AUDIT_LOG_DIR", "MYMCP_AUDIT_MAX_BYTES", "MYMCP_AUDIT_BACKUP_COUNT",
                 "MYMCP_SHUTDOWN_GRACE_SEC", "MYMCP_PROTECTED_PATHS", "MYMCP_TRANSFER_ENABLED",
                 "MYMCP_TRANSFER_MAX_BYTES", "MYMCP_PUBLIC_BASE_URL"]:
        assert f"\n#{name}=" in out, name
