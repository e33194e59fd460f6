#!/usr/bin/env python3
"""Summarises a callgrind profile per request: where the instructions go by component, the top
functions (inlined pieces merged by function name), and who calls memcpy and malloc.

usage: callgrind_summary.py CALLGRIND_OUT_FILE REQUESTS

Instructions are attributed to the function they ran in (after inlining: code of `core` inlined
into a hyper function counts for hyper), grouped by that function's crate.
"""

import collections
import re
import signal
import subprocess
import sys

LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\*|<|>)?\s*(.*)$")

CRATES = {
    "gatehouse": "gatehouse (src/)",
    "hyper": "hyper (HTTP/1 codec, dispatch, client connection)",
    "hyper_util": "hyper-util (auto server, legacy client + pool)",
    "http": "http (HeaderMap, names, values, URIs)",
    "httparse": "httparse",
    "tokio": "tokio (scheduler, I/O driver, timers, sync)",
    "bytes": "bytes",
    "futures_util": "futures-util (combinators)",
    "core": "Rust core/alloc/std",
    "alloc": "Rust core/alloc/std",
    "std": "Rust core/alloc/std",
}


def component(function):
    if re.search(r"mem(cpy|move|set)", function):
        return "memcpy/memmove/memset (libc)"
    if re.search(r"^(_int_)?(malloc|free|realloc|calloc)$|malloc_consolidate|^cfree|tcache|unlink_chunk", function):
        return "malloc/free (glibc)"
    if "DefaultHasher" in function or "sip::" in function:
        return "SipHash (std HashMap)"
    owner = re.search(r"([a-z_][a-z0-9_]*)::", function)
    if owner:
        return CRATES.get(owner.group(1), owner.group(1) + " (crate)")
    if function.startswith("0x"):
        return "unnamed (no symbols)"
    return "C functions (the program itself, libc, OpenSSL...)"


def split(entry):
    entry = re.sub(r"\s+\[[^\]]*\]$", "", entry.strip())
    entry = re.sub(r"\s+\(\d[\d,]*x\)$", "", entry)
    path, _, function = entry.partition(":")
    return path, function or path


def annotate(path, *args):
    return subprocess.run(
        ["callgrind_annotate", "--threshold=100", *args, path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    path, requests = sys.argv[1], int(sys.argv[2])
    text = annotate(path)
    total = None
    by_component = collections.Counter()
    by_function = collections.Counter()
    in_list = False
    for line in text.splitlines():
        if "PROGRAM TOTALS" in line:
            total = int(line.split()[0].replace(",", ""))
            continue
        if line.startswith("Ir") and "file:function" in line:
            in_list = True
            continue
        if line.startswith("-- Auto-annotated"):
            break
        match = LINE.match(line)
        if not (in_list and match):
            continue
        count = int(match.group(1).replace(",", ""))
        entry = match.group(3)
        file_path, function = split(entry)
        by_component[component(function)] += count
        by_function[function] += count
    if not total:
        sys.exit("callgrind_summary: no PROGRAM TOTALS in the profile")

    per = lambda n: n / requests  # noqa: E731
    print(f"{total:,} instructions over {requests:,} requests: **{per(total):,.0f} per request** (user space only).")
    print()
    print("| component (by the function the instructions ran in) | instructions/request | share |")
    print("|---|---:|---:|")
    for name, count in by_component.most_common():
        if count / total < 0.001:
            continue
        print(f"| {name} | {per(count):,.0f} | {count / total * 100:.1f} % |")
    print()
    print("Top functions (self cost, inlined pieces merged):")
    print()
    print("| function | instructions/request | share |")
    print("|---|---:|---:|")
    for function, count in by_function.most_common(20):
        short = function if len(function) <= 110 else function[:107] + "..."
        short = short.replace("|", "\\|")
        print(f"| `{short}` | {per(count):,.0f} | {count / total * 100:.1f} % |")
    print()

    tree = annotate(path, "--tree=caller")
    for target, label in (
        (r"\*\s+.*:__mem(cpy|move)_avx_unaligned_erms\b", "memcpy"),
        (r"\*\s+.*malloc\.c:malloc \[", "malloc"),
    ):
        block = []
        lines = tree.splitlines()
        for index, line in enumerate(lines):
            if re.search(target, line):
                back = index - 1
                while back >= 0 and lines[back].strip() and "<" in lines[back]:
                    block.append(lines[back])
                    back -= 1
                break
        callers = collections.Counter()
        for line in block:
            match = LINE.match(line)
            if match:
                callers[split(match.group(3))[1]] += int(match.group(1).replace(",", ""))
        if callers:
            print(f"Largest callers of {label} (instructions/request spent in {label} for them):")
            print()
            for function, count in callers.most_common(8):
                short = function if len(function) <= 120 else function[:117] + "..."
                print(f"- {per(count):,.0f}: `{short}`")
            print()


if __name__ == "__main__":
    main()
