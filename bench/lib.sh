# Shared by bench/run.sh and bench/profile.sh: knobs, process bookkeeping (every process started
# is recorded by PID and stopped on exit), /proc readings, rendering the configs, starting the
# origins and the proxies, and generating load. Sourced, not run.
# shellcheck shell=bash
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")

if [[ ${BENCH_QUICK:-0} == 1 ]]; then
    : "${BENCH_DURATION:=2}" "${BENCH_WARMUP_REQUESTS:=2000}" "${BENCH_ROUNDS:=1}" "${BENCH_IDLE_CONNS:=1000}"
fi
DURATION=${BENCH_DURATION:-6}
WARMUP_REQUESTS=${BENCH_WARMUP_REQUESTS:-20000}
# Our processes (origins, proxies, load generators) run at this nice level, so that other work on
# the machine (compilers, tests) gets the left-over CPU instead of distorting the measurement.
# Needs root; BENCH_NICE=0 turns it off.
if [[ $EUID -eq 0 ]]; then NICE=${BENCH_NICE:--20}; else NICE=${BENCH_NICE:-0}; fi
ROUNDS=${BENCH_ROUNDS:-3}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
IDLE_ROUNDS=${BENCH_IDLE_ROUNDS:-$ROUNDS}
# Seconds between the last idle connection's response and the memory reading: past Gatehouse's
# `client_idle_release` window (1-2 s), the same wait for every proxy.
IDLE_SETTLE=${BENCH_IDLE_SETTLE:-4}
SCENARIOS=${BENCH_SCENARIOS:-1 2 3 4 5 7}
TARGETS=${BENCH_TARGETS:-direct nginx haproxy gatehouse}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
# Scenario 2's body size in bytes when set (served at /large); unset, the 100 KiB /100k.
LARGE_BYTES=${BENCH_LARGE_BYTES:-}
H2_CONNECTIONS=16
H2_STREAMS=4
PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
PORT_BASE=${BENCH_PORT_BASE:-18000}

ORIGIN_PORT_1=$((PORT_BASE + 101))
ORIGIN_PORT_2=$((PORT_BASE + 102))
ORIGIN_PORT_3=$((PORT_BASE + 103))
ORIGIN_H2C_PORT=$((PORT_BASE + 104))
ORIGIN_STATUS_PORT=$((PORT_BASE + 109))
NGINX_H1_PORT=$((PORT_BASE + 201))
NGINX_H2_PORT=$((PORT_BASE + 202))
HAPROXY_H1_PORT=$((PORT_BASE + 301))
HAPROXY_H2_PORT=$((PORT_BASE + 302))
GATEHOUSE_PORT=$((PORT_BASE + 401))
# Target gatehouse-b: a second Gatehouse binary (GATEHOUSE_BIN_B) for paired A/B runs.
GATEHOUSE_B_PORT=$((PORT_BASE + 411))
GATEHOUSE_B_TLS_PORT=$((PORT_BASE + 412))
# Scenario 5: HTTPS listeners, all with the same certificate (generated per run).
NGINX_TLS_PORT=$((PORT_BASE + 203))
HAPROXY_TLS_PORT=$((PORT_BASE + 303))
GATEHOUSE_TLS_PORT=$((PORT_BASE + 402))

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for number in "$DURATION" "$WARMUP_REQUESTS" "${NICE#-}" "$ROUNDS" "$IDLE_CONNS" "$IDLE_ROUNDS" "$CONNECTIONS" \
    "$PROXY_CPU" "$LOAD_CPU" "$PORT_BASE"; do
    [[ $number =~ ^[0-9]+$ ]] || die "knob value '$number' is not a whole number"
done
((DURATION >= 1 && ROUNDS >= 1)) || die "BENCH_DURATION and BENCH_ROUNDS must be at least 1"
read -r -a TARGET_LIST <<<"$TARGETS"
read -r -a SCENARIO_LIST <<<"$SCENARIOS"
# Scenario 5 has three parts, 5a (HTTPS keep-alive), 5b (a new TLS connection per request,
# resumed from the proxy's ticket) and 5c (a new connection with a full handshake per request);
# "5" means all three.
expanded=()
for scenario in "${SCENARIO_LIST[@]}"; do
    case $scenario in
    5) expanded+=(5a 5b 5c) ;;
    1 | 2 | 3 | 4 | 5a | 5b | 5c | 6 | 7) expanded+=("$scenario") ;;
    *) die "unknown scenario '$scenario' (1 2 3 4 5 5a 5b 5c 6 7)" ;;
    esac
