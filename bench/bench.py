#!/usr/bin/env python3
"""Side-by-side benchmark: mymcp (plain HTTP and TLS) vs the Go mymcp 3.1.0, the Python mymcp
2.1.1 and the physical limits (nginx GET with sendfile and WebDAV PUT, a posix_spawn loop of
the same shell, rg, rg --files, find), all on loopback in one run.

Run through bench/run, which installs everything and builds release binaries. Implementations
are interleaved in rounds (their order rotates from round to round); the table shows the median
of the rounds and their spread, with a Targets section checking the issue's targets.

`--callgrind` instead runs the two daemons under `valgrind --tool=callgrind` and prints the
instructions each executes per read_file 4 KiB call, per ping (through the executor), per
/health (frontend only) and per executor round trip: stable figures on a noisy machine.
"""

import argparse
import glob as globmod
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("MYMCP_BENCH_BIN", str(REPO / "target" / "release")))
REFS = Path(os.environ.get("MYMCP_BENCH_REFS", REPO / "bench" / ".refs"))
TREE = Path(os.environ.get("BENCH_TREE", "/var/tmp/mymcp-bench-tree"))
XFER = Path(os.environ.get("BENCH_XFER_DIR", "/var/tmp/mymcp-bench-transfer"))
SHELL = "/bin/bash"
GREP_PATTERN = r"XYZZY_[0-9]+"
MIB_COMMAND = r"head -c 1048576 /dev/zero | tr \\0 x"
NO_TLS = ssl._create_unverified_context()  # the servers' certificates are throwaway, self-signed

# Everything started is registered here and torn down on exit, error, Ctrl-C or SIGTERM.
PROCS = []
TEMP_DIRS = []
ACCOUNTS = []  # Unix accounts made for the rows of a non-root token; removed by cleanup()


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list:
    """pid and all its descendants."""
    kids = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        q = todo.pop()
        out.append(q)
        todo.extend(kids.get(q, []))
    return out


class RssPeak:
    """Samples the summed RSS of `pids()` every 10 ms while in a `with` block."""

    def __init__(self, pids):
        self.pids, self.peak, self.stop = pids, 0, threading.Event()

    def __enter__(self):
        pids = self.pids()

        def sample():
            while not self.stop.is_set():
                self.peak = max(self.peak, sum(rss_kib(p) for p in pids))
                self.stop.wait(0.01)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    @property
    def mib(self):
        return self.peak / 1024


def start(argv, **kw) -> subprocess.Popen:
    """Starts a process in its own session (so Ctrl-C reaches only us) and registers it."""
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    PROCS.append(p)
    return p


def stop(p: subprocess.Popen, grace: float = 15):
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # whatever is left of its process group
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        pass
    if p in PROCS:
        PROCS.remove(p)


def cleanup():
    for p in list(PROCS):
        stop(p, grace=10)
    for d in TEMP_DIRS:
        shutil.rmtree(d, ignore_errors=True)
    TEMP_DIRS.clear()
    for name in ACCOUNTS:
        subprocess.run(["userdel", "--force", "--remove", name], capture_output=True)
    ACCOUNTS.clear()


def bench_account():
    """A Unix account for the rows of a token that is not root's (our implementation only):
    its calls act as it (commands spawned as it, file work on a thread with its ids)."""
    name = f"mmbench{os.getpid():x}"
    r = subprocess.run(["useradd", "--create-home", "--user-group", "--shell", "/bin/bash", name],
                       capture_output=True, text=True)
    if r.returncode != 0:
        log(f"note: no account for the non-root rows ({r.stderr.strip()})")
        return None
    ACCOUNTS.append(name)
    return name


