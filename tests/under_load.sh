#!/usr/bin/env bash
# Runs `cargo test` several times while busy loops compete for every core, to find tests that
# depend on timing (they must pass on a loaded 2-core CI machine). Prints each run's result and
# exits non-zero if any run failed; the failing runs' logs are kept.
#
#   tests/under_load.sh                   # 3 runs, 2 busy loops per core
#   UNDER_LOAD_RUNS=5 UNDER_LOAD_LOOPS_PER_CORE=1 tests/under_load.sh -- --test proxy
#
# Arguments after `--` go to `cargo test`. Every loop is bounded (`timeout`) and only the
# processes this script started are stopped, by PID.
set -euo pipefail

runs=${UNDER_LOAD_RUNS:-3}
per_core=${UNDER_LOAD_LOOPS_PER_CORE:-2}
run_limit=${UNDER_LOAD_RUN_SECONDS:-1500}
[[ ${1:-} == -- ]] && shift
cd "$(dirname "$0")/.."

logs=$(mktemp -d -t gatehouse-under-load.XXXXXX)
loops=()
stop_loops() {
    ((${#loops[@]})) && kill "${loops[@]}" 2>/dev/null || true
    ((${#loops[@]})) && wait "${loops[@]}" 2>/dev/null || true
    loops=()
}
trap stop_loops EXIT INT TERM

# Built once, unloaded, so that the runs measure the tests and not the compiler.
cargo test --no-run "$@" >/dev/null 2>&1 || { echo "cargo test --no-run failed" >&2; exit 1; }

failed=0
cores=$(nproc)
for ((run = 1; run <= runs; run++)); do
    for ((i = 0; i < cores * per_core; i++)); do
        timeout "$run_limit" bash -c 'while :; do :; done' &
        loops+=($!)
    done
    log="$logs/run-$run.log"
    if timeout "$run_limit" cargo test "$@" >"$log" 2>&1; then
        echo "run $run: ok ($(grep -h '^test result' "$log" | awk '{n += $4} END {print n}') tests)"
        rm -f "$log"
    else
        failed=$((failed + 1))
        echo "run $run: FAILED (log: $log)"
        grep -E '^test .* FAILED$|panicked at' "$log" | head -10 || true
    fi
    stop_loops
done
echo "$((runs - failed)) of $runs runs passed with $((cores * per_core)) busy loops on $cores cores"
((failed == 0)) && rmdir "$logs" 2>/dev/null
exit $((failed > 0))
