"""Benchmark: poll N Modbus TCP sensors on loopback; print polls/s, CPU ms per poll and RSS.

    python bench/bench_modbus.py [--targets 1000] [--servers 20] [--rounds 5]

The sensors are pyModbusTCP servers in a child process (so their threads' CPU is not counted
as the poller's); each target is one sensor: a distinct unit id and register block holding
temperature (int16 x0.1), humidity (uint16 x0.1) and dew point (float32), read in one request.
The poller runs N ModbusCollectors sharing one CollectorContext, with at most --concurrency
polls in flight, pinned to one core (the issue asks for figures "at one core").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

BLOCK = 4  # registers per sensor: temperature, humidity, dew point (2)


# ----- child process: the sensors ----------------------------------------------------------


def serve(servers: int, per_server: int, cores: set[int]) -> None:
    from pyModbusTCP.server import DataBank, ModbusServer

    if cores:
        os.sched_setaffinity(0, cores)  # before any thread starts: threads inherit it

    started: list[ModbusServer] = []
    ports: list[int] = []
    for s in range(servers):
        bank = DataBank(
            coils_size=0, d_inputs_size=0, h_regs_size=per_server * BLOCK, i_regs_size=0
        )
        for j in range(per_server):
            temp = round((21.0 + (s * per_server + j) % 50 / 10) * 10)
            dew = struct.unpack(">HH", struct.pack(">f", 11.5 + j % 7 / 10))
            bank.set_holding_registers(j * BLOCK, [temp, 480 + j % 20, *dew])
        for _ in range(20):  # bounded retries: a port may be taken between probe and bind
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            server = ModbusServer(host="127.0.0.1", port=port, no_block=True, data_bank=bank)
            try:
                server.start()
            except ModbusServer.NetworkError:
                continue
            started.append(server)
            ports.append(port)
            break
        else:
            raise SystemExit("no free loopback port")
    print(json.dumps({"ports": ports}), flush=True)
    sys.stdin.read()  # the parent closes our stdin when done (or dies)
    for server in started:
        server.stop()


# ----- parent process: the poller ----------------------------------------------------------


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def child_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_sensors(
    args: argparse.Namespace, per_server: int, cores: set[int]
) -> tuple[subprocess.Popen[str], list[int]]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--servers", str(args.servers),
         "--per-server", str(per_server), "--child-cores", ",".join(map(str, sorted(cores)))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], 30)
    line = child.stdout.readline() if ready else ""
    if not line:
        stop_sensors(child)
        raise SystemExit("the sensor process did not start")
    return child, json.loads(line)["ports"]


def stop_sensors(child: subprocess.Popen[str]) -> None:
    if child.stdin is not None:
        child.stdin.close()
    try:
        child.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(5)
    if child.stdout is not None:
        child.stdout.close()


async def poll_all(args: argparse.Namespace, ports: list[int], per_server: int, child_pid: int):
    from dutyd.collectors.base import CollectorContext, Readings
    from dutyd.collectors.modbus import ModbusCollector, ModbusTarget
    from dutyd.core.errors import CollectError

    context = CollectorContext()
    collectors = []
    for i in range(args.targets):
        server, block = i % len(ports), i // len(ports)
        base = block * BLOCK
        cfg = ModbusTarget(
            name=f"sensor-{i}",
            address=f"127.0.0.1:{ports[server]}",
            unit_id=block % 247 + 1,
            timeout=args.timeout,
            labels={"site": "bench", "room": f"R{server}"},
            registers=[
                {"name": "room_temperature_celsius", "address": base, "type": "int16",
                 "scale": 0.1, "unit": "°C"},
                {"name": "room_humidity_percent", "address": base + 1, "scale": 0.1},
                {"name": "room_dew_point_celsius", "address": base + 2, "type": "float32"},
            ],
        )  # fmt: skip
        collectors.append(ModbusCollector(cfg, context))
    limit = asyncio.Semaphore(args.concurrency)
    errors: dict[str, int] = {}
    samples = 0

    async def one(collector: ModbusCollector) -> None:
        nonlocal samples
        cfg = collector.config
        readings = Readings({"target": cfg.name, "kind": cfg.kind, **cfg.labels}, time.time())
        async with limit:
            try:
                await collector.collect(readings)
            except CollectError as exc:
                errors[exc.reason] = errors.get(exc.reason, 0) + 1
                if sum(errors.values()) <= 3:
                    print(f"  error: {exc}")
        samples += len(readings.samples)

    print(
        f"{args.targets} Modbus sensors on {len(ports)} pyModbusTCP servers "
        f"({per_server} units each, in child pid {child_pid}); "
        f"concurrency {args.concurrency}, poll thread pool {context.executor._max_workers}"
    )
    steady: list[tuple[float, float, float]] = []
    for r in range(args.rounds):
        samples, errors = 0, {}
        wall0, cpu0, child0 = time.perf_counter(), cpu_seconds(), child_cpu_seconds(child_pid)
        await asyncio.gather(*(one(c) for c in collectors))
        wall = time.perf_counter() - wall0
        cpu = cpu_seconds() - cpu0
        child_cpu = child_cpu_seconds(child_pid) - child0
        n = len(collectors)
        note = "connects + reads" if r == 0 else "reads over kept connections"
        print(
            f"round {r + 1}: {n / wall:7.0f} polls/s  {cpu * 1000 / n:5.3f} CPU ms/poll (poller)  "
            f"{child_cpu * 1000 / n:5.3f} CPU ms/poll (servers)  {samples} samples  "
            f"errors {errors or 0}  [{note}]"
        )
        if r > 0:
            steady.append((wall, cpu, n))
    if steady:
        wall = sum(s[0] for s in steady)
        cpu = sum(s[1] for s in steady)
        n = sum(s[2] for s in steady)
        print(
            f"steady state (rounds 2-{args.rounds}): {n / wall:.0f} polls/s, "
            f"{cpu * 1000 / n:.3f} CPU ms per poll -> one core sustains ~{n / cpu:.0f} polls/s "
            f"(= {n / cpu * 30:.0f} sensors at a 30 s interval)"
        )
    for collector in collectors:
        await collector.close()
    await context.close()
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"poller RSS {rss_mib():.1f} MiB now, {max_rss:.1f} MiB peak")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", type=int, default=1000)
    p.add_argument("--servers", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--cpu", type=int, default=0, help="core to pin the poller to (-1: no pin)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--per-server", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--child-cores", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.servers, args.per_server, {int(c) for c in args.child_cores.split(",") if c})
        return
    args.targets = max(1, min(args.targets, 100_000))
    args.rounds = max(1, min(args.rounds, 100))
    args.servers = max(1, min(args.servers, args.targets))
    per_server = -(-args.targets // args.servers)
    if per_server * BLOCK > 0x10000:
        raise SystemExit("too many targets per server; raise --servers")
    cores = os.sched_getaffinity(0)
    child_cores: set[int] = set()
    if args.cpu >= 0 and len(cores) > 1 and args.cpu in cores:
        # The poller on one core, the sensors on the others: figures are "at one core".
        # Pinned before any thread starts, since threads inherit their creator's affinity.
        child_cores = cores - {args.cpu}
        os.sched_setaffinity(0, {args.cpu})
        print(f"poller pinned to core {args.cpu}; sensors on cores {sorted(child_cores)}")
    child, ports = start_sensors(args, per_server, child_cores)
    try:
        asyncio.run(poll_all(args, ports, per_server, child.pid))
    finally:
        stop_sensors(child)


if __name__ == "__main__":
    main()
