#!/usr/bin/env bash
# Headless-Chromium test of the admin dashboard (src/observe/dashboard.html).
#
#   tests/dashboard/check.sh              the page served by a real `gatehouse run` (run from the
#                                         repository root after `cargo build`)
#   tests/dashboard/check.sh --self-test  the page alone, against a fake admin listener
#                                         (tests/dashboard/helper.py fake-admin)
#
# Needs chromium, curl and python3 (standard library only); installs nothing.
# Environment: GATEHOUSE_BIN (default target/debug/gatehouse), CHROMIUM (default: chromium or
# chromium-browser on PATH), DASHBOARD_KEEP_TMP=1 keeps the temporary directory for debugging,
# DASHBOARD_PAGE (for --self-test) tests another copy of the page.
set -euo pipefail

usage() {
    sed -n '2,13s/^# \{0,1\}//p' "$0"
}

mode=live
case "${1:-}" in
"") ;;
--self-test) mode=self-test ;;
-h | --help)
    usage
    exit 0
    ;;
*)
    usage >&2
    exit 2
    ;;
esac

die() {
    echo "dashboard check: FAIL: $*" >&2
    exit 1
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
helper="$here/helper.py"
# DASHBOARD_PAGE: another copy of the page, for --self-test (the live test serves the built-in one).
page=${DASHBOARD_PAGE:-$here/../../src/observe/dashboard.html}

chromium_bin=${CHROMIUM:-}
if [ -z "$chromium_bin" ]; then
    for candidate in chromium chromium-browser; do
        if command -v "$candidate" >/dev/null 2>&1; then
            chromium_bin=$(command -v "$candidate")
            break
        fi
    done
fi
if [ -z "$chromium_bin" ] || ! command -v "$chromium_bin" >/dev/null 2>&1; then
    die "chromium is not installed (Debian: apt-get install -y --no-install-recommends chromium), or set CHROMIUM=/path/to/chromium"
fi
command -v curl >/dev/null 2>&1 || die "curl is not installed"
command -v python3 >/dev/null 2>&1 || die "python3 is not installed"
command -v timeout >/dev/null 2>&1 || die "timeout (coreutils) is not installed"
[ -f "$page" ] || die "missing $page"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-dashboard.XXXXXX")
pids=()
cleanup() {
    local status=$?
    local pid
    for pid in ${pids[@]+"${pids[@]}"}; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in ${pids[@]+"${pids[@]}"}; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "${DASHBOARD_KEEP_TMP:-0}" = 1 ]; then
        echo "dashboard check: kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- checks ----------------------------------------------------------------------------------
passed=0
failed=0
failures=()
pass() {
    passed=$((passed + 1))
    echo "ok - $1"
}
fail() {
    failed=$((failed + 1))
    failures+=("$1")
    echo "not ok - $1"
}
expect_eq() { # NAME ACTUAL EXPECTED
    if [ "$2" = "$3" ]; then pass "$1 = '$3'"; else fail "$1: got '$2', want '$3'"; fi
}
expect_ne() { # NAME ACTUAL UNWANTED
    if [ "$2" != "$3" ]; then pass "$1 = '$2' (not '$3')"; else fail "$1: got '$2'"; fi
}
expect_num() { # NAME ACTUAL OP LIMIT   (OP: ge, gt, le)
    if awk -v a="$2" -v op="$3" -v b="$4" 'BEGIN {
            if (a !~ /^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$/) exit 1
            if (op == "ge") exit !(a + 0 >= b + 0)
            if (op == "gt") exit !(a + 0 > b + 0)
            if (op == "le") exit !(a + 0 <= b + 0)
            exit 1 }'; then
        pass "$1 = $2 ($3 $4)"
    else
        fail "$1: got '$2', want $3 $4"
    fi
}

