"""server_overview (spec §4.8) through the real frontend and executor with an ro token and the
official MCP Python SDK: missing, fresh and stale overviews, pending events counted from the
recorder's cursor in the live audit log, and the data directory readable but never writable.
The tool and its mention in the instructions are there only while an overview is, and the
quick try's messages do not send the model to systemctl (it runs outside systemd)."""

import json
import os
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import start_server, stop_server, tool_json, with_session, write_overview


@pytest.fixture(scope="module")
def recorder_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("overview-recorder")


@pytest.fixture(scope="module")
def host(recorder_dir):
    """A server whose recorder data directory is `recorder_dir` (empty at first)."""
    s = start_server({
        "MYMCP_RECORDER_DATA_DIR": str(recorder_dir),
        "MYMCP_RECORDER_MERGE_INTERVAL_SEC": "60",
    })
    s.ro = s.add_token("overview-reader", "ro")
    yield s
    stop_server(s)


def call(server, token: str, name: str, args: dict):
    async def scenario(session, _):
        return await session.call_tool(name, args)

    return with_session(server.url, token, scenario)


def audit_log(server) -> Path:
    # The quick try keeps its audit log beside its runtime directory.
    return Path(server.runtime_dir).parent / "audit" / "audit.log"


def stamp(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def listed(server, token: str) -> tuple[list, str]:
    """The tool names and the instructions a fresh session gets."""
    async def scenario(session, init):
        return [t.name for t in (await session.list_tools()).tools], init.instructions

    return with_session(server.url, token, scenario)


def test_missing_overview_is_not_listed_and_fails_with_a_true_message(host, recorder_dir):
    names, instructions = listed(host, host.ro)
    assert names == ["read_file", "glob", "grep", "prepare_download"]
    assert "server_overview" not in instructions
    # Still callable: the failure says why, without pointing at a systemd unit.
    result = call(host, host.ro, "server_overview", {})
    assert result.is_error is True
    out = tool_json(result)
    assert result.structured_content == out
    path = recorder_dir / "overview" / "overview.md"
    assert out == {
        "success": False,
        "error": "RecorderDisabled",
        "message": f"overview not generated yet at {path}: the mymcp recorder (mymcp-recorder) "
                   "keeps it, and none has written it for this server, which runs outside "
                   "systemd (the quick try, mymcpctl serve, starts no recorder)",
    }


def test_an_overview_makes_the_tool_listed_and_named_first(host, recorder_dir):
    write_overview(recorder_dir, "# Host\n")
    names, instructions = listed(host, host.ro)
    assert names == ["read_file", "glob", "grep", "prepare_download", "server_overview"]
    assert "server_overview describes the host" in instructions
    assert "server_overview" in listed(host, host.rw_token)[0]
    (recorder_dir / "overview" / "overview.md").unlink()
    assert "server_overview" not in listed(host, host.rw_token)[0]


def test_fresh_overview_for_an_ro_token(host, recorder_dir):
    now = datetime.now(timezone.utc)
    text = f"# Host\n\n_Last updated: {stamp(now)}_\n\n## TL;DR\nnginx and postgres.\n"
    write_overview(recorder_dir, text)
    result = call(host, host.ro, "server_overview", {})
    assert result.is_error is False, result
    out = tool_json(result)
    assert result.structured_content == out
    assert list(out) == ["success", "overview", "last_updated", "pending_events", "stale"]
    assert out == {"success": True, "overview": text, "last_updated": stamp(now),
                   "pending_events": 0, "stale": False}


def test_pending_events_behind_the_cursor_make_an_old_overview_stale(host, recorder_dir, tmp_path):
    old = datetime.now(timezone.utc) - timedelta(hours=1)
    write_overview(recorder_dir, f"# Host\n_Last updated: {stamp(old)}_\n")
    log = audit_log(host)
    # The recorder has read everything so far.
    cursor = {"file": str(log), "inode": os.stat(log).st_ino, "offset": log.stat().st_size}
    (recorder_dir / "cursor.json").write_text(json.dumps(cursor))
    out = tool_json(call(host, host.ro, "server_overview", {}))
    assert (out["pending_events"], out["stale"]) == (0, False)

    # Two successful changes and one failed one by an rw token; reads do not count.
    for i in range(2):
        f = tmp_path / f"f{i}"
        assert not call(host, host.rw_token, "write_file",
                        {"file_path": str(f), "content": "x"}).is_error
    assert call(host, host.rw_token, "write_file",
                {"file_path": "relative", "content": "x"}).is_error
    assert not call(host, host.ro, "read_file", {"file_path": str(tmp_path / "f0")}).is_error

    out = tool_json(call(host, host.ro, "server_overview", {}))
    assert (out["pending_events"], out["stale"]) == (2, True)
    banner, rest = out["overview"].split("\n\n", 1)
    assert banner.startswith("_Warning: this overview may be out of date: 2 audit events")
    minutes = int(re.search(r"last updated (\d+) minutes ago", banner).group(1))
    assert 60 <= minutes <= 65, banner
    assert banner.endswith("Check that the mymcp recorder (mymcp-recorder) runs for this server_")
    assert rest.startswith("# Host\n")
    assert out["last_updated"] == stamp(old)

    # A fresh overview with the same events waiting is not stale (2 × 60 s have not passed).
    write_overview(recorder_dir, f"# Host\n_Last updated: {stamp(datetime.now(timezone.utc))}_\n")
    out = tool_json(call(host, host.ro, "server_overview", {}))
    assert (out["pending_events"], out["stale"]) == (2, False)


def test_overview_without_a_stamp_reports_its_modification_time(host, recorder_dir):
    path = write_overview(recorder_dir, "# Host without a stamp\n")
    t = int(time.time()) - 30
    os.utime(path, (t, t))
    out = tool_json(call(host, host.ro, "server_overview", {}))
    assert out["last_updated"] == datetime.fromtimestamp(t, timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def test_the_data_directory_is_readable_but_never_writable(host, recorder_dir):
    path = write_overview(recorder_dir, "# Host\nreadable\n")
    read = tool_json(call(host, host.ro, "read_file", {"file_path": str(path)}))
    assert "readable" in read["content"]
    found = tool_json(call(host, host.ro, "glob", {"pattern": "**/*.md", "path": str(recorder_dir)}))
    assert str(path) in found["files"]
    for tool, args in [
        ("write_file", {"file_path": str(path), "content": "forged"}),
        ("write_file", {"file_path": str(recorder_dir / "cursor.json"), "content": "{}"}),
        ("edit_file", {"file_path": str(path), "old_string": "readable", "new_string": "x"}),
        ("prepare_upload", {"dest_path": str(recorder_dir / "overview" / "new.md")}),
    ]:
        result = call(host, host.rw_token, tool, args)
        assert result.is_error is True, (tool, result)
        assert tool_json(result)["error"] == "ProtectedPath", (tool, tool_json(result))
    assert "readable" in path.read_text()


def test_overview_calls_are_audited_as_ro_calls_without_parameters(host, recorder_dir):
    write_overview(recorder_dir, "# Host\n")
    call(host, host.ro, "server_overview", {})
    lines = [json.loads(line) for line in audit_log(host).read_text().splitlines()]
    mine = [r for r in lines if r.get("tool") == "server_overview" and r.get("result") == "ok"]
    assert mine and mine[-1]["role"] == "ro" and mine[-1]["params"] == {}
    assert mine[-1]["token_name"] == "overview-reader"
