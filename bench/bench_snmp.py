"""Benchmark: dutyd's SNMP collector vs prometheus-snmp-exporter over one simulated fleet.

    python bench/bench_snmp.py [--agents 300] [--duration 8] [--fleet-procs 2] [--label-refresh 15m]

The fleet is --agents SNMP v2c agents on loopback (dutyd's codec-based responder, real SNMP
over UDP, one UDP port each) in --fleet-procs child processes; every agent serves a 48-port
switch (IF-MIB ifTable/ifXTable, sysUpTime) and a UPS (UPS-MIB), and caps replies at 1400
bytes as switches do. Then, side by side in one run and over the same agents:

  * dutyd: a child process running one SnmpCollector per agent (profile `ups`: a 10-OID GET;
    profile `switch`: sysUpTime + a walk of 48 ports, 9 columns (7 until the discard
    counters came for the network-status register), with ifName and ifDescr walked on the
    first poll only, as `label_refresh` (15 min) does; --label-refresh 0s walks them every
    poll, 11 columns), one shared context, with
    --concurrency polls in flight (each target polled again when its turn comes round), for
    --duration seconds. CPU is that
    process's own (time.process_time), the fleet is not counted.
  * the exporter: prometheus-snmp-exporter with bench/snmp_exporter.yml (modules `ups` and
    `if_mib`, the same OIDs in numeric form, ports labelled with ifName and ifDescr as dutyd
    labels them; also `if_mib_plain`, the walk without those label lookups), scraped at
    /snmp?target=...&module=... by --concurrency clients for --duration seconds. CPU is the
    exporter process's, from /proc/<pid>/stat; the scraping client is not counted.

It prints polls/s, CPU ms per poll and the ratio dutyd/exporter for each poll kind, and the
RSS of a dutyd poller with 1,000 targets configured (each polled once) and of the exporter.
Every loop is bounded by --duration or a count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COMMUNITY = "dutyd-bench"
PORTS = 48
EXPORTER = "prometheus-snmp-exporter"
EXPORTER_CONFIG = ROOT / "bench" / "snmp_exporter.yml"
MODES = {"ups": ("ups", "ups"), "switch": ("switch", "if_mib")}  # mode: (dutyd profile, module)
# Issue 15's bar: dutyd's CPU per poll as a share of the exporter's.
GOAL = {"ups": 0.2, "switch": 0.3}


# ----- child: the fleet --------------------------------------------------------------------


def fill(responder: Any, n: int) -> None:
    from dutyd.collectors.snmp import codec

    IF = (1, 3, 6, 1, 2, 1, 2, 2, 1)
    IFX = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)
    UPS = (1, 3, 6, 1, 2, 1, 33, 1)
    r = responder
    r.set((1, 3, 6, 1, 2, 1, 1, 1, 0), codec.T_OCTETS, b"dutyd bench agent")
    r.set((1, 3, 6, 1, 2, 1, 1, 3, 0), codec.T_TIMETICKS, 123456 + n)
    for i in range(1, PORTS + 1):
        r.set((*IF, 1, i), codec.T_INTEGER, i)
        r.set((*IF, 2, i), codec.T_OCTETS, f"GigabitEthernet1/0/{i}".encode())
        r.set((*IF, 7, i), codec.T_INTEGER, 1)
        r.set((*IF, 8, i), codec.T_INTEGER, 1 if i % 5 else 2)
        r.set((*IF, 14, i), codec.T_COUNTER32, i * 3)
        r.set((*IF, 20, i), codec.T_COUNTER32, i)
        r.set((*IFX, 1, i), codec.T_OCTETS, f"Gi1/0/{i}".encode())
        r.set((*IFX, 6, i), codec.T_COUNTER64, 10**12 * i + n)
        r.set((*IFX, 10, i), codec.T_COUNTER64, 3 * 10**11 * i + n)
        r.set((*IFX, 15, i), codec.T_GAUGE32, 1000)
    for oid, tag, value in (
        ((*UPS, 2, 1, 0), codec.T_INTEGER, 2),
        ((*UPS, 2, 2, 0), codec.T_INTEGER, 0),
        ((*UPS, 2, 3, 0), codec.T_INTEGER, 42),
        ((*UPS, 2, 4, 0), codec.T_INTEGER, 100),
        ((*UPS, 2, 7, 0), codec.T_INTEGER, 27),
        ((*UPS, 3, 3, 1, 3, 1), codec.T_INTEGER, 230),
        ((*UPS, 4, 1, 0), codec.T_INTEGER, 3),
        ((*UPS, 4, 4, 1, 5, 1), codec.T_INTEGER, 35),
        ((*UPS, 6, 1, 0), codec.T_GAUGE32, 0),
    ):
        r.set(oid, tag, value)


async def serve(count: int) -> None:
    from dutyd.agent.demo.snmp_responder import SnmpResponder

    responders = []
    for n in range(count):
        r = SnmpResponder(COMMUNITY)
        fill(r, n)
        await r.start()
        responders.append(r)
    print(json.dumps([r.port for r in responders]), flush=True)
    # Until the parent closes our stdin.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for r in responders:
        await r.stop()


# ----- child: dutyd's poller ---------------------------------------------------------------


def rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def collectors_for(
    ports: list[int], profile: str, count: int, label_refresh: str = "15m"
) -> tuple[Any, list[Any]]:
    from dutyd.collectors.base import CollectorContext
    from dutyd.collectors.snmp.collector import SnmpCollector, SnmpTarget

    context = CollectorContext()
    made = []
    for i in range(count):
        cfg = SnmpTarget.model_validate(
            {
                "name": f"dev{i}",
                "kind": "snmp",
                "address": f"127.0.0.1:{ports[i % len(ports)]}",
                "community": COMMUNITY,
                "profiles": [profile],
                "timeout": "3s",
                "max_repetitions": 25,
                "label_refresh": label_refresh,
            }
        )
        made.append(SnmpCollector(cfg, context))
    return context, made


async def dutyd_poll(
    ports: list[int], profile: str, duration: float, concurrency: int, label_refresh: str
) -> dict[str, Any]:
    from dutyd.collectors.base import Readings
    from dutyd.core.errors import CollectError

    context, collectors = collectors_for(ports, profile, len(ports), label_refresh)
    counts = {"polls": 0, "errors": 0, "samples": 0}
    errors: list[str] = []

    async def once(c: Any) -> None:
        readings = Readings({"target": c.config.name, "kind": "snmp"}, time.time())
        try:
            await c.collect(readings)
        except CollectError as exc:
            counts["errors"] += 1
            if len(errors) < 3:
                errors.append(exc.message)
            return
        counts["polls"] += 1
        counts["samples"] += len(readings.samples)

    # Warm-up: every target once (templates built, addresses resolved), not measured.
    for i in range(0, len(collectors), concurrency):
        await asyncio.gather(*(once(c) for c in collectors[i : i + concurrency]))
    counts.update(polls=0, errors=0, samples=0)
    end = time.monotonic() + duration
    # The same load shape as the exporter's: `concurrency` polls in flight, each target polled
    # by one worker at a time (a queue hands them round).
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for c in collectors:
        queue.put_nowait(c)

    async def worker() -> None:
        for _ in range(1_000_000):
            if time.monotonic() >= end:
                return
            c = queue.get_nowait()
            await once(c)
            queue.put_nowait(c)

    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(collectors)))))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    for c in collectors:
        await c.close()
    await context.close()
    return {**counts, "cpu": cpu, "wall": wall, "errors_sample": errors}


async def dutyd_rss(ports: list[int], count: int) -> dict[str, Any]:
    from dutyd.collectors.base import Readings

    before = rss_mib()
    half = count // 2
    ctx1, switches = collectors_for(ports, "switch", half)
    ctx2, upses = collectors_for(ports, "ups", count - half)
    ok = 0
    for batch in range(0, count, 64):
        group = (switches + upses)[batch : batch + 64]
        results = await asyncio.gather(
            *(c.collect(Readings({"target": "x"}, 0.0)) for c in group), return_exceptions=True
        )
        ok += sum(1 for r in results if r is None)
    after = rss_mib()
    for c in switches + upses:
        await c.close()
    await ctx1.close()
    await ctx2.close()
    return {"rss_before": before, "rss_after": after, "ok": ok, "targets": count}


# ----- parent ------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child(args: list[str], stdin: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def run_child_json(args: list[str], timeout: float) -> dict[str, Any]:
    proc = child(args)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise SystemExit(f"poller child {args[:2]} did not finish in {timeout:.0f}s") from None
    return json.loads(out.strip().splitlines()[-1])


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def scrape_exporter(
    port: int, module: str, agents: list[int], duration: float, concurrency: int
) -> dict[str, Any]:
    import aiohttp

    counts = {"polls": 0, "errors": 0}
    end = time.monotonic() + duration
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(target: int) -> str:
            url = f"http://127.0.0.1:{port}/snmp"
            params = {"target": f"127.0.0.1:{target}", "module": module}
            async with session.get(url, params=params) as resp:
                body = await resp.text()
                if resp.status != 200 or "snmp_scrape_pdus_returned" not in body:
                    raise RuntimeError(f"exporter answered {resp.status}: {body[:200]}")
                return body

        # Check once that the exporter really reads the agent, then warm up.
        sample = await one(agents[0])
        want = {
            "ups": "upsOutputSource 3",
            "if_mib": 'ifOperStatus{ifDescr="GigabitEthernet1/0/1",ifIndex="1",ifName="Gi1/0/1"}',
            "if_mib_plain": 'ifHCInOctets{ifIndex="48"}',
        }[module]
        if want not in sample:
            raise SystemExit(f"the exporter's {module} scrape lacks {want!r}:\n{sample[:800]}")

        async def worker(w: int) -> None:
            for k in range(1_000_000):
                if time.monotonic() >= end:
                    return
                try:
                    await one(agents[(w + k * concurrency) % len(agents)])
                    counts["polls"] += 1
                except (RuntimeError, aiohttp.ClientError, TimeoutError):
                    counts["errors"] += 1

        wall0 = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return {**counts, "wall": time.monotonic() - wall0}


def start_exporter(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which(EXPORTER)
    if binary is None:
        raise SystemExit(f"{EXPORTER} is not installed (apt-get install {EXPORTER})")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={EXPORTER_CONFIG}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    for _ in range(100):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the exporter did not start listening")


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=300, help="SNMP agents in the fleet")
    p.add_argument("--fleet-procs", type=int, default=2, help="processes serving the fleet")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    p.add_argument("--concurrency", type=int, default=64, help="polls/scrapes in flight")
    p.add_argument("--rss-targets", type=int, default=1000)
    p.add_argument(
        "--label-refresh",
        default="15m",
        help="dutyd's label_refresh for the switches (0s: names walked every poll, as the "
        "exporter's if_mib module does)",
    )
    p.add_argument("--role", default="", help=argparse.SUPPRESS)
    p.add_argument("--ports", default="", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="ups", help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.role == "serve":
        asyncio.run(serve(args.count))
        return
    if args.role in ("poll", "rss"):
        ports = json.loads(Path(args.ports).read_text())
        if args.role == "poll":
            result = asyncio.run(
                dutyd_poll(
                    ports,
                    MODES[args.mode][0],
                    args.duration,
                    args.concurrency,
                    args.label_refresh,
                )
            )
        else:
            result = asyncio.run(dutyd_rss(ports, args.count))
        print(json.dumps(result), flush=True)
        return

    fleet: list[subprocess.Popen[str]] = []
    exporter: subprocess.Popen[bytes] | None = None
    ports_file = Path(f"/tmp/dutyd-bench-snmp-{os.getpid()}.json")
    try:
        per = -(-args.agents // args.fleet_procs)
        ports: list[int] = []
        for k in range(args.fleet_procs):
            n = min(per, args.agents - k * per)
            proc = child(["--role", "serve", "--count", str(n)], stdin=True)
            fleet.append(proc)
            assert proc.stdout is not None
            ports += json.loads(proc.stdout.readline())
        ports_file.write_text(json.dumps(ports))
        print(
            f"fleet: {len(ports)} SNMP v2c agents (48-port switch + UPS each) in "
            f"{len(fleet)} processes; {args.duration:g}s per measurement",
            flush=True,
        )

        exporter_port = free_tcp_port()
        exporter = start_exporter(exporter_port)
        rows = []
        for mode in ("ups", "switch"):
            d = run_child_json(
                [
                    "--role",
                    "poll",
                    "--mode",
                    mode,
                    "--ports",
                    str(ports_file),
                    "--duration",
                    str(args.duration),
                    "--concurrency",
                    str(args.concurrency),
                    "--label-refresh",
                    args.label_refresh,
                ],
                timeout=args.duration * 4 + 60,
            )
            module = MODES[mode][1]
            cpu0 = proc_cpu(exporter.pid)
            e = asyncio.run(
                scrape_exporter(exporter_port, module, ports, args.duration, args.concurrency)
            )
            e["cpu"] = proc_cpu(exporter.pid) - cpu0
            plain = None
            if mode == "switch":
                cpu0 = proc_cpu(exporter.pid)
                plain = asyncio.run(
                    scrape_exporter(
                        exporter_port, "if_mib_plain", ports, args.duration, args.concurrency
                    )
                )
                plain["cpu"] = proc_cpu(exporter.pid) - cpu0
            rows.append((mode, d, e, plain))

        from dutyd.core.configtypes import parse_duration

        # dutyd walks the name columns only when label_refresh is due (exporter: every scrape).
        cols = "9 cols" if parse_duration(args.label_refresh) == 0 else "7+2 cols"
        label = {"ups": "UPS GET (10 OIDs)", "switch": f"48-port walk ({cols})"}
        print()
        print(f"{'poll':<22} {'who':<9} {'polls/s':>9} {'CPU ms/poll':>12} {'errors':>7}")
        for mode, d, e, plain in rows:
            d_ms = d["cpu"] * 1000 / max(1, d["polls"])
            e_ms = e["cpu"] * 1000 / max(1, e["polls"])
            print(
                f"{label[mode]:<22} {'dutyd':<9} {d['polls'] / d['wall']:>9.0f} "
                f"{d_ms:>12.3f} {d['errors']:>7}"
            )
            print(
                f"{'':<22} {'exporter':<9} {e['polls'] / e['wall']:>9.0f} "
                f"{e_ms:>12.3f} {e['errors']:>7}"
            )
            bar = GOAL[mode]
            verdict = f"goal <= {bar}x " + ("met" if d_ms <= bar * e_ms else "NOT met")
            print(f"{'':<22} {'ratio':<9} {'':>9} {d_ms / e_ms:>11.2f}x  dutyd/exporter: {verdict}")
            if plain is not None:
                p_ms = plain["cpu"] * 1000 / max(1, plain["polls"])
                rate = plain["polls"] / plain["wall"]
                print(
                    f"{'  (exporter, no label lookups)':<32} {rate:>9.0f} "
                    f"{p_ms:>12.3f} {plain['errors']:>7}   dutyd/this: {d_ms / p_ms:.2f}x"
                )
            if d["errors_sample"]:
                print(f"  dutyd errors, e.g.: {d['errors_sample'][0]}")
        r = run_child_json(
            ["--role", "rss", "--ports", str(ports_file), "--count", str(args.rss_targets)],
            timeout=120,
        )
        print()
        print(
            f"RSS, dutyd poller with {r['targets']} targets configured and polled once "
            f"({r['ok']} ok): {r['rss_after']:.1f} MiB (interpreter and imports: "
            f"{r['rss_before']:.1f} MiB)"
        )
        print(f"RSS, exporter after the run: {rss_mib(exporter.pid):.1f} MiB")
    finally:
        if exporter is not None:
            stop(exporter)
        for proc in fleet:
            if proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
        for proc in fleet:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                stop(proc)
        ports_file.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