# ---- chromium --------------------------------------------------------------------------------
run=0
# run_page URL: loads the page for 5 s of virtual time; leaves the DOM in $dom_file, its hooks
# (key<TAB>value lines) in $dom_tsv and Chromium's log in $log_file.
run_page() {
    run=$((run + 1))
    dom_file="$tmp/dom-$run.html"
    dom_tsv="$tmp/dom-$run.tsv"
    log_file="$tmp/chromium-$run.log"
    local status=0
    timeout 60 "$chromium_bin" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --disable-dev-shm-usage --user-data-dir="$tmp/profile-$run" \
        --enable-logging=stderr --v=0 --virtual-time-budget=5000 \
        --dump-dom "$1" >"$dom_file" 2>"$log_file" || status=$?
    if [ "$status" -ne 0 ]; then
        fail "chromium exited with status $status (log: last lines below)"
        tail -n 20 "$log_file" >&2
    fi
    python3 "$helper" dom "$dom_file" >"$dom_tsv"
}
dom() { # KEY -> value from the last run, or <missing>
    awk -F'\t' -v key="$1" '$1 == key { print $2; found = 1; exit } END { if (!found) print "<missing>" }' "$dom_tsv"
}
# Fails on uncaught exceptions and on any console message from the page's origin (the page logs
# nothing unless something went wrong).
expect_quiet_console() { # ORIGIN
    local noise
    noise=$(grep -E "Uncaught|CONSOLE.*$1" "$log_file" || true)
    if [ -z "$noise" ]; then
        pass "no console messages or uncaught errors from $1"
    else
        fail "console messages from the page:"
        printf '    %s\n' "$noise"
    fi
}
expect_common() {
    expect_eq "body data-errors" "$(dom body.errors)" 0
    expect_num "body data-polls" "$(dom body.polls)" ge 2
    expect_eq "error banner hidden" "$(dom banner.hidden)" yes
}

