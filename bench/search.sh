#!/usr/bin/env bash
# Benchmark of the search tools against ripgrep on the same tree.
#
#   sudo bench/search.sh            # generates the tree once, builds release binaries, prints a table
#
# Generates a source-like tree of ~50,000 files / ~300 MB (BENCH_DIR, default
# /var/tmp/mymcp-bench-tree; kept between runs), starts `mymcpctl serve` from a release build,
# and times, warm cache, the median of RUNS (default 11) runs of:
#   grep through the tool (HTTP + MCP + executor)   vs   rg -n --no-heading PATTERN TREE
#   glob **/*.c through the tool                    vs   rg --files -g '*.c' TREE
# Installs ripgrep with apt when it is missing. Must run as root (the executor is a root daemon).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
tree=${BENCH_DIR:-/var/tmp/mymcp-bench-tree}
runs=${RUNS:-11}

if [ "$(id -u)" -ne 0 ]; then
  echo "bench/search.sh: run as root (sudo bench/search.sh)" >&2
  exit 2
fi
if ! command -v rg >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ripgrep
fi

if [ ! -f "$tree/.complete" ]; then
  echo "generating $tree ..." >&2
  rm -rf "$tree"
  python3 - "$tree" <<'PY'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(42)
words = ("int char void return static const struct unsigned long if else for while break "
         "buffer length value result index count error status node next prev table entry "
         "size offset handle config parse write read open close lock unlock init free").split()
exts = [".c"] * 4 + [".h"] * 2 + [".py", ".txt", ".md", ".rs"]
files = 0
for a in range(50):
    for b in range(20):
        d = os.path.join(root, f"mod{a:02}", f"sub{b:02}")
        os.makedirs(d, exist_ok=True)
        for c in range(50):
            lines = []
            for _ in range(rnd.randint(40, 160)):
                n = rnd.randint(3, 12)
                lines.append("    " + " ".join(rnd.choice(words) for _ in range(n)) + ";")
            if rnd.random() < 0.002:
                lines.insert(rnd.randrange(len(lines)), f"    /* XYZZY_{rnd.randint(0, 9999)} marker */")
            name = f"file{c:02}{rnd.choice(exts)}"
            with open(os.path.join(d, name), "w") as f:
                f.write("\n".join(lines) + "\n")
            files += 1
open(os.path.join(root, ".complete"), "w").close()
print(f"{files} files", file=sys.stderr)
PY
fi
nfiles=$(find "$tree" -type f | wc -l)
size=$(du -sm "$tree" | cut -f1)

cargo build --release --quiet -p mymcp-executor -p mymcp-frontend -p mymcpctl
bin=$CARGO_TARGET_DIR/release
log=$(mktemp)
MYMCP_FRONTEND_USER=nobody "$bin/mymcpctl" serve --port 0 --log-level warn 2>"$log" &
serve=$!
trap 'kill $serve 2>/dev/null; wait $serve 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q "temp rw token" "$log" && grep -q "serving on" "$log" && break; sleep 0.1; done
url=$(sed -n 's/^\[mymcp\] serving on //p' "$log")
token=$(sed -n 's/^\[mymcp\] temp rw token:[[:space:]]*//p' "$log")

python3 - "$url" "$token" "$tree" "$runs" "$nfiles" "$size" <<'PY'
import json, statistics, subprocess, sys, time, urllib.request
url, token, tree, runs, nfiles, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]

def call(name, args):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": name, "arguments": args}}).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream"})
    with urllib.request.urlopen(req, timeout=600) as r:
        out = json.loads(r.read())
    return json.loads(out["result"]["content"][0]["text"])

def timed_pair(a, b):
    """Medians of a and b, run alternately so that load from elsewhere hits both alike."""
    a(); b()  # warm the page cache and the server
    sa, sb = [], []
    for _ in range(runs):
        t = time.perf_counter(); a(); sa.append(time.perf_counter() - t)
        t = time.perf_counter(); b(); sb.append(time.perf_counter() - t)
    return statistics.median(sa), statistics.median(sb)

def rg(*args):
    return subprocess.run(["rg", *args], stdout=subprocess.PIPE, check=False).stdout

pattern = r"XYZZY_[0-9]+"
g = call("grep", {"pattern": pattern, "path": tree, "max_results": 5000})
rg_lines = rg("-n", "--no-heading", pattern, tree).decode().splitlines()
assert g["match_count"] == len(rg_lines), (g["match_count"], len(rg_lines))
gl = call("glob", {"pattern": "**/*.c", "path": tree})
rg_c = rg("--files", "-g", "*.c", tree).decode().splitlines()
assert gl["count"] == len(rg_c), (gl["count"], len(rg_c))

grep_tool, grep_rg = timed_pair(
    lambda: call("grep", {"pattern": pattern, "path": tree, "max_results": 5000}),
    lambda: rg("-n", "--no-heading", pattern, tree))
glob_tool, glob_rg = timed_pair(
    lambda: call("glob", {"pattern": "**/*.c", "path": tree}),
    lambda: rg("--files", "-g", "*.c", tree))
rows = [
    (f"grep `{pattern}` ({g['match_count']} matches)", grep_tool, grep_rg,
     f"rg -n --no-heading '{pattern}'"),
    (f"glob `**/*.c` ({gl['count']} files)", glob_tool, glob_rg, "rg --files -g '*.c'"),
]
print(f"\ntree: {nfiles} files, {size} MB; median of {runs} warm runs, tool and rg alternating; load {open('/proc/loadavg').read().split()[0]}\n")
print("| operation | mymcp tool (HTTP+MCP) | ripgrep | ratio |")
print("|---|---|---|---|")
for name, tool_s, rg_s, rg_cmd in rows:
    print(f"| {name} | {tool_s*1000:.0f} ms | {rg_s*1000:.0f} ms (`{rg_cmd}`) | {tool_s/rg_s:.2f}× |")
PY
