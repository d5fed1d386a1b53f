"""Long commands with the official MCP SDK client: progress, cancellation, background jobs."""

import time

import anyio

from conftest import pids_with_cmdline, tool_json, wait_until, with_session


def test_progress_notifications_reach_the_sdks_progress_callback(server):
    seen = []

    async def on_progress(progress, total, message):
        seen.append((progress, total, message))

    async def fn(session, _init):
        return await session.call_tool(
            "bash_execute",
            {"command": "echo start; sleep 5; echo end"},
            progress_callback=on_progress,
        )

    result = with_session(server.url, server.rw_token, fn)
    assert tool_json(result)["stdout"] == "start\nend\n"
    assert len(seen) >= 2, seen
    progress = [p for p, _, _ in seen]
    assert progress == sorted(progress) and progress[0] >= 1.9, seen
    assert "bytes on stdout" in seen[0][2], seen


def test_cancelling_a_call_in_the_sdk_kills_its_command(server):
    marker = "sleep 30.1234"

    async def fn(session, _init):
        with anyio.move_on_after(1.5) as scope:
            await session.call_tool("bash_execute", {"command": marker, "timeout": 60})
        assert scope.cancelled_caught
        # The SDK sent notifications/cancelled; the command must go at once.
        start = time.monotonic()
        while pids_with_cmdline(marker) and time.monotonic() - start < 2:
            await anyio.sleep(0.02)
        took = time.monotonic() - start
        # The server answers the cancelled POST right after the kill; let the SDK take that
        # answer before the session closes (it raises when one arrives after its streams shut).
        await session.send_ping()
        await anyio.sleep(0.3)
        return took

    took = with_session(server.url, server.rw_token, fn)
    assert not pids_with_cmdline(marker), "the command survived the cancellation"
    assert took < 1.0, took


def test_a_background_job_outlives_its_call_and_is_read_back(server, ro_token):
    async def fn(session, _init):
        started = tool_json(
            await session.call_tool(
                "bash_execute",
                {"command": "for i in 1 2 3; do echo step $i; sleep 0.3; done", "background": True},
            )
        )
        job = started["job_id"]
        out, offset = "", 0
        for _ in range(50):
            chunk = tool_json(
                await session.call_tool("job_output", {"job_id": job, "stdout_offset": offset, "wait_seconds": 5})
            )
            out += chunk["stdout"]
            offset = chunk["stdout_offset"]
            if chunk["complete"]:
                break
        status = tool_json(await session.call_tool("job_status", {"job_id": job}))
        return started, out, status

    started, out, status = with_session(server.url, server.rw_token, fn)
    assert started["running"] is True
    assert out == "step 1\nstep 2\nstep 3\n"
    assert status["running"] is False and status["exit_code"] == 0

    # An ro token may not use job tools at all.
    async def ro(session, _init):
        return await session.call_tool("job_status", {"job_id": started["job_id"]})

    r = with_session(server.url, ro_token, ro)
    assert tool_json(r)["error"] == "PermissionDenied"


def test_job_kill_through_the_sdk(server):
    marker = "sleep 300.5151"

    async def fn(session, _init):
        job = tool_json(await session.call_tool("bash_execute", {"command": marker, "background": True}))
        assert wait_until(lambda: pids_with_cmdline(marker))
        return tool_json(await session.call_tool("job_kill", {"job_id": job["job_id"]}))

    killed = with_session(server.url, server.rw_token, fn)
    assert killed["running"] is False and killed["killed"] is True
    assert wait_until(lambda: not pids_with_cmdline(marker), 1.0)
