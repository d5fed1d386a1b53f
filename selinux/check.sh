#!/usr/bin/env bash
# Builds mymcp.pp with the distribution's policy devel Makefile, links it with the
# distribution's own policy modules (Debian: selinux-policy-default, fetched with
# `apt-get download` and unpacked here, never installed) into a kernel policy, and checks the
# key rules with sesearch: what the frontend may do, what it may not, what the executor does.
# Needs: selinux-policy-dev, setools, semodule-utils (tests/run installs them). No SELinux
# kernel is needed: nothing is loaded.
#
#   selinux/check.sh
set -euo pipefail
cd "$(dirname "$0")"
make -s mymcp.pp >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
download() { (cd "$work" && apt-get download -q selinux-policy-default >/dev/null 2>&1); }
download || { apt-get update -qq && download; } \
  || { echo "selinux/check: cannot download selinux-policy-default" >&2; exit 1; }
dpkg-deb -x "$work"/selinux-policy-default_*.deb "$work/x"
mkdir "$work/mods"
for f in "$work"/x/usr/share/selinux/default/*.pp.bz2; do
  bzcat "$f" > "$work/mods/$(basename "$f" .bz2)"
done
others=$(find "$work/mods" -name '*.pp' ! -name base.pp | sort)
# shellcheck disable=SC2086
semodule_link -o "$work/linked.pp" "$work/mods/base.pp" $others mymcp.pp >/dev/null
semodule_expand "$work/linked.pp" "$work/policy.kernel"
policy=$work/policy.kernel

failed=0
has() {  # has DESCRIPTION SESEARCH-ARGS...: at least one matching rule
  local what=$1; shift
  if [ -n "$(sesearch "$@" "$policy")" ]; then echo "ok    $what"; else echo "FAIL  $what (sesearch $*: no rule)"; failed=1; fi
}
none() {  # none DESCRIPTION SESEARCH-ARGS...: no matching rule, attribute rules included
  local what=$1; shift
  local found
  found=$(sesearch "$@" "$policy")
  if [ -z "$found" ]; then echo "ok    $what"; else echo "FAIL  $what (sesearch $*):"; echo "$found" | sed 's/^/        /'; failed=1; fi
}

echo "== the frontend (mymcp_frontend_t): its port, its certificate, the executor socket"
has "systemd starts the frontend in mymcp_frontend_t" -T -s init_t -t mymcp_frontend_exec_t -c process
has "accepts connections on its listening socket" -A -s mymcp_frontend_t -t mymcp_frontend_t -c tcp_socket -p accept
has "binds its port when started by hand" -A -s mymcp_frontend_t -t mymcp_port_t -c tcp_socket -p name_bind
has "reads its certificate (/etc/mymcp/tls)" -A -s mymcp_frontend_t -t mymcp_tls_t -c file -p read
has "writes to executor.sock" -A -s mymcp_frontend_t -t mymcp_executor_sock_t -c sock_file -p write
has "connects to the executor" -A -s mymcp_frontend_t -t mymcp_executor_t -c unix_stream_socket -p connectto
has "uses the transfer pipes the executor passes" -A -s mymcp_frontend_t -t mymcp_executor_t -c fifo_file -p read
has "tells systemd it is ready (sd_notify)" -A -s mymcp_frontend_t -t init_t -c unix_dgram_socket -p sendto

echo "== the frontend: nothing else on the host"
none "no capability" -A -s mymcp_frontend_t -c capability
none "no outgoing TCP connection" -A -s mymcp_frontend_t -c tcp_socket -p name_connect
none "no UDP socket of its own" -A -s mymcp_frontend_t -t mymcp_frontend_t -c udp_socket
none "no access to control.sock" -A -s mymcp_frontend_t -t mymcp_control_sock_t
none "no token store or env file (mymcp_conf_t files)" -A -s mymcp_frontend_t -t mymcp_conf_t -c file
none "no state (mymcp_var_lib_t)" -A -s mymcp_frontend_t -t mymcp_var_lib_t
none "no audit log (mymcp_log_t)" -A -s mymcp_frontend_t -t mymcp_log_t
none "no /etc files (etc_t)" -A -s mymcp_frontend_t -t etc_t -c file
none "no /etc/shadow" -A -s mymcp_frontend_t -t shadow_t
none "no home directories" -A -s mymcp_frontend_t -t user_home_t
none "no logs of the host (var_log_t)" -A -s mymcp_frontend_t -t var_log_t
none "cannot execute a shell" -A -s mymcp_frontend_t -t shell_exec_t -c file -p execute
none "cannot execute programs in /usr/bin" -A -s mymcp_frontend_t -t bin_t -c file -p execute
none "cannot signal or trace the executor" -A -s mymcp_frontend_t -t mymcp_executor_t -c process
none "cannot enter the executor's domain" -T -s mymcp_frontend_t -c process

echo "== the executor (mymcp_executor_t)"
has "systemd starts the executor in mymcp_executor_t" -T -s init_t -t mymcp_executor_exec_t -c process
has "writes the token store" -A -s mymcp_executor_t -t mymcp_conf_t -c file -p write
has "appends to the audit log" -A -s mymcp_executor_t -t mymcp_log_t -c file -p append
has "keeps its state" -A -s mymcp_executor_t -t mymcp_var_lib_t -c file -p write
has "serves control.sock" -A -s mymcp_executor_t -t mymcp_control_sock_t -c sock_file -p create
has "commands leave its domain for mymcp_command_t" -T -s mymcp_executor_t -t shell_exec_t -c process
has "executes its own file again at start-up (no per-thread malloc caches)" -A -s mymcp_executor_t -t mymcp_executor_exec_t -c file -p execute_no_trans
has "makes and removes each command's cgroup" -A -s mymcp_executor_t -t cgroup_t -c dir -p rmdir
has "writes cgroup.procs, cgroup.kill and the limits" -A -s mymcp_executor_t -t cgroup_t -c file -p write
has "opens pseudo-terminals for terminal_open (/dev/ptmx)" -A -s mymcp_executor_t -t ptmx_t -c chr_file -p write
has "gives a terminal's slave to the command's account" -A -s mymcp_executor_t -t mymcp_devpts_t -c chr_file -p setattr
none "no TCP socket of its own (no network)" -A -s mymcp_executor_t -t mymcp_executor_t -c tcp_socket
none "no UDP socket of its own (no network)" -A -s mymcp_executor_t -t mymcp_executor_t -c udp_socket

if [ $failed -ne 0 ]; then
  echo "selinux/check: FAILED" >&2
  exit 1
fi
echo "selinux/check: mymcp.pp builds and every key rule holds"