done
SCENARIO_LIST=("${expanded[@]}")
unset expanded scenario
for target in "${TARGET_LIST[@]}"; do
    case $target in direct | nginx | haproxy | gatehouse | gatehouse-b) ;; *) die "unknown target '$target'" ;; esac
done
has_target() {
    local t
    for t in "${TARGET_LIST[@]}"; do [[ $t == "$1" ]] && return 0; done
    return 1
}
has_scenario() {
    local s
    for s in "${SCENARIO_LIST[@]}"; do [[ $s == "$1" ]] && return 0; done
    return 1
}

# ---------------------------------------------------------------------------------------------
# Process bookkeeping and cleanup

PIDS=()      # every process started here (and nginx workers); all stopped on exit
START_WAIT_SECONDS=10
# Command prefix for the proxies (bench/profile.sh runs them under valgrind).
TARGET_WRAPPER=()
RUN_DIR=""
CACHE_DIR=""
declare -A MAIN_PID=()
declare -A TLS_DETAILS=() # scenario 5: "cipher, key exchange" each proxy negotiated with OpenSSL

is_alive() {
    local stat
    # `read`, not `$(<file)`: a process that exits between two looks makes the file vanish, and
    # a failed `$(<file)` expansion ends the whole script under `set -e` (seen in scenario 7).
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# stop_pids PID...: SIGTERM, up to 5 s grace, then SIGKILL; reaps those that are our children.
stop_pids() {
    local pid i alive=() still=()
    for pid in "$@"; do
        if is_alive "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            alive+=("$pid")
        fi
    done
    for ((i = 0; i < 50 && ${#alive[@]} > 0; i++)); do
        sleep 0.1
        still=()
        for pid in "${alive[@]}"; do
            if is_alive "$pid"; then still+=("$pid"); fi
        done
        alive=("${still[@]}")
    done
    for pid in "${alive[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if ((${#PIDS[@]})); then
        log "stopping ${#PIDS[@]} process(es) started by this run"
        stop_pids "${PIDS[@]}"
    fi
    if [[ $CACHE_DIR == /dev/shm/gatehouse-bench-cache.* ]]; then rm -rf "$CACHE_DIR"; fi
    if [[ -n $RUN_DIR && -d $RUN_DIR ]]; then
        if ((status != 0)) && [[ -s $RUN_DIR/results.jsonl && -n ${BENCH_DIR:-} ]]; then
            # A run that fails late keeps what it measured: `tools/report.py` can read it.
            local partial
            partial="$BENCH_DIR/results/failed-$(date -u +%Y-%m-%dT%H%M%SZ)"
            mkdir -p "$BENCH_DIR/results"
            cp "$RUN_DIR/results.jsonl" "$partial.jsonl"
            cp "$RUN_DIR/meta.tsv" "$partial.meta.tsv" 2>/dev/null || true
            log "the run failed; what it measured is in ${partial#"${REPO_DIR:-}"/}.jsonl"
        fi
        if [[ ${BENCH_KEEP:-0} == 1 ]]; then
            log "run directory kept: $RUN_DIR"
        else
            rm -rf "$RUN_DIR"
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# cpu_prefix CPU: sets PREFIX to the command prefix that pins a command to CPU at our nice level.
# nice and taskset exec the command, so a background job started with it has the command's PID.
PREFIX=()
cpu_prefix() {
    PREFIX=(taskset -c "$1")
    if [[ $NICE != 0 ]]; then PREFIX=(nice -n "$NICE" "${PREFIX[@]}"); fi
}

# on_cpu CPU CMD...: runs CMD in the foreground, pinned to CPU, at our nice level.
on_cpu() {
    cpu_prefix "$1"
    shift
    "${PREFIX[@]}" "$@"
}

STARTED_PID=""
# start_bg NAME CPU CMD...: runs CMD pinned to CPU in the background, output to logs/NAME.log.
# (Never background a shell function here: $! would be a subshell, not the command.)
start_bg() {
    local name=$1
    cpu_prefix "$2"
    shift 2
    "${PREFIX[@]}" "$@" >"$RUN_DIR/logs/$name.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}

# True when something listens on 127.0.0.1:PORT (read from /proc: no connection is opened, so
# the origins' accept counters stay exact).
listening() {
    local hex
    hex=$(printf '%04X' "$1")
    grep -Eq "^ *[0-9]+: 0100007F:$hex [0-9A-F]{8}:[0-9A-F]{4} 0A " /proc/net/tcp
}

wait_listening() {
    local name=$1 pid=$2 port i
    shift 2
    for port in "$@"; do
        for ((i = 0; i < START_WAIT_SECONDS * 10; i++)); do
            is_alive "$pid" || {
                tail -n 20 "$RUN_DIR/logs/$name.log" >&2 || true
                die "$name exited during start-up (log above)"
            }
            listening "$port" && break
            sleep 0.1
        done
        listening "$port" || die "$name is not listening on 127.0.0.1:$port after $START_WAIT_SECONDS s"
    done
}

children_of() { pgrep -P "$1" || true; }

# target_pids TARGET: the proxy's processes (nginx: master and workers); nothing for direct.
target_pids() {
    [[ $1 == direct ]] && return 0
    local pid=${MAIN_PID[$1]}
    echo "$pid"
    children_of "$pid"
}

# ---------------------------------------------------------------------------------------------
# /proc readings

# Sum of utime+stime (clock ticks) over PIDs. A process that has exited meanwhile counts 0: nginx's
# cache loader (a child of the proxy's master) exits about a minute after start, often between the
# listing of the proxy's processes and the reading (its own CPU time is negligible); reading its
# gone /proc entry used to print errors and could end the run.
cpu_ticks() {
    local pid stat total=0 fields
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        [[ -n $stat ]] || continue
        read -r -a fields <<<"${stat##*) }"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

# status_kib FIELD PID...: sum of a /proc/PID/status field in KiB (VmRSS, VmHWM).
status_kib() {
    local field=$1 pid total=0 value
    shift
    for pid in "$@"; do
        # 0 for a process that has exited meanwhile (see cpu_ticks).
        value=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null) || value=0
        total=$((total + ${value:-0}))
    done
    echo "$total"
}

# Resets VmHWM to the current RSS, so the peak is the peak of the next measurement.
reset_hwm() {
    local pid
    for pid in "$@"; do echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true; done
}

# "busy total" clock ticks of the proxy CPU, from /proc/stat.
proxy_cpu_ticks() {
    awk -v c="cpu$PROXY_CPU" '$1 == c { busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6 }' /proc/stat
}

# "accepts requests" of the origin nginx (stub_status; the probe itself is one accept).
origin_counters() {
    local reply
    reply=$(curl -sS --max-time 5 "http://127.0.0.1:$ORIGIN_STATUS_PORT/status") ||
        die "cannot read the origin's stub_status"
    awk '/^ *[0-9]+ +[0-9]+ +[0-9]+ *$/ { print $1, $3 }' <<<"$reply"
}

# ---------------------------------------------------------------------------------------------
# Tools, build, configs

ensure_tools() {
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v h2load >/dev/null || missing+=(nghttp2-client)
    [[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null || missing+=(nginx)
    [[ -x /usr/sbin/haproxy ]] || command -v haproxy >/dev/null || missing+=(haproxy)
    command -v curl >/dev/null || missing+=(curl)
    command -v taskset >/dev/null || missing+=(util-linux)
    command -v pgrep >/dev/null || missing+=(procps)
    command -v python3 >/dev/null || missing+=(python3)
    command -v openssl >/dev/null || missing+=(openssl)
    if ((${#missing[@]})); then
        [[ $EUID -eq 0 ]] || die "missing packages: ${missing[*]} (run as root, or install them)"
        log "installing from Debian: ${missing[*]}"
        # Installing nginx/haproxy may start their system services on a systemd host; this
        # harness never uses, stops or reconfigures those.
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
    fi
    NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
    HAPROXY_BIN=$(command -v haproxy || echo /usr/sbin/haproxy)
}

# build_gatehouse [with-client]: builds target/release/gatehouse unless GATEHOUSE_BIN is given;
# with `with-client`, also scenario 5c's load client (bench/tools/handshake_client.rs, a cargo
# example; sets HANDSHAKE_CLIENT). Both in one cargo run: the release profile's final LTO step
# runs on one core, so the client's is built beside Gatehouse's at no cost in wall time (133 s
# for both against 132 s for Gatehouse alone, measured; one after the other, 91 s more).
build_gatehouse() {
    local targets=() what=()
    if [[ -n ${GATEHOUSE_BIN:-} ]]; then
        [[ -x $GATEHOUSE_BIN ]] || die "GATEHOUSE_BIN=$GATEHOUSE_BIN is not executable"
    else
        targets+=(--bin gatehouse)
        what+=(Gatehouse)
    fi
    if [[ ${1:-} == with-client ]]; then
        targets+=(--example handshake_client)
        what+=("scenario 5c's client")
    fi
    ((${#targets[@]})) || return 0
    command -v cargo >/dev/null || die "cargo not found (or set GATEHOUSE_BIN)"
    log "building ${what[0]}${what[1]:+ and ${what[1]}} (cargo build --release ${targets[*]}; a no-op when up to date)"
    (cd "$REPO_DIR" && cargo build --release "${targets[@]}" >&2) || die "cargo build failed"
    [[ -n ${GATEHOUSE_BIN:-} ]] || GATEHOUSE_BIN=$REPO_DIR/target/release/gatehouse
    HANDSHAKE_CLIENT=$REPO_DIR/target/release/examples/handshake_client
}

render() {
    sed -e "s|@RUN@|$RUN_DIR|g" \
        -e "s|@CACHE_DIR@|$CACHE_DIR|g" \
        -e "s|@NOFILE@|$NOFILE|g" \
        -e "s|@HAPROXY_MAXCONN@|$((IDLE_CONNS + 500))|g" \
        -e "s|@ORIGIN_PORT_1@|$ORIGIN_PORT_1|g" \
        -e "s|@ORIGIN_PORT_2@|$ORIGIN_PORT_2|g" \
        -e "s|@ORIGIN_PORT_3@|$ORIGIN_PORT_3|g" \
        -e "s|@ORIGIN_H2C_PORT@|$ORIGIN_H2C_PORT|g" \
        -e "s|@ORIGIN_STATUS_PORT@|$ORIGIN_STATUS_PORT|g" \
        -e "s|@NGINX_H1_PORT@|$NGINX_H1_PORT|g" \
        -e "s|@NGINX_H2_PORT@|$NGINX_H2_PORT|g" \
        -e "s|@HAPROXY_H1_PORT@|$HAPROXY_H1_PORT|g" \
        -e "s|@HAPROXY_H2_PORT@|$HAPROXY_H2_PORT|g" \
        -e "s|@GATEHOUSE_PORT@|$GATEHOUSE_PORT|g" \
        -e "s|@NGINX_TLS_PORT@|$NGINX_TLS_PORT|g" \
        -e "s|@HAPROXY_TLS_PORT@|$HAPROXY_TLS_PORT|g" \
        -e "s|@GATEHOUSE_TLS_PORT@|$GATEHOUSE_TLS_PORT|g" \
        "$BENCH_DIR/configs/$1" >"$RUN_DIR/$1"
}

# The set-up of a tool that runs the targets in TARGET_LIST: builds Gatehouse when the list
# names it, raises the open-file limit to the hard limit (NOFILE) and makes the run directory.
prepare_targets() {
    local target
    for target in "${TARGET_LIST[@]}"; do
        [[ $target == gatehouse ]] && build_gatehouse
    done
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    NOFILE=$(ulimit -n)
    prepare_run_dir
}

prepare_run_dir() {
    RUN_DIR=$(mktemp -d /tmp/gatehouse-bench.XXXXXX)
    # nginx workers may run as an unprivileged user: they must read the bodies and temp paths.
    chmod 755 "$RUN_DIR"
    mkdir -p "$RUN_DIR/logs" "$RUN_DIR/tmp" "$RUN_DIR/www"
    # Scenario 6: nginx's cache directory on tmpfs when there is one (removed on exit).
    if [[ -d /dev/shm && -w /dev/shm ]]; then
        CACHE_DIR=$(mktemp -d /dev/shm/gatehouse-bench-cache.XXXXXX)
    else
        CACHE_DIR=$RUN_DIR/cache
        mkdir -p "$CACHE_DIR"
    fi
    chmod 755 "$CACHE_DIR"
    head -c 1024 /dev/zero | tr '\0' 'a' >"$RUN_DIR/www/1k"
    head -c 102400 /dev/zero | tr '\0' 'b' >"$RUN_DIR/www/100k"
    if [[ -n $LARGE_BYTES ]]; then
        [[ $LARGE_BYTES =~ ^[0-9]+$ ]] || die "BENCH_LARGE_BYTES must be a number of bytes"
        head -c "$LARGE_BYTES" /dev/zero | tr '\0' 'c' >"$RUN_DIR/www/large"
    fi
    chmod -R a+rX "$RUN_DIR"
    # Scenario 5: one self-signed ECDSA P-256 certificate for 127.0.0.1/localhost, used by every
    # proxy (HAProxy wants certificate and key in one PEM file).
    mkdir -p "$RUN_DIR/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$RUN_DIR/tls/key.pem" -out "$RUN_DIR/tls/cert.pem" >"$RUN_DIR/logs/openssl.log" 2>&1 ||
        die "openssl could not generate the certificate: $(cat "$RUN_DIR/logs/openssl.log")"
    cat "$RUN_DIR/tls/cert.pem" "$RUN_DIR/tls/key.pem" >"$RUN_DIR/tls/haproxy.pem"
    chmod 700 "$RUN_DIR/tls"
    chmod 600 "$RUN_DIR/tls/key.pem" "$RUN_DIR/tls/haproxy.pem"
    local config
    for config in origin-nginx.conf nginx-proxy.conf haproxy.cfg gatehouse.toml; do
        render "$config"
    done
    # gatehouse-b: the same config on its own ports.
    sed -e "s|127.0.0.1:$GATEHOUSE_PORT\"|127.0.0.1:$GATEHOUSE_B_PORT\"|" \
        -e "s|127.0.0.1:$GATEHOUSE_TLS_PORT\"|127.0.0.1:$GATEHOUSE_B_TLS_PORT\"|" \
        "$RUN_DIR/gatehouse.toml" >"$RUN_DIR/gatehouse-b.toml"
}

# ---------------------------------------------------------------------------------------------
# Starting and stopping the servers

start_origin() {
    start_bg origin "$LOAD_CPU" "$NGINX_BIN" -p "$RUN_DIR/" -c "$RUN_DIR/origin-nginx.conf" \
        -e "$RUN_DIR/logs/origin-error.log"
    MAIN_PID[origin]=$STARTED_PID
    wait_listening origin "$STARTED_PID" "$ORIGIN_PORT_1" "$ORIGIN_PORT_2" "$ORIGIN_PORT_3" \
        "$ORIGIN_H2C_PORT" "$ORIGIN_STATUS_PORT"
    local worker
    for worker in $(children_of "$STARTED_PID"); do PIDS+=("$worker"); done
}

start_target() {
    local target=$1 worker
    case $target in
    direct) return 0 ;;
    nginx)
        start_bg nginx "$PROXY_CPU" "${TARGET_WRAPPER[@]}" "$NGINX_BIN" -p "$RUN_DIR/" -c "$RUN_DIR/nginx-proxy.conf" \
            -e "$RUN_DIR/logs/nginx-proxy-error.log"
        wait_listening nginx "$STARTED_PID" "$NGINX_H1_PORT" "$NGINX_H2_PORT" "$NGINX_TLS_PORT"
        ;;
    haproxy)
        start_bg haproxy "$PROXY_CPU" "${TARGET_WRAPPER[@]}" "$HAPROXY_BIN" -db -f "$RUN_DIR/haproxy.cfg"
        wait_listening haproxy "$STARTED_PID" "$HAPROXY_H1_PORT" "$HAPROXY_H2_PORT" "$HAPROXY_TLS_PORT"
        ;;
    gatehouse)
        start_bg gatehouse "$PROXY_CPU" "${TARGET_WRAPPER[@]}" "$GATEHOUSE_BIN" run -c "$RUN_DIR/gatehouse.toml"
        wait_listening gatehouse "$STARTED_PID" "$GATEHOUSE_PORT" "$GATEHOUSE_TLS_PORT"
        ;;
    gatehouse-b)
        start_bg gatehouse-b "$PROXY_CPU" "${TARGET_WRAPPER[@]}" "${GATEHOUSE_BIN_B:?}" run -c "$RUN_DIR/gatehouse-b.toml"
        wait_listening gatehouse-b "$STARTED_PID" "$GATEHOUSE_B_PORT" "$GATEHOUSE_B_TLS_PORT"
        ;;
    esac
    MAIN_PID[$target]=$STARTED_PID
    for worker in $(children_of "$STARTED_PID"); do PIDS+=("$worker"); done
}

stop_target() {
    local target=$1 pids
    [[ $target == direct ]] && return 0
    mapfile -t pids < <(target_pids "$target")
    stop_pids "${pids[@]}"
}

# target_port TARGET SCENARIO: prints nothing for direct in scenario 5 (the origins have no TLS).
target_port() {
    local h2=0
    [[ $2 == 4 ]] && h2=1
    if [[ $2 == 5* ]]; then
        case $1 in
        nginx) echo "$NGINX_TLS_PORT" ;;
        haproxy) echo "$HAPROXY_TLS_PORT" ;;
        gatehouse) echo "$GATEHOUSE_TLS_PORT" ;;
        gatehouse-b) echo "$GATEHOUSE_B_TLS_PORT" ;;
        esac
        return 0
    fi
    case $1 in
    direct) ((h2)) && echo "$ORIGIN_H2C_PORT" || echo "$ORIGIN_PORT_1" ;;
    nginx) ((h2)) && echo "$NGINX_H2_PORT" || echo "$NGINX_H1_PORT" ;;
    haproxy) ((h2)) && echo "$HAPROXY_H2_PORT" || echo "$HAPROXY_H1_PORT" ;;
    gatehouse) echo "$GATEHOUSE_PORT" ;;
    gatehouse-b) echo "$GATEHOUSE_B_PORT" ;;
    esac
}

