#!/usr/bin/env bash
# Gatehouse benchmark harness: one command, `bench/run.sh`. Method: docs/performance.md.
#
# Starts fixed nginx origins pinned to the load CPU, then nginx, HAProxy and Gatehouse as proxies,
# each with one worker pinned to the proxy CPU, and runs the same scenarios against
# direct-to-origin and each proxy, interleaved over rounds (A B C D A B C D ...). Writes
# bench/results/<timestamp>.md (plus the raw .jsonl and .meta.tsv next to it) and prints it.
#
# Knobs (environment variables):
#   BENCH_QUICK=1            smoke test: 2 s runs, short warm-ups, 1 round, 1,000 idle connections
#   BENCH_DURATION=6         seconds measured per run
#   BENCH_WARMUP_REQUESTS=20000  unmeasured requests just before each measured run (a quarter
#                            of that for 100 KiB bodies), sent with h2load -n so they all finish
#   BENCH_NICE=-20           nice level of every process the harness starts (root only; 0 = off)
#   BENCH_GATEHOUSE_COMMIT=  label for the report when GATEHOUSE_BIN is a prebuilt binary
#   BENCH_ROUNDS=3           rounds; each round runs every target once in every scenario
#   BENCH_IDLE_CONNS=10000   connections held open in scenario 7 (capped by the open-file limit)
#   BENCH_IDLE_ROUNDS=       rounds of scenario 7 (default: BENCH_ROUNDS)
#   BENCH_IDLE_SETTLE=4      seconds from the last idle connection's response to the memory reading
#   BENCH_SCENARIOS="1 2 3 4 5 7"  (5 = 5a, 5b and 5c, HTTPS; they can be chosen alone too;
#                            6 = cache hits, only when chosen)
#   BENCH_TARGETS="direct nginx haproxy gatehouse"
#   BENCH_LARGE_BYTES=       scenario 2's body size in bytes (default: the 100 KiB /100k)
#   BENCH_CONNECTIONS=64     client connections in scenarios 1-3 and 5
#   BENCH_PROXY_CPU=0        CPU the proxy under test is pinned to
#   BENCH_LOAD_CPU=1         CPU the origins and the load generator are pinned to
#   BENCH_PORT_BASE=18000    ports used: BASE+101..109 origins, +201/+202 nginx, +301/+302
#                            HAProxy, +401 Gatehouse; HTTPS (scenario 5): +203 nginx, +303
#                            HAProxy, +402 Gatehouse (all on 127.0.0.1)
#   GATEHOUSE_BIN=PATH       benchmark this binary instead of building target/release/gatehouse
#   GATEHOUSE_BIN_B=PATH     with target gatehouse-b: a second Gatehouse binary, run beside the
#                            first (ports +411/+412) for a paired A/B; the report adds a section
#                            comparing the two round by round. BENCH_GATEHOUSE_B_COMMIT labels it.
#                            e.g. BENCH_TARGETS="nginx gatehouse gatehouse-b" BENCH_SCENARIOS="1 4"
#   BENCH_5C_SUITE=any       TLS 1.3 suites scenario 5c's client offers: any, aes128 or aes256
#   BENCH_KEEP=1             keep the temp run directory (rendered configs, logs, raw data)
#
# Every process it starts is recorded by PID and stopped on exit (nginx workers included); it
# never signals a process by name, so other nginx or HAProxy instances on the machine are safe.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

