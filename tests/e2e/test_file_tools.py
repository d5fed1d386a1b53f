"""File tools (spec §4.2–4.6) through the real frontend and executor with the official MCP SDK."""

import json
import os
import time

import pytest

from conftest import tool_json, with_session


def tool(server, token, name, args):
    """Calls one tool; returns (is_error, tool JSON or text)."""

    async def fn(session, _init):
        return await session.call_tool(name, args)

    r = with_session(server.url, token, fn)
    assert len(r.content) == 1 and r.content[0].type == "text", r
    try:
        return r.is_error, json.loads(r.content[0].text)
    except json.JSONDecodeError:
        return r.is_error, r.content[0].text


def ok(server, token, name, args):
    is_error, out = tool(server, token, name, args)
    assert is_error is False, out
    return out


def fail(server, token, name, args, code):
    is_error, out = tool(server, token, name, args)
    assert is_error is True, out
    assert out["success"] is False and out["error"] == code, out
    return out


@pytest.fixture
def state_dir(server):
    """The quick try's private directory: it holds the token store, so it is protected."""
    return os.path.dirname(server.runtime_dir)


# ---------------------------------------------------------------------------------------------
# tools/list


def test_tool_lists_by_role(server, ro_token):
    async def names(session, _init):
        return [t.name for t in (await session.list_tools()).tools]

    assert with_session(server.url, server.rw_token, names) == [
        "bash_execute", "read_file", "write_file", "edit_file", "glob", "grep",
        "job_status", "job_output", "job_kill", "prepare_upload", "prepare_download",
        "server_overview", "terminal_open", "terminal_send", "terminal_read", "terminal_resize", "terminal_list", "terminal_close"]
    assert with_session(server.url, ro_token, names) == [
        "read_file", "glob", "grep", "prepare_download", "server_overview"]


def test_ro_token_cannot_write_or_edit(server, ro_token, tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("a")
    for name, args in [("write_file", {"file_path": str(f), "content": "x"}),
                       ("edit_file", {"file_path": str(f), "old_string": "a", "new_string": "b"})]:
        out = fail(server, ro_token, name, args, "PermissionDenied")
        assert out["message"] == f"Permission denied: tool '{name}' requires rw role"
    assert f.read_text() == "a"


# ---------------------------------------------------------------------------------------------
# read_file (§4.2)


def test_read_file_lines_invalid_utf8_long_lines_and_offsets(server, ro_token, tmp_path):
    f = tmp_path / "mixed.txt"
    f.write_bytes(b"ok\n\xff\xfebad\n" + b"y" * 40000 + b"\nlast")
    out = ok(server, ro_token, "read_file", {"file_path": str(f)})
    lines = out["content"].split("\n")
    assert lines[0] == "   1\tok"
    assert lines[1] == "   2\t\ufffd\ufffdbad"
    assert lines[2] == "   3\t" + "y" * 32768 + " [LINE TRUNCATED]"
    assert lines[3] == "   4\tlast"
    assert out["total_lines"] == 4 and out["truncated"] is False
    past = ok(server, ro_token, "read_file", {"file_path": str(f), "offset": 10})
    assert past == {"content": "", "total_lines": 4, "truncated": False}
    clamped = ok(server, ro_token, "read_file", {"file_path": str(f), "offset": -4, "limit": 0})
    assert clamped == {"content": "   1\tok", "total_lines": 4, "truncated": True}


def test_read_file_refuses_protected_and_devices(server, ro_token, state_dir):
    out = fail(server, ro_token, "read_file", {"file_path": os.path.join(state_dir, "tokens.json")},
               "ProtectedPath")
    assert out["message"] == f"Access denied: path is within protected directory {state_dir}"
    fail(server, ro_token, "read_file", {"file_path": state_dir + "/run/../tokens.json"}, "ProtectedPath")
    t = time.monotonic()
    fail(server, ro_token, "read_file", {"file_path": "/dev/zero", "limit": 10}, "NotARegularFile")
    assert time.monotonic() - t < 1


# ---------------------------------------------------------------------------------------------
# write_file (§4.3)


def test_write_file_creates_parents_and_writes_verbatim(server, tmp_path):
    f = tmp_path / "new" / "dir" / "file.txt"
    out = ok(server, server.rw_token, "write_file", {"file_path": str(f), "content": "héllo\r\nwörld"})
    assert out == {"success": True, "bytes_written": len("héllo\r\nwörld".encode())}
    assert f.read_bytes() == "héllo\r\nwörld".encode()
    assert os.stat(f).st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / "new").st_mode & 0o777 == 0o755
    assert sorted(os.listdir(f.parent)) == ["file.txt"], "no temporary file left"
    assert ok(server, server.rw_token, "write_file", {"file_path": str(f), "content": ""}) == {
        "success": True, "bytes_written": 0}
    assert f.read_bytes() == b""