# Every target answers 200 with the exact body over HTTP/1.1 and h2c before anything is measured.
sanity_check() {
    local target port h2port got
    for target in "${TARGET_LIST[@]}"; do
        port=$(target_port "$target" 1)
        got=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{size_download}' \
            "http://127.0.0.1:$port/1k") || die "$target: request failed"
        [[ $got == "200 1024" ]] || die "$target: /1k answered '$got', expected '200 1024'"
        got=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{size_download}' \
            "http://127.0.0.1:$port/100k") || die "$target: request failed"
        [[ $got == "200 102400" ]] || die "$target: /100k answered '$got', expected '200 102400'"
        h2port=$(target_port "$target" 4)
        got=$(h2load -n 1 -c 1 "http://127.0.0.1:$h2port/1k" 2>&1) || die "$target: h2load failed"
        grep -q '1 succeeded' <<<"$got" || die "$target: h2c request failed: $got"
    done
    log "sanity check passed: every target serves /1k and /100k over HTTP/1.1 and /1k over h2c"
    if has_scenario 5a || has_scenario 5b || has_scenario 5c; then sanity_check_tls; fi
}

# Scenario 5: every proxy serves /1k over HTTPS with the run's certificate (verified, as
# 127.0.0.1 and as localhost), negotiates TLS 1.3, and resumes a session from its ticket.
sanity_check_tls() {
    local target port got sess="$RUN_DIR/tls/session.pem" out="$RUN_DIR/logs/s_client.log"
    for target in "${TARGET_LIST[@]}"; do
        [[ $target == direct ]] && continue
        port=$(target_port "$target" 5a)
        got=$(curl -sS --max-time 5 --cacert "$RUN_DIR/tls/cert.pem" --http1.1 -o /dev/null \
            -w '%{http_code} %{size_download}' "https://127.0.0.1:$port/1k") ||
            die "$target: HTTPS request failed"
        [[ $got == "200 1024" ]] || die "$target: https /1k answered '$got', expected '200 1024'"
        curl -sS --max-time 5 --cacert "$RUN_DIR/tls/cert.pem" --resolve "localhost:$port:127.0.0.1" \
            -o /dev/null "https://localhost:$port/1k" || die "$target: HTTPS to localhost failed"
        # A first connection that saves the session (ticket), a second that offers it.
        rm -f "$sess"
        openssl s_client -connect "127.0.0.1:$port" -servername localhost -CAfile "$RUN_DIR/tls/cert.pem" \
            -sess_out "$sess" -ign_eof >"$out" 2>&1 <<<$'GET /1k HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' ||
            die "$target: openssl s_client failed: $(tail -n 5 "$out")"
        grep -q 'Protocol *: TLSv1.3' "$out" || die "$target: TLS 1.3 not negotiated: $(grep -i protocol "$out")"
        grep -q 'Verify return code: 0 (ok)' "$out" || die "$target: certificate not verified: $(grep -i verify "$out")"
        # shellcheck disable=SC2034 # read by run.sh (meta.tsv)
        TLS_DETAILS[$target]="$(awk '/^New, TLSv1.3, Cipher is/ { print $NF; exit }' "$out")$(
            awk -F': ' '/^Server Temp Key/ { print ", " $2; exit }' "$out")"
        [[ -s $sess ]] || die "$target: no TLS session ticket received"
        openssl s_client -connect "127.0.0.1:$port" -servername localhost -CAfile "$RUN_DIR/tls/cert.pem" \
            -sess_in "$sess" -ign_eof >"$out" 2>&1 <<<$'GET /1k HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' ||
            die "$target: openssl s_client (resumption) failed: $(tail -n 5 "$out")"
        grep -q '^Reused, TLSv1.3' "$out" || die "$target: the session ticket was not accepted (no resumption)"
    done
    rm -f "$sess"
    log "TLS sanity check passed: every proxy serves /1k over HTTPS with TLS 1.3 and resumes sessions"
}

