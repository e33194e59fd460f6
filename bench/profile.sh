#!/usr/bin/env bash
# Profiles scenario 1 (HTTP/1.1 keep-alive, 1 KiB, 64 connections; or, with PROFILE_SCENARIO, 2, 3: a
# new connection per request, 4: h2c 16 connections x 4 streams, 5a/5b/5c: HTTPS keep-alive, a
# resumed / a full TLS handshake per request) for each proxy, with the same
# origins, configs and CPU pinning as bench/run.sh:
#
#   1. instructions per request and where they go: valgrind --tool=callgrind (needs no hardware
#      performance counters, which virtual machines often lack); collection is switched on after
#      a warm-up, so start-up and connection set-up are left out;
#   2. system calls per request: strace -c -f attached for a measured window;
#   3. user/kernel split of CPU time: perf sampling on the software cpu-clock event, when perf
#      works at all (skipped otherwise).
#
# Each tool slows the proxy down, so these runs give costs per request, never throughput.
#
# Knobs: PROFILE_SCENARIO=1 (or 2, 3, 4, 5a, 5b, 5c), PROFILE_TARGETS="gatehouse nginx haproxy", PROFILE_SECONDS=10, PROFILE_STEPS="callgrind
# strace perf", PROFILE_BROWSER=1 (scenarios 1 and 3: each request carries the ten header fields a
# browser sends with a page request, instead of wrk's lone Host), and those of bench/lib.sh
# (GATEHOUSE_BIN, BENCH_PROXY_CPU, BENCH_LOAD_CPU, ...).
# For symbol names, the release profile keeps line tables (`debug = "line-tables-only"`).
# Output: bench/results/profile-<timestamp>/ (git-ignored); summary.md is printed at the end.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROFILE_TARGETS=${PROFILE_TARGETS:-gatehouse nginx haproxy}
PROFILE_SECONDS=${PROFILE_SECONDS:-10}
PROFILE_STEPS=${PROFILE_STEPS:-callgrind strace perf}
PROFILE_SCENARIO=${PROFILE_SCENARIO:-1}
# Scenario 2 is scenario 1 with 100 KiB bodies.
BODY=1k
[[ $PROFILE_SCENARIO == 2 ]] && BODY=100k
[[ $PROFILE_SCENARIO =~ ^([1234]|5a|5b|5c)$ ]] || die "PROFILE_SCENARIO must be 1, 2, 3, 4, 5a, 5b or 5c"
read -r -a PROFILE_TARGET_LIST <<<"$PROFILE_TARGETS"
TARGET_LIST=("${PROFILE_TARGET_LIST[@]}")
has_step() { [[ " $PROFILE_STEPS " == *" $1 "* ]]; }

# The profiled scenario's load for SECONDS (wrk, h2load for scenario 4, the full-handshake client
# for 5c); prints the number of completed requests.
load_requests() {
    local url=$1 seconds=$2 out="$RUN_DIR/logs/profile-load.out" headers=()
    if [[ $PROFILE_SCENARIO == 5c ]]; then
        run_load 5c "$url" "$seconds" | sed 's/.*"requests":\([0-9]*\).*/\1/'
        return 0
    fi
    if [[ $PROFILE_SCENARIO == 4 ]]; then
        on_cpu "$LOAD_CPU" h2load -c16 -m4 -D "$seconds" "$url" >"$out" 2>&1 ||
            die "h2load failed: $(cat "$out")"
        sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' "$out"
        return 0
    fi
    [[ $PROFILE_SCENARIO == 3 || $PROFILE_SCENARIO == 5b ]] && headers=(-H "Connection: close")
    if [[ ${PROFILE_BROWSER:-0} == 1 ]]; then
        headers+=(-H "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
            -H "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
            -H "Accept-Language: en-GB,en;q=0.5" -H "Accept-Encoding: gzip, deflate, br, zstd"
            -H "Referer: http://127.0.0.1/index.html" -H "Cookie: session=4f1c2a9b7e; theme=dark"
            -H "Upgrade-Insecure-Requests: 1" -H "Sec-Fetch-Dest: document"
            -H "Sec-Fetch-Mode: navigate" -H "Sec-Fetch-Site: same-origin")
    fi
    on_cpu "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${seconds}s" --timeout 30s "${headers[@]}" \
        -s "$BENCH_DIR/tools/wrk_json.lua" "$url" >"$out" 2>&1 || die "wrk failed: $(cat "$out")"
    grep '^WRK_JSON ' "$out" | sed 's/.*"requests":\([0-9]*\).*/\1/'
}

profile_callgrind() {
    local target=$1 url=$2 pid requests file
    # One process for nginx, so valgrind sees the worker.
    sed -i 's/^master_process on;/master_process off;/' "$RUN_DIR/nginx-proxy.conf"
    TARGET_WRAPPER=(valgrind --tool=callgrind --instr-atstart=no
        "--callgrind-out-file=$OUT/callgrind.$target.out")
    START_WAIT_SECONDS=120
    start_target "$target"
    TARGET_WRAPPER=()
    START_WAIT_SECONDS=10
    pid=${MAIN_PID[$target]}
    load_requests "$url" 3 >/dev/null
    callgrind_control -i on "$pid" >/dev/null
    requests=$(load_requests "$url" "$PROFILE_SECONDS")
    callgrind_control -d "$pid" >/dev/null
    sleep 1
    stop_target "$target"
    sed -i 's/^master_process off;/master_process on;/' "$RUN_DIR/nginx-proxy.conf"
    file=$(find "$OUT" -maxdepth 1 -name "callgrind.$target.out.*" -size +0 | sort | tail -n 1)
    [[ -n $file ]] || file="$OUT/callgrind.$target.out"
    callgrind_annotate --inclusive=yes "$file" >"$OUT/callgrind.$target.inclusive.txt" 2>/dev/null || true
    {
        echo "### $target: callgrind"
        echo
        python3 "$BENCH_DIR/tools/callgrind_summary.py" "$file" "$requests"
    } >>"$OUT/summary.md"
}

