"""Fixtures: a real quick-try server (executor as root, frontend as nobody) and MCP clients.

The binaries come from MYMCP_BIN_DIR (default: the cargo target dir's debug profile).
"""

import json
import os
import pwd
import re
import ssl
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

REPO = Path(__file__).resolve().parents[2]


def bin_dir() -> Path:
    if os.environ.get("MYMCP_BIN_DIR"):
        return Path(os.environ["MYMCP_BIN_DIR"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "debug"


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    rw_token: str
    admin_token: str
    runtime_dir: str
    log: list = field(default_factory=list)
    # With `serve --tls`: the throwaway certificate's file and SHA-256 fingerprint.
    cert: str | None = None
    fingerprint: str | None = None

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(bin_dir() / "mymcpctl"), "--runtime-dir", self.runtime_dir, *args],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def add_token(self, name: str, role: str) -> str:
        r = self.ctl("token", "add", "--name", name, "--role", role)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def children(self) -> dict:
        """pid → comm of mymcpctl's children."""
        out = {}
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                stat = (p / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == self.proc.pid:
                    out[int(p.name)] = (p / "comm").read_text().strip()
            except (OSError, IndexError, ValueError):
                continue
        return out


def start_server(env: dict | None = None, args: tuple = ()) -> Server:
    """Starts `mymcpctl serve`; `env` adds settings (the frontend's are passed on to it),
    `args` flags (e.g. `--tls`)."""
    assert os.geteuid() == 0, "the end-to-end tests start the executor as root"
    env = dict(os.environ, MYMCP_FRONTEND_USER="nobody", **(env or {}))
    proc = subprocess.Popen(
        [str(bin_dir() / "mymcpctl"), "serve", "--port", "0", "--log-level", "info", *args],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    found: dict = {}
    log: list = []
    ready = threading.Event()

    def pump():
        for line in proc.stderr:
            log.append(line.rstrip("\n"))
            for key, rx in [
                ("url", r"^\[mymcp\] serving on (\S+)"),
                ("rw", r"^\[mymcp\] temp rw token:\s+(\S+)"),
                ("admin", r"^\[mymcp\] temp admin token:\s+(\S+)"),
                ("run", r"^\[mymcp\] more tokens: mymcpctl --runtime-dir (\S+)"),
                ("cert", r"^\[mymcp\] TLS certificate \(self-signed, throwaway\): (\S+)"),
                ("fingerprint", r"^\[mymcp\] SHA-256 fingerprint: (\S+)"),
            ]:
                m = re.match(rx, line)
                if m:
                    found[key] = m.group(1)
            if {"url", "rw", "admin", "run"} <= found.keys():
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(30):
        proc.kill()
        raise AssertionError("mymcpctl serve did not start:\n" + "\n".join(log))
    # The frontend connects to the executor in the background; until then calls get 503.
    health = found["url"].rsplit("/mcp", 1)[0] + "/health"

    context = ssl.create_default_context(cafile=found["cert"]) if "cert" in found else None

    def connected() -> bool:
        try:
            with urllib.request.urlopen(health, timeout=5, context=context) as r:
                return b'"executor":"connected"' in r.read()
        except OSError:
            return False

    if not wait_until(connected, 20):
        proc.kill()
        raise AssertionError("the frontend did not connect to the executor:\n" + "\n".join(log))
    return Server(proc, found["url"], found["rw"], found["admin"], found["run"], log,
                  found.get("cert"), found.get("fingerprint"))


def stop_server(s: Server) -> int:
    if s.proc.poll() is None:
        s.proc.terminate()
    try:
        return s.proc.wait(30)
    except subprocess.TimeoutExpired:
        s.proc.kill()
        raise


def write_overview(data_dir: Path, text: str) -> Path:
    """Puts an overview where the recorder keeps it (`<data_dir>/overview/overview.md`)."""
    path = data_dir / "overview" / "overview.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    # An overview as the recorder would have written it, so every listed tool succeeds.
    recorder = tmp_path_factory.mktemp("recorder")
    write_overview(recorder, "# e2e host\n\n_Last updated: 2026-01-01T00:00:00Z_\n\n## TL;DR\nA test host.\n")
    s = start_server({"MYMCP_RECORDER_DATA_DIR": str(recorder)})
    yield s
    stop_server(s)


@pytest.fixture(scope="session")
def ro_token(server) -> str:
    return server.add_token("e2e-reader", "ro")


async def _with_session(url: str, token: str, fn):
    headers = {"Authorization": f"Bearer {token}"}
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                return await fn(session, init)


def with_session(url: str, token: str, fn):
    """Runs `fn(session, initialize_result)` in a fresh MCP client session."""
    return anyio.run(_with_session, url, token, fn)


def tool_json(result) -> dict:
    """The tool JSON inside a tools/call result's single text item."""
    assert len(result.content) == 1 and result.content[0].type == "text", result
    return json.loads(result.content[0].text)


def shadow(*cmd):
    """Runs a shadow-utils command, retrying while another holds the databases' locks."""
    for _ in range(200):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode == 0 or "lock" not in r.stderr:
            return r
        time.sleep(0.05)
    return r


def account_name(tag: str) -> str:
    return f"mmacct{tag}{os.getpid():x}"[:31]


def make_account(tag, groups=()):
    """A real Unix account (home, own group, bash), made now; remove it with remove_account."""
    name = account_name(tag)
    args = ["useradd", "--create-home", "--user-group", "--shell", "/bin/bash"]
    if groups:
        args += ["--groups", ",".join(groups)]
    r = shadow(*args, name)
    assert r.returncode == 0, r.stderr
    return pwd.getpwnam(name)


def remove_account(a):
    shadow("userdel", "--force", "--remove", a.pw_name)


def wait_until(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def pids_with_cmdline(needle: str) -> list:
    """Pids whose command line contains `needle`."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if needle in (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                out.append(int(p.name))
        except OSError:
            continue
    return out
