#!/usr/bin/env bash
# Under-attack benchmark: the latency of a well-behaved client (127.0.0.3) without attack and
# while another address (127.0.0.2) holds 500 slowloris connections and floods Gatehouse with
# requests, interleaved over rounds (quiet, attacked, quiet, attacked, ...). One command:
# `bench/under_attack.sh`. Shares the process bookkeeping, pinning and /proc readings of
# bench/lib.sh (run.sh's harness); writes bench/results/<stamp>-under-attack.md. Loopback only.
#
# Gatehouse (one worker) runs on the proxy CPU with the defences an operator would set (the same
# as tests/proxy/under_attack.rs: per-address connection cap and rate, a per-client route rate
# limit, a 2 s header timeout). The nginx origin and the good client run on the load CPU; the
# attacker runs there too at nice 10, so the scheduler favours the good client and the origin. It
# still shares that CPU with them, so the ratio is an upper bound on what the attack costs
# through the proxy.
#
# Knobs: BENCH_ROUNDS (3), BENCH_QUICK=1 (1 round, 300 requests), BENCH_UNDER_ATTACK_REQUESTS
# (1000 good requests per run), BENCH_UNDER_ATTACK_PACE_MS (10: one request every 10 ms),
# BENCH_SLOWLORIS (500), BENCH_FLOOD_TASKS (8: half keep-alive, half a connection per request),
# GATEHOUSE_BIN, BENCH_PROXY_CPU, BENCH_LOAD_CPU, BENCH_PORT_BASE, BENCH_KEEP=1.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ${BENCH_QUICK:-0} == 1 ]]; then : "${BENCH_UNDER_ATTACK_REQUESTS:=300}"; fi
REQUESTS=${BENCH_UNDER_ATTACK_REQUESTS:-1000}
PACE_MS=${BENCH_UNDER_ATTACK_PACE_MS:-10}
SLOWLORIS=${BENCH_SLOWLORIS:-500}
FLOOD_TASKS=${BENCH_FLOOD_TASKS:-8}
for number in "$REQUESTS" "$PACE_MS" "$SLOWLORIS" "$FLOOD_TASKS"; do
    [[ $number =~ ^[0-9]+$ ]] || die "knob value '$number' is not a whole number"
done
((REQUESTS >= 100)) || die "BENCH_UNDER_ATTACK_REQUESTS must be at least 100 (for a p99)"
ORIGIN=$((PORT_BASE + 121))
GATEHOUSE=$((PORT_BASE + 421))
ATTACKER=127.0.0.2
GOOD=127.0.0.3
ATTACK_NICE=10
CLIENT=""

build_client() {
    command -v cargo >/dev/null || die "cargo not found (the load client is built from bench/tools)"
    log "building the load client (cargo build --release --example under_attack_client)"
    (cd "$REPO_DIR" && cargo build --release --example under_attack_client >&2)
    CLIENT=$REPO_DIR/target/release/examples/under_attack_client
}

write_configs() {
    printf 'ok\n' >"$RUN_DIR/www/good"
    cp "$RUN_DIR/www/good" "$RUN_DIR/www/flood"
    chmod -R a+rX "$RUN_DIR/www"
    cat >"$RUN_DIR/attack-origin.conf" <<EOF
worker_processes 1;
daemon off;
pid $RUN_DIR/attack-origin.pid;
error_log $RUN_DIR/logs/attack-origin-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    server_tokens off;
    keepalive_timeout 600s;
    keepalive_requests 100000000;
    default_type text/plain;
    client_body_temp_path $RUN_DIR/tmp/ao-body;
    proxy_temp_path $RUN_DIR/tmp/ao-proxy;
    fastcgi_temp_path $RUN_DIR/tmp/ao-fastcgi;
    uwsgi_temp_path $RUN_DIR/tmp/ao-uwsgi;
    scgi_temp_path $RUN_DIR/tmp/ao-scgi;
    server {
        listen 127.0.0.1:$ORIGIN backlog=4096;
        root $RUN_DIR/www;
        location = /good { }
        location = /flood { }
        location / { return 404; }
    }
}
EOF
    # The defences of tests/proxy/under_attack.rs, with a route rate limit that leaves room for
    # the good client's 100 requests a second.
    cat >"$RUN_DIR/attack-gatehouse.toml" <<EOF
[server]
workers = 1
grace_period = "1s"
max_requests_per_connection = 1000
[log]
level = "warn"
[access_log]
enabled = false
[timeouts]
client_header = "2s"
client_idle = "30s"
upstream_idle = "600s"
[[listener]]
address = "127.0.0.1:$GATEHOUSE"
max_connections = 4096
max_connections_per_ip = 32
max_requests_per_ip = 32
new_connections_per_ip = "20/s"
new_connections_burst = 40
[pool.origin]
backends = ["127.0.0.1:$ORIGIN"]
[[route]]
name = "app"
pool = "origin"
rate_limit = { rate = "200/s", burst = 400, key = "client_ip" }
EOF
}

