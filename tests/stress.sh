#!/usr/bin/env bash
# Runs every real-process test binary RUNS times (default 20) while two
# busy loops keep both cores loaded, and reports every failure with its
# first lines. A test that fails here only under load is a bug, not bad
# luck: tests must pass on a loaded 2-core machine.
#
#   tests/stress.sh [RUNS]
#
# Environment: JOBS (default 1) test binaries at once (2 adds contention
# between test processes on top of the busy loops); BUSY (default 2)
# busy loops; ONLY (e.g. "cluster kv_cluster") to run just those binaries.
# Each run's output is kept in target/stress/RUN-BINARY.log. Exits 1 if
# anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-20}"
jobs="${JOBS:-1}"
busy="${BUSY:-2}"
# The test binaries that start real processes (nodes, raftctl, browsers).
binaries=(${ONLY:-availability cluster hostile kv_cluster snapshot_cluster storage_fault watch web fuzz})

echo "building the test binaries ..."
declare -A path
while read -r name exe; do
  path[$name]="$exe"
done < <(cargo test --no-run 2>&1 |
  sed -n 's|^ *Executable tests/\([a-z_]*\)\.rs (\(.*\))$|\1 \2|p')
for b in "${binaries[@]}"; do
  [ -n "${path[$b]:-}" ] || { echo "stress.sh: no test binary named $b" >&2; exit 2; }
done

out=target/stress
rm -rf "$out" && mkdir -p "$out"

loops=()
stop_loops() { for pid in "${loops[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap stop_loops EXIT
for _ in $(seq "$busy"); do
  (while :; do :; done) &
  loops+=($!)
done

failed=0
total=0
started=$SECONDS
# Runs one binary once; records a failure.
run_one() {
  local run="$1" b="$2" log="$out/$1-$2.log"
  local t0=$SECONDS
  if "${path[$b]}" >"$log" 2>&1; then
    echo "run $run $b: ok ($((SECONDS - t0)) s)"
  else
    echo "run $run $b: FAILED ($((SECONDS - t0)) s), $log:"
    grep -E "^test .* FAILED$|panicked at|^(failures|---- )" -A4 "$log" | head -24 | sed 's/^/    /'
    return 1
  fi
}

echo "$runs runs of ${binaries[*]}, $jobs at a time, beside $busy busy loops"
for run in $(seq "$runs"); do
  pending=()
  for b in "${binaries[@]}"; do
    run_one "$run" "$b" &
    pending+=($!)
    total=$((total + 1))
    if [ "${#pending[@]}" -ge "$jobs" ]; then
      wait "${pending[0]}" || failed=$((failed + 1))
      pending=("${pending[@]:1}")
    fi
  done
  for pid in "${pending[@]}"; do wait "$pid" || failed=$((failed + 1)); done
done

echo "$((total - failed)) passed, $failed failed ($total binary runs in $((SECONDS - started)) s; logs in $out/)"
[ "$failed" -eq 0 ]
