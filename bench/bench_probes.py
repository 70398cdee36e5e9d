"""Benchmark: 1,000 HTTP, 1,000 TCP (and 1,000 ICMP) probes on loopback; polls/s, CPU, RSS.

The HTTP server runs in a child process, so the CPU figure is the poller's alone. Each kind is
polled for a bounded number of rounds through the scheduler's `poll_once` (timeout, readings,
target_up), `--concurrency` polls in flight like the scheduler's global limit.

    python bench/bench_probes.py [--targets 1000] [--rounds 3] [--concurrency 256]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dutyd.agent.scheduler import Scheduler
from dutyd.collectors.base import Collector, CollectorContext
from dutyd.collectors.probe_http import HttpProbeCollector, HttpTarget
from dutyd.collectors.probe_icmp import IcmpProbeCollector, IcmpTarget
from dutyd.collectors.probe_tcp import TcpProbeCollector, TcpTarget

PAGE = "<html><body><h1>Duty portal OK</h1>" + "<p>shift roster line</p>" * 100 + "</body></html>"


def serve() -> None:
    """Child process: an aiohttp server on a free loopback port; prints the port, runs until
    its stdin closes (the parent exiting, however it exits, ends the child too)."""
    from aiohttp import web

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/", page)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)
        await runner.cleanup()

    asyncio.run(main())


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run_rounds(
    label: str, collectors: list[Collector], rounds: int, concurrency: int
) -> dict[str, Any]:
    scheduler = Scheduler(lambda _r: None)
    slots = asyncio.Semaphore(concurrency)
    failures: dict[str, int] = {}

    async def one(c: Collector) -> None:
        async with slots:
            result = await scheduler.poll_once(c)
        if not result.ok:
            failures[result.reason] = failures.get(result.reason, 0) + 1

    await asyncio.gather(*(one(c) for c in collectors))  # warm-up: sessions, sockets, caches
    failures.clear()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        await asyncio.gather(*(one(c) for c in collectors))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    polls = rounds * len(collectors)
    return {
        "kind": label,
        "polls": polls,
        "polls_per_s": polls / wall,
        "cpu_ms_per_poll": cpu * 1000 / polls,
        "one_core_polls_per_s": polls / cpu if cpu else float("inf"),
        "rss_mib": rss_mib(),
        "failures": failures,
    }


async def bench(args: argparse.Namespace, port: int) -> list[dict[str, Any]]:
    ctx = CollectorContext()
    n, common = args.targets, {"interval": 30, "timeout": 5}
    results = []
    try:
        http = [
            HttpProbeCollector(
                HttpTarget(
                    name=f"web{i}",
                    kind="http",
                    address=f"http://127.0.0.1:{port}/",
                    expected_text="Duty portal",
                    **common,
                ),
                ctx,
            )
            for i in range(n)
        ]
        results.append(await run_rounds("http", http, args.rounds, args.concurrency))
        tcp = [
            TcpProbeCollector(
                TcpTarget(name=f"port{i}", kind="tcp", address=f"127.0.0.1:{port}", **common),
                ctx,
            )
            for i in range(n)
        ]
        results.append(await run_rounds("tcp", tcp, args.rounds, args.concurrency))
        icmp = [
            IcmpProbeCollector(
                IcmpTarget(
                    name=f"host{i}",
                    kind="icmp",
                    address="127.0.0.1",
                    count=3,
                    packet_interval=0.01,
                    fallback_port=port,
                    **common,
                ),
                ctx,
            )
            for i in range(n)
        ]
        res = await run_rounds("icmp x3", icmp, args.rounds, args.concurrency)
        res["kind"] += f" ({icmp[0].mode})"
        results.append(res)
    finally:
        await ctx.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return 0

    # The soft limit on open files can be 1024; 256 probes in flight plus the server's need
    # fewer, but raise it where allowed so a bigger --concurrency does not hit EMFILE.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    child = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        started = time.perf_counter()
        results = asyncio.run(bench(args, port))
        total = time.perf_counter() - started
    finally:
        if child.stdin:
            child.stdin.close()
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)

    print(
        f"probes on loopback: {args.targets} targets x {args.rounds} rounds, "
        f"{args.concurrency} in flight, server in child pid {child.pid}, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    print(
        f"{'kind':<16}{'polls':>7}{'polls/s':>10}{'CPU ms/poll':>13}{'1-core polls/s':>16}"
        f"{'RSS MiB':>9}  failures"
    )
    for r in results:
        print(
            f"{r['kind']:<16}{r['polls']:>7}{r['polls_per_s']:>10.0f}{r['cpu_ms_per_poll']:>13.3f}"
            f"{r['one_core_polls_per_s']:>16.0f}{r['rss_mib']:>9.1f}  {r['failures'] or 'none'}"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.1f} MiB; total {total:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
