#!/usr/bin/env bash
# A/B: `raftctl bench` write throughput of this tree against an earlier
# commit, on the same machine, in alternating runs (so that drift in the
# machine's load falls on both). Each run boots a fresh 3-node cluster of
# one build in a temp dir, benches it, and stops it.
#
#   benches/ab.sh REV [ROUNDS] [SECONDS] [CLIENTS...]
#   benches/ab.sh fbf795b 3 10 1 16 64
#
# Prints one line per run and the median of each build per client count.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: benches/ab.sh REV [ROUNDS] [SECONDS] [CLIENTS...]}
rounds=${2:-3}
seconds=${3:-10}
shift $(($# < 3 ? $# : 3))
clients=("$@")
[ ${#clients[@]} -eq 0 ] && clients=(1 16 64)

base=target/ab/$rev
if [ ! -x "$base/target/release/raftnode" ]; then
    rm -rf "$base"
    git worktree add --detach "$base" "$rev" >/dev/null 2>&1 || git worktree add -f --detach "$base" "$rev"
    (cd "$base" && cargo build --release --quiet)
fi
cargo build --release --quiet

work=$(mktemp -d)
trap 'pkill -TERM -f "$work/" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$((47100 + RANDOM % 500))

run() { # build-dir label clients
    local bin=$1/target/release label=$2 n=$3 dir="$work/$2-$n-$RANDOM"
    mkdir -p "$dir"
    printf 'N: 3\nnode0: 127.0.0.1:%d\nnode1: 127.0.0.1:%d\nnode2: 127.0.0.1:%d\n' \
        "$port" $((port + 1)) $((port + 2)) >"$dir/config.txt"
    local pids=()
    for id in 0 1 2; do
        "$bin/raftnode" "$dir/config.txt" $id --state-dir "$dir/state" --debug-dir "$dir/debug" \
            2>/dev/null &
        pids+=($!)
    done
    for _ in $(seq 100); do # until a leader answers (the nodes take a moment to listen)
        "$bin/raftctl" --config "$dir/config.txt" leader >/dev/null 2>&1 && break
        sleep 0.1
    done
    local line
    line=$("$bin/raftctl" --config "$dir/config.txt" bench --clients "$n" --seconds "$seconds" 2>/dev/null | tail -1)
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    local rate
    rate=$(echo "$line" | sed -n 's/.*: \([0-9]*\)\/s.*/\1/p')
    echo "$label clients=$n $rate/s   ($line)"
    echo "$label $n $rate" >>"$work/results"
}

for ((r = 1; r <= rounds; r++)); do
    for n in "${clients[@]}"; do
        if ((r % 2)); then
            run "$base" "$rev" "$n"; run . HEAD "$n"
        else
            run . HEAD "$n"; run "$base" "$rev" "$n"
        fi
    done
done
echo "median writes/s over $rounds runs of $seconds s:"
for n in "${clients[@]}"; do
    for label in "$rev" HEAD; do
        m=$(awk -v l="$label" -v n="$n" '$1 == l && $2 == n {print $3}' "$work/results" | sort -n |
            awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
        printf '  clients %-4s %-10s %s\n' "$n" "$label" "$m"
    done
done
