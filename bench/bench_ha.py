"""What high availability costs and buys, on a real PostgreSQL (Debian's server, started in a
temp dir like the tests do) with real dutyd processes on loopback:

1. Takeover time over N kills: two nodes; SIGKILL the active one, time until the other says
   `dutyd_ha_active 1`; restart the killed one as the standby; repeat. Median and max.
2. Outbox throughput, PostgreSQL vs SQLite: N messages queued in one batch, then delivered
   one by one the way the notifier does (claim with node and epoch, then mark delivered),
   by 16 concurrent senders; and without claims (a node alone) for comparison.
3. The CPU one node spends on HA: the same config (20 TCP targets every second on
   PostgreSQL) run alone, as the active node of a pair and as the standby; CPU seconds per
   minute from /proc over the same wall time.

    python -m bench.bench_ha [--kills 10] [--takeover 15] [--messages 2000] [--cpu-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from dutyd.storage import OutboxMessage, Storage
from dutyd.storage.postgres import PostgresStorage
from dutyd.storage.sqlite import SqliteStorage
from tests.daemon_fixtures import DaemonProcess
from tests.postgres_fixtures import PASSWORD, PostgresServer, postgres_server
from tests.test_ha import PGPASS_ENV, Port, Receiver, node_config, targets

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def start(home: Path, config: dict[str, Any]) -> DaemonProcess:
    home.mkdir(parents=True, exist_ok=True)
    return DaemonProcess(home, config, env={PGPASS_ENV: PASSWORD})


def is_active(d: DaemonProcess) -> bool:
    try:
        return d.metric_value("dutyd_ha_active") == 1.0
    except OSError:
        return False


def wait_until(check: Any, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(0.05)
    raise TimeoutError


# -- 1. takeover --------------------------------------------------------------------------------


def bench_takeover(pg: PostgresServer, tmp: Path, kills: int, takeover: float) -> list[float]:
    url = pg.create_database("bench_takeover")
    receiver = Receiver()
    receiver.start()
    port = Port()
    port.open()
    cluster = {"takeover": f"{takeover:g}s", "member_timeout": f"{max(6.0, takeover):g}s"}

    def config(name: str) -> dict[str, Any]:
        t = targets(port.port, ["svc"])
        return node_config(name, url, receiver, t, **cluster)

    nodes = {n: start(tmp / f"takeover-{n}-0", config(n)) for n in ("a", "b")}
    times: list[float] = []
    try:
        wait_until(lambda: any(is_active(d) for d in nodes.values()), 60)
        for i in range(kills):
            # At a random point of the renewal cycle (a restarted node's first round tends to
            # fall just after the active node's renewal: killing at once measures the worst).
            time.sleep(random.uniform(0, takeover / 6))
            name = next(n for n, d in nodes.items() if is_active(d))
            other = "b" if name == "a" else "a"
            nodes[name].peer.kill()
            took = wait_until(lambda o=other: is_active(nodes[o]), takeover * 4)
            times.append(took)
            print(f"  kill {i + 1}: {name} killed, {other} active after {took:.2f}s", flush=True)
            nodes[name].peer.stop()
            nodes[name] = start(tmp / f"takeover-{name}-{i + 1}", config(name))
            wait_until(lambda n=name: "standby" in nodes[n].get("/readyz")[1], 60)
    finally:
        for d in nodes.values():
            d.peer.stop()
        receiver.stop()
        port.close()
    return times


# -- 2. outbox throughput -----------------------------------------------------------------------


def message(i: int) -> OutboxMessage:
    payload = {"title": "ALERT", "body": f"host{i} down", "pages": [f"p{i}"], "due": 0.0}
    return OutboxMessage(f"m{i}", "Zhang Wei", "firing", "hook", payload, created=1.0, next_at=1.0)


async def outbox_rates(storage: Storage, n: int, claims: bool) -> tuple[float, float]:
    """(messages/s queued in one batch, messages/s delivered by 16 concurrent senders)."""
    await storage.open()
    try:
        t0 = time.perf_counter()
        await storage.outbox.enqueue([message(i) for i in range(n)])
        queued = n / (time.perf_counter() - t0)
        ids = iter(range(n))

        async def sender() -> None:
            for i in ids:
                mid = f"m{i}"
                if claims and not await storage.outbox.claim(mid, "bench", 1, 2.0, 60.0):
                    raise AssertionError(f"claim of {mid} refused")
                await storage.outbox.mark_delivered(mid, 3.0, [f"p{i}"])

        t0 = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(16)))
        delivered = n / (time.perf_counter() - t0)
        assert (await storage.outbox.stats(0.0)).depth == 0
        return queued, delivered
    finally:
        await storage.close()


def bench_outbox(pg: PostgresServer, tmp: Path, n: int) -> dict[str, tuple[float, float]]:
    out = {}
    for claims in (True, False):
        suffix = "claim+deliver" if claims else "deliver only"
        url = pg.create_database(f"bench_outbox_{int(claims)}")
        out[f"PostgreSQL, {suffix}"] = asyncio.run(
            outbox_rates(PostgresStorage(url, PASSWORD), n, claims)
        )
        out[f"SQLite, {suffix}"] = asyncio.run(
            outbox_rates(SqliteStorage(tmp / f"outbox-{int(claims)}.db"), n, claims)
        )
    return out


# -- 3. CPU -------------------------------------------------------------------------------------


def bench_cpu(pg: PostgresServer, tmp: Path, seconds: float) -> dict[str, float]:
    receiver = Receiver()
    receiver.start()
    port = Port()
    port.open()
    names = [f"svc{i:02d}" for i in range(20)]
    t = targets(port.port, names)
    solo_cfg = node_config("solo", pg.create_database("bench_cpu_solo"), receiver, t)
    solo_cfg["cluster"] = {"enabled": False}
    pair_url = pg.create_database("bench_cpu_pair")
    daemons = {
        "alone": start(tmp / "cpu-solo", solo_cfg),
        "pair, active": start(tmp / "cpu-a", node_config("a", pair_url, receiver, t)),
    }
    try:
        wait_until(lambda: is_active(daemons["pair, active"]), 60)
        daemons["pair, standby"] = start(tmp / "cpu-b", node_config("b", pair_url, receiver, t))
        time.sleep(10)  # past start-up
        before = {k: cpu_seconds(d.peer.pid) for k, d in daemons.items()}
        time.sleep(seconds)
        after = {k: cpu_seconds(d.peer.pid) for k, d in daemons.items()}
        assert is_active(daemons["pair, active"]) and not is_active(daemons["pair, standby"])
        return {k: (after[k] - before[k]) * 60.0 / seconds for k in daemons}
    finally:
        for d in daemons.values():
            with_cont(d)
        receiver.stop()
        port.close()


def with_cont(d: DaemonProcess) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(d.peer.pid, signal.SIGCONT)
    d.peer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--takeover", type=float, default=15.0, help="cluster.takeover (s)")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--cpu-seconds", type=float, default=60.0)
    args = parser.parse_args()
    with postgres_server() as pg, tempfile.TemporaryDirectory(prefix="bench-ha-") as d:
        tmp = Path(d)
        print(
            f"takeover: {args.kills} kills of the active node, cluster.takeover {args.takeover:g}s"
        )
        times = bench_takeover(pg, tmp, args.kills, args.takeover)
        print(
            f"takeover time: median {statistics.median(times):.2f}s, max {max(times):.2f}s "
            f"(bound {args.takeover:g}s)"
        )
        print(f"\noutbox throughput, {args.messages} messages:")
        for name, (queued, delivered) in bench_outbox(pg, tmp, args.messages).items():
            print(f"  {name:<32} queue {queued:8.0f} msg/s   deliver {delivered:7.0f} msg/s")
        print(f"\nCPU per node, 20 TCP targets every 1s, over {args.cpu_seconds:g}s:")
        cpu = bench_cpu(pg, tmp, args.cpu_seconds)
        for name, value in cpu.items():
            print(f"  {name:<16} {value:6.2f} CPU s/min ({value / 60 * 100:5.2f}% of a core)")
        extra = max(cpu["pair, active"], cpu["pair, standby"]) - cpu["alone"]
        print(f"  HA costs a node {extra:+.2f} CPU s/min ({extra / 60 * 100:+.2f}% of a core)")


if __name__ == "__main__":
    main()