def account_token(srv, name: str, token_name: str = "bench-account", extra=()):
    """A new rw token of the quick try `srv` acting as the account `name` (with the further
    `token add` options `extra`), or None."""
    run = next((m[1] for line in srv.log
                if (m := re.search(r"more tokens: mymcpctl --runtime-dir (\S+)", line))), None)
    if run is None:
        return None
    r = subprocess.run([srv.impl.argv[0], "--runtime-dir", run, "token", "add", "--name", token_name,
                        "--role", "rw", "--user", name, *extra], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def http_get_ok(host: str, port: int, path: str, tls: bool, timeout: float = 1.0) -> bool:
    try:
        c = (http.client.HTTPSConnection(host, port, timeout=timeout, context=NO_TLS) if tls
             else http.client.HTTPConnection(host, port, timeout=timeout))
        c.request("GET", path)
        ok = c.getresponse().status == 200
        c.close()
        return ok
    except (OSError, http.client.HTTPException):
        return False


def wait_http(port: int, path: str, tls: bool, proc=None, timeout: float = 30.0) -> float:
    """Polls until path answers 200; returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if http_get_ok("127.0.0.1", port, path, tls):
            return time.monotonic() - t0
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.001)
    raise RuntimeError(f"127.0.0.1:{port}{path} never answered")


class Client:
    """One keep-alive MCP connection for single calls (checks, search, transfers)."""

    def __init__(self, port: int, token: str, tls: bool):
        self.port, self.token, self.tls = port, token, tls
        self.conn = None

    def post(self, body: dict, timeout: float = 600) -> dict:
        data = json.dumps(body).encode()
        for attempt in (1, 2):
            try:
                if self.conn is None:
                    self.conn = (http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=NO_TLS)
                                 if self.tls else http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout))
                self.conn.request("POST", "/mcp", data, {
                    "Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
                    "Accept": "application/json, text/event-stream"})
                r = self.conn.getresponse()
                raw = r.read().decode()
                break
            except (OSError, http.client.HTTPException):
                self.conn = None
                if attempt == 2:
                    raise
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {raw[:300]}")
        if "text/event-stream" in (r.getheader("Content-Type") or ""):
            datas = [l[5:].strip() for l in raw.splitlines() if l.startswith("data:")]
            raw = next(d for d in reversed(datas) if '"result"' in d or '"error"' in d)
        return json.loads(raw)

    def get(self, path: str):
        if self.conn is None:
            self.post({"jsonrpc": "2.0", "id": 1, "method": "ping"})
        self.conn.request("GET", path)
        self.conn.getresponse().read()

    def call(self, name: str, args: dict) -> str:
        """Calls a tool; returns its text; raises when the tool reports an error."""
        out = self.post(call_body(name, args))
        if "error" in out:
            raise RuntimeError(f"{name}: {out['error']}")
        res = out["result"]
        text = "".join(c.get("text", "") for c in res.get("content", []))
        if res.get("isError"):
            raise RuntimeError(f"{name}: {text[:300]}")
        return text

    def close(self):
        if self.conn is not None:
            self.conn.close()


def call_body(name: str, args: dict) -> dict:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": args}}


class Server:
    """One MCP implementation under test, started from scratch (start-up is measured)."""

    def __init__(self, impl, work: Path):
        self.impl = impl
        self.port = free_port()
        argv = [a.replace("{port}", str(self.port)) for a in impl.argv]
        self.log = []
        self.token = None
        got = threading.Event()
        t0 = time.monotonic()
        self.proc = start(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                          text=True, env=impl.env, cwd=str(work))

        def pump():
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(r"temp rw token:\s+(\S+)", line)
                if m and not self.token:
                    self.token = m.group(1)
                    got.set()
            got.set()

        threading.Thread(target=pump, daemon=True).start()
        try:
            wait_http(self.port, "/health", impl.tls, self.proc)
            self.startup = time.monotonic() - t0
            if not got.wait(30) or not self.token:
                raise RuntimeError(f"{impl.name} did not print a token")
        except Exception:
            stop(self.proc)
            raise RuntimeError(f"{impl.name} did not start:\n{''.join(self.log)}")
        self.scheme = "https" if impl.tls else "http"
        self.base = f"{self.scheme}://127.0.0.1:{self.port}"
        self.url = f"{self.base}/mcp"
        self.client = Client(self.port, self.token, impl.tls)
        time.sleep(0.3)  # let start-up allocations settle before the idle RSS

    def pids(self) -> list:
        pids = descendants(self.proc.pid)
        if self.impl.launcher:  # mymcpctl only launches: count the daemons (executor + frontend)
            pids = [p for p in pids if p != self.proc.pid]
        return pids

    def rss_mib(self) -> float:
        return sum(rss_kib(p) for p in self.pids()) / 1024

    def stop(self):
        self.client.close()
        stop(self.proc)


class Impl:
    def __init__(self, name, argv, env, tls=False, launcher=False, ours=False):
        self.name, self.argv, self.env, self.tls, self.launcher, self.ours = name, argv, env, tls, launcher, ours


LUA = """
wrk.method = os.getenv("BENCH_METHOD") or "GET"
wrk.body = os.getenv("BENCH_BODY")
if os.getenv("BENCH_TOKEN") then
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept"] = "application/json, text/event-stream"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
end
done = function(summary, latency, requests)
  io.write(string.format("BENCH rps=%f p50=%f p99=%f errors=%d\\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


class Bench:
    def __init__(self, a, work: Path):
        self.a, self.work = a, work
        self.results = {}  # (row, impl) -> [values]
        self.notes = []
        self.lua = work / "bench.lua"
        self.lua.write_text(LUA)
        self.account = None  # see bench_account()

    def add(self, row, impl, v):
        if v is not None:
            self.results.setdefault((row, impl), []).append(v)

    def note(self, text):
        if text not in self.notes:
            log("note:", text)
            self.notes.append(text)

    def wrk(self, url, conns, token=None, body=None, secs=None) -> dict:
        secs = secs or self.a.secs
        threads = 1 if conns == 1 else 2
        env = dict(os.environ)
        if token:
            env.update(BENCH_TOKEN=token, BENCH_METHOD="POST", BENCH_BODY=json.dumps(body))
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(secs))}s", "--timeout", "30s", "-s", str(self.lua), url],
            capture_output=True, text=True, env=env, timeout=secs + 120,
        ).stdout
        m = re.search(r"BENCH rps=([\d.]+) p50=([\d.]+) p99=([\d.]+) errors=(\d+)", out)
        if not m:
            raise RuntimeError(f"wrk output not understood:\n{out}")
        r = {"rps": float(m[1]), "p50": float(m[2]) / 1000, "p99": float(m[3]) / 1000, "errors": int(m[4])}
        if r["errors"]:
            self.note(f"wrk saw {r['errors']} errors on {url} c={conns}")
        return r

    def loadgen_spawn(self, command, conc) -> dict:
        out = subprocess.run([str(BIN / "mymcp-loadgen"), "spawn", SHELL, command, str(conc), str(self.a.secs)],
                             capture_output=True, text=True, check=True, timeout=self.a.secs + 120).stdout
        return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", out)}

    def rg_counts(self, what: str) -> int:
        """Matches of the grep row / files of the glob row, as rg sees them (computed once)."""
        if not hasattr(self, "_rg"):
            grep = subprocess.run(["rg", "-n", "--no-heading", GREP_PATTERN, str(TREE)], capture_output=True, text=True)
            files = subprocess.run(["rg", "--files", "-g", "*.c", str(TREE)], capture_output=True, text=True)
            self._rg = {"grep": len(grep.stdout.splitlines()), "glob": len(files.stdout.splitlines())}
        return self._rg[what]

    def on(self, group) -> bool:
        return self.a.only is None or group in self.a.only


def fixtures(work: Path) -> Path:
    files = work / "files"
    files.mkdir()
    line = ("x" * 63 + "\n").encode()
    (files / "f4k.txt").write_bytes(line * 64)  # 4 KiB, 64 lines
    big_line = ("y" * 255 + "\n").encode()
    (files / "f1m.txt").write_bytes(big_line * 4096)  # 1 MiB, 4096 lines
    (files / "f10m.txt").write_bytes(big_line * 40960)  # 10 MiB, 40960 lines
    (work / "in").mkdir()
    for d in (work, files, work / "in"):
        os.chmod(d, 0o755)
    return files


def generate_tree(root: Path):
    """A source-like tree of 50,000 files (~300 MB), generated once and kept between runs."""
    if (root / ".complete").exists():
        return
    log(f"generating {root} (once; kept between runs) ...")
    shutil.rmtree(root, ignore_errors=True)
    rnd = random.Random(42)
    words = ("int char void return static const struct unsigned long if else for while break "
             "buffer length value result index count error status node next prev table entry "
             "size offset handle config parse write read open close lock unlock init free").split()
    exts = [".c"] * 4 + [".h"] * 2 + [".py", ".txt", ".md", ".rs"]
    for a in range(50):
        for b in range(20):
            d = root / f"mod{a:02}" / f"sub{b:02}"
            d.mkdir(parents=True, exist_ok=True)
            for c in range(50):
                lines = []
                for _ in range(rnd.randint(40, 160)):
                    n = rnd.randint(3, 12)
                    lines.append("    " + " ".join(rnd.choice(words) for _ in range(n)) + ";")
                if rnd.random() < 0.002:
                    lines.insert(rnd.randrange(len(lines)), f"    /* XYZZY_{rnd.randint(0, 9999)} marker */")
                (d / f"file{c:02}{rnd.choice(exts)}").write_text("\n".join(lines) + "\n")
    (root / ".complete").touch()


def transfer_source(nbytes: int) -> Path:
    """The random file moved by the transfer rows, kept between runs."""
    XFER.mkdir(parents=True, exist_ok=True)
    os.chmod(XFER, 0o755)
    src = XFER / f"src-{nbytes}.bin"
    if not src.exists() or src.stat().st_size != nbytes:
        log(f"writing {nbytes} random bytes to {src} (once; kept between runs) ...")
        tmp = src.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            left = nbytes
            while left:
                n = min(left, 1 << 24)
                f.write(os.urandom(n))
                left -= n
        tmp.rename(src)
    return src


def nginx_start(work: Path, files: Path, src: Path, port: int) -> subprocess.Popen:
    conf = work / "nginx.conf"
    (work / "nginx-tmp").mkdir()
    conf.write_text(f"""
user root;
worker_processes auto;
daemon off;
error_log {work}/nginx-error.log;
pid {work}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path {work}/nginx-tmp;
  client_max_body_size 0;
  server {{
    listen 127.0.0.1:{port};
    location / {{ root {files}; }}
    location = /transfer/src.bin {{ alias {src}; }}
    location /in/ {{ root {work}; dav_methods PUT; create_full_put_path on; }}
  }}
}}
""")
    p = start(["nginx", "-c", str(conf)], stderr=subprocess.DEVNULL)
    wait_http(port, "/f4k.txt", False, p)
    return p


def curl_time(args) -> float:
    out = subprocess.run(["curl", "-sS", "-f", "-k", "-o", "/dev/null", "-w", "%{time_total}", *args],
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"curl {' '.join(args)}: {out.stderr.strip()}")
    return float(out.stdout)


def fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ticket_url(srv: Server, text: str) -> str:
    """The URL in a prepare_upload / prepare_download result (JSON or plain text)."""
    try:
        v = json.loads(text)
        for k in ("url", "upload_url", "download_url"):
            if isinstance(v.get(k), str):
                u = v[k]
                break
        else:
            raise ValueError
    except (ValueError, AttributeError):
        m = re.search(r"(https?://\S+|/\S*transfer\S*)", text)
        if not m:
            raise RuntimeError(f"no URL in {text[:300]}")
        u = m[1].rstrip('",.')
    if u.startswith("/"):
        u = srv.base + u
    # Point it at the port we started the server on, whatever host it names.
    return re.sub(r"^https?://[^/]+", srv.base, u)


def settle(b: Bench):
    os.sync()
    time.sleep(b.a.settle)


# ---------------------------------------------------------------------------------------------
# One round.

def measure_limits(b: Bench, ng_port: int, src: Path, files: Path):
    a = b.a
    if b.on("read"):
        url = f"http://127.0.0.1:{ng_port}/f4k.txt"
        r = b.wrk(url, 1)
        b.add("r4k_c1_rps", "limit", r["rps"])
        b.add("r4k_c1_p50", "limit", r["p50"])
        b.add("r4k_c1_p99", "limit", r["p99"])
        b.add("r4k_c32_rps", "limit", b.wrk(url, 32)["rps"])
    if b.on("readbig"):
        b.add("r1m_p50", "limit", b.wrk(f"http://127.0.0.1:{ng_port}/f1m.txt", 1)["p50"])
        b.add("r10m_p50", "limit", b.wrk(f"http://127.0.0.1:{ng_port}/f10m.txt", 1)["p50"])
    if b.on("bash"):
        spawn = b.loadgen_spawn("true", 1)
        b.add("bash_c1", "limit", spawn["rate"])
        b.add("bash_c1_p50", "limit", spawn["p50_ms"])
        b.add("bash_peer_p50", "limit", spawn["p50_ms"])
        b.add("bash_c8", "limit", b.loadgen_spawn("true", 8)["rate"])
    if b.on("bashmib"):
        b.add("bash_mib", "limit", b.loadgen_spawn(MIB_COMMAND, 1)["p50_ms"])
    if b.on("grep"):
        b.add("grep", "limit", timed(a.search_runs, lambda: run_quiet(["rg", "-n", "--no-heading", GREP_PATTERN, str(TREE)])))
    if b.on("glob"):
        b.add("glob", "limit", timed(a.search_runs, lambda: run_quiet(["rg", "--files", "-g", "*.c", str(TREE)])))
        b.add("glob_find", "limit", timed(a.search_runs, lambda: run_quiet(["find", str(TREE), "-name", "*.c", "-type", "f"])))
    if b.on("boundary"):
        # One small message to another process over a Unix socket and one back: what crossing
        # the privilege boundary cannot cost less than. As the kernel places the two (the
        # limit), and pinned to one CPU and to two (where a wake-up crosses CPUs).
        for row, placement in [("boundary", []), ("pingpong_same", ["same-cpu"]), ("pingpong_other", ["other-cpu"])]:
            out = subprocess.run([str(BIN / "mymcp-loadgen"), "pingpong", str(a.secs), *placement],
                                 capture_output=True, text=True, check=True, timeout=120).stdout
            us = float(re.search(r"p50_ms=([\d.]+)", out)[1]) * 1000
            b.add(row, "limit", us)
            if row == "boundary":
                b.add("peer_rt", "limit", us)
    mb = a.transfer_bytes / 1e6
    if b.on("upload"):
        dest = b.work / "in" / "nginx.bin"
        t0 = time.monotonic()
        t = curl_time(["-T", str(src), f"http://127.0.0.1:{ng_port}/in/nginx.bin"])
        fsync(dest)
        t_sync = time.monotonic() - t0
        if dest.stat().st_size != a.transfer_bytes:
            raise RuntimeError("nginx stored a short upload")
        b.add("upload", "limit", mb / t)
        b.add("upload_sync", "limit", mb / t_sync)
        dest.unlink()
        settle(b)
    if b.on("download"):
        b.add("download", "limit", mb / curl_time([f"http://127.0.0.1:{ng_port}/transfer/src.bin"]))


def run_quiet(argv):
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=False, timeout=600)


def timed(n, f) -> float:
    """Median milliseconds of n runs of f, after one warm-up run."""
    f()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts)


def checked(b: Bench, srv: Server, row: str, name: str, args: dict, min_len: int = 0, count=None,
            token=None) -> bool:
    """One call before a row is timed: it must succeed (and return at least min_len characters),
    otherwise the row is left out for this implementation, with a note. `count` = (field,
    expected): where the answer is JSON with that field, it must equal what rg found."""
    try:
        if token:
            client = Client(srv.port, token, srv.impl.tls)
            try:
                text = client.call(name, args)
            finally:
                client.close()
        else:
            text = srv.client.call(name, args)
    except Exception as e:  # noqa: BLE001 — reported in the notes
        b.note(f"{srv.impl.name}: {row}: {str(e)[:200]}")
        return False
    if count:
        try:
            got = json.loads(text).get(count[0])
        except (ValueError, AttributeError):
            got = None
        if got is not None and got != count[1]:
            b.note(f"{srv.impl.name}: {row}: {count[0]} {got}, rg found {count[1]}")
    if len(text) < min_len:
        b.note(f"{srv.impl.name}: {row}: answer cut to {len(text)} characters (expected ≥ {min_len}); left out")
        return False
    return True


def read_pages(b: Bench, srv: Server, row: str, path: str, size: int):
    """The read_file arguments that return the whole file: one call, or several pages where the
    server pages large files (mymcp returns at most 8 MiB of content per call and says
    `truncated`). None (with a note) when the file cannot be read whole."""
    pages, offset, got = [], 1, 0
    while len(pages) < 10:
        args = {"file_path": path, "offset": offset, "limit": 50000}
        try:
            text = srv.client.call("read_file", args)
        except Exception as e:  # noqa: BLE001 — reported in the notes
            b.note(f"{srv.impl.name}: {row}: {str(e)[:200]}")
            return None
        pages.append(args)
        try:
            v = json.loads(text)
        except ValueError:
            v = None
        content = v.get("content", "") if isinstance(v, dict) else text
        got += len(content)
        if isinstance(v, dict) and v.get("truncated") and content:
            offset += content.count("\n") + 1
            continue
        break
    if got < size:
        b.note(f"{srv.impl.name}: {row}: answer cut to {got} characters (expected ≥ {size}); left out")
        return None
    if len(pages) > 1:
        b.note(f"{srv.impl.name}: {row}: the file comes in {len(pages)} read_file pages; the cell is the sum of "
               "their p50s")
    return pages


