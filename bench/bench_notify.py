"""Notification latency: from an alert's firing event to a webhook receiver getting the page,
through the whole pipeline (escalation, grouping window, SQLite outbox, apprise json://),
on loopback. Prints median and p99 for single alerts and for a burst of 1,000.

    python -m bench.bench_notify [--single 50] [--burst 1000] [--receiver-delay 0] [--default-gc]

The single-alert figure is shown with the default grouping window (250 ms, which is most of
it) and with grouping off. The burst has each alert on its own site (1,000 messages, the
worst case; alerts of one site would go out as one message) with the rate limit raised; every
message goes to the same person (one on duty), so delivery order per person is what limits
parallelism. `--receiver-delay` makes the receiver answer each POST that many ms after taking
it, as a gateway across a WAN does (a page counts as arrived when taken). The process runs with
`dutyd run`'s garbage-collector policy (`core/gc_policy.py`), as the daemon does;
`--default-gc` keeps CPython's default thresholds (figures before 2026-11-26 were taken so).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from dutyd.core import gc_policy
from dutyd.core.records import AlertEvent, AlertState, labels_of
from dutyd.exporters.instrumentation import Instrumentation
from dutyd.notify.config import EscalationConfig, NotifyConfig, OncallConfig
from dutyd.notify.service import NotifyService
from dutyd.storage import open_storage
from tests.test_notify_delivery import Receiver

HOST = re.compile(r"host(\d+) unreachable")


class SlowReceiver(Receiver):
    """A receiver whose answer takes `delay` seconds (a round trip to a remote gateway)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def _hook(self, request):
        response = await super()._hook(request)
        await asyncio.sleep(self.delay)
        return response


def alert(n: int) -> AlertEvent:
    now = time.time()
    return AlertEvent(
        fingerprint=f"bench{n}",
        rule="host_down",
        labels=labels_of({"target": f"host{n}", "site": f"site{n}"}),
        state=AlertState.FIRING,
        previous=AlertState.PENDING,
        severity="critical",
        summary=f"host{n} unreachable",
        value=0.0,
        active_since=now,
        timestamp=now,
    )


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def run(
    db: Path, group_wait: float, single: int, burst: int, delay: float = 0.0
) -> dict[str, list[float]]:
    receiver = SlowReceiver(delay) if delay else Receiver()
    await receiver.start()
    storage = open_storage(db)
    await storage.open()
    service = NotifyService(
        OncallConfig.model_validate(
            {"pairs": [["Ops"]], "people": [{"name": "Ops", "contacts": ["hook"]}]}
        ),
        EscalationConfig.model_validate(
            {"policies": [{"name": "all", "steps": [{"after": 0, "oncall": True}]}]}
        ),
        NotifyConfig.model_validate(
            {
                "channels": {
                    "hook": {"url": receiver.url(), "rate_limit": {"count": 100000, "per": 1}}
                },
                "group_wait": group_wait,
            }
        ),
        storage,
        Instrumentation(CollectorRegistry()),
    )
    await service.start()
    out: dict[str, list[float]] = {"single": [], "burst": []}
    try:
        for n in range(single):
            receiver.received.clear()
            receiver.arrived.clear()
            t0 = time.perf_counter()
            await service(alert(n))
            await receiver.wait_for(1, 10)
            out["single"].append(receiver.arrived[0] - t0)
        if burst:
            receiver.received.clear()
            receiver.arrived.clear()
            sent: dict[int, float] = {}
            for n in range(100000, 100000 + burst):
                sent[n] = time.perf_counter()
                await service(alert(n))
            await receiver.wait_for(burst, 120)
            for r, at in zip(receiver.received, receiver.arrived, strict=True):
                m = HOST.search(r["body"]["title"])
                assert m is not None
                out["burst"].append(at - sent[int(m.group(1))])
    finally:
        await service.stop()
        await storage.close()
        await receiver.stop()
    return out


def show(name: str, values: list[float]) -> None:
    if values:
        print(
            f"{name:<40} n={len(values):<5} median {statistics.median(values) * 1000:7.1f} ms"
            f"   p99 {pct(values, 99) * 1000:7.1f} ms   max {max(values) * 1000:7.1f} ms"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=50)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--receiver-delay", type=float, default=0.0, help="ms per answer")
    parser.add_argument("--default-gc", action="store_true", help="not the daemon's GC policy")
    args = parser.parse_args()
    if not args.default_gc:
        gc_policy.configure_for_daemon()  # as `dutyd run` does at start-up
    delay = args.receiver_delay / 1000
    with tempfile.TemporaryDirectory() as tmp:
        default = await run(Path(tmp) / "a.db", 0.25, args.single, 0, delay)
        off = await run(Path(tmp) / "b.db", 0.0, args.single, args.burst, delay)
    show("one alert, grouping window 250 ms", default["single"])
    show("one alert, grouping off", off["single"])
    show(f"burst of {args.burst} messages to one person", off["burst"])


if __name__ == "__main__":
    asyncio.run(main())
