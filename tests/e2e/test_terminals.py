"""Terminals with the official MCP SDK client: a Python REPL driven through terminal_open,
terminal_send and terminal_read (wait_for), and its recording in asciinema's player."""

import os
import time
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import bin_dir, tool_json, with_session


def test_a_python_repl_answers_through_the_sdk(server):
    async def fn(session, _init):
        tools = {t.name for t in (await session.list_tools()).tools}
        assert {"terminal_open", "terminal_send", "terminal_read", "terminal_close"} <= tools
        opened = tool_json(await session.call_tool("terminal_open", {"command": "python3 -q"}))
        tid = opened["terminal_id"]
        prompt = tool_json(
            await session.call_tool("terminal_read", {"terminal_id": tid, "wait_for": ">>> $", "timeout": 20})
        )
        sent = tool_json(
            await session.call_tool("terminal_send", {"terminal_id": tid, "text": "print(6*7)", "keys": ["Enter"]})
        )
        answer = tool_json(
            await session.call_tool("terminal_read", {"terminal_id": tid, "wait_for": r"(?m)^42$", "timeout": 20})
        )
        closed = tool_json(await session.call_tool("terminal_close", {"terminal_id": tid}))
        return opened, prompt, sent, answer, closed

    opened, prompt, sent, answer, closed = with_session(server.url, server.rw_token, fn)
    assert opened["running"] is True and (opened["rows"], opened["cols"]) == (24, 80)
    assert prompt["matched"] is True, prompt
    assert sent == {"success": True, "bytes_sent": len("print(6*7)\r")}
    assert answer["matched"] is True, answer
    assert "42" in answer["output"], answer
    assert "print(6*7)\n42" in answer["screen"], answer
    assert closed["running"] is False


def test_an_ro_token_does_not_see_the_terminal_tools(server, ro_token):
    async def fn(session, _init):
        return {t.name for t in (await session.list_tools()).tools}

    tools = with_session(server.url, ro_token, fn)
    assert not any(name.startswith("terminal_") for name in tools), tools


def test_the_recording_plays_in_asciinema_and_replays_in_mymcpctl(server):
    async def fn(session, _init):
        tid = tool_json(await session.call_tool("terminal_open", {"command": "echo hello-$((6*7))"}))["terminal_id"]
        read = tool_json(
            await session.call_tool("terminal_read", {"terminal_id": tid, "wait_for": "hello-42", "timeout": 20})
        )
        tool_json(await session.call_tool("terminal_close", {"terminal_id": tid}))
        return tid, read

    tid, read = with_session(server.url, server.rw_token, fn)
    assert read["matched"] is True, read
    # `mymcpctl serve` keeps its state beside its runtime directory.
    state = Path(server.runtime_dir).parent / "state"
    cast = state / "terminals" / f"{tid}.cast"
    assert cast.stat().st_mode & 0o777 == 0o600
    replay = subprocess.run(
        [str(bin_dir() / "mymcpctl"), "terminal", "replay", tid],
        env=dict(os.environ, MYMCP_STATE_DIR=str(state)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert replay.returncode == 0, replay
    assert replay.stdout.strip() == "hello-42", replay
    if shutil.which("asciinema") is None or shutil.which("script") is None:
        pytest.skip("asciinema (tests/run installs it) or script(1) is missing")
    # asciinema cat wants a terminal of its own: script(1) gives it one.
    out = subprocess.run(
        ["script", "-qec", f"asciinema cat {cast}", "/dev/null"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 0, out
    assert b"hello-42" in out.stdout, out


def test_cancelling_a_waiting_read_ends_the_wait(server):
    import anyio

    def reads_logged() -> int:
        return sum(1 for line in server.log if "tool=terminal_read" in line)

    async def fn(session, _init):
        tid = tool_json(await session.call_tool("terminal_open", {"command": "cat"}))["terminal_id"]
        before = reads_logged()
        with anyio.move_on_after(1.0) as scope:
            await session.call_tool("terminal_read", {"terminal_id": tid, "wait_for": "never-shown", "timeout": 60})
        assert scope.cancelled_caught
        # The SDK sent notifications/cancelled: the executor ends the wait and logs the call at
        # once, not after the 60 s.
        start = time.monotonic()
        while reads_logged() == before and time.monotonic() - start < 10:
            await anyio.sleep(0.05)
        took = time.monotonic() - start
        await session.send_ping()
        await anyio.sleep(0.3)
        closed = tool_json(await session.call_tool("terminal_close", {"terminal_id": tid}))
        return took, closed

    took, closed = with_session(server.url, server.rw_token, fn)
    assert took < 5, took
    assert closed["running"] is False
