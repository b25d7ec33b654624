#!/usr/bin/env bash
# How often `raftctl check` catches a broken build, and how often it
# passes a correct one: RUNS checks of SECONDS each against a five-node
# lab cluster booted by boot_all_nodes.sh (its default timings, as a user
# boots one), then RUNS against one whose nodes run --unsafe-local-reads
# (reads answered from each node's own store, without ReadIndex).
#
#   benches/check-runs.sh [RUNS [SECONDS]]     default 10 runs of 60 s
#
# A line per run (exit status, verdict, operations, faults, the checker's
# time), then the tallies. Everything lives in a temp dir (state, logs,
# histories: KEEP=1 keeps it), on ports 47401-47405; the nodes are
# stopped at the end.
set -euo pipefail
runs="${1:-10}"
seconds="${2:-60}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
(cd "$here" && cargo build --release --quiet --bins)
bin="$here/target/release"
work="$(mktemp -d)"
config="$work/config.txt"
printf 'N: 5\n' >"$config"
for i in 0 1 2 3 4; do printf 'node%d: 127.0.0.1:%d\n' "$i" $((47401 + i)) >>"$config"; done
export RAFT_BIN_DIR="$bin"
boot() {
  STATE_DIR="$work/$1/state" DEBUG_DIR="$work/$1/debug" RAFTNODE_ARGS="$2" \
    "$here/boot_all_nodes.sh" start "$config" >/dev/null
}
halt() {
  STATE_DIR="$work/$1/state" DEBUG_DIR="$work/$1/debug" \
    "$here/boot_all_nodes.sh" stop "$config" >/dev/null 2>&1 || true
}
cleanup() {
  halt normal
  halt broken
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

for mode in normal broken; do
  flags="--lab"
  [ "$mode" = broken ] && flags="--lab --unsafe-local-reads"
  boot "$mode" "$flags"
  passed=0 caught=0 undecided=0
  for run in $(seq 1 "$runs"); do
    set +e
    out="$("$bin/raftctl" --config "$config" check --seconds "$seconds" --clients 8 --keys 5 \
      --faults kill,pause,cut,restart,transfer --state-dir "$work/$mode/state" \
      --debug-dir "$work/$mode/debug" --history "$work/$mode/run$run.jsonl")"
    code=$?
    set -e
    case "$code" in
      0) passed=$((passed + 1)); verdict=linearizable ;;
      1) caught=$((caught + 1)); verdict="NOT linearizable ($(grep -oE '^(Stale read|Lost write|No order)' <<<"$out" | head -1))" ;;
      3) undecided=$((undecided + 1)); verdict=undecided ;;
      *) verdict="error: $out" ;;
    esac
    ops="$(grep -oE '^[0-9,]+ operations by' <<<"$out" | cut -d' ' -f1)"
    faults="$(grep -oE '^faults \([0-9]+\)' <<<"$out" | tr -dc 0-9)"
    checker="$(grep -oE 'checker: .* in [0-9.]+ s' <<<"$out" | grep -oE '[0-9.]+ s$')"
    echo "$mode run $run: exit $code, $verdict, $ops operations, $faults faults, checked in $checker"
  done
  echo "$mode: $passed linearizable, $caught not, $undecided undecided, of $runs"
  halt "$mode"
done
