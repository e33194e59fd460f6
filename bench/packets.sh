#!/usr/bin/env bash
# Packets per request on loopback for each target, in scenario 1 (keep-alive) or 3 (a new
# connection per request): the kernel's own counters (nstat) over a fixed wrk run, so every
# segment of the client, the proxy and the origin is counted. Each packet costs the kernel a
# send and a receive path on some CPU, so fewer packets for the same requests is less CPU.
# With PACKETS_TRACE=1 it also prints one request's segments through each target (tcpdump).
#
#   bench/packets.sh                   # scenario 3, all targets
#   PACKETS_SCENARIO=1 bench/packets.sh
#
# Knobs: PACKETS_SCENARIO=3, PACKETS_SECONDS=5, PACKETS_TRACE=0, and those of bench/lib.sh
# (BENCH_TARGETS, GATEHOUSE_BIN, GATEHOUSE_BIN_B, ...). Installs iproute2 (nstat) and, for the
# trace, tcpdump from Debian when missing. Loopback only.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKETS_SCENARIO=${PACKETS_SCENARIO:-3}
PACKETS_SECONDS=${PACKETS_SECONDS:-5}
PACKETS_TRACE=${PACKETS_TRACE:-0}
[[ $PACKETS_SCENARIO =~ ^[13]$ ]] || die "PACKETS_SCENARIO must be 1 or 3"
read -r -a TARGET_LIST <<<"$TARGETS"

# The load: wrk on the load CPU, with `Connection: close` in scenario 3; prints requests done.
packets_load() {
    local url=$1 seconds=$2 out="$RUN_DIR/logs/packets-load.out" headers=()
    [[ $PACKETS_SCENARIO == 3 ]] && headers=(-H "Connection: close")
    on_cpu "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${seconds}s" --timeout 30s "${headers[@]}" \
        -s "$BENCH_DIR/tools/wrk_json.lua" "$url" >"$out" 2>&1 || die "wrk failed: $(cat "$out")"
    grep '^WRK_JSON ' "$out" | sed 's/.*"requests":\([0-9]*\).*/\1/'
}

# One request through the target, its segments as tcpdump shows them (after a few warm-up
# requests, so the upstream connection exists).
packets_trace() {
    local port=$1 capture="$RUN_DIR/logs/packets.pcap" dumper close=()
    [[ $PACKETS_SCENARIO == 3 ]] && close=(-H "Connection: close")
    for _ in 1 2 3; do curl -s -o /dev/null "${close[@]}" "http://127.0.0.1:$port/1k"; done
    tcpdump -i lo -nn -w "$capture" tcp 2>/dev/null &
    dumper=$!
    PIDS+=("$dumper")
    sleep 1
    curl -s -o /dev/null "${close[@]}" "http://127.0.0.1:$port/1k"
    sleep 1
    kill -INT "$dumper" 2>/dev/null || true
    wait "$dumper" 2>/dev/null || true
    tcpdump -nn -r "$capture" 2>/dev/null |
        sed -E 's/^[0-9:.]+ IP //; s/, options \[[^]]*\]//; s/ win [0-9]+//; s/, seq [0-9]+,/,/'
}

main() {
    local target url requests counters
    ensure_tools
    if ! command -v nstat >/dev/null || { [[ $PACKETS_TRACE == 1 ]] && ! command -v tcpdump >/dev/null; }; then
        [[ $EUID -eq 0 ]] || die "nstat (iproute2) and tcpdump are needed"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 tcpdump >&2
    fi
    prepare_targets
    start_origin
    echo "# Packets per request, scenario $PACKETS_SCENARIO ($PACKETS_SECONDS s of wrk, $CONNECTIONS connections)"
    echo
    echo "| target | requests | packets | pure ACKs | data segments |"
    echo "|---|---:|---:|---:|---:|"
    for target in "${TARGET_LIST[@]}"; do
        start_target "$target"
        url="http://127.0.0.1:$(target_port "$target" "$PACKETS_SCENARIO")/1k"
        packets_load "$url" 2 >/dev/null
        nstat -n >/dev/null
        requests=$(packets_load "$url" "$PACKETS_SECONDS")
        counters=$(nstat -z 2>/dev/null)
        awk -v t="$target" -v r="$requests" '
            $1 == "IpOutRequests" { out = $2 } $1 == "TcpExtTCPPureAcks" { acks = $2 }
            $1 == "TcpExtTCPOrigDataSent" { data = $2 }
            END { printf "| %s | %d | %.2f | %.2f | %.2f |\n", t, r, out / r, acks / r, data / r }' <<<"$counters"
        if [[ $PACKETS_TRACE == 1 ]]; then
            echo
            echo '```'
            packets_trace "$(target_port "$target" "$PACKETS_SCENARIO")"
            echo '```'
            echo
        fi
        stop_target "$target"
    done
}

main "$@"
