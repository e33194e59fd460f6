#!/usr/bin/env python3
"""Turns h2load's output and per-request log (--log-file) into the same JSON fields wrk_json.lua prints.

h2load prints no percentiles, so p50/p90/p99 come from its --log-file: one line per request,
"start time (µs)<TAB>status<TAB>elapsed (µs)".

usage: parse_h2load.py H2LOAD_STDOUT H2LOAD_LOG
"""

import json
import re
import sys


def percentile(sorted_values, pct):
    if not sorted_values:
        return 0
    rank = max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


def main():
    stdout_path, log_path = sys.argv[1], sys.argv[2]
    text = open(stdout_path, encoding="utf-8", errors="replace").read()
    finished = re.search(r"finished in ([0-9.]+)(ms|s)", text)
    counts = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        text,
    )
    status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    traffic = re.search(r"traffic: .*?\((\d+)\) total", text)
    if not finished or not counts:
        sys.exit(f"parse_h2load: cannot read h2load output {stdout_path}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    elapsed = []
    with open(log_path, encoding="utf-8", errors="replace") as log:
        for line in log:
            fields = line.split()
            if len(fields) >= 3 and fields[1].isdigit() and 200 <= int(fields[1]) < 400:
                elapsed.append(int(fields[2]))
    elapsed.sort()
    non_ok = int(status.group(3)) + int(status.group(4)) if status else 0
    result = {
        "requests": int(counts.group(4)),
        "duration_us": int(seconds * 1_000_000),
        "bytes": int(traffic.group(1)) if traffic else 0,
        "p50_us": percentile(elapsed, 50),
        "p90_us": percentile(elapsed, 90),
        "p99_us": percentile(elapsed, 99),
        "max_us": elapsed[-1] if elapsed else 0,
        "mean_us": round(sum(elapsed) / len(elapsed), 1) if elapsed else 0,
        # "failed" already includes "errored" and "timeout"; 4xx/5xx answers count as done.
        "err_connect": 0,
        "err_read": int(counts.group(5)),
        "err_write": 0,
        "err_status": non_ok,
        "err_timeout": 0,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
