#!/usr/bin/env bash
# The transfer benchmark: a 1 GiB upload and download through the tools' URLs (mymcpctl serve:
# executor as root, frontend as nobody, plain HTTP on loopback, release build) against nginx
# serving and accepting the same file (sendfile GET, WebDAV PUT), measured in the same run with
# the same client (curl), which server goes first alternating between runs. Prints a Markdown
# table.
#
#   sudo bench/transfer.sh        # RUNS=6 by default (even: each server goes first as often)
#
# An upload through mymcp is fsynced before it is renamed into place; nginx's WebDAV PUT is
# not. So the table also shows nginx's PUT followed by an fsync of the file (the same
# durability), and the figures depend on the disk as much as on the servers.
#
# Installs nginx with its WebDAV module from Debian when no nginx with it is present
# (nginx-full). Needs root (the executor is a root daemon) and cargo. The 1 GiB source file is
# kept in BENCH_DIR (default /var/tmp/mymcp-bench-transfer) between runs.
#
# Environment: CARGO_TARGET_DIR (default ./target), RUNS, BENCH_DIR, BENCH_BYTES (1073741824),
# BENCH_SETTLE (seconds to wait after each upload's sync, default 3: a virtual disk may still be
# flushing when sync returns, which would slow down whichever upload comes next).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

if [ "$(id -u)" -ne 0 ]; then
  echo "bench/transfer.sh: the executor runs as root; run: sudo bench/transfer.sh" >&2
  exit 2