profile_strace() {
    local target=$1 url=$2 pids=() args=() pid requests tracer calls
    start_target "$target"
    load_requests "$url" 2 >/dev/null
    mapfile -t pids < <(target_pids "$target")
    for pid in "${pids[@]}"; do args+=(-p "$pid"); done
    strace -c -f -o "$OUT/strace.$target.txt" "${args[@]}" 2>/dev/null &
    tracer=$!
    PIDS+=("$tracer")
    sleep 1
    requests=$(load_requests "$url" "$PROFILE_SECONDS")
    kill -INT "$tracer" 2>/dev/null || true
    wait "$tracer" 2>/dev/null || true
    stop_target "$target"
    calls=$(awk '$NF == "total" { print $(NF - 2) }' "$OUT/strace.$target.txt")
    {
        echo "### $target: system calls (strace -c)"
        echo
        echo "$requests requests; ${calls:-?} system calls:" \
            "**$(awk -v c="${calls:-0}" -v r="$requests" 'BEGIN { printf "%.2f", r ? c / r : 0 }') per request**."
        echo
        echo '```'
        awk -v r="$requests" 'NR > 2 && $1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {
            if (shown++ < 12) printf "%-16s %8.2f per request\n", $NF, r ? $4 / r : 0 }' "$OUT/strace.$target.txt"
        echo '```'
        echo
    } >>"$OUT/summary.md"
}

profile_perf() {
    local target=$1 url=$2 pids=() requests recorder joined
    start_target "$target"
    load_requests "$url" 2 >/dev/null
    mapfile -t pids < <(target_pids "$target")
    joined=$(
        IFS=,
        echo "${pids[*]}"
    )
    perf record -e cpu-clock -F 4999 -g -p "$joined" -o "$OUT/perf.$target.data" \
        -- sleep "$PROFILE_SECONDS" >/dev/null 2>&1 &
    recorder=$!
    PIDS+=("$recorder")
    requests=$(load_requests "$url" "$PROFILE_SECONDS")
    wait "$recorder" 2>/dev/null || true
    stop_target "$target"
    perf report -i "$OUT/perf.$target.data" --no-children --sort dso --stdio -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -n 8 >"$OUT/perf.$target.dso.txt" || true
    perf report -i "$OUT/perf.$target.data" --no-children --sort sym --stdio -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -n 30 >"$OUT/perf.$target.sym.txt" || true
    {
        echo "### $target: perf (cpu-clock sampling)"
        echo
        echo "$requests requests. Time by binary (kernel vs user space):"
        echo
        echo '```'
        cat "$OUT/perf.$target.dso.txt"
        echo '```'
        echo
        echo "Top symbols, kernel included:"
        echo
        echo '```'
        sed -n 1,20p "$OUT/perf.$target.sym.txt"
        echo '```'
        echo
    } >>"$OUT/summary.md"
}

main() {
    local stamp target url scheme
    stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
    ensure_tools
    command -v valgrind >/dev/null || missing_valgrind=1
    if [[ ${missing_valgrind:-0} == 1 ]] || ! command -v strace >/dev/null; then
        [[ $EUID -eq 0 ]] || die "valgrind and strace are needed"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends valgrind strace >&2
    fi
    if has_step perf && ! perf record -e cpu-clock -o /dev/null -- true >/dev/null 2>&1; then
        log "perf cannot sample here (install linux-perf, check perf_event_paranoid): perf step skipped"
        PROFILE_STEPS=${PROFILE_STEPS//perf/}
    fi
    prepare_targets
    if [[ $PROFILE_SCENARIO == 5c ]]; then build_gatehouse with-client; fi
    OUT="$BENCH_DIR/results/profile-$stamp"
    mkdir -p "$OUT"
    {
        echo "# Profile of scenario $PROFILE_SCENARIO, $stamp"
        echo
        echo "Repository at $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)," \
            "Gatehouse binary ${GATEHOUSE_BIN:-not profiled};" \
            "scenario $PROFILE_SCENARIO, $BODY bodies, ${PROFILE_SECONDS} s per step; proxy on CPU $PROXY_CPU."
        [[ ${PROFILE_BROWSER:-0} == 1 ]] && echo && echo "Requests carry a browser's header fields (PROFILE_BROWSER=1)."
        echo
    } >"$OUT/summary.md"
    start_origin
    for target in "${TARGET_LIST[@]}"; do
        scheme=http
        [[ $PROFILE_SCENARIO == 5* ]] && scheme=https
        url="$scheme://127.0.0.1:$(target_port "$target" "$PROFILE_SCENARIO")/$BODY"
        if has_step callgrind; then
            log "$target: callgrind"
            profile_callgrind "$target" "$url"
        fi
        if has_step strace; then
            log "$target: strace"
            profile_strace "$target" "$url"
        fi
        if has_step perf; then
            log "$target: perf"
            profile_perf "$target" "$url"
        fi
    done
    cat "$OUT/summary.md"
    log "profile written to ${OUT#"$REPO_DIR"/}"
}

main "$@"