# measure_good ROUND MODE: one run of the good client; appends a JSON line to good.jsonl.
measure_good() {
    local round=$1 mode=$2 before after started ended json attack=null
    before=$(cpu_ticks "${MAIN_PID[gatehouse]}")
    started=$(date +%s%N)
    json=$(on_cpu "$LOAD_CPU" timeout 600 "$CLIENT" good "127.0.0.1:$GATEHOUSE" "$GOOD" "$REQUESTS" "$PACE_MS") ||
        die "the good client failed"
    ended=$(date +%s%N)
    after=$(cpu_ticks "${MAIN_PID[gatehouse]}")
    if [[ $mode == attacked ]]; then
        stop_attack
        attack=$(cat "$RUN_DIR/attack.out")
    fi
    json="${json%\}},\"round\":$round,\"mode\":\"$mode\",\"proxy_cpu_ticks\":$((after - before))"
    json+=",\"clk_tck\":$CLK_TCK,\"wall_ms\":$(((ended - started) / 1000000)),\"attack\":$attack}"
    echo "$json" >>"$RUN_DIR/good.jsonl"
    python3 - "$json" <<'EOF' >&2
import json, sys
r = json.loads(sys.argv[1])
line = (f"    r{r['round']} {r['mode']:<8} p50 {r['p50_us'] / 1000:6.2f} ms  p99 {r['p99_us'] / 1000:6.2f} ms  "
        f"max {r['max_us'] / 1000:7.2f} ms  errors {r['errors'] + r['not_200']}")
a = r["attack"]
if a:
    line += (f"  | attack: {a['flood_per_second']:,.0f} flood attempts/s, {a['flood_limited']} x 429, "
             f"{a['slowloris_cut']} slowloris cut by the header timeout")
print(line)
EOF
}

ATTACK_PID=""
start_attack() {
    local ready="$RUN_DIR/attack-ready" i
    rm -f "$ready"
    # Bounded by itself (600 s) in case this script is killed without its cleanup.
    taskset -c "$LOAD_CPU" nice -n "$ATTACK_NICE" "$CLIENT" attack "127.0.0.1:$GATEHOUSE" "$ATTACKER" \
        "$SLOWLORIS" "$FLOOD_TASKS" 600 "$ready" >"$RUN_DIR/attack.out" 2>"$RUN_DIR/logs/attack.log" &
    ATTACK_PID=$!
    PIDS+=("$ATTACK_PID")
    for ((i = 0; i < 300; i++)); do
        [[ -s $ready ]] && break
        is_alive "$ATTACK_PID" || die "the attacker exited early: $(cat "$RUN_DIR/logs/attack.log")"
        sleep 0.1
    done
    [[ -s $ready ]] || die "the attacker did not start within 30 s"
    # Let the flood and the first header timeouts settle into their steady state.
    sleep 3
}

# stop_attack: SIGTERM; the attacker writes its counts to attack.out and exits.
stop_attack() {
    kill -TERM "$ATTACK_PID" 2>/dev/null || true
    wait "$ATTACK_PID" 2>/dev/null || true
    [[ -s $RUN_DIR/attack.out ]] || die "the attacker printed no counts: $(cat "$RUN_DIR/logs/attack.log")"
}

