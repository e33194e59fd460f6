#!/usr/bin/env python3
"""Helpers for tests/dashboard/check.sh (standard library only).

  helper.py ports N                 print N distinct free loopback TCP ports
  helper.py totals                  read Prometheus text on stdin, print "REQUESTS ERRORS_5XX"
  helper.py pool-status ADDRESS     read /api/pools JSON on stdin, print that backend's status
  helper.py dom FILE                print "key<TAB>value" lines from a dumped dashboard DOM
  helper.py fake-admin ...          a stand-in admin listener for --self-test (see --help)
"""

import argparse
import html.parser
import json
import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


def ports(count):
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        print(" ".join(str(s.getsockname()[1]) for s in socks))
    finally:
        for s in socks:
            s.close()


# name{labels} value [timestamp]; label values may contain escaped quotes and backslashes.
SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\})?\s+(\S+)'
)
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_metrics(text):
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        labels = {}
        for lm in LABEL.finditer(m.group(2) or ""):
            labels[lm.group(1)] = re.sub(
                r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), lm.group(2)
            )
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        yield m.group(1), labels, value


def totals():
    requests = errors = 0.0
    for name, labels, value in parse_metrics(sys.stdin.read()):
        if name != "gatehouse_requests_total" or value != value or value in (float("inf"), float("-inf")):
            continue
        requests += value
        if labels.get("status_class") == "5xx":
            errors += value

    def fmt(v):
        return str(int(v)) if v.is_integer() else "%.2f" % v

    print(fmt(requests), fmt(errors))


def pool_status(address):
    for pool in json.load(sys.stdin):
        for backend in pool.get("backends", []):
            if backend.get("address") == address:
                print(backend.get("status", ""))
                return
    print("missing")


class DomReader(html.parser.HTMLParser):
    """Collects the dashboard's test hooks from a --dump-dom output."""

    IDS = (
        "requests-total", "errors-total", "request-rate", "error-rate", "error-percent",
        "p50", "p90", "p99", "cache-hit-ratio", "active-connections", "backends-up",
        "latency-window", "banner",
    )
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
            "track", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out = {}
        self.stack = []  # [tag, id-being-captured or None]
        self.capturing = []  # ids whose text is being collected
        self.text = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.out["body.polls"] = a.get("data-polls", "")
            self.out["body.errors"] = a.get("data-errors", "")
        if tag == "tr" and "data-backend" in a:
            key = "backend." + a["data-backend"]
            if key in self.out:  # the same address in two pools
                key += "@" + a.get("data-pool", "")
            self.out[key] = a.get("data-status", "")
        ident = a.get("id")
        if ident in self.IDS:
            self.out[ident + ".value"] = a.get("data-value", "")
            if ident == "banner":
                self.out["banner.hidden"] = "yes" if "hidden" in a else "no"
            if ident == "latency-window":
                self.out["latency-window.window"] = a.get("data-window", "")
            self.text[ident] = []
            self.capturing.append(ident)
        if tag not in self.VOID:
            self.stack.append((tag, ident if ident in self.IDS else None))

    def handle_endtag(self, tag):
        while self.stack:
            open_tag, ident = self.stack.pop()
            if ident:
                self.capturing.remove(ident)
                self.out[ident] = " ".join("".join(self.text[ident]).split())
            if open_tag == tag:
                break

    def handle_data(self, data):
        for ident in self.capturing:
            self.text[ident].append(data)


def dom(path):
    reader = DomReader()
    with open(path, encoding="utf-8") as f:
        reader.feed(f.read())
    reader.close()
    for key, value in reader.out.items():
        print("%s\t%s" % (key, value.replace("\t", " ").replace("\n", " ")))


# ---- fake admin listener ------------------------------------------------------------------------

# One "tick" of traffic, per route: (route label value, {status_class: count}, cumulative buckets).
# Summed over routes, each tick adds 100 requests, 3 of them 5xx, with cumulative bucket counts
# 0.005:20 0.01:60 0.025:90 0.05:98 0.1:100, so p50 = 8.75 ms, p90 = 25.0 ms, p99 = 75.0 ms.
BOUNDS = ["0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5",
          "5", "10", "+Inf"]
TICK = [
    ("site", {"2xx": 47, "5xx": 3}, [0, 0, 10, 30, 45, 49, 50]),
    ('say "hi" \\ now', {"2xx": 10}, [0, 0, 2, 6, 8, 9, 10]),
    ("-", {"4xx": 40}, [0, 0, 8, 24, 37, 40, 40]),
]