def test_write_file_keeps_mode_and_owner(server, tmp_path):
    f = tmp_path / "conf"
    f.write_text("old")
    os.chmod(f, 0o640)
    os.chown(f, 65534, 65534)
    ok(server, server.rw_token, "write_file", {"file_path": str(f), "content": "new"})
    st = os.stat(f)
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, 65534, 65534)
    assert f.read_text() == "new"


def test_write_file_errors(server, tmp_path, state_dir):
    rw = server.rw_token
    fail(server, rw, "write_file", {"file_path": "relative.txt", "content": "x"}, "InvalidPath")
    fail(server, rw, "write_file", {"file_path": str(tmp_path), "content": "x"}, "IsADirectoryError")
    fail(server, rw, "write_file", {"file_path": os.path.join(state_dir, "tokens.json"), "content": "{}"},
         "ProtectedPath")
    big = "x" * (10 * 1024 * 1024 + 1)
    out = fail(server, rw, "write_file", {"file_path": str(tmp_path / "big"), "content": big}, "FileTooLarge")
    assert out["message"] == "Content is 10485761 bytes, max is 10485760 (10MB)"
    assert not (tmp_path / "big").exists()


# ---------------------------------------------------------------------------------------------
# edit_file (§4.4)


def test_edit_file_replaces_one_or_all_and_keeps_bytes(server, tmp_path):
    rw = server.rw_token
    f = tmp_path / "code.txt"
    f.write_bytes(b"alpha\r\nbeta\r\n\xffgamma beta\r\nno final newline")
    out = ok(server, rw, "edit_file", {"file_path": str(f), "old_string": "alpha", "new_string": "ALPHA"})
    assert out == {"success": True, "replacements": 1}
    out = fail(server, rw, "edit_file", {"file_path": str(f), "old_string": "beta", "new_string": "B"},
               "AmbiguousMatch")
    assert out["message"] == "old_string appears 2 times. Set replace_all=true to replace all occurrences."
    out = ok(server, rw, "edit_file",
             {"file_path": str(f), "old_string": "beta", "new_string": "B", "replace_all": True})
    assert out == {"success": True, "replacements": 2}
    assert f.read_bytes() == b"ALPHA\r\nB\r\n\xffgamma B\r\nno final newline"


def test_edit_file_failures(server, tmp_path):
    rw = server.rw_token
    f = tmp_path / "f.txt"
    f.write_text("content")
    out = fail(server, rw, "edit_file", {"file_path": str(f), "old_string": "zzz", "new_string": "y"},
               "StringNotFound")
    assert out["message"] == "old_string not found in file"
    fail(server, rw, "edit_file", {"file_path": str(f), "old_string": "", "new_string": "y"},
         "InvalidArguments")
    out = fail(server, rw, "edit_file", {"file_path": str(tmp_path / "nope"), "old_string": "a", "new_string": "b"},
               "FileNotFoundError")
    assert out["message"] == f"File not found: {tmp_path / 'nope'}"
    out = fail(server, rw, "edit_file",
               {"file_path": str(f), "old_string": "x" * (1024 * 1024 + 1), "new_string": "y"}, "FileTooLarge")
    assert out["message"] == "old_string exceeds 1MB limit"
    assert f.read_text() == "content"


def test_noop_edit_does_not_rewrite(server, tmp_path):
    f = tmp_path / "same.txt"
    f.write_text("same")
    before = os.stat(f)
    out = ok(server, server.rw_token, "edit_file", {"file_path": str(f), "old_string": "same", "new_string": "same"})
    assert out == {"success": True, "replacements": 1}
    after = os.stat(f)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


# ---------------------------------------------------------------------------------------------
# glob (§4.5)


def _touch(path, mtime):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    os.utime(path, (mtime, mtime))


