"""File transfers (spec §6): prepare_upload / prepare_download through the official MCP SDK,
then the bytes over plain HTTP to /files/raw/{ticket}, as a client's curl would send them."""

import hashlib
import json
import os
import urllib.error
import urllib.request

from conftest import tool_json, with_session


def call(server, token, name, args):
    async def fn(session, _init):
        return await session.call_tool(name, args)

    r = with_session(server.url, token, fn)
    return r.is_error, tool_json(r)


def absolute(server, url):
    """The quick try's transfer URLs are absolute, on its own URL, so the curl commands the
    tools hand out run as they are (with MYMCP_PUBLIC_BASE_URL unset; elsewhere they stay
    relative, as in the reference)."""
    base = server.url.rsplit("/mcp", 1)[0]
    assert url.startswith(base + "/files/raw/"), url
    return url


def http(method, url, data=None):
    """(status, headers, body) of one request; HTTP errors are answers too."""
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_upload_then_download_round_trip(server, ro_token, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    dest = str(tmp_path / "in" / "blob.bin")
    is_error, grant = call(server, server.rw_token, "prepare_upload", {"dest_path": dest})
    assert is_error is False, grant
    assert grant["success"] is True and grant["method"] == "PUT"
    assert grant["max_bytes"] == 2147483648 and grant["expires_in"] == 300
    assert grant["dest_path"] == dest
    assert grant["curl_example"].startswith("curl -fsS -T /local/path/to/file '")
    assert len(grant["ticket"]) == 60

    status, _, body = http("PUT", absolute(server, grant["url"]), data)
    assert status == 200, body
    reply = json.loads(body)
    assert reply == {
        "ok": True,
        "path": dest,
        "bytes_written": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert open(dest, "rb").read() == data

    # Single use.
    status, _, body = http("PUT", absolute(server, grant["url"]), b"again")
    assert status == 409 and json.loads(body)["error"] == "ticket_used", body

    # An ro token may download, not upload.
    is_error, refused = call(server, ro_token, "prepare_upload", {"dest_path": dest})
    assert is_error is True and refused["error"] == "PermissionDenied", refused
    is_error, grant = call(server, ro_token, "prepare_download", {"src_path": dest})
    assert is_error is False, grant
    assert grant["size"] == len(data) and grant["method"] == "GET"
    url = absolute(server, grant["url"])
    status, headers, body = http("HEAD", url)
    assert status == 200 and body == b""
    assert int(headers["content-length"]) == len(data)
    status, headers, body = http("GET", url)
    assert status == 200
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"].startswith('attachment; filename="blob.bin"')
    assert body == data
    status, _, _ = http("GET", url)
    assert status == 409


def test_protected_and_refused_cases_through_the_sdk(server, tmp_path):
    state = os.path.dirname(server.runtime_dir)  # holds the token store: protected
    is_error, out = call(server, server.rw_token, "prepare_upload", {"dest_path": state + "/x"})
    assert is_error is True and out["error"] == "ProtectedPath", out
    is_error, out = call(server, server.rw_token, "prepare_download", {"src_path": "relative"})
    assert out["error"] == "InvalidPath" and out["message"] == "src_path must be an absolute path."
    is_error, out = call(
        server, server.rw_token, "prepare_download", {"src_path": str(tmp_path / "nope")}
    )
    assert out["error"] == "FileNotFound", out
    (tmp_path / "there").write_text("x")
    is_error, out = call(
        server,
        server.rw_token,
        "prepare_upload",
        {"dest_path": str(tmp_path / "there"), "overwrite": False},
    )
    assert out["error"] == "FileExists", out

    # A wrong argument type is named, as for every tool.
    async def bad(session, _init):
        return await session.call_tool("prepare_upload", {"dest_path": "/x", "max_bytes": "1"})

    r = with_session(server.url, server.rw_token, bad)
    assert r.is_error is True and "max_bytes" in r.content[0].text


def test_public_base_url_makes_absolute_urls(monkeypatch, tmp_path):
    """MYMCP_PUBLIC_BASE_URL reaches the frontend through `mymcpctl serve` (which otherwise
    gives it an empty environment); trailing slashes are dropped."""
    from conftest import start_server, stop_server

    monkeypatch.setenv("MYMCP_PUBLIC_BASE_URL", "https://files.example.test/mcp-host/")
    s = start_server()
    try:
        (tmp_path / "f").write_text("x")
        is_error, grant = call(s, s.rw_token, "prepare_download", {"src_path": str(tmp_path / "f")})
        assert is_error is False, grant
        assert grant["url"] == "https://files.example.test/mcp-host/files/raw/" + grant["ticket"]
        assert grant["curl_example"] == (
            f"curl -fsS '{grant['url']}' -o '/local/path/f'"
        )
        # The same ticket works at the real address.
        real = s.url.rsplit("/mcp", 1)[0] + "/files/raw/" + grant["ticket"]
        status, _, body = http("GET", real)
        assert (status, body) == (200, b"x")
    finally:
        stop_server(s)
