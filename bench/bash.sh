#!/usr/bin/env bash
# The project's benchmark: `bash_execute` through the real server (mymcpctl serve: executor as
# root, frontend as nobody, HTTP on loopback, default settings and log level) against the floor
# of spawning the same shell from a minimal program, measured in the same run. Prints a
# Markdown table. Needs root (the executor is a root daemon) and cargo; builds what it needs.
#
#   sudo bench/bash.sh        # BENCH_SECONDS=5 per measurement by default
#
# Environment: CARGO_TARGET_DIR (default ./target), BENCH_SECONDS, BENCH_SHELL (/bin/bash).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

if [ "$(id -u)" -ne 0 ]; then
  echo "bench/bash.sh: the executor runs as root; run: sudo bench/bash.sh" >&2
  exit 2
fi
command -v cargo >/dev/null || { echo "bench/bash.sh: cargo is required (https://rustup.rs)" >&2; exit 2; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
secs=${BENCH_SECONDS:-5}
shell=${BENCH_SHELL:-/bin/bash}

echo "building release binaries..." >&2
cargo build --release --workspace --bins --quiet
bin=$CARGO_TARGET_DIR/release

log=$(mktemp /tmp/mymcp-bench-log.XXXXXX)
MYMCP_FRONTEND_USER=nobody "$bin/mymcpctl" serve --port 0 2>"$log" &
serve=$!
cleanup() {
  kill -TERM "$serve" 2>/dev/null || true
  wait "$serve" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT

for _ in $(seq 1 300); do
  grep -q '^\[mymcp\] temp rw token:' "$log" && grep -q '^\[mymcp\] serving on' "$log" && break
  sleep 0.1
done
url=$(sed -n 's/^\[mymcp\] serving on //p' "$log")
token=$(sed -n 's/^\[mymcp\] temp rw token:[[:space:]]*//p' "$log")
[ -n "$url" ] && [ -n "$token" ] || { echo "bench/bash.sh: the server did not start:" >&2; cat "$log" >&2; exit 1; }
addr=${url#http://}
addr=${addr%/mcp}

call() { # command, max_output_bytes
  printf '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"bash_execute","arguments":{"command":"%s","max_output_bytes":%s}}}' "$1" "$2"
}
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }

mib='head -c 1048576 /dev/zero | tr \\\\0 x'
mib_shell='head -c 1048576 /dev/zero | tr \\0 x'

echo "measuring ($secs s each)..." >&2
floor1=$("$bin/mymcp-loadgen" spawn "$shell" true 1 "$secs")
server1=$("$bin/mymcp-loadgen" http "$addr" "$token" 1 "$secs" "$(call true 102400)")
floor8=$("$bin/mymcp-loadgen" spawn "$shell" true 8 "$secs")
server8=$("$bin/mymcp-loadgen" http "$addr" "$token" 8 "$secs" "$(call true 102400)")
floormib=$("$bin/mymcp-loadgen" spawn "$shell" "$mib_shell" 1 "$secs")
servermib=$("$bin/mymcp-loadgen" http "$addr" "$token" 1 "$secs" "$(call "$mib" 1048576)")

for r in "$floor1" "$server1" "$floor8" "$server8" "$floormib" "$servermib"; do echo "  $r" >&2; done
mibbytes=$(echo "$servermib" | field bytes)
[ "$mibbytes" -gt 1048576 ] || { echo "bench/bash.sh: the 1 MiB call returned only $mibbytes bytes" >&2; exit 1; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
r1s=$(echo "$server1" | field rate); r1f=$(echo "$floor1" | field rate)
r8s=$(echo "$server8" | field rate); r8f=$(echo "$floor8" | field rate)
tms=$(echo "$servermib" | field mean_ms); tmf=$(echo "$floormib" | field mean_ms)
p1=$(echo "$server1" | field p50_ms); p8=$(echo "$server8" | field p50_ms)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)

cat <<TABLE

Machine: $(nproc) CPUs ($cpu), $(uname -sr); shell $shell; $secs s per measurement.

| Scenario | mymcp (HTTP → frontend → executor) | Spawn floor (same shell) | mymcp / floor | Target |
|---|---|---|---|---|
| \`true\`, concurrency 1 | $r1s calls/s (p50 $p1 ms) | $r1f spawns/s | $(ratio "$r1s" "$r1f")× rate | ≥ 0.8× rate |
| \`true\`, concurrency 8 | $r8s calls/s (p50 $p8 ms) | $r8f spawns/s | $(ratio "$r8s" "$r8f")× rate | — |
| 1 MiB of output, concurrency 1 | $tms ms/call | $tmf ms/run | $(ratio "$tms" "$tmf")× time | ≤ 2× time |
TABLE