def measure_impl(b: Bench, impl: Impl, files: Path, src: Path):
    a = b.a
    srv = Server(impl, b.work)
    name = impl.name
    try:
        b.add("startup", name, srv.startup * 1000)
        b.add("rss_idle", name, srv.rss_mib())
        tok = srv.token
        # The same calls by a token acting as a non-root account, in the same server: what
        # acting as the account costs.
        acct = account_token(srv, b.account) if b.account and impl.ours and not impl.tls else None
        if b.account and impl.ours and not impl.tls and acct is None:
            b.note("mymcp: no token for the non-root account; its rows are left out")
        if b.on("read"):
            args = {"file_path": str(files / "f4k.txt"), "limit": 2000}
            if checked(b, srv, "read 4k", "read_file", args, 4096):
                body = call_body("read_file", args)
                r = b.wrk(srv.url, 1, tok, body)
                b.add("r4k_c1_rps", name, r["rps"])
                b.add("r4k_c1_p50", name, r["p50"])
                b.add("r4k_c1_p99", name, r["p99"])
                with RssPeak(srv.pids) as peak:
                    off = b.wrk(srv.url, 32, tok, body)["rps"]
                    b.add("r4k_c32_rps", name, off)
                b.add("rss_c32", name, peak.mib)
                if acct and checked(b, srv, "read 4k (account)", "read_file", args, 4096, token=acct):
                    b.add("r4k_c32_acct", name, b.wrk(srv.url, 32, acct, body)["rps"])
                if impl.launcher and not impl.tls:
                    measure_tracing(b, impl, body, off)
        if b.on("readbig"):
            for tag, fname, size in [("1m", "f1m.txt", 1 << 20), ("10m", "f10m.txt", 10 << 20)]:
                pages = read_pages(b, srv, f"read {tag}", str(files / fname), size)
                if pages:
                    # A file larger than one page takes several calls: their p50s add up.
                    b.add(f"r{tag}_p50", name, sum(b.wrk(srv.url, 1, tok, call_body("read_file", p))["p50"] for p in pages))
        if b.on("bash"):
            args = {"command": "true"}
            if checked(b, srv, "bash true", "bash_execute", args):
                body = call_body("bash_execute", args)
                c1 = b.wrk(srv.url, 1, tok, body)
                b.add("bash_c1", name, c1["rps"])
                b.add("bash_c1_p50", name, c1["p50"])
                if acct and checked(b, srv, "bash true (account)", "bash_execute", args, token=acct):
                    b.add("bash_c1_acct", name, b.wrk(srv.url, 1, acct, body)["rps"])
                    # The same account confined (issue 22): kernel limits and a write root, so
                    # each call also gets a mount namespace with / read-only.
                    home = os.path.expanduser(f"~{b.account}")
                    conf = account_token(srv, b.account, "bench-confined",
                                         ["--memory-max", "512M", "--tasks-max", "256",
                                          "--cpu-max", "100", "--write-root", home])
                    if conf and checked(b, srv, "bash true (confined)", "bash_execute", args, token=conf):
                        b.add("bash_c1_conf", name, b.wrk(srv.url, 1, conf, body)["rps"])
                if impl.launcher:
                    # The same calls straight to the executor's socket: what the spawn costs
                    # there, without HTTP and the frontend.
                    out = peer(srv, "bench-bash", f"{tok}:{max(200, int(a.secs * 400))}")
                    m = re.search(r"p50_us=([\d.]+)", out or "")
                    b.add("bash_peer_p50", name, float(m[1]) / 1000 if m else None)
                b.add("bash_c8", name, b.wrk(srv.url, 8, tok, body)["rps"])
        if b.on("bashmib"):
            args = {"command": MIB_COMMAND, "max_output_bytes": 1048576}
            if checked(b, srv, "bash 1 MiB", "bash_execute", args, 1 << 20):
                b.add("bash_mib", name, b.wrk(srv.url, 1, tok, call_body("bash_execute", args))["p50"])
        if b.on("grep"):
            args = {"pattern": GREP_PATTERN, "path": str(TREE), "max_results": 5000}
            if checked(b, srv, "grep", "grep", args, count=("match_count", b.rg_counts("grep"))):
                b.add("grep", name, timed(a.search_runs, lambda: srv.client.call("grep", args)))
        if b.on("glob"):
            args = {"pattern": "**/*.c", "path": str(TREE)}
            if checked(b, srv, "glob", "glob", args, count=("count", b.rg_counts("glob"))):
                ms = timed(a.search_runs, lambda: srv.client.call("glob", args))
                b.add("glob", name, ms)
                b.add("glob_find", name, ms)
        if b.on("boundary"):
            health = b.wrk(f"{srv.base}/health", 1)["p50"] * 1000
            ping = b.wrk(srv.url, 1, tok, {"jsonrpc": "2.0", "id": 1, "method": "ping"})["p50"] * 1000
            b.add("health_p50", name, health)
            b.add("ping_p50", name, ping)
            b.add("boundary", name, ping - health)
            if impl.launcher:
                out = peer(srv, "bench-identify", f"{tok}:20000")
                m = re.search(r"p50_us=([\d.]+)", out or "")
                b.add("peer_rt", name, float(m[1]) if m else None)
        if b.on("terminal") and impl.ours:
            measure_terminals(b, srv)
        b.add("rss_end", name, srv.rss_mib())
    finally:
        srv.stop()
    if b.on("upload") or b.on("download"):
        measure_transfers(b, impl, src)


def executor_pid(srv) -> int | None:
    for p in srv.pids():
        try:
            if Path(f"/proc/{p}/comm").read_text().strip() == "mymcp-executor":
                return p
        except OSError:
            continue
    return None


TERMINALS_IDLE = 32  # idle terminals opened for the memory row (MYMCP_TERMINAL_MAX_PER_TOKEN is raised)


def measure_terminals(b: Bench, srv: Server):
    """Issue 24: a terminal_send + terminal_read (wait_for) round trip of `echo` in an
    interactive bash against bash_execute `echo` (p50, same server), and the executor's memory
    per idle terminal (RSS before and after opening TERMINALS_IDLE of them, each a sleep)."""
    a, c = b.a, srv.client
    runs = max(20, int(a.secs * 25))
    try:
        tid = json.loads(c.call("terminal_open", {"command": "bash --norc --noprofile -i"}))["terminal_id"]
        c.call("terminal_read", {"terminal_id": tid, "wait_for": r"\$ $", "timeout": 20})
        n = [1_000_000]

        def round_trip():
            n[0] += 1
            # The typed line (echoed) never contains the answer: only bash's output can match.
            c.call("terminal_send", {"terminal_id": tid, "text": f"echo $(({n[0]}+0))", "keys": ["Enter"]})
            out = json.loads(c.call("terminal_read", {"terminal_id": tid, "wait_for": rf"(?m)^{n[0]}\r?$",
                                                       "timeout": 20}))
            if not out["matched"]:
                raise RuntimeError(f"no echo of {n[0]}: {out}")

        term = timed(runs, round_trip)
        bash = timed(runs, lambda: c.call("bash_execute", {"command": "echo 1000000"}))
        c.call("terminal_close", {"terminal_id": tid})
        b.add("term_rt_p50", srv.impl.name, term)
        b.add("term_bash_p50", srv.impl.name, bash)
        b.add("term_rt_ratio", srv.impl.name, term / bash if bash else None)
        pid = executor_pid(srv)
        if pid:
            time.sleep(0.3)
            before = rss_kib(pid)
            ids = [json.loads(c.call("terminal_open", {"command": "sleep 1000"}))["terminal_id"]
                   for _ in range(TERMINALS_IDLE)]
            time.sleep(1)
            after = rss_kib(pid)
            for t in ids:
                c.call("terminal_close", {"terminal_id": t})
            b.add("term_idle_kib", srv.impl.name, (after - before) / TERMINALS_IDLE)
    except Exception as e:  # noqa: BLE001 — reported in the notes
        b.note(f"{srv.impl.name}: terminals: {str(e)[:200]}")