summary() { # DETAILS
    if [ "$failed" -eq 0 ]; then
        echo "dashboard check ($mode): PASS — $1"
    else
        echo "dashboard check ($mode): FAIL — ${failures[0]}${failures[1]+ (and $((failed - 1)) more)}"
    fi
    echo "dashboard: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

# ---- --self-test: the page against tests/dashboard/helper.py fake-admin -------------------------
start_fake() { # PORT MODE [TOKEN]
    python3 "$helper" fake-admin --port "$1" --page "$page" --mode "$2" --token "${3:-}" \
        >"$tmp/fake-$1.log" 2>&1 &
    pids+=("$!")
    local i
    for i in $(seq 1 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$1/_state" 2>/dev/null && return 0
        [ "$i" -eq 100 ] || sleep 0.1
    done
    die "the fake admin listener on port $1 did not start: $(cat "$tmp/fake-$1.log")"
}
fake_state() { # PORT KEY
    curl -fsS "http://127.0.0.1:$1/_state" | python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}

self_test() {
    local live static token=self-test-token
    read -r live static < <(python3 "$helper" ports 2)
    [ -n "$static" ] || die "could not pick free ports"
    start_fake "$live" live "$token"
    start_fake "$static" static

    echo "# 1. growing counters, cache metrics present, token from the page's URL"
    run_page "http://127.0.0.1:$live/?token=$token"
    expect_quiet_console "http://127.0.0.1:$live"
    expect_common
    expect_eq "#requests-total (fake's last /metrics)" "$(dom requests-total)" "$(fake_state "$live" requests)"
    expect_eq "#errors-total (fake's last /metrics)" "$(dom errors-total)" "$(fake_state "$live" errors)"
    expect_eq "requests refused for a missing token" "$(fake_state "$live" unauthorized)" 0
    expect_num "#request-rate data-value" "$(dom request-rate.value)" gt 0
    expect_num "#error-rate data-value" "$(dom error-rate.value)" gt 0
    expect_eq "#error-percent" "$(dom error-percent)" "3.0 %"
    expect_eq "#p50" "$(dom p50)" "8.75 ms"
    expect_eq "#p90" "$(dom p90)" "25.0 ms"
    expect_eq "#p99" "$(dom p99)" "75.0 ms"
    expect_eq "latency window" "$(dom latency-window.window)" interval
    expect_eq "#cache-hit-ratio" "$(dom cache-hit-ratio)" "75.0 %"
    expect_eq "#active-connections" "$(dom active-connections)" 5
    expect_eq "backend 127.0.0.1:9001" "$(dom backend.127.0.0.1:9001)" available
    expect_eq "backend 127.0.0.1:9002" "$(dom backend.127.0.0.1:9002)" down
    expect_eq "backend 127.0.0.1:9101" "$(dom backend.127.0.0.1:9101)" ejected
    expect_eq "backend 127.0.0.1:9102" "$(dom backend.127.0.0.1:9102)" draining
    if grep -q 'api&lt;b&gt;x&lt;/b&gt;' "$dom_file" && ! grep -q '<b>x</b>' "$dom_file"; then
        pass "pool names are shown as text, not markup"
    else
        fail "pool name 'api<b>x</b>' was not escaped"
    fi

    echo "# 2. counters that never change, no cache metrics, no token"
    run_page "http://127.0.0.1:$static/"
    expect_quiet_console "http://127.0.0.1:$static"
    expect_common
    expect_eq "#requests-total" "$(dom requests-total)" "$(fake_state "$static" requests)"
    expect_eq "#request-rate" "$(dom request-rate)" "0.00 req/s"
    expect_eq "#error-rate" "$(dom error-rate)" "0.00 /s"
    expect_eq "#error-percent (no requests)" "$(dom error-percent)" "—"
    expect_eq "#p99 (from cumulative counts)" "$(dom p99)" "75.0 ms"
    expect_eq "latency window" "$(dom latency-window.window)" cumulative
    expect_eq "#cache-hit-ratio without cache metrics" "$(dom cache-hit-ratio)" "n/a"

    echo "# 3. a token is required but the page was opened without one"
    run_page "http://127.0.0.1:$live/"
    expect_num "body data-errors" "$(dom body.errors)" ge 1
    expect_eq "body data-polls" "$(dom body.polls)" 0
    expect_eq "error banner hidden" "$(dom banner.hidden)" no
    case "$(dom banner)" in
    *"HTTP 401"*) pass "banner names the 401" ;;
    *) fail "banner text: '$(dom banner)'" ;;
    esac

    summary "fake admin listener: totals, rates, p50/p90/p99, cache ratio, backend states, token, error banner"
}

