"""The recorder and server_overview together: the real mymcp-recorder follows the audit log of
the real executor (quick try) and talks to a fake LLM API on loopback; an ro token sees its
overview through the MCP Python SDK, and pending_events moves with the recorder's cursor."""

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import bin_dir, start_server, stop_server, tool_json, with_session


class FakeAnthropic(BaseHTTPRequestHandler):
    """Answers the Messages API: the bootstrap writes an overview at once; a merge records one
    changelog line per event it was given."""

    requests: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeAnthropic.requests.append((self.path, dict(self.headers), body))
        tools = [t["name"] for t in body.get("tools", [])]
        if "write_overview" in tools:
            call = ("write_overview", {"sections": [
                {"section": "TL;DR", "content": "The e2e host, explored by the recorder."}]})
        else:
            prompt = body["messages"][0]["content"][0]["text"]
            events = prompt.split("<events>\n", 1)[1].split("</events>", 1)[0]
            lines = [
                f"2026-11-21 18:00 | {e['tool']} | wrote {e['params']['file_path']}"
                for e in map(json.loads, filter(None, events.splitlines()))
            ]
            call = ("record_changes", {"new_changelog_lines": lines, "section_updates": [
                {"section": "Data Locations", "content": f"{len(lines)} files written by e2e"}]})
        reply = json.dumps({
            "content": [{"type": "tool_use", "id": "tu_1", "name": call[0], "input": call[1]}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 5},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def llm():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeAnthropic)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def overview(server, token) -> dict:
    async def scenario(session, _):
        return await session.call_tool("server_overview", {})

    return tool_json(with_session(server.url, token, scenario))


def test_the_recorders_overview_through_server_overview(llm, tmp_path):
    data = tmp_path / "recorder"
    server = start_server({"MYMCP_RECORDER_DATA_DIR": str(data)})
    try:
        ro = server.add_token("recorder-e2e-reader", "ro")
        audit = Path(server.runtime_dir).parent / "audit"
        env = {
            "PATH": os.environ["PATH"],
            "MYMCP_RECORDER_ENABLED": "true",
            "MYMCP_RECORDER_DATA_DIR": str(data),
            "MYMCP_AUDIT_LOG_DIR": str(audit),
            "MYMCP_RECORDER_LLM_BASE_URL": llm,
            "MYMCP_RECORDER_LLM_API_KEY": "e2e-key",
        }

        def tick():
            r = subprocess.run([str(bin_dir() / "mymcp-recorder"), "--once", "--allow-root"],
                               env=env, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr

        assert overview(server, ro)["error"] == "RecorderDisabled"
        tick()  # the bootstrap
        out = overview(server, ro)
        assert out["success"] is True and out["pending_events"] == 0 and out["stale"] is False
        assert "The e2e host, explored by the recorder." in out["overview"]
        assert FakeAnthropic.requests[-1][1]["x-api-key"] == "e2e-key"

        async def write(session, _):
            for name in ["a.txt", "b.txt"]:
                r = await session.call_tool(
                    "write_file", {"file_path": str(tmp_path / name), "content": name})
                assert r.is_error is False, r

        with_session(server.url, server.rw_token, write)
        # The executor counts what waits behind the recorder's cursor.
        assert overview(server, ro)["pending_events"] == 2
        tick()  # a merge
        out = overview(server, ro)
        assert out["pending_events"] == 0
        text = out["overview"]
        assert f"- 2026-11-21 18:00 | write_file | wrote {tmp_path / 'b.txt'}" in text, text
        assert "2 files written by e2e" in text
        assert (data / "overview" / "changelog.md").read_text().count("| write_file |") == 2
        # Idle: no further call.
        calls = len(FakeAnthropic.requests)
        tick()
        assert len(FakeAnthropic.requests) == calls
    finally:
        stop_server(server)
