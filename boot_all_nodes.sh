#!/usr/bin/env bash
# Boots every node of a cluster configuration in the background.
#
#   ./boot_all_nodes.sh [start] [ID...] [CONFIG]   start the nodes (all, or those IDs) that are not running
#   ./boot_all_nodes.sh stop [ID...] [CONFIG]      stop them with SIGTERM (a leader hands over first)
#   ./boot_all_nodes.sh status [CONFIG]            show which are running, and raftctl status
#
# CONFIG defaults to ./config.txt. Works from any directory. Builds the
# release binaries first (cargo only rebuilds what changed). Environment:
# STATE_DIR (default /tmp/state), DEBUG_DIR (default /tmp/debug),
# RAFTNODE_ARGS (extra raftnode flags, e.g. "--election-timeout
# 6000..10000 --heartbeat 2000"), RAFT_BIN_DIR (use the raftnode and
# raftctl binaries in this directory instead of building), TLS=1 (mutual
# TLS: certificates in TLS_DIR, default STATE_DIR/tls, made by `raftctl
# tls init` if it has none; then use raftctl with --tls TLS_DIR, or
# export RAFT_TLS=TLS_DIR).
#
# A node is found by its state directory, not by how it was started: a
# running node holds STATE_DIR/node<ID>/lock and has written its pid into
# it, so a node restarted by hand (target/release/raftnode ./config.txt 4
# 5005 &) is found too. `start` waits until each node it started serves
# (or has exited: then it prints the node's error and exits 1).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
action=start
case "${1:-}" in
  start|stop|status) action="$1"; shift ;;
