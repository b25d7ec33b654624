#!/usr/bin/env bash
# Boots every node of a cluster configuration in the background.
#
#   ./boot_all_nodes.sh [CONFIG]          start every node (default ./config.txt)
#   ./boot_all_nodes.sh stop [CONFIG]     stop them with SIGTERM
#   ./boot_all_nodes.sh status [CONFIG]   show which are running, and raftctl status
#
# Works from any directory. Builds the release binaries first (cargo only
# rebuilds what changed). Environment: STATE_DIR (default /tmp/state),
# DEBUG_DIR (default /tmp/debug), RAFTNODE_ARGS (extra raftnode flags, e.g.
# "--election-timeout 6000..10000 --heartbeat 2000"), RAFT_BIN_DIR (use the
# raftnode and raftctl binaries in this directory instead of building).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
action=start
case "${1:-}" in
  start|stop|status) action="$1"; shift ;;
esac
config="${1:-./config.txt}"
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

members="$("$bin/raftctl" --config "$config" members)" || exit 2

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null && grep -q raftnode "/proc/$(cat "$1")/cmdline" 2>/dev/null; }

case "$action" in
  start)
    mkdir -p "$pid_dir" "$debug_dir"
    while read -r id host port; do
      pidfile="$pid_dir/node$id.pid"
      if running "$pidfile"; then
        echo "node$id already running (pid $(cat "$pidfile"))"
        continue
      fi
      # shellcheck disable=SC2086 # RAFTNODE_ARGS is a list of flags
      nohup "$bin/raftnode" "$config" "$id" "$port" --state-dir "$state_dir" --debug-dir "$debug_dir" \
        ${RAFTNODE_ARGS:-} >>"$debug_dir/node$id.out" 2>&1 </dev/null &
      echo $! >"$pidfile"
      echo "started node$id on $host:$port (pid $!)  log: $debug_dir/node$id.log  state: $state_dir/node$id/"
    done <<<"$members"
    echo "stop them with: $0 stop${1:+ $1}    see them with: $bin/raftctl --config $config status"
    ;;
  stop)
    while read -r id _host _port; do
      pidfile="$pid_dir/node$id.pid"
      if running "$pidfile"; then
        pid="$(cat "$pidfile")"
        kill -TERM "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        echo "stopped node$id (pid $pid)"
      fi
      rm -f "$pidfile"
    done <<<"$members"
    ;;
  status)
    while read -r id host port; do
      pidfile="$pid_dir/node$id.pid"
      if running "$pidfile"; then echo "node$id $host:$port running (pid $(cat "$pidfile"))"
      else echo "node$id $host:$port not running"; fi
    done <<<"$members"
    "$bin/raftctl" --config "$config" status || true
    ;;
esac
