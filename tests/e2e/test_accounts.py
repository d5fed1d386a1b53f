"""Accounts through the official MCP Python SDK: `mymcpctl serve --user ACCOUNT` makes the quick
try's tokens act as ACCOUNT — commands, file tools, searches and transfers with its rights, no
more. The accounts are real, made here and removed afterwards (also when a test fails)."""

import grp
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from conftest import account_name, make_account, remove_account, shadow, start_server, stop_server, with_session

SECRET = "ROOT-ONLY-BYTES"


@pytest.fixture(scope="module")
def group():
    name = account_name("pg")
    r = shadow("groupadd", name)
    assert r.returncode == 0, r.stderr
    yield grp.getgrnam(name)
    shadow("groupdel", name)


@pytest.fixture(scope="module")
def alice(group):
    a = make_account("pa", [group.gr_name])
    yield a
    remove_account(a)


@pytest.fixture(scope="module")
def bob():
    b = make_account("pb")
    yield b
    remove_account(b)


@pytest.fixture(scope="module")
def served(alice):
    s = start_server(args=("--user", alice.pw_name))
    yield s
    stop_server(s)


@pytest.fixture
def scratch():
    d = tempfile.mkdtemp(prefix="mymcp-accounts-")
    os.chmod(d, 0o1777)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def call(server, token, name, args):
    """One tool call in a fresh SDK session; returns (is_error, tool JSON)."""

    async def fn(session, _init):
        return await session.call_tool(name, args)

    r = with_session(server.url, token, fn)
    assert len(r.content) == 1 and r.content[0].type == "text", r
    return r.is_error, json.loads(r.content[0].text)


def bash(server, token, command):
    is_error, out = call(server, token, "bash_execute", {"command": command})
    assert is_error is False, out
    return out


def refused(server, token, name, args, code="PermissionError"):
    is_error, out = call(server, token, name, args)
    assert is_error is True and out["error"] == code, out
    return out


def test_the_banner_names_the_account(served, alice):
    assert any(line.startswith(f"[mymcp] tools act as account {alice.pw_name} (uid {alice.pw_uid})")
               for line in served.log), served.log


def test_commands_run_as_the_account_with_its_groups_and_home(served, alice, group):
    out = bash(served, served.rw_token, 'id -un; id -u; id -G; echo "$HOME:$USER:$SHELL"; pwd')
    lines = out["stdout"].splitlines()
    assert lines[0] == alice.pw_name
    assert lines[1] == str(alice.pw_uid)
    assert str(group.gr_gid) in lines[2].split()
    assert lines[3] == f"{alice.pw_dir}:{alice.pw_name}:/bin/bash"
    assert lines[4] == alice.pw_dir


def test_etc_shadow_is_refused_through_every_tool(served):
    token = served.rw_token
    refused(served, token, "read_file", {"file_path": "/etc/shadow"})
    refused(served, token, "prepare_download", {"src_path": "/etc/shadow"})
    _, out = call(served, token, "grep", {"pattern": "root", "path": "/etc/shadow"})
    assert "root:" not in json.dumps(out), out
    out = bash(served, token, "cat /etc/shadow")
    assert out["exit_code"] != 0 and "Permission denied" in out["stderr"], out
    assert "root:" not in out["stdout"]


def test_nothing_is_written_under_etc_and_what_it_makes_is_its_own(served, alice):
    token = served.rw_token
    probe = f"/etc/{alice.pw_name}-e2e"
    refused(served, token, "write_file", {"file_path": probe, "content": "x"})
    refused(served, token, "prepare_upload", {"dest_path": probe})
    assert bash(served, token, f"touch {probe}")["exit_code"] != 0
    assert not os.path.exists(probe)
    made = Path(alice.pw_dir) / "e2e" / "made.txt"
    is_error, out = call(served, token, "write_file", {"file_path": str(made), "content": "mine\n"})
    assert is_error is False, out
    for p in (made, made.parent):
        st = p.stat()
        assert (st.st_uid, st.st_gid) == (alice.pw_uid, alice.pw_gid), p


def test_a_group_file_is_readable_and_a_root_only_one_is_not(served, group, scratch):
    shared = scratch / "group.txt"
    shared.write_text("GROUP-SHARED\n")
    os.chown(shared, 0, group.gr_gid)
    os.chmod(shared, 0o640)
    closed = scratch / "root.txt"
    closed.write_text(SECRET + "\n")
    os.chmod(closed, 0o600)
    is_error, out = call(served, served.rw_token, "read_file", {"file_path": str(shared)})
    assert is_error is False and out["content"] == "   1\tGROUP-SHARED", out
    refused(served, served.rw_token, "read_file", {"file_path": str(closed)})
    _, out = call(served, served.rw_token, "grep", {"pattern": "SHARED|ROOT-ONLY", "path": str(scratch)})
    assert "GROUP-SHARED" in out["results"] and SECRET not in json.dumps(out), out


@pytest.mark.skipif(shutil.which("sudo") is None, reason="sudo is not installed (tests/run installs it)")
def test_sudo_follows_the_sudoers_file_and_never_hangs(served, alice):
    started = time.monotonic()
    out = bash(served, served.rw_token, "sudo -n true")
    assert out["exit_code"] != 0 and "password is required" in out["stderr"], out
    assert time.monotonic() - started < 10
    rule = Path("/etc/sudoers.d") / alice.pw_name
    try:
        rule.write_text(f"{alice.pw_name} ALL=(ALL) NOPASSWD: ALL\n")
        os.chmod(rule, 0o440)
        out = bash(served, served.rw_token, "sudo -n id -u")
        assert out["exit_code"] == 0 and out["stdout"] == "0\n", out
    finally:
        rule.unlink(missing_ok=True)


def test_two_accounts_cannot_read_each_others_files_or_jobs(served, alice, bob, scratch):
    r = served.ctl("token", "add", "--name", "bob", "--role", "rw", "--user", bob.pw_name, "--json")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert listed["user"] == bob.pw_name
    other = listed["token"]
    private = scratch / "alice.txt"
    out = bash(served, served.rw_token, f"umask 077; echo ALICE-SECRET > {private}")
    assert out["exit_code"] == 0, out
    refused(served, other, "read_file", {"file_path": str(private)})
    refused(served, other, "prepare_download", {"src_path": str(private)})
    assert "ALICE-SECRET" not in json.dumps(bash(served, other, f"cat {private}"))
    is_error, job = call(served, served.rw_token, "bash_execute",
                         {"command": "echo JOB-SECRET", "background": True})
    assert is_error is False, job
    refused(served, other, "job_output", {"job_id": job["job_id"]}, code="NotFound")
    assert bash(served, other, "id -un")["stdout"] == f"{bob.pw_name}\n"
