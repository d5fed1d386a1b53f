#!/usr/bin/env python3
"""Side-by-side benchmark: mymcp vs the Go mymcp 3.1.0, the Python mymcp 2.1.1 and the
physical limits (nginx, a spawn loop of the same shell), all on loopback in one run.

Run through bench/run, which installs everything and builds release binaries. Implementations
are interleaved in rounds; the table shows the median of the rounds and their spread.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV_BIN = os.environ.get("MYMCP_BENCH_BIN", str(REPO / "target" / "release"))
REFS = Path(os.environ.get("MYMCP_BENCH_REFS", REPO / "bench" / ".refs"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int, key: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
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


def wait_health(url: str, timeout: float = 20.0) -> float:
    """Polls url until 200; returns seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except OSError:
            time.sleep(0.001)
    raise RuntimeError(f"{url} never answered")


class Server:
    """One MCP implementation under test."""

    def __init__(self, name: str, argv: list, env: dict, token_rx: str, cwd: str, measure_pids=None):
        self.name = name
        self.port = free_port()
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.log = []
        t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=cwd)
        self.token = None
        got = threading.Event()

        def pump():
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(token_rx, line)
                if m and not self.token:
                    self.token = m.group(1)
                    got.set()

        threading.Thread(target=pump, daemon=True).start()
        if not got.wait(30):
            raise RuntimeError(f"{name} did not print a token:\n{''.join(self.log)}")
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.startup = time.monotonic() - t0 + wait_health(f"http://127.0.0.1:{self.port}/health")
        time.sleep(0.3)

    def pids(self) -> list:
        return descendants(self.proc.pid)

    def rss(self, key="VmRSS") -> int:
        # mymcpctl itself is only a launcher: count the daemons (executor + frontend).
        pids = self.pids()
        if self.name == "mymcp":
            pids = [p for p in pids if p != self.proc.pid]
        return sum(rss_kib(p, key) for p in pids)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


LUA = """
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
done = function(summary, latency, requests)
  io.write(string.format("BENCH rps=%f p50=%f p99=%f errors=%d\\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""

GET_LUA = """
done = function(summary, latency, requests)
  io.write(string.format("BENCH rps=%f p50=%f p99=%f errors=%d\\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def wrk(url: str, conns: int, secs: float, lua: str, env: dict = None) -> dict:
    threads = 1 if conns == 1 else 2
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(secs))}s", "--timeout", "30s", "-s", lua, url],
        capture_output=True, text=True, env=dict(os.environ, **(env or {})), timeout=secs + 60,
    ).stdout
    m = re.search(r"BENCH rps=([\d.]+) p50=([\d.]+) p99=([\d.]+) errors=(\d+)", out)
    if not m:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    rps, p50, p99, errors = float(m[1]), float(m[2]) / 1000, float(m[3]) / 1000, int(m[4])
    return {"rps": rps, "p50": p50, "p99": p99, "errors": errors}


def spawn_floor(shell: str, conc: int, secs: float, command: str = "true") -> float:
    """Commands per second of a posix_spawn loop of `shell -c command` with `conc` workers."""
    stop = time.monotonic() + secs
    counts = [0] * conc

    def worker(i):
        devnull = os.open(os.devnull, os.O_RDWR)
        while time.monotonic() < stop:
            r, w = os.pipe()
            pid = os.posix_spawn(shell, [shell, "-c", command], {"PATH": "/usr/bin:/bin"},
                                 file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, w, 1),
                                               (os.POSIX_SPAWN_DUP2, w, 2)])
            os.close(w)
            while os.read(r, 65536):
                pass
            os.close(r)
            os.waitpid(pid, 0)
            counts[i] += 1

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(conc)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.monotonic() - t0)


def nginx_start(root: str, port: int) -> subprocess.Popen:
    conf = Path(root) / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
