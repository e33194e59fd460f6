#!/usr/bin/env python3
"""Builds the Markdown report of a bench/run.sh run from its raw results.

usage: report.py RESULTS.jsonl META.tsv

Every figure is the median over rounds, with the min-max range of requests/s next to it. Ratios
are Gatehouse's (and each target's) median divided by nginx's or HAProxy's median.
"""

import json
import statistics
import sys

# Keys are strings: scenario 5 has three parts, "5a", "5b" and "5c" (older .jsonl files have
# numbers, or only 5a and 5b).
SCENARIOS = {
    "1": "HTTP/1.1 keep-alive, 1 KiB body, 64 connections (wrk)",
    "2": "HTTP/1.1 keep-alive, 100 KiB body, 64 connections (wrk)",
    "3": "a new TCP connection per request (`Connection: close`), 1 KiB, 64 connections (wrk)",
    "4": "HTTP/2 h2c from the client, 1 KiB, 16 connections x 4 streams (h2load)",
    "5a": "HTTPS (TLS 1.3) keep-alive, HTTP/1.1, 1 KiB, 64 connections (wrk)",
    "5b": "HTTPS (TLS 1.3), a new TLS connection per request (`Connection: close`; wrk resumes "
    "the session from the proxy's ticket), 1 KiB, 64 connections (wrk)",
    "5c": "HTTPS (TLS 1.3), a full handshake per request (certificate, X25519, the proxy's ECDSA "
    "P-256 signature; no resumption), 1 KiB, 64 connections (bench/tools/handshake_client.rs)",
    "6": "cache hits: HTTP/1.1 keep-alive, 1 KiB cacheable body (`max-age=3600`), 64 connections "
    "(wrk); each proxy's cache on (nginx `proxy_cache` on tmpfs, HAProxy `cache`, Gatehouse's "
    "memory tier); direct = the origin serving the file",
}
NAMES = {
    "direct": "direct to origin",
    "nginx": "nginx",
    "haproxy": "HAProxy",
    "gatehouse": "Gatehouse",
    "gatehouse-b": "Gatehouse B",
}
ORDER = ["direct", "nginx", "haproxy", "gatehouse", "gatehouse-b"]
# What the performance issue (#9) sets targets for: the ratios in scenarios 1-4, reuse in 1, 2
# and 4. Other scenarios are shown against the same yardsticks, unjudged.
TARGET_SCENARIOS = {"1", "2", "3", "4"}
REUSE_SCENARIOS = {"1", "2", "4"}


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    return f"{a / b:.2f}x" if a is not None and b else "-"


def num(value, fmt):
    return "-" if value is None else format(value, fmt)


def mark(ok):
    return "yes" if ok else "**no**"


class Row:
    def __init__(self, records):
        self.records = records
        self.rps_all = [r["requests"] / (r["duration_us"] / 1e6) for r in records]
        self.rps = med(self.rps_all)
        self.p50 = med([r["p50_us"] / 1000 for r in records])
        self.p99 = med([r["p99_us"] / 1000 for r in records])
        proxied = records[0]["target"] != "direct"
        self.cpu = (
            med([r["proxy_cpu_ticks"] * 1e6 / r["clk_tck"] / max(r["requests"], 1) for r in records])
            if proxied
            else None
        )
        self.hwm = max(r["proxy_hwm_kib"] for r in records) / 1024 if proxied else None
        # How busy the proxy kept its CPU: near 100 % means the proxy was the bottleneck.
        self.busy = (
            med([r["proxy_cpu_ticks"] / r["clk_tck"] / (r["duration_us"] / 1e6) * 100 for r in records])
            if proxied
            else None
        )
        self.opened = med([r["upstream_opened"] for r in records])
        self.reuse = (
            med([1 - r["upstream_opened"] / max(r["requests"], 1) for r in records]) * 100
            if proxied
            else None
        )
        self.errors = sum(
            sum(v for k, v in r.items() if k.startswith("err_")) for r in records
        )