class OtlpSink:
    """Where the traced server exports: an OTLP/HTTP endpoint on loopback that reads each
    export and answers 200 with an empty (valid) protobuf response, counting what came."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        self.exports = {}
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(n)
                sink.exports[self.path] = sink.exports.get(self.path, 0) + 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def measure_tracing(b: Bench, impl: Impl, body: dict, off_rps: float):
    """read_file 4 KiB at c=32 again on a fresh server with OpenTelemetry on: every call
    traced (sampler 1.0: an HTTP span, a tools/call span and the executor's spans, batched and
    exported over OTLP/HTTP to a local sink), against the same row without (`off_rps`, this
    round)."""
    sink = OtlpSink()
    traced = Impl(f"{impl.name} traced", impl.argv, dict(
        impl.env, OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_TRACES_SAMPLER="always_on", OTEL_SERVICE_NAME="mymcp-bench"), launcher=impl.launcher, ours=True)
    try:
        srv = Server(traced, b.work)
        try:
            on = b.wrk(srv.url, 32, srv.token, body)["rps"]
        finally:
            srv.stop()  # flushes the spans still batched
    finally:
        sink.stop()
    if not sink.exports.get("/v1/traces"):
        b.note("tracing on: no spans reached the OTLP sink; the row is left out")
        return
    b.add("r4k_c32_otel_rps", impl.name, on)
    b.add("r4k_c32_otel_ratio", impl.name, on / off_rps if off_rps else None)


def peer(srv, scenario: str, arg: str):
    """Runs `mymcp-test-peer` on our executor's socket as the frontend's uid (nobody); its
    output, or None when the launcher did not say where the socket is."""
    run_dir = next((l for l in srv.log if "--runtime-dir " in l), None)
    if not run_dir:
        return None
    run_dir = run_dir.split("--runtime-dir ")[1].split()[0]
    return subprocess.run([str(BIN / "mymcp-test-peer"), f"{run_dir}/executor.sock", scenario, arg],
                          capture_output=True, text=True, user=65534, group=65534, timeout=300).stdout


def measure_transfers(b: Bench, impl: Impl, src: Path):
    """Upload and download through the tools' tickets, on a server of their own: the RSS
    sampled meanwhile is the transfers' alone, not what earlier rows left allocated."""
    a, name = b.a, impl.name
    srv = Server(impl, b.work)
    try:
        mb = a.transfer_bytes / 1e6
        xfer_peak = None
        if b.on("upload"):
            dest = b.work / "in" / f"{re.sub('[^a-z0-9]', '_', name)}.bin"
            try:
                url = ticket_url(srv, srv.client.call("prepare_upload", {"dest_path": str(dest)}))
                with RssPeak(srv.pids) as peak:
                    t = curl_time(["-T", str(src), url])
                xfer_peak = peak.mib
                if dest.stat().st_size != a.transfer_bytes:
                    raise RuntimeError(f"stored {dest.stat().st_size} bytes")
                b.add("upload", name, mb / t)
                b.add("upload_sync", name, mb / t)
            except Exception as e:  # noqa: BLE001 — reported in the notes
                b.note(f"{name}: upload: {str(e)[:200]}")
            finally:
                if dest.exists():
                    dest.unlink()
            settle(b)
        if b.on("download"):
            try:
                url = ticket_url(srv, srv.client.call("prepare_download", {"src_path": str(src)}))
                with RssPeak(srv.pids) as peak:
                    b.add("download", name, mb / curl_time([url]))
                xfer_peak = max(xfer_peak or 0, peak.mib)
            except Exception as e:  # noqa: BLE001 — reported in the notes
                b.note(f"{name}: download: {str(e)[:200]}")
        b.add("rss_xfer", name, xfer_peak)
    finally:
        srv.stop()


# ---------------------------------------------------------------------------------------------
# The table.

# key, label, higher is better, limit's name
ROWS = [
    ("r4k_c1_rps", "read_file 4 KiB, c=1, req/s", True, "nginx GET"),
    ("r4k_c1_p50", "read_file 4 KiB, c=1, p50 ms", False, "nginx GET"),
    ("r4k_c1_p99", "read_file 4 KiB, c=1, p99 ms", False, "nginx GET"),
    ("r4k_c32_rps", "read_file 4 KiB, c=32, req/s", True, "nginx GET"),
    ("r4k_c32_acct", "read_file 4 KiB, c=32, req/s, token of a non-root account", True, None),
    ("r4k_c32_otel_rps", "read_file 4 KiB, c=32, tracing on (sampler 1.0), req/s", True, None),
    ("r4k_c32_otel_ratio", "read_file 4 KiB, c=32, tracing on (sampler 1.0) / off, req/s ratio", True, None),
    ("r1m_p50", "read_file 1 MiB, p50 ms", False, "nginx GET"),
    ("r10m_p50", "read_file 10 MiB, p50 ms", False, "nginx GET"),
    ("bash_c1", "bash_execute `true`, c=1, calls/s", True, "spawn loop"),
    ("bash_c1_p50", "bash_execute `true`, c=1, p50 ms", False, "spawn loop"),
    ("bash_c1_acct", "bash_execute `true`, c=1, calls/s, token of a non-root account", True, None),
    ("bash_c1_conf", "bash_execute `true`, c=1, calls/s, the same account confined (limits + write root)", True, None),
    ("bash_peer_p50", "bash_execute `true` to the executor alone (test peer), p50 ms", False, "spawn loop"),
    ("bash_c8", "bash_execute `true`, c=8, calls/s", True, "spawn loop"),
    ("bash_mib", "bash 1 MiB of output, p50 ms", False, "spawn loop"),
    ("grep", "grep 50,000 files, ms", False, "rg"),
    ("glob", "glob `**/*.c` 50,000 files, ms", False, "rg --files"),
    ("glob_find", "glob `**/*.c` 50,000 files, ms", False, "find"),
    ("upload", "upload {size}, MB/s", True, "nginx PUT"),
    ("upload_sync", "upload {size}, MB/s", True, "nginx PUT+fsync"),
    ("download", "download {size}, MB/s", True, "nginx sendfile"),
    ("term_rt_p50", "terminal_send + terminal_read `echo` round trip, p50 ms", False, None),
    ("term_bash_p50", "bash_execute `echo` (same run), p50 ms", False, None),
    ("term_rt_ratio", "terminal round trip / bash_execute `echo`, p50 (goal ≤ 2)", False, None),
    ("term_idle_kib", "executor memory per idle terminal, KiB (goal ≤ 256)", False, None),
    ("rss_idle", "RSS idle, MiB", False, None),
    ("rss_c32", "RSS peak, read c=32, MiB", False, None),
    ("rss_xfer", "RSS peak, {size} transfers (fresh server), MiB", False, None),
    ("rss_end", "RSS after all rows above (large reads included), MiB", False, None),
    ("startup", "start-up, exec to first /health, ms", False, None),
    ("health_p50", "GET /health (frontend only), p50 µs", False, None),
    ("ping_p50", "MCP ping (through the executor), p50 µs", False, None),
    ("boundary", "boundary cost per call (ping − /health), µs", False, "socket round trip"),
    ("peer_rt", "executor round trip, no HTTP (test peer), p50 µs", False, "socket round trip"),
    ("pingpong_same", "socket round trip, both processes on one CPU, p50 µs", False, None),
    ("pingpong_other", "socket round trip, processes on two CPUs, p50 µs", False, None),
]


def fmt(v):
    if v is None:
        return "–"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def size_label(n):
    return f"{n / 2**30:g} GiB" if n >= 2**30 else f"{n / 2**20:g} MiB"


