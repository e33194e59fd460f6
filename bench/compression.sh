#!/usr/bin/env bash
# Compression benchmark: gzip of a ~100 KiB JSON body, Gatehouse `[compression]` against nginx
# `gzip on` at the same level, both proxying the same nginx origin (which never compresses).
# One command: `bench/compression.sh`. Shares the process bookkeeping, pinning and /proc
# readings of bench/lib.sh (run.sh's harness); writes bench/results/<stamp>-compression.md.
#
# Knobs: BENCH_DURATION (8 s), BENCH_ROUNDS (3), BENCH_QUICK=1, BENCH_GZIP_LEVEL (1, nginx's
# default gzip_comp_level and Gatehouse's default gzip_level), BENCH_COMPRESSION_CONNECTIONS (16),
# GATEHOUSE_BIN, BENCH_PROXY_CPU, BENCH_LOAD_CPU, BENCH_PORT_BASE.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LEVEL=${BENCH_GZIP_LEVEL:-1}
# Gatehouse's gzip (zlib-rs) level 1 uses a quicker strategy than zlib's level 1 and compresses
# less; set this to the level whose output is no larger than nginx's to compare equal work.
GH_LEVEL=${BENCH_GATEHOUSE_GZIP_LEVEL:-$LEVEL}
CONNS=${BENCH_COMPRESSION_CONNECTIONS:-16}
[[ $LEVEL =~ ^[1-9]$ && $GH_LEVEL =~ ^[1-9]$ ]] || die "gzip levels must be 1-9"
[[ $CONNS =~ ^[0-9]+$ ]] || die "BENCH_COMPRESSION_CONNECTIONS must be a number"
ORIGIN=$((PORT_BASE + 111))
NGINX=$((PORT_BASE + 211))
GATEHOUSE=$((PORT_BASE + 411))

write_configs() {
    python3 - "$RUN_DIR/www/data.json" <<'EOF'
import json, random, sys
# Realistic API output: varied words, ids and prices (compresses about 4-6x, like real JSON),
# generated from a fixed seed so every run serves the same bytes.
rng = random.Random(42)
words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 10))) for _ in range(2000)]
items, size, i = [], 0, 0
while size < 100 * 1024:
    item = {"id": rng.randint(1, 10**9), "sku": f"{rng.randint(0, 16**8):08x}", "price": round(rng.uniform(1, 500), 2),
            "name": " ".join(rng.choice(words) for _ in range(3)), "stock": rng.randint(0, 1000),
            "tags": [rng.choice(words) for _ in range(rng.randint(1, 4))],
            "description": " ".join(rng.choice(words) for _ in range(rng.randint(5, 15)))}
    items.append(item)
    size += len(json.dumps(item)) + 1
    i += 1
with open(sys.argv[1], "w") as f:
    json.dump(items, f)
EOF
    chmod a+r "$RUN_DIR/www/data.json"
    cat >"$RUN_DIR/compression-origin.conf" <<EOF
worker_processes 1;
daemon off;
pid $RUN_DIR/compression-origin.pid;
error_log $RUN_DIR/logs/compression-origin-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    server_tokens off;
    keepalive_timeout 600s;
    keepalive_requests 100000000;
    gzip off;
    types { application/json json; }
    client_body_temp_path $RUN_DIR/tmp/co-body;
    proxy_temp_path $RUN_DIR/tmp/co-proxy;
    fastcgi_temp_path $RUN_DIR/tmp/co-fastcgi;
    uwsgi_temp_path $RUN_DIR/tmp/co-uwsgi;
    scgi_temp_path $RUN_DIR/tmp/co-scgi;
    server {
        listen 127.0.0.1:$ORIGIN backlog=4096;
        root $RUN_DIR/www;
        location = /data.json { }
    }
}
EOF
    # nginx as the reference: gzip on at the same level, for JSON, above the same minimum size.
    cat >"$RUN_DIR/compression-nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $RUN_DIR/compression-nginx.pid;