def paired_ab(records, idle_per_conn, say):
    """Gatehouse B against Gatehouse, round by round: the two ran back to back in every round,
    so each round's ratio compares them under the same machine conditions (this VM drifts by
    more between rounds than most single changes are worth)."""
    by_round = {}
    for r in records:
        if r["target"] in ("gatehouse", "gatehouse-b") and r["scenario"] in SCENARIOS:
            by_round.setdefault((r["scenario"], r["round"]), {})[r["target"]] = r
    pairs = {}
    for (scenario, _), both in by_round.items():
        if len(both) == 2:
            pairs.setdefault(scenario, []).append((both["gatehouse"], both["gatehouse-b"]))
    if not pairs:
        return

    def rps(r):
        return r["requests"] / (r["duration_us"] / 1e6)

    def cpu(r):
        return r["proxy_cpu_ticks"] / max(r["requests"], 1)

    def spread(values):
        return f"{med(values):.3f} ({min(values):.3f}-{max(values):.3f})"

    say("## A/B: Gatehouse B against Gatehouse (paired by round)")
    say("")
    say(
        "Each figure is B's value divided by Gatehouse's in the same round; median over rounds "
        "(min-max). Below 1.000 in CPU and p99, above 1.000 in req/s, is B being better."
    )
    say("")
    say("| scenario | rounds | req/s B / A | CPU per request B / A | p99 B / A |")
    say("|---|---:|---:|---:|---:|")
    for scenario in SCENARIOS:
        if scenario not in pairs:
            continue
        ps = pairs[scenario]
        say(
            f"| {scenario} | {len(ps)} | {spread([rps(b) / rps(a) for a, b in ps])} "
            f"| {spread([cpu(b) / cpu(a) for a, b in ps if cpu(a)])} "
            f"| {spread([b['p99_us'] / a['p99_us'] for a, b in ps if a['p99_us']])} |"
        )
    a, b = idle_per_conn("gatehouse"), idle_per_conn("gatehouse-b")
    if a and b:
        say("")
        say(f"Idle connection memory (scenario 7): B {b:.2f} KiB, Gatehouse {a:.2f} KiB per connection.")
    say("")