def escape_label(value):
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(ticks, with_cache):
    out = [
        "# HELP gatehouse_requests_total Requests by route, method and status class.",
        "# TYPE gatehouse_requests_total counter",
    ]
    for route, statuses, _ in TICK:
        for status_class, count in statuses.items():
            out.append(
                'gatehouse_requests_total{listener="main",route="%s",method="GET",status_class="%s"} %d'
                % (escape_label(route), status_class, count * ticks)
            )
    # Other labels in another order, a timestamp, and a zero series.
    out.append('gatehouse_requests_total{status_class="2xx",method="POST",route="site"} 0 1700000000000')
    out.append("# TYPE gatehouse_request_duration_seconds histogram")
    for route, _, cumulative in TICK:
        total = cumulative[-1]
        counts = cumulative + [total] * (len(BOUNDS) - len(cumulative))
        for le, count in zip(BOUNDS, counts):
            out.append(
                'gatehouse_request_duration_seconds_bucket{route="%s",le="%s"} %d'
                % (escape_label(route), le, count * ticks)
            )
        out.append('gatehouse_request_duration_seconds_sum{route="%s"} %.4f'
                   % (escape_label(route), 0.012 * total * ticks))
        out.append('gatehouse_request_duration_seconds_count{route="%s"} %d'
                   % (escape_label(route), total * ticks))
    out += [
        "# TYPE gatehouse_backend_up gauge",
        'gatehouse_backend_up{pool="app",backend="127.0.0.1:9001"} 1',
        'gatehouse_backend_up{pool="app",backend="127.0.0.1:9002"} 0',
        "# TYPE gatehouse_active_connections gauge",
        'gatehouse_active_connections{listener="main"} 3',
        'gatehouse_active_connections{listener="tls"} 2',
        "# Unrelated metrics that must be ignored",
        "process_cpu_seconds_total 1.25",
        "gatehouse_some_ratio NaN",
        'gatehouse_other_total{route="site",status_class="5xx"} +Inf',
        "gatehouse_requests_total_created 1.7e9",
        "this line is not a sample",
    ]
    if with_cache:
        out += [
            "# TYPE gatehouse_cache_hits_total counter",
            "gatehouse_cache_hits_total %d" % (3 * ticks),
            "# TYPE gatehouse_cache_misses_total counter",
            "gatehouse_cache_misses_total %d" % ticks,
        ]
    return "\n".join(out) + "\n"


POOLS = [
    {"name": "app", "balance": "RoundRobin", "backends": [
        {"address": "127.0.0.1:9001", "weight": 1, "backup": False, "status": "available",
         "in_flight": 2, "draining": False, "health_checked": True, "ejected_for_seconds": None,
         "ejections": 0, "latency_ms": 1.234},
        {"address": "127.0.0.1:9002", "weight": 2, "backup": False, "status": "down",
         "in_flight": 0, "draining": False, "health_checked": False, "ejected_for_seconds": None,
         "ejections": 1, "latency_ms": 0.0},
    ]},
    {"name": "api<b>x</b>", "balance": "LeastRequests", "backends": [
        {"address": "127.0.0.1:9101", "weight": 1, "backup": False, "status": "ejected",
         "in_flight": 0, "draining": False, "health_checked": None, "ejected_for_seconds": 12.5,
         "ejections": 3, "latency_ms": 250.0},
        {"address": "127.0.0.1:9102", "weight": 1, "backup": True, "status": "draining",
         "in_flight": 1, "draining": True, "health_checked": None, "ejected_for_seconds": None,
         "ejections": 0, "latency_ms": 3.5},
    ]},
]


def fake_admin(args):
    page = open(args.page, "rb").read()
    state = {"ticks": 5, "fetches": 0, "requests": 0, "errors": 0, "unauthorized": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *a):  # quiet
            pass

        def send(self, status, ctype, data):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            path = urlsplit(self.path).path
            if path == "/_state":  # for the test itself: no token, no side effects
                with lock:
                    data = json.dumps(state).encode()
                return self.send(200, "application/json", data)
            if path == "/":
                # A browser cannot send a bearer token when navigating, so the page itself (which
                # holds no data) is served without one; its fetches carry the token.
                return self.send(200, "text/html; charset=utf-8", page)
            if args.token and self.headers.get("Authorization") != "Bearer " + args.token:
                with lock:
                    state["unauthorized"] += 1
                return self.send(401, "text/plain; charset=utf-8", b"unauthorized\n")
            if path == "/metrics":
                with lock:
                    if args.mode == "live" and state["fetches"] > 0:
                        # Traffic varies (1, 2, 3, 2 ticks per poll) but keeps its shape.
                        state["ticks"] += (1, 2, 3, 2)[state["fetches"] % 4]
                    state["fetches"] += 1
                    ticks = state["ticks"]
                    state["requests"] = 100 * ticks
                    state["errors"] = 3 * ticks
                body = render_metrics(ticks, with_cache=args.mode == "live").encode()
                return self.send(200, "text/plain; version=0.0.4; charset=utf-8", body)
            if path == "/api/pools":
                return self.send(200, "application/json", json.dumps(POOLS).encode())
            return self.send(404, "text/plain; charset=utf-8", b"not found\n")

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ports")
    p.add_argument("count", type=int)
    sub.add_parser("totals")
    p = sub.add_parser("pool-status")
    p.add_argument("address")
    p = sub.add_parser("dom")
    p.add_argument("file")
    p = sub.add_parser("fake-admin", help="serve PAGE at /, fake /metrics and /api/pools")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--page", required=True)
    p.add_argument("--token", default="")
    p.add_argument("--mode", choices=["live", "static"], default="live",
                   help="live: counters grow by one tick per /metrics fetch, cache metrics present; "
                        "static: counters never change, no cache metrics")
    args = parser.parse_args()
    if args.command == "ports":
        ports(args.count)
    elif args.command == "totals":
        totals()
    elif args.command == "pool-status":
        pool_status(args.address)
    elif args.command == "dom":
        dom(args.file)
    else:
        fake_admin(args)


if __name__ == "__main__":
    main()