error_log $RUN_DIR/logs/compression-nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    server_tokens off;
    keepalive_timeout 600s;
    keepalive_requests 100000000;
    client_body_temp_path $RUN_DIR/tmp/cn-body;
    proxy_temp_path $RUN_DIR/tmp/cn-proxy;
    fastcgi_temp_path $RUN_DIR/tmp/cn-fastcgi;
    uwsgi_temp_path $RUN_DIR/tmp/cn-uwsgi;
    scgi_temp_path $RUN_DIR/tmp/cn-scgi;
    gzip on;
    gzip_comp_level $LEVEL;
    gzip_types application/json;
    gzip_min_length 1024;
    gzip_proxied any;
    gzip_vary on;
    upstream origin {
        server 127.0.0.1:$ORIGIN;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NGINX backlog=4096;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffers 8 16k;
            proxy_max_temp_file_size 0;
        }
    }
}
EOF
    cat >"$RUN_DIR/compression-gatehouse.toml" <<EOF
[server]
workers = 1
[log]
level = "warn"
[access_log]
enabled = false
[timeouts]
client_idle = "600s"
upstream_idle = "600s"
[compression]
enabled = true
algorithms = ["gzip"]
gzip_level = $GH_LEVEL
min_size = "1KiB"
[[listener]]
address = "127.0.0.1:$GATEHOUSE"
[pool.origin]
backends = ["127.0.0.1:$ORIGIN"]
[[route]]
pool = "origin"
EOF
}

# compressed_size PORT: bytes of the gzip body, after checking it decodes to the original.
compressed_size() {
    local port=$1 body="$RUN_DIR/body.gz"
    curl -sS --max-time 5 -H 'Accept-Encoding: gzip' -o "$body" "http://127.0.0.1:$port/data.json" ||
        die "request to port $port failed"
    gzip -dc "$body" | cmp -s - "$RUN_DIR/www/data.json" || die "port $port: gzip body does not decode to the original"
    stat -c %s "$body"
}

measure() {
    local name=$1 port=$2 round=$3 pids=() before after out="$RUN_DIR/logs/compression-load.out" json
    mapfile -t pids < <(target_pids "$name")
    on_cpu "$LOAD_CPU" timeout 120 h2load --h1 -t1 -n 2000 -c"$CONNS" -H 'Accept-Encoding: gzip' \
        "http://127.0.0.1:$port/data.json" >"$RUN_DIR/logs/compression-warmup.out" 2>&1 ||
        die "warm-up failed: $(tail -n 5 "$RUN_DIR/logs/compression-warmup.out")"
    before=$(cpu_ticks "${pids[@]}")
    on_cpu "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 10s -H 'Accept-Encoding: gzip' \
        -s "$BENCH_DIR/tools/wrk_json.lua" "http://127.0.0.1:$port/data.json" >"$out" 2>&1 ||
        die "wrk failed: $(cat "$out")"
    after=$(cpu_ticks "${pids[@]}")
    json=$(grep '^WRK_JSON ' "$out" | cut -c10-) || die "wrk printed no result"
    json="${json%\}},\"target\":\"$name\",\"round\":$round,\"cpu_ticks\":$((after - before)),\"clk_tck\":$CLK_TCK}"
    echo "$json" >>"$RUN_DIR/compression.jsonl"
    log "    r$round $name: $(python3 -c 'import json, sys
r = json.loads(sys.argv[1])
rps = r["requests"] / (r["duration_us"] / 1e6)
cpu = r["cpu_ticks"] * 1e6 / r["clk_tck"] / max(r["requests"], 1)
print("%s req/s, %.1f us CPU/req" % (format(rps, ",.0f"), cpu))' "$json")"
}