esac
ids=()
while [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; do ids+=("$1"); shift; done
config="${1:-./config.txt}"
if [ $# -gt 1 ]; then echo "boot_all_nodes.sh: unexpected argument '$2' (usage: $0 [start|stop|status] [ID...] [CONFIG])" >&2; exit 2; fi
if [ ! -f "$config" ] && [ -f "$here/$config" ]; then config="$here/$config"; fi
if [ ! -f "$config" ]; then echo "boot_all_nodes.sh: no configuration file $config" >&2; exit 2; fi
config="$(cd "$(dirname "$config")" && pwd)/$(basename "$config")"

state_dir="${STATE_DIR:-/tmp/state}"
debug_dir="${DEBUG_DIR:-/tmp/debug}"
pid_dir="$state_dir/pids"
if [ -n "${RAFT_BIN_DIR:-}" ]; then
  bin="$RAFT_BIN_DIR"
else
  bin="$here/target/release"
  if [ "$action" = start ] || [ ! -x "$bin/raftctl" ]; then
    (cd "$here" && cargo build --release --quiet --bins)
  fi
fi

members="$("$bin/raftctl" --config "$config" nodes)" || exit 2

tls_args=()
raftctl_tls=()
tls_dir=""
if [ "${TLS:-0}" = 1 ] || [ -n "${TLS_DIR:-}" ]; then
  tls_dir="${TLS_DIR:-$state_dir/tls}"
  if [ "$action" = start ] && [ ! -f "$tls_dir/ca.pem" ]; then
    "$bin/raftctl" --config "$config" tls init --out "$tls_dir" >/dev/null || exit 2
    echo "made a certificate authority and certificates in $tls_dir"
  fi
  tls_args=(--tls "$tls_dir")
  raftctl_tls=(--tls "$tls_dir")
fi
for id in "${ids[@]}"; do
  if ! grep -q "^$id " <<<"$members"; then
    echo "boot_all_nodes.sh: node $id is not in $config (ids: $(cut -d' ' -f1 <<<"$members" | tr '\n' ' '))" >&2
    exit 2
  fi
done

# The members to act on: all, or those named.
selected() {
  local id host port
  while read -r id host port; do
    if [ ${#ids[@]} -eq 0 ] || [[ " ${ids[*]} " == *" $id "* ]]; then echo "$id $host $port"; fi
  done <<<"$members"
}

# Whether process $1 runs: whether any of its threads does. A zombie
# (dead, not yet reaped by its parent) does not; but a process whose main
# thread exited shows as a zombie while its other threads are still
# exiting and holding its files, the state directory's lock among them.
alive() {
  local stat
  for stat in /proc/"$1"/task/*/stat; do
    stat="$(cat "$stat" 2>/dev/null)" || continue
    stat="${stat##*) }"
    [[ "${stat:0:1}" == [ZX] ]] || return 0
  done
  return 1
}

# The pid of the raftnode serving node $1 from this state directory, if any.
node_pid() {
  local pid
  pid="$(cat "$state_dir/node$1/lock" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  # The pid may be stale (a node killed with -9 leaves it): check that the
  # process is a raftnode started as node $1.
  alive "$pid" || return 1
  local -a argv
  mapfile -d '' argv <"/proc/$pid/cmdline" 2>/dev/null || return 1
  [[ "$(basename "${argv[0]:-}")" == raftnode ]] && [[ "${argv[2]:-}" == "$1" ]] || return 1
  echo "$pid"
}

# Bytes in file $1 (0 if it does not exist).
size() { stat -c %s "$1" 2>/dev/null || echo 0; }

case "$action" in
  start)
    mkdir -p "$pid_dir" "$debug_dir"
    started=()
    while read -r id host port; do
      if pid="$(node_pid "$id")"; then
        echo "$pid" >"$pid_dir/node$id.pid"
        echo "node$id already running (pid $pid)"
        continue
      fi
      out="$debug_dir/node$id.out"
      from="$(size "$out")"
      # shellcheck disable=SC2086 # RAFTNODE_ARGS is a list of flags
      nohup "$bin/raftnode" "$config" "$id" "$port" --state-dir "$state_dir" --debug-dir "$debug_dir" \
        "${tls_args[@]}" ${RAFTNODE_ARGS:-} >>"$out" 2>&1 </dev/null &
      pid=$!
      echo "$pid" >"$pid_dir/node$id.pid"
      started+=("$id:$host:$port:$pid:$from")
    done < <(selected)
    # Wait for each node started to serve (its pid in its lock file) or
    # to exit, and say which.
    failed=0
    for s in "${started[@]}"; do
      IFS=: read -r id host port pid from <<<"$s"
      out="$debug_dir/node$id.out"
      deadline=$((SECONDS + 60))
      while :; do
        if ! alive "$pid"; then
          wait "$pid" 2>/dev/null && code=0 || code=$?
          echo "node$id did not start (exit status $code):" >&2
          tail -c +"$((from + 1))" "$out" | grep -v '^nohup: ' | sed 's/^/  /' >&2
          rm -f "$pid_dir/node$id.pid"
          failed=1
          break
        fi
        if [ "$(cat "$state_dir/node$id/lock" 2>/dev/null)" = "$pid" ]; then
          echo "started node$id on $host:$port (pid $pid)  log: $debug_dir/node$id.log  state: $state_dir/node$id/"
          break
        fi
        if [ $SECONDS -ge $deadline ]; then
          echo "node$id (pid $pid) is still starting after 60 s; see $debug_dir/node$id.log" >&2
          break
        fi
        sleep 0.05
      done
    done
    echo "stop them with: $0 stop${1:+ $1}    see them with: $bin/raftctl --config $config${tls_dir:+ --tls $tls_dir} status"
    exit $failed
    ;;
  stop)
    while read -r id _host _port; do
      if pid="$(node_pid "$id")"; then
        kill -TERM "$pid"
        for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
        if alive "$pid"; then
          echo "node$id (pid $pid) has not stopped after 10 s; kill -9 $pid stops it at once" >&2
        else
          echo "stopped node$id (pid $pid)"
        fi
      fi
      rm -f "$pid_dir/node$id.pid"
    done < <(selected)
    ;;
  status)
    while read -r id host port; do
      if pid="$(node_pid "$id")"; then
        mkdir -p "$pid_dir" && echo "$pid" >"$pid_dir/node$id.pid"
        echo "node$id $host:$port running (pid $pid)"
      else
        echo "node$id $host:$port not running"
      fi
    done < <(selected)
    "$bin/raftctl" --config "$config" "${raftctl_tls[@]}" status || true
    ;;
esac