# ---- live: the page served by `gatehouse run` --------------------------------------------------
live_test() {
    local bin=${GATEHOUSE_BIN:-target/debug/gatehouse}
    [ -x "$bin" ] || die "no gatehouse binary at $bin: run 'cargo build' first (or set GATEHOUSE_BIN)"

    local origin_port proxy_port admin_port
    read -r origin_port proxy_port admin_port < <(python3 "$helper" ports 3)
    [ -n "$admin_port" ] || die "could not pick free ports"
    local admin="http://127.0.0.1:$admin_port"
    local backend="127.0.0.1:$origin_port"

    mkdir "$tmp/origin"
    echo "origin ok" >"$tmp/origin/index.html"
    python3 -m http.server --bind 127.0.0.1 --directory "$tmp/origin" "$origin_port" \
        >"$tmp/origin.log" 2>&1 &
    pids+=("$!")

    cat >"$tmp/gatehouse.toml" <<EOF
[access_log]
enabled = false

[admin]
address = "127.0.0.1:$admin_port"

[[listener]]
address = "127.0.0.1:$proxy_port"

[pool.app]
backends = ["$backend"]

[pool.app.health_check]
path = "/"
interval = "1s"

[[route]]
name = "site"
host = "site.test"
pool = "app"
EOF

    "$bin" run -c "$tmp/gatehouse.toml" >"$tmp/gatehouse.log" 2>&1 &
    local gatehouse_pid=$!
    pids+=("$gatehouse_pid")

    # The admin listener answers /metrics (bounded: 10 s).
    local i
    for i in $(seq 1 100); do
        curl -fsS --max-time 2 -o /dev/null "$admin/metrics" 2>/dev/null && break
        if ! kill -0 "$gatehouse_pid" 2>/dev/null; then
            tail -n 30 "$tmp/gatehouse.log" >&2
            die "gatehouse exited before its admin listener answered (log above)"
        fi
        if [ "$i" -eq 100 ]; then
            tail -n 30 "$tmp/gatehouse.log" >&2
            die "no answer from $admin/metrics within 10 s (log above)"
        fi
        sleep 0.1
    done
    # The backend is available (the origin is up and, after a health check, marked so).
    local status=""
    for i in $(seq 1 100); do
        status=$(curl -fsS --max-time 2 "$admin/api/pools" 2>/dev/null | python3 "$helper" pool-status "$backend" 2>/dev/null || true)
        [ "$status" = available ] && break
        [ "$i" -eq 100 ] || sleep 0.1
    done
    expect_eq "/api/pools status of $backend before the page loads" "$status" available

    # GET / serves this page as HTML.
    local ctype
    ctype=$(curl -fsS --max-time 5 -o "$tmp/served.html" -w '%{content_type}' "$admin/") ||
        die "GET $admin/ failed"
    case "$ctype" in
    text/html*) pass "GET / content-type '$ctype'" ;;
    *) fail "GET / content-type: got '$ctype', want text/html" ;;
    esac
    if cmp -s "$tmp/served.html" "$page"; then
        pass "GET / serves src/observe/dashboard.html"
    else
        fail "GET / does not serve src/observe/dashboard.html byte for byte"
    fi

    # Traffic: 30 routed requests and 5 that match no route.
    local code ok=0 not_found=0
    for i in $(seq 1 30); do
        code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -H 'Host: site.test' "http://127.0.0.1:$proxy_port/" || true)
        [ "$code" = 200 ] && ok=$((ok + 1))
    done
    for i in $(seq 1 5); do
        code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -H 'Host: unknown.test' "http://127.0.0.1:$proxy_port/" || true)
        [ "$code" = 404 ] && not_found=$((not_found + 1))
    done
    expect_eq "routed requests answered 200" "$ok" 30
    expect_eq "unrouted requests answered 404" "$not_found" 5

    # Totals from /metrics, once they have stopped moving (bounded: 5 s).
    local totals="" last="" total errors
    for i in $(seq 1 50); do
        totals=$(curl -fsS --max-time 2 "$admin/metrics" | python3 "$helper" totals || true)
        read -r total errors <<<"$totals"
        [ -n "$totals" ] && [ "$totals" = "$last" ] && [ "${total%%.*}" -ge 35 ] && break
        last=$totals
        sleep 0.1
    done
    read -r total errors <<<"$totals"
    expect_num "gatehouse_requests_total (sum)" "$total" ge 35

    run_page "$admin/"
    expect_quiet_console "$admin"
    expect_common
    expect_eq "#requests-total (from /metrics)" "$(dom requests-total)" "$total"
    expect_eq "#errors-total (from /metrics)" "$(dom errors-total)" "$errors"
    expect_eq "backend row $backend data-status" "$(dom "backend.$backend")" available
    expect_ne "#p99" "$(dom p99)" "<missing>"

    # The page's own requests to the admin listener are not counted as proxied requests.
    local after
    after=$(curl -fsS --max-time 2 "$admin/metrics" | python3 "$helper" totals || true)
    expect_eq "/metrics totals after the page ran" "$after" "$totals"

    summary "requests_total=$total errors_total=$errors polls=$(dom body.polls) backend $backend $(dom "backend.$backend")"
}

if [ "$mode" = self-test ]; then
    self_test
else
    live_test
fi
