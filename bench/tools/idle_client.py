#!/usr/bin/env python3
"""Scenario 7 client: opens N keep-alive connections, sends one request on each, reads the whole
response, and keeps every connection open and idle.

When all requests are answered it writes "OPEN FAILED" to READY_FILE. On SIGUSR1 (or after
--hold seconds at most) it writes how many connections the server still holds open to
READY_FILE.final and exits, closing everything.

usage: idle_client.py HOST PORT COUNT READY_FILE [--path /1k] [--concurrency 100] [--hold 300]
"""

import argparse
import asyncio
import os
import signal


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("ready_file")
    parser.add_argument("--path", default="/1k")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--hold", type=float, default=300.0)
    args = parser.parse_args()

    request = f"GET {args.path} HTTP/1.1\r\nHost: bench.test\r\n\r\n".encode()
    gate = asyncio.Semaphore(args.concurrency)
    conns = []
    failures = 0

    async def open_one():
        nonlocal failures
        async with gate:
            writer = None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(args.host, args.port), 10
                )
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                await asyncio.wait_for(reader.readexactly(length), 10)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise ValueError(head.split(b"\r\n", 1)[0])
                conns.append((reader, writer))
            except (OSError, ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                failures += 1
                if writer is not None:
                    writer.close()

    await asyncio.gather(*(open_one() for _ in range(args.count)))
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        out.write(f"{len(conns)} {failures}\n")
    os.replace(tmp, args.ready_file)

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.hold)
    except asyncio.TimeoutError:
        pass
    still_open = sum(1 for reader, _ in conns if not reader.at_eof())
    with open(tmp, "w", encoding="utf-8") as out:
        out.write(f"{still_open}\n")
    os.replace(tmp, args.ready_file + ".final")
    for _, writer in conns:
        writer.close()


if __name__ == "__main__":
    asyncio.run(main())