error_log {root}/nginx-error.log;
pid {root}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  server {{ listen 127.0.0.1:{port}; root {root}/files; }}
}}
""")
    p = subprocess.Popen(["nginx", "-c", str(conf)], stderr=subprocess.DEVNULL)
    wait_health(f"http://127.0.0.1:{port}/f4k.txt")
    return p


def fixtures(root: Path):
    files = root / "files"
    files.mkdir()
    line = ("x" * 63 + "\n").encode()
    (files / "f4k.txt").write_bytes(line * 64)  # 4 KiB, 64 lines
    big_line = ("y" * 255 + "\n").encode()
    (files / "f1m.txt").write_bytes(big_line * 4096)  # 1 MiB, 4096 lines
    (files / "f10m.txt").write_bytes(big_line * 40960)  # 10 MiB, 40960 lines
    os.chmod(root, 0o755)
    os.chmod(files, 0o755)
    return files


def call_body(name: str, args: dict) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": args}})


def fmt(v, unit=""):
    if v is None:
        return "–"
    if isinstance(v, float):
        if v >= 100:
            return f"{v:,.0f}{unit}"
        return f"{v:.2f}{unit}"
    return f"{v}{unit}"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=float, default=4.0)
    ap.add_argument("--skip-python", action="store_true", help="leave out the Python mymcp 2.1.1")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "latest.md"))
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mymcp-bench-"))
    files = fixtures(work)
    shell = "/bin/bash"
    clean_env = {"PATH": os.environ["PATH"], "HOME": "/root", "LANG": "C.UTF-8"}

    impls = {
        "mymcp": ([f"{ENV_BIN}/mymcpctl", "serve", "--port", "{port}"], dict(clean_env, MYMCP_FRONTEND_USER="nobody"),
                  r"temp rw token:\s+(\S+)"),
        "go 3.1.0": ([str(REFS / "go3/bin/mymcp"), "serve", "-host", "127.0.0.1", "-port", "{port}"], dict(clean_env),
                     r"temp rw token:\s+(\S+)"),
    }
    if not a.skip_python:
        impls["python 2.1.1"] = ([str(REFS / "py2/bin/mymcp"), "serve", "--host", "127.0.0.1", "--port", "{port}"],
                                 dict(clean_env), r"temp rw token:\s+(\S+)")

    results = {}  # (row, impl) -> list of values

    def add(row, impl, v):
        results.setdefault((row, impl), []).append(v)

    nginx_port = free_port()
    nginx = nginx_start(str(work), nginx_port)
    lua_post = work / "post.lua"
    lua_post.write_text(LUA)
    lua_get = work / "get.lua"
    lua_get.write_text(GET_LUA)

    cwd = str(work)  # no .env is found here, so the references use temp tokens
    try:
        for rnd in range(a.rounds):
            print(f"round {rnd + 1}/{a.rounds}", file=sys.stderr)
            # Physical limits.
            for path, tag in [("f4k.txt", "4k"), ("f1m.txt", "1m"), ("f10m.txt", "10m")]:
                url = f"http://127.0.0.1:{nginx_port}/{path}"
                r = wrk(url, 1, a.secs, str(lua_get))
                add(f"read {tag} c=1 p50 ms", "limit", r["p50"])
                if tag == "4k":
                    add("read 4k c=1 req/s", "limit", r["rps"])
                    add("read 4k c=1 p99 ms", "limit", r["p99"])
                    add("read 4k c=32 req/s", "limit", wrk(url, 32, a.secs, str(lua_get))["rps"])
            add("bash true c=1 calls/s", "limit", spawn_floor(shell, 1, a.secs))
            add("bash true c=8 calls/s", "limit", spawn_floor(shell, 8, a.secs))
            add("bash 1 MiB output ms", "limit", 1000 / spawn_floor(shell, 1, a.secs, "head -c 1048576 /dev/zero"))

            for name, (argv, env, rx) in impls.items():
                srv = Server(name, argv, env, rx, cwd)
                try:
                    add("start-up to /health ms", name, srv.startup * 1000)
                    add("RSS idle MiB", name, srv.rss() / 1024)
                    tok = {"BENCH_TOKEN": srv.token}
                    for tag, fname, limit in [("4k", "f4k.txt", 2000), ("1m", "f1m.txt", 50000), ("10m", "f10m.txt", 50000)]:
                        body = call_body("read_file", {"file_path": str(files / fname), "limit": limit})
                        r = wrk(srv.url, 1, a.secs, str(lua_post), dict(tok, BENCH_BODY=body))
                        add(f"read {tag} c=1 p50 ms", name, r["p50"])
                        if tag == "4k":
                            add("read 4k c=1 req/s", name, r["rps"])
                            add("read 4k c=1 p99 ms", name, r["p99"])
                            r32 = wrk(srv.url, 32, a.secs, str(lua_post), dict(tok, BENCH_BODY=body))
                            add("read 4k c=32 req/s", name, r32["rps"])
                            add("RSS peak at c=32 MiB", name, srv.rss("VmHWM") / 1024)
                    body = call_body("bash_execute", {"command": "true"})
                    add("bash true c=1 calls/s", name, wrk(srv.url, 1, a.secs, str(lua_post), dict(tok, BENCH_BODY=body))["rps"])
                    add("bash true c=8 calls/s", name, wrk(srv.url, 8, a.secs, str(lua_post), dict(tok, BENCH_BODY=body))["rps"])
                    body = call_body("bash_execute", {"command": "head -c 1048576 /dev/zero", "max_output_bytes": 1048576})
                    add("bash 1 MiB output ms", name, wrk(srv.url, 1, a.secs, str(lua_post), dict(tok, BENCH_BODY=body))["p50"])
                    if name == "mymcp":
                        run_dir = next(l for l in srv.log if "more tokens" in l).split("--runtime-dir ")[1].split()[0]
                        out = subprocess.run([f"{ENV_BIN}/mymcp-test-peer", f"{run_dir}/executor.sock", "bench-identify",
                                              f"{srv.token}:20000"], capture_output=True, text=True,
                                             user=65534, group=65534).stdout
                        m = re.search(r"p50_us=([\d.]+)", out)
                        add("boundary round trip p50 µs", name, float(m[1]) if m else None)
                finally:
                    srv.stop()
    finally:
        nginx.terminate()
        nginx.wait()
        shutil.rmtree(work, ignore_errors=True)

    # Table.
    names = list(impls)
    rows = []
    seen = []
    for (row, _impl) in results:
        if row not in seen:
            seen.append(row)
    higher_better = lambda row: "/s" in row

    def med(row, impl):
        vs = [v for v in results.get((row, impl), []) if v is not None]
        return (statistics.median(vs), min(vs), max(vs)) if vs else (None, None, None)

    header = ["row", "limit"] + names + ["ours/limit", "ours/go"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in seen:
        cells = [row]
        for impl in ["limit"] + names:
            m, lo, hi = med(row, impl)
            cells.append("–" if m is None else f"{fmt(m)} ({fmt(lo)}–{fmt(hi)})" if a.rounds > 1 else fmt(m))
        ours, lim, go = med(row, "mymcp")[0], med(row, "limit")[0], med(row, "go 3.1.0")[0]
        cells.append(f"{ours / lim:.2f}×" if ours and lim else "–")
        cells.append(f"{ours / go:.2f}×" if ours and go else "–")
        rows.append("| " + " | ".join(cells) + " |")
    lines += rows
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), "?")
    meta = (f"Machine: {os.cpu_count()} cores ({cpu}), {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, "
            f"kernel {os.uname().release}; {a.rounds} rounds × {a.secs:g} s, median (min–max). "
            "limit = nginx (sendfile GET of the same file) for reads, a posix_spawn loop of /bin/bash for commands. "
            "Higher is better for /s rows, lower for the others.")
    table = "\n".join(lines) + "\n\n" + meta + "\n"
    print(table)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(table)


if __name__ == "__main__":
    main()
