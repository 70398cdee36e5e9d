"""Scrape time of /metrics with 100,000 series in the store (issue 7: under one second).

Fills a LatestSamples the way a large site would (1,000 switches x 33 ports x 3 interface
samples + target_up), starts the daemon's real HttpServer on loopback and times GET /metrics
end to end (render, send, read the body), plain and gzipped as Prometheus asks. For
comparison it also times client_python's `generate_latest` on the same registry (the generic
path: one Metric/Sample object per series).

    python bench/bench_scrape.py [--series 100000] [--scrapes 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import statistics
import time

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest

from dutyd.collectors.base import Readings
from dutyd.core.latest import LatestSamples, TargetStatus
from dutyd.exporters.instrumentation import Instrumentation
from dutyd.exporters.prometheus import LatestExporter
from dutyd.web.server import HttpServer

PORTS_PER_SWITCH = 33
HELP = {
    "if_oper_up": "1 when the interface is operationally up (IF-MIB ifOperStatus)",
    "if_in_octets_total": "Octets received on the interface (IF-MIB ifHCInOctets)",
    "if_out_octets_total": "Octets sent on the interface (IF-MIB ifHCOutOctets)",
}


def fill(store: LatestSamples, series: int) -> int:
    now = time.time()
    per_target = PORTS_PER_SWITCH * 3 + 1
    targets = max(1, series // per_target)
    for t in range(targets):
        name = f"sw-{t:05d}"
        base = {"target": name, "kind": "snmp", "site": "hq", "room": f"R{t % 8}", "role": "switch"}
        # Built as a collector builds them (Readings: interned label sets).
        readings = Readings(base, now)
        readings.add("target_up", 1.0)
        for p in range(PORTS_PER_SWITCH):
            port = f"Gi1/0/{p + 1}"
            readings.add("if_oper_up", float(p % 5 != 0), port=port)
            readings.add("if_in_octets_total", 1e9 * t + 12345.0 * p, port=port)
            readings.add("if_out_octets_total", 2e9 * t + 54321.0 * p, port=port)
        store.replace_target(name, readings.samples)
        store.status[name] = TargetStatus(name, "snmp", up=True)
    return len(store)


async def scrape_times(url: str, scrapes: int, encoding: str) -> tuple[list[float], int, int]:
    """Seconds per scrape, bytes on the wire and exposition lines of the last one."""
    times: list[float] = []
    size = lines = 0
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for _ in range(scrapes):
            t0 = time.perf_counter()
            async with session.get(url, headers={"Accept-Encoding": encoding}) as resp:
                body = await resp.read()
            times.append(time.perf_counter() - t0)
            assert resp.status == 200, resp.status
            size = len(body)
            if resp.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            lines = body.count(b"\n")
    return times, size, lines


async def main(series: int, scrapes: int) -> None:
    store = LatestSamples()
    count = fill(store, series)
    registry = CollectorRegistry(auto_describe=False)
    Instrumentation(registry)
    registry.register(LatestExporter(lambda: store.samples(only_up=True), list, HELP))
    server = HttpServer(registry, lambda: (True, "ready"))
    await server.start()
    try:
        times, size, lines = await scrape_times(server.url + "/metrics", scrapes, "identity")
        gz_times, gz_size, _ = await scrape_times(server.url + "/metrics", scrapes, "gzip")
    finally:
        await server.stop()
    t0 = time.perf_counter()
    generic = generate_latest(registry)
    generic_s = time.perf_counter() - t0
    print(f"series in store:            {count}")
    print(f"exposition:                 {size / 1e6:.1f} MB, {lines} lines")
    print(
        f"GET /metrics (direct):      median {statistics.median(times):.3f} s, "
        f"min {min(times):.3f} s, max {max(times):.3f} s over {scrapes} scrapes"
    )
    print(
        f"GET /metrics (gzip, as Prometheus asks): median {statistics.median(gz_times):.3f} s, "
        f"max {max(gz_times):.3f} s, {gz_size / 1e6:.2f} MB on the wire"
    )
    print(f"generate_latest (generic):  {generic_s:.3f} s ({len(generic) / 1e6:.1f} MB)")
    worst = max(statistics.median(times), statistics.median(gz_times))
    verdict = "PASS" if worst < 1.0 else "FAIL"
    print(f"target: under 1 s per scrape of {count} series -> {verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.series, max(1, min(args.scrapes, 100))))