main() {
    ensure_tools
    command -v gzip >/dev/null || die "gzip not found"
    build_gatehouse
    CLK_TCK=$(getconf CLK_TCK)
    RUN_DIR=$(mktemp -d /tmp/gatehouse-bench-compression.XXXXXX)
    chmod 755 "$RUN_DIR"
    mkdir -p "$RUN_DIR/logs" "$RUN_DIR/tmp" "$RUN_DIR/www"
    write_configs

    start_bg compression-origin "$LOAD_CPU" "$NGINX_BIN" -p "$RUN_DIR/" -c "$RUN_DIR/compression-origin.conf"
    wait_listening compression-origin "$STARTED_PID" "$ORIGIN"
    start_bg nginx "$PROXY_CPU" "$NGINX_BIN" -p "$RUN_DIR/" -c "$RUN_DIR/compression-nginx.conf"
    MAIN_PID[nginx]=$STARTED_PID
    wait_listening nginx "$STARTED_PID" "$NGINX"
    start_bg gatehouse "$PROXY_CPU" "$GATEHOUSE_BIN" run -c "$RUN_DIR/compression-gatehouse.toml"
    MAIN_PID[gatehouse]=$STARTED_PID
    wait_listening gatehouse "$STARTED_PID" "$GATEHOUSE"
    local worker
    for worker in $(children_of "${MAIN_PID[nginx]}"); do PIDS+=("$worker"); done

    local original nginx_size gatehouse_size round
    original=$(stat -c %s "$RUN_DIR/www/data.json")
    nginx_size=$(compressed_size "$NGINX")
    gatehouse_size=$(compressed_size "$GATEHOUSE")
    log "body: $original bytes; gzip level $LEVEL: nginx $nginx_size bytes, Gatehouse $gatehouse_size bytes"
    for ((round = 1; round <= ROUNDS; round++)); do
        measure nginx "$NGINX" "$round"
        measure gatehouse "$GATEHOUSE" "$round"
    done

    local stamp out
    stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
    mkdir -p "$BENCH_DIR/results"
    out="$BENCH_DIR/results/$stamp-compression.md"
    python3 - "$RUN_DIR/compression.jsonl" "$original" "$nginx_size" "$gatehouse_size" "$LEVEL/$GH_LEVEL" "$CONNS" \
        "$DURATION" "$ROUNDS" >"$out" <<'EOF'
import json, statistics, sys
path, original, nginx_size, gh_size, level, conns, duration, rounds = sys.argv[1:]
rows = [json.loads(line) for line in open(path)]
def stats(target):
    rs = [r for r in rows if r["target"] == target]
    rps = [r["requests"] / (r["duration_us"] / 1e6) for r in rs]
    cpu = [r["cpu_ticks"] * 1e6 / r["clk_tck"] / max(r["requests"], 1) for r in rs]
    p99 = [r["p99_us"] / 1000 for r in rs]
    return statistics.median(rps), min(rps), max(rps), statistics.median(cpu), statistics.median(p99)
n = stats("nginx"); g = stats("gatehouse")
nginx_level, gh_level = level.split("/")
print(f"# Compression benchmark: gzip, nginx level {nginx_level}, Gatehouse level {gh_level}, {int(original):,}-byte JSON body\n")
print(f"{conns} keep-alive connections (wrk, `Accept-Encoding: gzip`), {duration} s per run, {rounds} round(s), "
      "medians; one proxy worker pinned to the proxy CPU, origin and load on the other.\n")
print("| proxy | req/s | min-max | x nginx | p99 ms | proxy CPU us/req | CPU x nginx | gzip body bytes |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for name, s, size in (("nginx `gzip on`", n, nginx_size), ("Gatehouse `[compression]`", g, gh_size)):
    print(f"| {name} | {s[0]:,.0f} | {s[1]:,.0f}-{s[2]:,.0f} | {s[0] / n[0]:.2f}x | {s[4]:.2f} | {s[3]:.1f} | {s[3] / n[3]:.2f}x | {int(size):,} |")
EOF
    cat "$out"
    log "report written to $out"
}

main "$@"