def test_glob_recursive_braces_sorted_by_mtime(server, ro_token, tmp_path):
    for i, rel in enumerate(["a.py", "pkg/b.py", "pkg/deep/c.py", "pkg/d.pyi", "pkg/e.txt", ".hidden.py"]):
        _touch(tmp_path / rel, 1_000_000 + i)
    out = ok(server, ro_token, "glob", {"pattern": "**/*.py", "path": str(tmp_path)})
    assert out == {"files": [str(tmp_path / "pkg/deep/c.py"), str(tmp_path / "pkg/b.py"), str(tmp_path / "a.py")],
                   "count": 3, "truncated": False}
    out = ok(server, ro_token, "glob", {"pattern": "pkg/*.{py,pyi}", "path": str(tmp_path)})
    assert out["files"] == [str(tmp_path / "pkg/d.pyi"), str(tmp_path / "pkg/b.py")]
    out = ok(server, ro_token, "glob", {"pattern": str(tmp_path / "*.py"), "path": "/nonexistent"})
    assert out["files"] == [str(tmp_path / "a.py")]
    out = ok(server, ro_token, "glob", {"pattern": "**", "path": str(tmp_path / "pkg/deep")})
    assert str(tmp_path / "pkg/deep") in out["files"]
    assert ok(server, ro_token, "glob", {"pattern": "*.py", "path": str(tmp_path / "missing")}) == {
        "files": [], "count": 0, "truncated": False}


def test_glob_caps_at_1000_and_filters_protected(server, ro_token, tmp_path, state_dir):
    many = tmp_path / "many"
    many.mkdir()
    for i in range(1005):
        (many / f"f{i:04}.log").write_text("")
    out = ok(server, ro_token, "glob", {"pattern": "*.log", "path": str(many)})
    assert out["count"] == 1005 and out["truncated"] is True and len(out["files"]) == 1000
    out = ok(server, ro_token, "glob", {"pattern": "**/*.json", "path": state_dir})
    assert out == {"files": [], "count": 0, "truncated": False}
    is_error, out = tool(server, ro_token, "glob", {"pattern": "[", "path": str(tmp_path)})
    assert is_error is True and out["error"] == "InvalidArguments"


# ---------------------------------------------------------------------------------------------
# grep (§4.6)


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "a.txt").write_text("one\nneedle two\nthree\n")
    (tmp_path / "src" / "b.py").write_text("x = 'Needle'\n")
    (tmp_path / "src" / "c.py").write_text("needle = 1\nneedle = 2\n")
    (tmp_path / ".hidden").write_text("needle\n")
    (tmp_path / "blob.bin").write_bytes(b"needle\x00\x01")
    return tmp_path


def test_grep_content_files_count(server, ro_token, tree):
    r = str(tree)
    out = ok(server, ro_token, "grep", {"pattern": "needle", "path": r})
    assert out == {"results": f"{r}/a.txt:2:needle two\n{r}/src/c.py:1:needle = 1\n{r}/src/c.py:2:needle = 2",
                   "match_count": 3}
    out = ok(server, ro_token, "grep", {"pattern": "needle", "path": r, "output_mode": "files",
                                        "case_insensitive": True})
    assert out == {"results": f"{r}/a.txt\n{r}/src/b.py\n{r}/src/c.py", "match_count": 3}
    out = ok(server, ro_token, "grep", {"pattern": "needle", "path": r, "output_mode": "count", "glob": "*.py"})
    assert out == {"results": f"{r}/src/c.py:2", "match_count": 1}


def test_grep_context_single_file_and_truncation(server, ro_token, tree):
    f = str(tree / "a.txt")
    out = ok(server, ro_token, "grep", {"pattern": "two", "path": f, "context_lines": 1})
    assert out == {"results": "1-one\n2:needle two\n3-three", "match_count": 3}
    out = ok(server, ro_token, "grep", {"pattern": "needle", "path": str(tree), "max_results": 1,
                                        "output_mode": "files"})
    assert out["results"] == f"{tree}/a.txt\n[TRUNCATED: 1 more matches not shown]"
    assert out["match_count"] == 2


def test_grep_invalid_regex_protected_and_option_like_pattern(server, ro_token, tree, state_dir):
    out = fail(server, ro_token, "grep", {"pattern": "(open", "path": str(tree)}, "InvalidRegex")
    assert "unclosed" in out["message"]
    fail(server, ro_token, "grep", {"pattern": "tok", "path": os.path.join(state_dir, "tokens.json")},
         "ProtectedPath")
    marker = tree / "pwned"
    out = ok(server, ro_token, "grep", {"pattern": f"--pre=/bin/touch {marker}", "path": str(tree)})
    assert out["match_count"] == 0 and not marker.exists()
    fail(server, ro_token, "grep", {"pattern": "x", "path": "-r"}, "InvalidPath")


def test_grep_validates_output_mode(server, ro_token):
    out = fail(server, ro_token, "grep", {"pattern": "x", "output_mode": "bogus"}, "InvalidArguments")
    assert out["message"] == "Input validation error: 'bogus' is not one of ['content', 'files', 'count']"