# ---------------------------------------------------------------------------------------------
# Load generation and measurement

# run_load SCENARIO URL SECONDS: prints one JSON object (requests, duration, latencies, errors).
run_load() {
    local scenario=$1 url=$2 seconds=$3 out="$RUN_DIR/logs/load.out"
    case $scenario in
    1 | 2 | 5a | 6)
        on_cpu "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${seconds}s" --timeout 10s \
            -s "$BENCH_DIR/tools/wrk_json.lua" "$url" >"$out" 2>&1 || die "wrk failed: $(cat "$out")"
        ;;
    3 | 5b)
        on_cpu "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${seconds}s" --timeout 10s \
            -H "Connection: close" -s "$BENCH_DIR/tools/wrk_json.lua" "$url" >"$out" 2>&1 ||
            die "wrk failed: $(cat "$out")"
        ;;
    5c)
        # A full handshake per connection: wrk and h2load resume sessions (5b), this client
        # keeps none (bench/tools/handshake_client.rs).
        local address=${url#https://}
        address=${address%%/*}
        on_cpu "$LOAD_CPU" "$HANDSHAKE_CLIENT" "$address" localhost "/${url#https://*/}" \
            "$CONNECTIONS" "$seconds" "$RUN_DIR/tls/cert.pem" "${BENCH_5C_SUITE:-any}" >"$out" 2>&1 ||
            die "handshake_client failed: $(cat "$out")"
        grep -q '"resumed":0}' "$out" || die "handshake_client resumed sessions: $(cat "$out")"
        ;;
    4)
        rm -f "$RUN_DIR/h2load-requests.log"
        on_cpu "$LOAD_CPU" h2load -t1 -c"$H2_CONNECTIONS" -m"$H2_STREAMS" -D "$seconds" \
            --log-file="$RUN_DIR/h2load-requests.log" "$url" >"$out" 2>&1 || die "h2load failed: $(cat "$out")"
        python3 "$BENCH_DIR/tools/parse_h2load.py" "$out" "$RUN_DIR/h2load-requests.log"
        rm -f "$RUN_DIR/h2load-requests.log"
        return
        ;;
    esac
    grep '^WRK_JSON ' "$out" | cut -c10- || die "wrk printed no result: $(cat "$out")"
}

