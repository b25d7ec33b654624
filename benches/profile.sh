#!/usr/bin/env bash
# Where a write's time goes, per node: boots a fresh 3-node release
# cluster in a temp dir, runs `raftctl bench`, and prints per write, for
# the leader and each follower, the CPU time (user + system), the context
# switches (voluntary + involuntary, summed over the process's threads)
# and, with --syscalls (needs `perf`), the system calls by kind.
#
#   benches/profile.sh [--clients N] [--seconds S] [--syscalls]
#
# Everything is measured over a window from 1 s after the start to 1 s
# before the end (so SECONDS must be 3 or more), with the leader's commit
# index as the count of writes. Tracing system calls slows the run several
# times over: read counts per write from it, not time. Without --syscalls
# the throughput is a fair one.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=64 seconds=5 syscalls=
while [ $# -gt 0 ]; do
    case $1 in
    --clients) clients=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --syscalls) syscalls=1; shift ;;
    *) echo "usage: benches/profile.sh [--clients N] [--seconds S] [--syscalls]" >&2; exit 2 ;;
    esac
done
cargo build --release --quiet
bin=target/release
work=$(mktemp -d)
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"; echo "$work"' EXIT
port=$((47600 + RANDOM % 300))
printf 'N: 3\nnode0: 127.0.0.1:%d\nnode1: 127.0.0.1:%d\nnode2: 127.0.0.1:%d\n' \
    "$port" $((port + 1)) $((port + 2)) >"$work/config.txt"
for id in 0 1 2; do
    "$bin/raftnode" "$work/config.txt" $id --state-dir "$work/state" --debug-dir "$work/debug" \
        2>/dev/null &
    pids+=($!)
done
leader=
for _ in $(seq 100); do
    leader=$("$bin/raftctl" --config "$work/config.txt" leader 2>/dev/null | awk 'NR == 1 {print $1}' || true)
    [ -n "$leader" ] && break
    sleep 0.1
done
[ -n "$leader" ] || { echo "no leader" >&2; exit 1; }

ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system, in ticks
# Summed over the threads alive now: sampled while the bench's
# connections (and their threads) are open.
switches() {
    cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '/^(voluntary|nonvoluntary)_ctxt_switches/ {s += $2} END {print s + 0}'
}
committed() {
    "$bin/raftctl" --config "$work/config.txt" -w json status 2>/dev/null |
        python3 -c 'import json, sys; print(max(n.get("commit_index") or 0 for n in json.load(sys.stdin)))'
}
"$bin/raftctl" --config "$work/config.txt" bench --clients "$clients" --seconds "$seconds" \
    >"$work/bench" 2>/dev/null &
bench=$!
# The window measured: from 1 s into the run to 1 s before its end, when
# every client is connected and none has left.
sleep 1
window=$((seconds - 2))
declare -A cpu0 sw0
tracers=()
if [ -n "$syscalls" ]; then
    for id in 0 1 2; do
        perf trace -s -p "${pids[$id]}" -o "$work/trace-$id" 2>/dev/null &
        tracers+=($!)
    done
fi
c0=$(committed)
for id in 0 1 2; do
    cpu0[$id]=$(cpu "${pids[$id]}")
    sw0[$id]=$(switches "${pids[$id]}")
done
sleep "$window"
declare -A cpu1 sw1
for id in 0 1 2; do
    cpu1[$id]=$(cpu "${pids[$id]}")
    sw1[$id]=$(switches "${pids[$id]}")
done
c1=$(committed)
for t in "${tracers[@]}"; do kill -INT "$t" 2>/dev/null || true; done
for t in "${tracers[@]}"; do wait "$t" 2>/dev/null || true; done
wait "$bench" || true
tail -1 "$work/bench"
writes=$((c1 - c0))
[ "$writes" -gt 0 ] || { echo "nothing committed in the window" >&2; exit 1; }
echo "window of ${window} s: $writes writes committed"
printf '%-18s %12s %16s\n' node "CPU us/write" "switches/write"
for id in 0 1 2; do
    role=follower
    [ "$id" = "$leader" ] && role=leader
    awk -v n="node$id ($role)" -v c=$((cpu1[$id] - cpu0[$id])) -v s=$((sw1[$id] - sw0[$id])) \
        -v w="$writes" -v t="$ticks" 'BEGIN {printf "%-18s %12.1f %16.2f\n", n, c / t * 1e6 / w, s / w}'
done
if [ -n "$syscalls" ]; then
    for id in 0 1 2; do
        role=follower
        [ "$id" = "$leader" ] && role=leader
        echo "node$id ($role), system calls per write (tracing slows the run: counts, not time):"
        awk -v w="$writes" '$2 ~ /^[0-9]+$/ && $1 ~ /^[a-z_0-9]+$/ {n[$1] += $2}
            END {for (k in n) if (n[k] / w >= 0.005) printf "  %-16s %6.3f\n", k, n[k] / w}' \
            "$work/trace-$id" | sort -k2 -rn
    done
fi