def med(b: Bench, row, impl):
    vs = b.results.get((row, impl), [])
    return (statistics.median(vs), min(vs), max(vs)) if vs else (None, None, None)


def ratio(ours, other):
    return ours / other if ours is not None and other else None


def targets(b: Bench, go: str, size: str) -> list:
    """(target text, measured text, met) for every target of the issue."""
    m = lambda row, impl="mymcp": med(b, row, impl)[0]
    out = []

    def add(text, value, fmt_value, ok):
        out.append((text, fmt_value if value is not None else "not measured", None if value is None else ok))

    r = ratio(m("r4k_c32_rps"), m("r4k_c32_rps", "limit"))
    add("read_file 4 KiB c=32 throughput ≥ 0.25× nginx", r, f"{r:.2f}×" if r else "", r is not None and r >= 0.25)
    r = ratio(m("r4k_c32_rps"), m("r4k_c32_rps", go))
    add("read_file 4 KiB c=32 throughput ≥ 4× Go", r, f"{r:.2f}×" if r else "", r is not None and r >= 4)
    r = m("r4k_c32_otel_ratio")
    add("read_file 4 KiB c=32 with tracing on (sampler 1.0) vs off (informative)", r, f"{r:.2f}×" if r else "", None)
    r = ratio(m("r4k_c1_p50"), m("r4k_c1_p50", "limit"))
    add("read_file 4 KiB c=1 p50 ≤ 4× nginx", r, f"{r:.2f}×" if r else "", r is not None and r <= 4)
    r = ratio(m("bash_c1"), m("bash_c1", "limit"))
    add("bash_execute `true` c=1 ≥ 0.8× the spawn loop", r, f"{r:.2f}×" if r else "", r is not None and r >= 0.8)
    r = ratio(m("r4k_c32_acct"), m("r4k_c32_rps"))
    add("read_file 4 KiB c=32, non-root account ≥ 0.9× root-mapped", r, f"{r:.2f}×" if r else "",
        r is not None and r >= 0.9)
    r = ratio(m("bash_c1_acct"), m("bash_c1"))
    add("bash_execute `true` c=1, non-root account ≥ 0.9× root-mapped", r, f"{r:.2f}×" if r else "",
        r is not None and r >= 0.9)
    r = ratio(m("bash_c1_conf"), m("bash_c1_acct"))
    add("bash_execute `true` c=1, confined token ≥ 0.85× the same account unconfined", r,
        f"{r:.2f}×" if r else "", r is not None and r >= 0.85)
    r = ratio(m("bash_mib"), m("bash_mib", "limit"))
    add("bash 1 MiB output ≤ 2× the spawn loop", r, f"{r:.2f}×" if r else "", r is not None and r <= 2)
    r = ratio(m("grep"), m("grep", "limit"))
    add("grep ≤ 1.05× rg", r, f"{r:.2f}×" if r else "", r is not None and r <= 1.05)
    r = ratio(m("glob"), m("glob", "limit"))
    add("glob ≤ 1.5× rg --files", r, f"{r:.2f}×" if r else "", r is not None and r <= 1.5)
    r = ratio(m("upload"), m("upload", "limit"))
    add(f"upload {size} ≥ 1.0× nginx (speed)", r, f"{r:.2f}×" if r else "", r is not None and r >= 1.0)
    r = ratio(m("upload_sync"), m("upload_sync", "limit"))
    add(f"upload {size} ≥ 1.0× nginx PUT + fsync (same durability; informative)", r, f"{r:.2f}×" if r else "",
        r is not None and r >= 1.0)
    r = ratio(m("download"), m("download", "limit"))
    add(f"download {size} ≥ 1.0× nginx (speed)", r, f"{r:.2f}×" if r else "", r is not None and r >= 1.0)
    r = ratio(m("r1m_p50"), m("r1m_p50", "limit"))
    add("read_file 1 MiB p50 ≤ 10× nginx", r, f"{r:.2f}×" if r else "", r is not None and r <= 10)
    r = ratio(m("r10m_p50"), m("r10m_p50", "limit"))
    add("read_file 10 MiB p50 ≤ 10× nginx", r, f"{r:.2f}×" if r else "", r is not None and r <= 10)
    v = m("rss_idle")
    add("RSS idle, both processes ≤ 12 MiB", v, f"{v:.2f} MiB" if v else "", v is not None and v <= 12)
    v = m("rss_c32")
    add("RSS peak at c=32 ≤ 24 MiB", v, f"{v:.2f} MiB" if v else "", v is not None and v <= 24)
    v = m("rss_xfer")
    add(f"RSS peak during {size} transfers ≤ 32 MiB", v, f"{v:.2f} MiB" if v else "", v is not None and v <= 32)
    r = ratio(m("startup"), m("startup", go))
    add("start-up to first /health ≤ Go", r, f"{r:.2f}× ({m('startup'):.1f} ms vs {m('startup', go):.1f} ms)" if r else "",
        r is not None and r <= 1.0)
    v, floor = m("boundary"), m("boundary", "limit")
    shown = f"{v:.1f} µs" if v is not None else ""
    if v is not None and floor is not None:
        shown += f" (one socket round trip between two processes here: {floor:.1f} µs)"
    add("privilege-boundary cost per call ≤ 20 µs", v, shown, v is not None and v <= 20)
    r = m("term_rt_ratio")
    add("terminal_send + terminal_read `echo` p50 ≤ 2× bash_execute `echo`", r, f"{r:.2f}×" if r else "",
        r is not None and r <= 2)
    v = m("term_idle_kib")
    add("executor memory per idle terminal ≤ 256 KiB", v, f"{v:.0f} KiB" if v is not None else "",
        v is not None and v <= 256)
    return out


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), "?")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {ram:.0f} GiB RAM, Linux {os.uname().release}"