# run_warmup SCENARIO URL: a fixed number of requests that all complete before the client closes
# (h2load -n), so no upstream connection is cut mid-response at the end of the warm-up and the
# measured run starts with the proxies' upstream pools full: what it counts as "upstream
# connections opened" is then the proxy's own doing. (wrk stops with requests in flight.)
run_warmup() {
    local scenario=$1 url=$2 requests=$WARMUP_REQUESTS out="$RUN_DIR/logs/warmup.out" args=()
    ((requests > 0)) || return 0
    if [[ $scenario == 2 ]]; then requests=$((requests / 4)); fi
    if [[ $scenario == 4 ]]; then
        args=(-c"$H2_CONNECTIONS" -m"$H2_STREAMS")
    else
        args=(--h1 -c"$CONNECTIONS")
    fi
    ((requests >= 64)) || requests=64
    on_cpu "$LOAD_CPU" timeout 120 h2load -t1 -n "$requests" "${args[@]}" "$url" >"$out" 2>&1 ||
        die "warm-up failed: $(tail -n 5 "$out")"
}

scenario_path() {
    case $1 in
    2) if [[ -n $LARGE_BYTES ]]; then echo /large; else echo /100k; fi ;;
    6) echo /cached/1k ;;
    *) echo /1k ;;
    esac
}