def main():
    records = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8") if line.strip()]
    for r in records:
        r["scenario"] = str(r["scenario"])
    meta = {}
    for line in open(sys.argv[2], encoding="utf-8"):
        key, _, value = line.rstrip("\n").partition("\t")
        meta[key] = value
    if meta.get("large_bytes"):
        # BENCH_LARGE_BYTES: scenario 2 ran with a body of that size instead of 100 KiB.
        SCENARIOS["2"] = SCENARIOS["2"].replace("100 KiB body", f"{int(meta['large_bytes']):,}-byte body")

    out = []
    say = out.append
    say(f"# Gatehouse benchmark, {meta.get('date', '?')}")
    say("")
    say(f"- Gatehouse commit: `{meta.get('commit', '?')}` (binary: `{meta.get('gatehouse_bin', '?')}`)")
    if meta.get("gatehouse_bin_b"):
        say(f"- Gatehouse B commit: `{meta.get('commit_b', '?')}` (binary: `{meta['gatehouse_bin_b']}`)")
    say(
        f"- Machine: {meta.get('cpu', '?')}, {meta.get('memory', '?')}, Linux {meta.get('kernel', '?')}; "
        f"load average {meta.get('loadavg_start', '?')} at the start, {meta.get('loadavg_end', '?')} at the end"
    )
    say(
        f"- Tools: nginx {meta.get('nginx', '?')}, HAProxy {meta.get('haproxy', '?')}, "
        f"wrk {meta.get('wrk', '?')}, h2load {meta.get('h2load', '?')}"
    )
    say(f"- Run: {meta.get('knobs', '?')}; took {meta.get('elapsed', '?')}")
    tls = [f"{NAMES[t]} {meta['tls_' + t]}" for t in ORDER if meta.get("tls_" + t)]
    if tls:
        say(
            "- Scenario 5: one self-signed ECDSA P-256 certificate for every proxy; negotiated with "
            f"OpenSSL {meta.get('openssl', '?')} (TLS 1.3, cipher, key exchange): " + "; ".join(tls)
            + ". No direct-to-origin row: the origins speak no TLS."
        )
    say("- Each proxy has one worker pinned to the proxy CPU; origins and load generator share the other.")
    say("- Figures are medians over rounds; `xnginx`/`xHAProxy` divide by that proxy's median.")
    say(
        "- `proxy CPU busy` is the proxy's CPU time over the run's wall time: near 100 % the proxy was "
        "the bottleneck; lower, the load CPU (client and origins) was, and req/s understates the proxy."
    )
    say("")

    rows = {}
    for scenario in SCENARIOS:
        for target in ORDER:
            selected = [r for r in records if r["scenario"] == scenario and r["target"] == target]
            if selected:
                rows[(scenario, target)] = Row(selected)

    idle = {}
    for target in ORDER:
        selected = [r for r in records if r["scenario"] == "7" and r["target"] == target]
        if selected:
            idle[target] = selected

    def idle_per_conn(target):
        if target not in idle:
            return None
        return med(
            [(r["rss_after_kib"] - r["rss_before_kib"]) / max(r["conns_open"], 1) for r in idle[target]]
        )

    # Targets summary first: it is what the numbers are for.
    if any(s == "gatehouse" for _, s in rows) or "gatehouse" in idle:
        say("## Gatehouse against the targets")
        say("")
        say(
            "| scenario | req/s xnginx (>= 1.20) | req/s xHAProxy (>= 1.00) "
            "| p99 / better of nginx, HAProxy (<= 1.00) | CPU/req xnginx (<= 0.80) "
            "| upstream reuse (> 99.9 % in 1, 2, 4) |"
        )
        say("|---|---|---|---|---|---|")
        for scenario in SCENARIOS:
            gh = rows.get((scenario, "gatehouse"))
            ng = rows.get((scenario, "nginx"))
            hp = rows.get((scenario, "haproxy"))
            if not gh:
                continue
            cells = [f"{scenario}"]
            judged = scenario in TARGET_SCENARIOS

            def judge(ok):
                return mark(ok) if judged else "(no target)"

            if ng:
                r = gh.rps / ng.rps
                cells.append(f"{r:.2f}x {judge(r >= 1.2)}")
            else:
                cells.append("-")
            if hp:
                r = gh.rps / hp.rps
                cells.append(f"{r:.2f}x {judge(r >= 1.0)}")
            else:
                cells.append("-")
            best = min([x.p99 for x in (ng, hp) if x] or [None]) if (ng or hp) else None
            if best:
                r = gh.p99 / best
                cells.append(f"{r:.2f} ({gh.p99:.2f} vs {best:.2f} ms) {judge(r <= 1.0)}")
            else:
                cells.append("-")
            if ng and ng.cpu:
                r = gh.cpu / ng.cpu
                cells.append(f"{r:.2f}x ({gh.cpu:.1f} vs {ng.cpu:.1f} us) {judge(r <= 0.8)}")
            else:
                cells.append("-")
            if scenario in REUSE_SCENARIOS:
                cells.append(f"{gh.reuse:.3f} % {mark(gh.reuse > 99.9)}")
            else:
                cells.append(f"{gh.reuse:.3f} % (no target)")
            say("| " + " | ".join(cells) + " |")
        if "gatehouse" in idle:
            per = idle_per_conn("gatehouse")
            others = ", ".join(
                f"{NAMES[t]} {idle_per_conn(t):.2f} KiB" for t in ("nginx", "haproxy") if t in idle
            )
            say("")
            say(
                f"Idle connection memory (scenario 7): Gatehouse {per:.2f} KiB per connection, "
                f"target <= 4 KiB: {mark(per <= 4)}" + (f" ({others})." if others else ".")
            )
        say("")

    paired_ab(records, idle_per_conn, say)

    for scenario, title in SCENARIOS.items():
        present = [t for t in ORDER if (scenario, t) in rows]
        if not present:
            continue
        ng = rows.get((scenario, "nginx"))
        hp = rows.get((scenario, "haproxy"))
        say(f"## Scenario {scenario}: {title}")
        say("")
        say(
            "| target | req/s | min-max | xnginx | xHAProxy | p50 ms | p99 ms | proxy CPU us/req "
            "| CPU xnginx | proxy CPU busy | peak RSS MiB | upstream conns opened | reuse | errors |"
        )
        say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for target in present:
            row = rows[(scenario, target)]
            opened = num(row.opened, ",.0f")
            if target == "direct":
                opened += " (client conns)"
            say(
                f"| {NAMES[target]} | {row.rps:,.0f} | {min(row.rps_all):,.0f}-{max(row.rps_all):,.0f} "
                f"| {ratio(row.rps, ng.rps if ng else None)} | {ratio(row.rps, hp.rps if hp else None)} "
                f"| {row.p50:.2f} | {row.p99:.2f} | {num(row.cpu, '.1f')} "
                f"| {ratio(row.cpu, ng.cpu if ng else None) if row.cpu else '-'} "
                f"| {num(row.busy, '.0f') + ' %' if row.busy is not None else '-'} "
                f"| {num(row.hwm, '.1f')} | {opened} "
                f"| {num(row.reuse, '.3f') + ' %' if row.reuse is not None else '-'} | {row.errors} |"
            )
        say("")

    cached = [r for r in records if r["scenario"] == "6" and r["target"] != "direct"]
    if cached:
        misses = ", ".join(
            f"{NAMES[t]} {sum(r['origin_requests'] for r in cached if r['target'] == t):,}"
            for t in ORDER
            if any(r["target"] == t for r in cached)
        )
        say(f"Scenario 6: origin requests during the measured runs (0 = every request a hit): {misses}.")
        say("")

    if idle:
        conns = max(r["conns_requested"] for rs in idle.values() for r in rs)
        say(f"## Scenario 7: {conns:,} idle keep-alive client connections")
        say("")
        say(
            "Fresh proxy process, warmed up like scenario 1; RSS (all of the proxy's "
            "processes) read from /proc before the connections are opened and once they are all idle."
        )
        say("")
        say("| target | KiB per connection | xnginx | xHAProxy | RSS before MiB | RSS with connections MiB | connections open | failed | still open at the end |")
        say("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for target in ORDER:
            if target not in idle:
                continue
            rs = idle[target]
            per = idle_per_conn(target)
            say(
                f"| {NAMES[target]} | {per:.2f} | {ratio(per, idle_per_conn('nginx'))} "
                f"| {ratio(per, idle_per_conn('haproxy'))} "
                f"| {med([r['rss_before_kib'] for r in rs]) / 1024:.1f} "
                f"| {med([r['rss_after_kib'] for r in rs]) / 1024:.1f} "
                f"| {med([r['conns_open'] for r in rs]):,.0f} | {sum(r['conns_failed'] for r in rs)} "
                f"| {med([r['conns_still_open'] for r in rs]):,.0f} |"
            )
        say("")

    http = [r for r in records if r["scenario"] in SCENARIOS]
    if http:
        foreign = []
        for r in http:
            total = r.get("proxy_cpu_total_ticks") or 0
            if total:
                foreign.append(max(0, r["proxy_cpu_busy_ticks"] - r["proxy_cpu_ticks"]) / total * 100)
        direct = [
            r["proxy_cpu_busy_ticks"] / r["proxy_cpu_total_ticks"] * 100
            for r in http
            if r["target"] == "direct" and r.get("proxy_cpu_total_ticks")
        ]
        say("## Noise")
        say("")
        say(
            "Share of the proxy CPU's time not spent in the proxy under test (kernel softirq work "
            f"for loopback traffic, and anything else running on the machine): median {med(foreign):.1f} %, "
            f"max {max(foreign):.1f} %."
            + (
                f" With no proxy running (direct-to-origin runs) that CPU was busy "
                f"{med(direct):.1f} % (median), max {max(direct):.1f} %: other work on the machine."
                if direct
                else ""
            )
        )
        say("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