main() {
    local round stamp out
    ((ROUNDS >= 1)) || die "BENCH_ROUNDS must be at least 1"
    (($(nproc) >= 2)) || log "warning: fewer than 2 CPUs; proxy and clients will share a CPU"
    command -v curl >/dev/null || die "curl not found"
    [[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null || ensure_tools
    NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
    build_gatehouse
    build_client
    CLK_TCK=$(getconf CLK_TCK)
    # 500 slowloris sockets plus the flood's in the attacker; the proxy holds 32 at most.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    local nofile
    nofile=$(ulimit -n)
    [[ $nofile == unlimited ]] && nofile=1048576
    if ((SLOWLORIS + 200 > nofile)); then
        log "open-file limit is $nofile: $((nofile - 200)) slowloris connections instead of $SLOWLORIS"
        SLOWLORIS=$((nofile - 200))
    fi
    for port in "$ORIGIN" "$GATEHOUSE"; do
        if listening "$port"; then die "port $port is in use (set BENCH_PORT_BASE)"; fi
    done

    RUN_DIR=$(mktemp -d /tmp/gatehouse-bench-attack.XXXXXX)
    chmod 755 "$RUN_DIR"
    mkdir -p "$RUN_DIR/logs" "$RUN_DIR/tmp" "$RUN_DIR/www"
    write_configs
    start_bg attack-origin "$LOAD_CPU" "$NGINX_BIN" -p "$RUN_DIR/" -c "$RUN_DIR/attack-origin.conf"
    wait_listening attack-origin "$STARTED_PID" "$ORIGIN"
    local worker
    for worker in $(children_of "$STARTED_PID"); do PIDS+=("$worker"); done
    start_bg gatehouse "$PROXY_CPU" "$GATEHOUSE_BIN" run -c "$RUN_DIR/attack-gatehouse.toml"
    MAIN_PID[gatehouse]=$STARTED_PID
    wait_listening gatehouse "$STARTED_PID" "$GATEHOUSE"
    local got
    got=$(curl -sS --max-time 5 --interface "$GOOD" "http://127.0.0.1:$GATEHOUSE/good") ||
        die "the good client's request through Gatehouse failed"
    [[ $got == ok ]] || die "/good answered '$got', expected 'ok'"

    log "$ROUNDS round(s): $REQUESTS good requests every $PACE_MS ms from $GOOD, quiet then under attack" \
        "from $ATTACKER ($SLOWLORIS slowloris connections, $FLOOD_TASKS flood tasks)"
    # Unmeasured warm-up: upstream connections, caches, page faults.
    on_cpu "$LOAD_CPU" "$CLIENT" good "127.0.0.1:$GATEHOUSE" "$GOOD" 200 1 >/dev/null || die "warm-up failed"
    for ((round = 1; round <= ROUNDS; round++)); do
        measure_good "$round" quiet
        start_attack
        measure_good "$round" attacked
        # The attacker's sockets are closed and gone before the next quiet run.
        sleep 2
    done

    stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
    mkdir -p "$BENCH_DIR/results"
    out="$BENCH_DIR/results/$stamp-under-attack.md"
    python3 - "$RUN_DIR/good.jsonl" "$REQUESTS" "$PACE_MS" "$SLOWLORIS" "$FLOOD_TASKS" \
        "$(cd "$REPO_DIR" && git rev-parse --short HEAD 2>/dev/null || echo unknown)" >"$out" <<'EOF'
import json, statistics, sys
path, requests, pace, slowloris, flood, commit = sys.argv[1:]
runs = [json.loads(line) for line in open(path)]
rounds = sorted({r["round"] for r in runs})
def run(rnd, mode):
    return next(r for r in runs if r["round"] == rnd and r["mode"] == mode)
def cpu(r):
    return 100.0 * r["proxy_cpu_ticks"] / r["clk_tck"] / max(r["wall_ms"] / 1000, 0.001)
ms = lambda us: f"{us / 1000:.2f}"
print("# Gatehouse under attack: a good client's latency\n")
print(f"Commit {commit}. Good client 127.0.0.3: {requests} requests, one every {pace} ms, one at a time "
      f"(keep-alive). Attack from 127.0.0.2: {slowloris} slowloris connections and {flood} flood tasks "
      "(half keep-alive, half a new connection per request). Gatehouse: one worker on its own CPU, "
      "max_connections_per_ip 32, new_connections_per_ip 20/s (burst 40), route rate_limit 200/s per "
      "client address, client_header 2 s. Latency: request sent to last body byte, in ms. Proxy CPU: "
      "share of one core over the good client's run.\n")
print("| round | mode | p50 | p90 | p99 | max | errors | proxy CPU | flood attempts/s | 429s | slowloris refused | slowloris cut |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for rnd in rounds:
    for mode in ("quiet", "attacked"):
        r = run(rnd, mode)
        a = r["attack"] or {}
        extra = (f"{a['flood_per_second']:,.0f} | {a['flood_limited']:,} | {a['slowloris_refused']:,} | "
                 f"{a['slowloris_cut']:,}") if a else "- | - | - | -"
        print(f"| {rnd} | {mode} | {ms(r['p50_us'])} | {ms(r['p90_us'])} | {ms(r['p99_us'])} | "
              f"{ms(r['max_us'])} | {r['errors'] + r['not_200']} | {cpu(r):.0f}% | {extra} |")
print("\n## Ratio under attack / quiet (median over rounds)\n")
print("| percentile | quiet | under attack | ratio |")
print("|---|---|---|---|")
for key, label in (("p50_us", "p50"), ("p90_us", "p90"), ("p99_us", "p99")):
    quiet = statistics.median(run(rnd, "quiet")[key] for rnd in rounds)
    attacked = statistics.median(run(rnd, "attacked")[key] for rnd in rounds)
    print(f"| {label} | {ms(quiet)} | {ms(attacked)} | {attacked / max(quiet, 1):.2f}x |")
errors = sum(r["errors"] + r["not_200"] for r in runs if r["mode"] == "attacked")
print(f"\nGood-client requests that failed under attack: {errors}.")
EOF
    cat "$out"
    log "report: $out"
}

main "$@"