measure_http() {
    local scenario=$1 target=$2 round=$3 url pids=() json
    local accepts0 requests0 accepts1 requests1 cpu_before cpu_after busy0 total0 busy1 total1
    local hwm=0 cpu_delta=0 scheme=http id=$scenario
    if [[ $scenario == 5* ]]; then
        scheme=https
        id="\"$scenario\""
    fi
    url="$scheme://127.0.0.1:$(target_port "$target" "$scenario")$(scenario_path "$scenario")"
    mapfile -t pids < <(target_pids "$target")
    run_warmup "$scenario" "$url"

    read -r accepts0 requests0 < <(origin_counters)
    if ((${#pids[@]})); then
        reset_hwm "${pids[@]}"
        cpu_before=$(cpu_ticks "${pids[@]}")
    fi
    read -r busy0 total0 < <(proxy_cpu_ticks)
    json=$(run_load "$scenario" "$url" "$DURATION")
    read -r busy1 total1 < <(proxy_cpu_ticks)
    if ((${#pids[@]})); then
        cpu_after=$(cpu_ticks "${pids[@]}")
        cpu_delta=$((cpu_after - cpu_before))
        hwm=$(status_kib VmHWM "${pids[@]}")
    fi
    read -r accepts1 requests1 < <(origin_counters)

    json="${json%\}},\"scenario\":$id,\"target\":\"$target\",\"round\":$round"
    json+=",\"proxy_cpu_ticks\":$cpu_delta,\"clk_tck\":$CLK_TCK,\"proxy_hwm_kib\":$hwm"
    json+=",\"upstream_opened\":$((accepts1 - accepts0 - 1))"
    json+=",\"origin_requests\":$((requests1 - requests0 - 1))"
    json+=",\"proxy_cpu_busy_ticks\":$((busy1 - busy0)),\"proxy_cpu_total_ticks\":$((total1 - total0))}"
    echo "$json" >>"$RUN_DIR/results.jsonl"
    python3 - "$json" <<'EOF' >&2
import json, sys
r = json.loads(sys.argv[1])
rps = r["requests"] / (r["duration_us"] / 1e6)
cpu = r["proxy_cpu_ticks"] * 1e6 / r["clk_tck"] / max(r["requests"], 1)
errors = sum(v for k, v in r.items() if k.startswith("err_"))
print(f"    s{r['scenario']} r{r['round']} {r['target']:<9} {rps:>9,.0f} req/s  "
      f"p50 {r['p50_us'] / 1000:6.2f} ms  p99 {r['p99_us'] / 1000:6.2f} ms  "
      f"cpu {cpu:6.1f} us/req  upstream conns {r['upstream_opened']:>6}  errors {errors}")
EOF
}

measure_idle() {
    local target=$1 round=$2 port pids=() before after hwm client ready i opened failed still
    port=$(target_port "$target" 1)
    # A fresh process, so memory freed by earlier scenarios cannot hide per-connection cost.
    stop_target "$target"
    start_target "$target"
    run_warmup 1 "http://127.0.0.1:$port/1k"
    sleep 1
    mapfile -t pids < <(target_pids "$target")
    before=$(status_kib VmRSS "${pids[@]}")
    ready="$RUN_DIR/idle-ready"
    rm -f "$ready" "$ready.final"
    start_bg idle-client "$LOAD_CPU" python3 "$BENCH_DIR/tools/idle_client.py" 127.0.0.1 "$port" \
        "$IDLE_CONNS" "$ready" --hold 300
    client=$STARTED_PID
    for ((i = 0; i < 1200; i++)); do
        [[ -s $ready ]] && break
        is_alive "$client" || die "idle client exited early: $(cat "$RUN_DIR/logs/idle-client.log")"
        sleep 0.1
    done
    [[ -s $ready ]] || die "idle client did not finish opening connections within 120 s"
    read -r opened failed <"$ready"
    sleep "$IDLE_SETTLE"
    after=$(status_kib VmRSS "${pids[@]}")
    hwm=$(status_kib VmHWM "${pids[@]}")
    kill -USR1 "$client"
    for ((i = 0; i < 300; i++)); do
        [[ -s $ready.final ]] && break
        sleep 0.1
    done
    still=$(cat "$ready.final" 2>/dev/null || echo 0)
    stop_pids "$client"
    local json="{\"scenario\":7,\"target\":\"$target\",\"round\":$round,\"conns_requested\":$IDLE_CONNS"
    json+=",\"conns_open\":$opened,\"conns_failed\":$failed,\"conns_still_open\":$still"
    json+=",\"rss_before_kib\":$before,\"rss_after_kib\":$after,\"hwm_kib\":$hwm}"
    echo "$json" >>"$RUN_DIR/results.jsonl"
    log "    s7 r$round $target: RSS $before -> $after KiB for $opened connections" \
        "($(awk -v a="$after" -v b="$before" -v n="$opened" 'BEGIN { printf "%.2f", n ? (a - b) / n : 0 }') KiB each," \
        "$failed failed, $still still open at the end)"
}

# Scenario 6 (cache hits): every proxy must answer /cached/1k from its cache once it is filled,
# or the scenario would measure proxying. The origin's request counter must not move over three
# requests (the stub_status probe itself is one request).
sanity_check_cache() {
    local target port before after got i
    for target in "${TARGET_LIST[@]}"; do
        [[ $target == direct ]] && continue
        port=$(target_port "$target" 6)
        got=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{size_download}' \
            "http://127.0.0.1:$port/cached/1k") || die "$target: request failed"
        [[ $got == "200 1024" ]] || die "$target: /cached/1k answered '$got', expected '200 1024'"
        read -r _ before < <(origin_counters)
        for i in 1 2 3; do
            curl -sS --max-time 5 -o /dev/null "http://127.0.0.1:$port/cached/1k" || die "$target: request $i failed"
        done
        read -r _ after < <(origin_counters)
        ((after - before - 1 == 0)) ||
            die "$target: /cached/1k reached the origin $((after - before - 1)) times out of 3 (not cached)"
    done
    log "cache sanity check passed: every proxy serves /cached/1k from its cache"
}

write_meta() {
    local key=$1
    shift
    printf '%s\t%s\n' "$key" "$*" >>"$RUN_DIR/meta.tsv"
}

# ---------------------------------------------------------------------------------------------
# Main

main() {
    local started stamp round scenario target
    started=$(date +%s)
    stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
    (($(nproc) >= 2)) || log "warning: fewer than 2 CPUs; proxy and load generator will share a CPU"
    ensure_tools
    if [[ -n ${GATEHOUSE_BIN:-} ]]; then BENCH_PREBUILT=1; fi
    if has_target gatehouse || has_scenario 5c; then
        build_gatehouse "$(has_scenario 5c && echo with-client)"
    fi
    if has_target gatehouse-b; then
        [[ -x ${GATEHOUSE_BIN_B:-} ]] || die "target gatehouse-b needs GATEHOUSE_BIN_B, an executable"
    fi
    CLK_TCK=$(getconf CLK_TCK)

    # Scenario 7 needs ~10,000 descriptors in the client and in each proxy.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    NOFILE=$(ulimit -n)
    [[ $NOFILE == unlimited ]] && NOFILE=1048576
    if ((IDLE_CONNS + 1000 > NOFILE)); then
        log "open-file limit is $NOFILE: scenario 7 capped at $((NOFILE - 1000)) connections"
        IDLE_CONNS=$((NOFILE - 1000))
    fi

    local port
    for port in "$ORIGIN_PORT_1" "$ORIGIN_PORT_2" "$ORIGIN_PORT_3" "$ORIGIN_H2C_PORT" \
        "$ORIGIN_STATUS_PORT" "$NGINX_H1_PORT" "$NGINX_H2_PORT" "$HAPROXY_H1_PORT" \
        "$HAPROXY_H2_PORT" "$GATEHOUSE_PORT" "$NGINX_TLS_PORT" "$HAPROXY_TLS_PORT" \
        "$GATEHOUSE_TLS_PORT" "$GATEHOUSE_B_PORT" "$GATEHOUSE_B_TLS_PORT"; do
        if listening "$port"; then die "port $port is in use (set BENCH_PORT_BASE)"; fi
    done

    prepare_run_dir
    local http_runs=0 idle_runs=0
    for scenario in "${SCENARIO_LIST[@]}"; do
        case $scenario in
        1 | 2 | 3 | 4 | 6) http_runs=$((http_runs + ROUNDS * ${#TARGET_LIST[@]})) ;;
        5a | 5b | 5c) http_runs=$((http_runs + ROUNDS * (${#TARGET_LIST[@]} - $(has_target direct && echo 1 || echo 0)))) ;;
        7) idle_runs=$((IDLE_ROUNDS * (${#TARGET_LIST[@]} - $(has_target direct && echo 1 || echo 0)))) ;;
        esac
    done
    log "plan: $http_runs load runs of ${DURATION} s (after $WARMUP_REQUESTS warm-up requests each)," \
        "$idle_runs idle-connection runs (about $(((http_runs * (DURATION + 4) + idle_runs * 10) / 60 + 1)) min)"

    write_meta date "$stamp"
    if [[ -n ${BENCH_GATEHOUSE_COMMIT:-} ]]; then
        write_meta commit "$BENCH_GATEHOUSE_COMMIT"
    elif [[ -n ${BENCH_PREBUILT:-} ]]; then
        write_meta commit "not known (prebuilt GATEHOUSE_BIN; set BENCH_GATEHOUSE_COMMIT)"
    else
        write_meta commit "$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)$(
            [[ -n $(git -C "$REPO_DIR" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null) ]] && echo ' (with uncommitted changes)'
        )"
    fi
    write_meta gatehouse_bin "${GATEHOUSE_BIN:-not benchmarked}"
    if has_target gatehouse-b; then
        write_meta gatehouse_bin_b "$GATEHOUSE_BIN_B"
        write_meta commit_b "${BENCH_GATEHOUSE_B_COMMIT:-not known (set BENCH_GATEHOUSE_B_COMMIT)}"
    fi
    write_meta nginx "$("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //')"
    write_meta haproxy "$("$HAPROXY_BIN" -v 2>&1 | head -n 1 | awk '{print $3}')"
    write_meta wrk "$(wrk -v 2>&1 | head -n 1 | awk '{print $2}')"
    write_meta openssl "$(openssl version 2>&1 | awk '{print $2}')"
    write_meta h2load "$(h2load --version 2>&1 | head -n 1 | awk '{print $NF}')"
    write_meta kernel "$(uname -r)"
    write_meta cpu "$(nproc) x $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    write_meta memory "$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
    [[ -z $LARGE_BYTES ]] || write_meta large_bytes "$LARGE_BYTES"
    write_meta knobs "duration ${DURATION}s, warm-up $WARMUP_REQUESTS requests, nice $NICE, rounds $ROUNDS, idle connections $IDLE_CONNS x $IDLE_ROUNDS rounds, $CONNECTIONS connections (h1), ${H2_CONNECTIONS}x$H2_STREAMS (h2), proxy CPU $PROXY_CPU, load CPU $LOAD_CPU$(has_scenario 5c && echo ", 5c client suites ${BENCH_5C_SUITE:-any}")"
    write_meta loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"

    start_origin
    for target in "${TARGET_LIST[@]}"; do start_target "$target"; done
    sanity_check
    for target in "${!TLS_DETAILS[@]}"; do write_meta "tls_$target" "${TLS_DETAILS[$target]}"; done
    if has_scenario 6; then sanity_check_cache; fi

    for ((round = 1; round <= ROUNDS; round++)); do
        for scenario in "${SCENARIO_LIST[@]}"; do
            case $scenario in 1 | 2 | 3 | 4 | 5a | 5b | 5c | 6) ;; *) continue ;; esac
            log "round $round/$ROUNDS, scenario $scenario"
            for target in "${TARGET_LIST[@]}"; do
                # The origins speak no TLS: no direct-to-origin baseline for HTTPS.
                [[ $scenario == 5* && $target == direct ]] && continue
                measure_http "$scenario" "$target" "$round"
            done
        done
    done
    if has_scenario 7; then
        for ((round = 1; round <= IDLE_ROUNDS; round++)); do
            log "round $round/$IDLE_ROUNDS, scenario 7 ($IDLE_CONNS idle connections)"
            for target in "${TARGET_LIST[@]}"; do
                [[ $target == direct ]] && continue
                measure_idle "$target" "$round"
            done
        done
    fi

    write_meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
    write_meta elapsed "$(($(date +%s) - started)) s"
    mkdir -p "$BENCH_DIR/results"
    local report="$BENCH_DIR/results/$stamp.md"
    cp "$RUN_DIR/results.jsonl" "$BENCH_DIR/results/$stamp.jsonl"
    # With these two, `tools/report.py STAMP.jsonl STAMP.meta.tsv` regenerates the report.
    cp "$RUN_DIR/meta.tsv" "$BENCH_DIR/results/$stamp.meta.tsv"
    python3 "$BENCH_DIR/tools/report.py" "$RUN_DIR/results.jsonl" "$RUN_DIR/meta.tsv" >"$report"
    cat "$report"
    log "report written to ${report#"$REPO_DIR"/} (raw data: ${report%.md}.jsonl)"
}

main "$@"