fi
command -v cargo >/dev/null || { echo "bench/transfer.sh: cargo is required (https://rustup.rs)" >&2; exit 2; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
runs=${RUNS:-6}
settle=${BENCH_SETTLE:-3}
dir=${BENCH_DIR:-/var/tmp/mymcp-bench-transfer}
bytes=${BENCH_BYTES:-1073741824}

need=()
command -v curl >/dev/null || need+=(curl)
if ! command -v nginx >/dev/null || ! nginx -V 2>&1 | grep -q -- --with-http_dav_module; then
  need+=(nginx-full)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

echo "building release binaries..." >&2
cargo build --release --workspace --bins --quiet
bin=$CARGO_TARGET_DIR/release

mkdir -p "$dir/www" "$dir/in" "$dir/nginx/tmp" "$dir/nginx/logs"
src=$dir/www/src.bin
if [ ! -f "$src" ] || [ "$(stat -c %s "$src")" -ne "$bytes" ]; then
  echo "writing $bytes random bytes to $src..." >&2
  head -c "$bytes" /dev/urandom >"$src.tmp" && mv "$src.tmp" "$src"
fi
want=$(python3 -c 'import hashlib,sys
h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    while b:=f.read(1<<20): h.update(b)
print(h.hexdigest())' "$src")

nport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$dir/nginx/nginx.conf" <<CONF
user root;
worker_processes auto;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/logs/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $dir/nginx/tmp;
  client_max_body_size 0;
  server {
    listen 127.0.0.1:$nport;
    location /www/ { root $dir; }
    location /in/ { root $dir; dav_methods PUT; create_full_put_path on; }
  }
}
CONF

log=$(mktemp /tmp/mymcp-bench-log.XXXXXX)
MYMCP_FRONTEND_USER=nobody "$bin/mymcpctl" serve --port 0 --log-level warn 2>"$log" &
serve=$!
nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -g 'daemon off;' &
ngx=$!
cleanup() {
  kill -TERM "$serve" "$ngx" 2>/dev/null || true
  wait "$serve" "$ngx" 2>/dev/null || true
  rm -f "$log" "$dir"/in/*.bin "$dir"/in/.*.tmp
}
trap cleanup EXIT

for _ in $(seq 1 300); do
  grep -q '^\[mymcp\] temp rw token:' "$log" && grep -q '^\[mymcp\] serving on' "$log" && break
  sleep 0.1
done
url=$(sed -n 's/^\[mymcp\] serving on //p' "$log")
token=$(sed -n 's/^\[mymcp\] temp rw token:[[:space:]]*//p' "$log")
[ -n "$url" ] && [ -n "$token" ] || { echo "bench/transfer.sh: the server did not start:" >&2; cat "$log" >&2; exit 1; }
base=${url%/mcp}
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$nport/www/" && break; sleep 0.1; done

# prepare TOOL ARGS-JSON → absolute URL
prepare() {
  curl -sS "$url" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -H 'Accept: application/json' \
    -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"$1\",\"arguments\":$2}}" |
    python3 -c 'import json,sys; t=json.loads(json.load(sys.stdin)["result"]["content"][0]["text"]); print(sys.argv[1] + t["url"]) if t.get("success") else sys.exit(t)' "$base"
}
now() { date +%s.%N; }
fsync() { python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$1"; }
check_up() { # file
  got=$(python3 -c 'import hashlib,sys
h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    while b:=f.read(1<<20): h.update(b)
print(h.hexdigest())' "$1")
  [ "$got" = "$want" ] || { echo "bench/transfer.sh: $1 differs from the source" >&2; exit 1; }
}

declare -a mup mdown nup nupsync ndown
echo "measuring $runs runs of $bytes bytes each way..." >&2
# Warm the page cache with the source once.
cat "$src" >/dev/null
mymcp_up() {
  u=$(prepare prepare_upload "{\"dest_path\":\"$dir/in/mymcp.bin\"}")
  mup+=("$(curl -sS -f -T "$src" "$u" -o /dev/null -w '%{time_total}')")
  sync; sleep "$settle"
}
nginx_up() {
  t0=$(now)
  nup+=("$(curl -sS -f -T "$src" "http://127.0.0.1:$nport/in/nginx.bin" -o /dev/null -w '%{time_total}')")
  fsync "$dir/in/nginx.bin"
  nupsync+=("$(awk -v a="$(now)" -v b="$t0" 'BEGIN { printf "%.6f", a - b }')")
  sync; sleep "$settle"
}
mymcp_down() {
  d=$(prepare prepare_download "{\"src_path\":\"$src\"}")
  mdown+=("$(curl -sS -f "$d" -o /dev/null -w '%{time_total}')")
}
nginx_down() {
  ndown+=("$(curl -sS -f "http://127.0.0.1:$nport/www/src.bin" -o /dev/null -w '%{time_total}')")
}
for i in $(seq 1 "$runs"); do
  # Uploads start from a quiet disk (nothing dirty from the previous one); who goes first
  # alternates between runs.
  rm -f "$dir"/in/*.bin; sync; sleep "$settle"
  if [ $((i % 2)) -eq 1 ]; then
    mymcp_up; nginx_up; mymcp_down; nginx_down
  else
    nginx_up; mymcp_up; nginx_down; mymcp_down
  fi
  echo "  run $i: mymcp up ${mup[-1]} s, nginx up ${nup[-1]} s (+fsync ${nupsync[-1]} s), mymcp down ${mdown[-1]} s, nginx down ${ndown[-1]} s" >&2
done
check_up "$dir/in/mymcp.bin"
check_up "$dir/in/nginx.bin"
# The download path is checked too, once, by hashing what curl receives.
d=$(prepare prepare_download "{\"src_path\":\"$src\"}")
got=$(curl -sS -f "$d" | python3 -c 'import hashlib,sys
h=hashlib.sha256()
while b:=sys.stdin.buffer.read(1<<20): h.update(b)
print(h.hexdigest())')
[ "$got" = "$want" ] || { echo "bench/transfer.sh: the download differs from the source" >&2; exit 1; }

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mbps() { awk -v b="$bytes" -v t="$1" 'BEGIN { printf "%.0f", b / t / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
ms() { awk -v t="$1" 'BEGIN { printf "%.0f", t * 1000 }'; }
Mup=$(median "${mup[@]}"); Nup=$(median "${nup[@]}"); Nups=$(median "${nupsync[@]}")
Mdown=$(median "${mdown[@]}"); Ndown=$(median "${ndown[@]}")
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
ngv=$(nginx -v 2>&1 | sed 's/^nginx version: //')
disk=$(df -P "$dir" | awk 'NR == 2 { print $1 }')

cat <<TABLE

Machine: $(nproc) CPUs ($cpu), $(uname -sr); $ngv; $bytes bytes; median of $runs runs; curl $(curl --version | awk 'NR == 1 { print $2 }') on loopback; files on $disk.

| Direction | mymcp (tool URL) | nginx | mymcp speed / nginx speed |
|---|---|---|---|
| download (nginx: sendfile GET) | $(ms "$Mdown") ms, $(mbps "$Mdown") MB/s | $(ms "$Ndown") ms, $(mbps "$Ndown") MB/s | $(ratio "$Ndown" "$Mdown")× |
| upload (nginx: WebDAV PUT, not fsynced) | $(ms "$Mup") ms, $(mbps "$Mup") MB/s | $(ms "$Nup") ms, $(mbps "$Nup") MB/s | $(ratio "$Nup" "$Mup")× |
| upload, same durability (nginx PUT + fsync) | $(ms "$Mup") ms, $(mbps "$Mup") MB/s | $(ms "$Nups") ms, $(mbps "$Nups") MB/s | $(ratio "$Nups" "$Mup")× |
TABLE