def versions() -> str:
    def first(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"
    return "; ".join([first(["nginx", "-v"]).replace("nginx version: ", ""), first(["rg", "--version"]),
                      first(["wrk", "-v"]).split(" Copyright")[0], first(["curl", "--version"]).split(" (")[0]])


def render(b: Bench, names: list, load0: str, load1: str, elapsed: float) -> str:
    a = b.a
    size = size_label(a.transfer_bytes)
    go = "go 3.1.0"
    header = ["row", "limit"] + names + ["ours/limit", "ours/Go"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for key, label, _hi, limit_name in ROWS:
        if not any((key, i) in b.results for i in ["limit"] + names):
            continue
        label = label.format(size=size)
        if limit_name:
            label += f" — limit: {limit_name}"
        cells = [label]
        for impl in ["limit"] + names:
            v, lo, hi = med(b, key, impl)
            spread = f" ({fmt(lo)}–{fmt(hi)})" if v is not None and len(b.results[(key, impl)]) > 1 else ""
            cells.append(fmt(v) + spread)
        ours = med(b, key, "mymcp")[0]
        r1, r2 = ratio(ours, med(b, key, "limit")[0]), ratio(ours, med(b, key, go)[0])
        cells.append(f"{r1:.2f}×" if r1 else "–")
        cells.append(f"{r2:.2f}×" if r2 else "–")
        lines.append("| " + " | ".join(cells) + " |")
    out = ["# mymcp side-by-side benchmark", "",
           f"Machine: {machine()}. Load average at start {load0}, at end {load1}.",
           f"Run: {a.rounds} round(s) × {a.secs:g} s per wrk measurement, {a.search_runs} timed run(s) per search "
           f"per round, {size} transfers; {elapsed / 60:.1f} min. Cells: median of the rounds (min–max).",
           f"Tools: {versions()}.", "",
           *lines, "",
           "ours = mymcp over plain HTTP (`mymcpctl serve`: frontend as nobody, executor as root; the binaries copied to a directory of their own, as a package installs them); "
           "`mymcp tls` is the same with `--tls`. Higher is better for req/s, calls/s and MB/s, lower "
           "for the rest; ratios are ours divided by the other (value over value). Limits: nginx "
           "(sendfile GET of the same file, WebDAV PUT), a posix_spawn loop of the same shell "
           f"({SHELL} -c, `mymcp-loadgen spawn`), rg, rg --files, find, and for the boundary a "
           "round trip of 32 bytes out and 16 back between two processes over a Unix socket "
           "(`mymcp-loadgen pingpong`, placed by the kernel; pinned to one CPU and to two in the "
           "last rows). RSS sums the frontend and the "
           "executor (mymcpctl, the launcher, left out); for the references, their process tree. "
           "Load generator: wrk (keep-alive, c connections); searches and transfers: one client "
           "(HTTP keep-alive, curl), warm cache.", ""]
    if b.notes:
        out += ["Notes:", ""] + [f"- {n}" for n in b.notes] + [""]
    out += ["## Targets", "", "| target | measured | |", "|---|---:|---|"]
    for text, value, ok in targets(b, go, size):
        out.append(f"| {text} | {value} | {'–' if ok is None else 'met' if ok else '**missed**'} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# callgrind: instruction counts per call.

def callgrind(a, work: Path):
    """Runs executor and frontend under callgrind (through wrapper scripts beside a copy of
    mymcpctl, which starts its siblings), zeroes the counters after a warm-up, makes N calls,
    dumps, and prints instructions per call."""
    bindir = work / "bin"
    outdir = work / "callgrind"
    bindir.mkdir()
    outdir.mkdir()
    os.chmod(work, 0o755)
    os.chmod(bindir, 0o755)
    os.chmod(outdir, 0o777)
    shutil.copy2(BIN / "mymcpctl", bindir / "mymcpctl")
    for role in ("executor", "frontend"):
        w = bindir / f"mymcp-{role}"
        # The executor re-executes itself to turn glibc's per-thread caches off unless
        # GLIBC_TUNABLES already says how (see docs/reliability.md): said here, it stays under
        # valgrind. The frontend keeps its caches.
        tunables = "GLIBC_TUNABLES=glibc.malloc.tcache_count=0 " if role == "executor" else ""
        w.write_text(f"#!/bin/sh\n{tunables}exec valgrind --tool=callgrind --quiet --dump-instr=no --compress-pos=no "
                     f"--vgdb-prefix={outdir}/vgdb --callgrind-out-file={outdir}/{role}.%p {BIN}/mymcp-{role} \"$@\"\n")
        os.chmod(w, 0o755)
    files = fixtures(work)
    port = free_port()
    env = {"PATH": os.environ["PATH"], "HOME": str(work), "LANG": "C.UTF-8", "TMPDIR": str(work),
           "MYMCP_FRONTEND_USER": "nobody"}
    impl = Impl("mymcp (callgrind)", [str(bindir / "mymcpctl"), "serve", "--port", "{port}"], env, launcher=True)
    log("starting executor and frontend under callgrind (slow) ...")
    srv = Server.__new__(Server)
    # Server() with a longer start-up allowance.
    srv.impl, srv.port, srv.log, srv.token = impl, port, [], None
    srv.proc = start([a.replace("{port}", str(port)) for a in impl.argv], stderr=subprocess.PIPE,
                     stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True, env=env, cwd=str(work))

    def pump():
        for line in srv.proc.stderr:
            srv.log.append(line)
            m = re.search(r"temp rw token:\s+(\S+)", line)
            if m and not srv.token:
                srv.token = m.group(1)

    threading.Thread(target=pump, daemon=True).start()
    try:
        wait_http(port, "/health", False, srv.proc, timeout=300)
        for _ in range(600):
            if srv.token:
                break
            time.sleep(0.1)
        srv.base = f"http://127.0.0.1:{port}"
        srv.client = Client(port, srv.token, False)
        pids = {}
        for p in descendants(srv.proc.pid):
            try:
                cmd = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            for role in ("executor", "frontend"):
                if p != srv.proc.pid and any(c.endswith(f"/mymcp-{role}".encode()) for c in cmd):
                    pids.setdefault(role, p)
        if set(pids) != {"executor", "frontend"}:
            raise RuntimeError(f"could not find the daemons' pids: {pids}")
        run_dir = next(l for l in srv.log if "--runtime-dir " in l).split("--runtime-dir ")[1].split()[0]
        n = a.calls
        read_args = {"file_path": str(files / "f4k.txt"), "limit": 2000}
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}

        def health():
            srv.client.get("/health")

        def peer(count):
            out = subprocess.run([str(BIN / "mymcp-test-peer"), f"{run_dir}/executor.sock", "bench-identify",
                                  f"{srv.token}:{count}"], capture_output=True, text=True, user=65534, group=65534,
                                 timeout=3600)
            if "p50_us" not in out.stdout:
                raise RuntimeError(f"test peer: {out.stdout}{out.stderr}")

        def wake():
            http_get_ok("127.0.0.1", port, "/health", False)

        workloads = [
            ("read_file 4 KiB", lambda: srv.client.call("read_file", read_args)),
            ("MCP ping (Identify in the executor)", lambda: srv.client.post(ping)),
            ("GET /health (frontend only)", health),
        ]
        results = []
        for label, f in workloads:
            for _ in range(20):
                f()
            counts = measure_ir(pids, outdir, lambda: [f() for _ in range(n)], wake)
            results.append((label, counts))
            log(f"{label}: {counts}")
        peer(20)
        counts = measure_ir(pids, outdir, lambda: peer(n), wake)
        results.append(("executor round trip (test peer Identify, no HTTP)", counts))
    finally:
        try:
            srv.client.close()
        except AttributeError:
            pass
        stop(srv.proc, grace=60)
    lines = [f"Instructions per call under callgrind (valgrind {subprocess.run(['valgrind', '--version'], capture_output=True, text=True).stdout.strip()}), "
             f"{n} calls each after 20 warm-up calls; {BIN}:", "",
             "| workload | executor Ir/call | frontend Ir/call | sum |", "|---|---:|---:|---:|"]
    for label, c in results:
        e, f = c.get("executor", 0) / n, c.get("frontend", 0) / n
        lines.append(f"| {label} | {e:,.0f} | {f:,.0f} | {e + f:,.0f} |")
    print("\n".join(lines))
    if a.callgrind_out:
        keep = Path(a.callgrind_out)
        keep.mkdir(parents=True, exist_ok=True)
        for f in outdir.glob("*.*"):
            if f.name.startswith(("executor.", "frontend.")):
                shutil.copy2(f, keep / f.name)
        log(f"callgrind dumps (one per workload and daemon, in the order above) kept in {keep}; "
            "read them with callgrind_annotate")


def control(command: str, pid: int, prefix: str, wake):
    """Sends callgrind's monitor COMMAND (zero, dump) to PID with vgdb. vgdb cannot always interrupt a daemon blocked in
    epoll_wait (the frontend, after its privilege drop), so while the command waits, `wake`
    sends a /health that makes the frontend run and see the command: at most one or two such
    requests are counted, negligible over the calls measured."""
    uid = os.stat(f"/proc/{pid}").st_uid  # vgdb as the daemon's own user (root cannot open its FIFOs)
    p = subprocess.Popen(["vgdb", f"--vgdb-prefix={prefix}", f"--pid={pid}", command], user=uid,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    PROCS.append(p)
    deadline = time.monotonic() + 120
    while p.poll() is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"vgdb {command} {pid} hangs")
        try:
            p.wait(0.3)
        except subprocess.TimeoutExpired:
            wake()
    PROCS.remove(p)
    if p.returncode != 0:
        raise RuntimeError(f"vgdb {command} {pid} failed")


def measure_ir(pids: dict, outdir: Path, work, wake) -> dict:
    """Zeroes the counters of both daemons, runs work, dumps, and returns Ir per daemon."""
    for p in pids.values():
        control("zero", p, f"{outdir}/vgdb", wake)
    work()
    counts = {}
    for role, p in pids.items():
        before = set(globmod.glob(f"{outdir}/{role}.{p}*"))
        control("dump", p, f"{outdir}/vgdb", wake)
        for _ in range(600):
            new = set(globmod.glob(f"{outdir}/{role}.{p}*")) - before
            if new:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"no callgrind dump from {role}")
        total = 0
        for path in new:
            for _ in range(100):  # the dump may still be being written
                text = Path(path).read_text()
                m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
                if m:
                    total += int(m[1])
                    break
                time.sleep(0.1)
        counts[role] = total
    return counts


# ---------------------------------------------------------------------------------------------

GROUPS = ["read", "readbig", "bash", "bashmib", "grep", "glob", "upload", "download", "boundary", "terminal"]
ALIASES = {"search": ["grep", "glob"], "transfer": ["upload", "download"], "shell": ["bash", "bashmib"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 3; --quick: 1)")
    ap.add_argument("--secs", type=float, default=None, help="seconds per wrk measurement (default 4; --quick: 1)")
    ap.add_argument("--only", default=None,
                    help=f"comma-separated row groups: {', '.join(GROUPS)} (aliases: "
                         + ", ".join(f"{k}={'+'.join(v)}" for k, v in ALIASES.items())
                         + "); start-up and idle RSS are always measured")
    ap.add_argument("--skip-python", action="store_true", help="leave out the Python mymcp 2.1.1")
    ap.add_argument("--skip-tls", action="store_true", help="leave out mymcp with TLS")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 round of 1 s, 1 search run, 128 MiB transfers, short settle")
    ap.add_argument("--transfer-bytes", type=int, default=None, help="default 1 GiB (--quick: 128 MiB)")
    ap.add_argument("--search-runs", type=int, default=None, help="timed runs per search per round (default 3)")
    ap.add_argument("--settle", type=float, default=None,
                    help="seconds to let the disk settle after each upload's sync (default 3)")
    ap.add_argument("--out", default=None, help="default bench/results/latest.md for a full run, "
                                                 "bench/results/partial.md with --only or --quick")
    ap.add_argument("--callgrind", action="store_true",
                    help="instead: instruction counts per call of executor and frontend under callgrind")
    ap.add_argument("--calls", type=int, default=1000, help="calls per workload for --callgrind (default 1000)")
    ap.add_argument("--callgrind-out", default=None, metavar="DIR",
                    help="with --callgrind: keep the dumps in DIR (for callgrind_annotate)")
    a = ap.parse_args()
    q = a.quick
    a.rounds = a.rounds or (1 if q else 3)
    a.secs = a.secs or (1.0 if q else 4.0)
    a.search_runs = a.search_runs or (1 if q else 3)
    a.transfer_bytes = a.transfer_bytes or ((128 << 20) if q else (1 << 30))
    a.settle = a.settle if a.settle is not None else (0.5 if q else 3.0)
    if a.only is not None:
        only = []
        for g in a.only.split(","):
            g = g.strip()
            if g in ALIASES:
                only += ALIASES[g]
            elif g in GROUPS:
                only.append(g)
            elif g:
                ap.error(f"unknown row group {g!r}; known: {', '.join(GROUPS + list(ALIASES))}")
        a.only = set(only)
    partial = a.only is not None or q
    a.out = Path(a.out or REPO / "bench" / "results" / ("partial.md" if partial else "latest.md"))

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, on_signal)  # also when started with SIGINT ignored (in the background)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    work = Path(tempfile.mkdtemp(prefix="mymcp-bench-", dir="/var/tmp"))
    TEMP_DIRS.append(work)
    try:
        if a.callgrind:
            callgrind(a, work)
            return
        run(a, work)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        sys.exit(130)
    finally:
        cleanup()


def run(a, work: Path):
    load0 = Path("/proc/loadavg").read_text().split()[:3]
    t_start = time.monotonic()
    files = fixtures(work)
    home = work / "home"
    home.mkdir()
    needs = lambda *g: a.only is None or any(x in a.only for x in g)
    if needs("grep", "glob"):
        generate_tree(TREE)
    src = transfer_source(a.transfer_bytes) if needs("upload", "download") else files / "f4k.txt"
    tmp = work / "tmp"  # the servers' temporary files (the references' token files) go with the work dir
    tmp.mkdir(mode=0o755)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "TMPDIR": str(tmp)}
    # Our binaries run from copies, as a package installs them: in cargo's target directory
    # each is a second name (hard link) of a file under deps/, and since the installed
    # binaries are protected, a protected file with two names makes grep check the inode of
    # every file it opens, which no installed system does.
    installed = work / "installed"
    installed.mkdir()
    os.chmod(work, 0o755)
    for name in ("mymcpctl", "mymcp-executor", "mymcp-frontend"):
        shutil.copy2(BIN / name, installed / name)
    ctl = str(installed / "mymcpctl")
    ours_env = dict(env, MYMCP_FRONTEND_USER="nobody", MYMCP_TERMINAL_MAX_PER_TOKEN=str(TERMINALS_IDLE + 1))
    impls = [Impl("mymcp", [ctl, "serve", "--port", "{port}"], ours_env, launcher=True, ours=True)]
    if not a.skip_tls:
        impls.append(Impl("mymcp tls", [ctl, "serve", "--tls", "--port", "{port}"], ours_env,
                          tls=True, launcher=True, ours=True))
    impls.append(Impl("go 3.1.0", [str(REFS / "go3/bin/mymcp"), "serve", "-host", "127.0.0.1", "-port", "{port}"], env))
    if not a.skip_python:
        impls.append(Impl("python 2.1.1", [str(REFS / "py2/bin/mymcp"), "serve", "--host", "127.0.0.1", "--port", "{port}"],
                          env))
    b = Bench(a, work)
    if needs("read", "bash"):
        b.account = bench_account()
    ng_port = free_port()
    nginx = nginx_start(work, files, src, ng_port)
    try:
        for rnd in range(a.rounds):
            order = ["limit"] + [i.name for i in impls]
            k = rnd % len(order)
            order = order[k:] + order[:k]  # rotate, so no one always goes first
            log(f"round {rnd + 1}/{a.rounds}: {', '.join(order)}")
            for name in order:
                t = time.monotonic()
                if name == "limit":
                    measure_limits(b, ng_port, src, files)
                else:
                    measure_impl(b, next(i for i in impls if i.name == name), files, src)
                log(f"  {name}: {time.monotonic() - t:.0f} s")
    finally:
        stop(nginx)
    load1 = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    table = render(b, [i.name for i in impls], " ".join(load0), load1, time.monotonic() - t_start)
    print(table)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(table)
    log(f"written to {a.out}")


if __name__ == "__main__":
    main()
