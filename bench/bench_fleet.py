"""Whole-system benchmark: dutyd against the Prometheus stack, over one simulated room.

    python bench/bench_fleet.py [--sizes 100,1000] [--interval 60] [--faults 20] [--shards 2]

For each size, one run on loopback (bench/fleet: SNMP switches with 48 ports and UPS units,
NUT UPS units, Modbus room sensors, HTTP applications, SSH servers; see bench/fleet/spec.py
for the mix) watched at the same time by

  * dutyd alone (`dutyd run`, the duty pack, pages through an apprise json:// channel), and
  * two Prometheus stacks, "typical" and "tuned" (bench/fleet/configs.py STACK_SETTINGS):
    prometheus + prometheus-snmp-exporter + prometheus-blackbox-exporter +
    prometheus-alertmanager (Debian packages), pages through Alertmanager's webhook,

both at the same scrape/poll interval, with the same rule thresholds and `for`. One HTTP
receiver (this process) takes the pages of all three.

Timeline: warm-up (one interval + 20 s, every device polled), then the measurement window:
--faults faults injected one by one across one interval (alternately: a UPS goes on battery,
a switch goes silent), until every stack has paged every fault or --settle seconds after the
last one. Printed per process: CPU as a share of one core over the window (/proc/<pid>/stat),
RSS at the end and its peak (VmRSS, VmHWM); for dutyd its scheduler lag p50/p99 (from the
`dutyd_scheduler_lag_seconds` histogram, window only) and a /metrics scrape (time, series);
per stack: fault -> receiver latency p50/p99 and pages missed. Then the ratios.
Every process started here is stopped by its PID (process group) at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fleet.configs import STACK_SETTINGS, write_all  # noqa: E402
from bench.fleet.spec import FleetSpec  # noqa: E402

DEVICE_NAME = re.compile(r"\b(?:sw|ups|nut|room|app|srv)-\d{4}\b")
BINARIES = {
    "prometheus": "prometheus",
    "snmp": "prometheus-snmp-exporter",
    "blackbox": "prometheus-blackbox-exporter",
    "alertmanager": "prometheus-alertmanager",
}
CLK = os.sysconf("SC_CLK_TCK")


# ----- processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_fd_limit() -> None:
    """In each started process: the soft open-files limit up to the hard one, as a service
    unit's LimitNOFILE would (5,000 devices keep more than 1,024 connections open)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    rss = hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return rss, hwm


@dataclass
class Proc:
    name: str  # "dutyd", "typical/prometheus", "fleet-0", ...
    popen: subprocess.Popen[bytes]
    log: Path
    cpu0: float = 0.0

    @property
    def pid(self) -> int:
        return self.popen.pid


class Processes:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[Proc] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, **kw: Any
    ) -> Proc:
        log = self.directory / f"{name.replace('/', '-')}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                stdout=kw.pop("stdout", out),
                stderr=out,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,
                preexec_fn=raise_fd_limit,
                **kw,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def check_alive(self) -> None:
        for p in self.procs:
            if p.popen.poll() is not None:
                tail = p.log.read_text(errors="replace")[-1500:]
                raise SystemExit(f"{p.name} exited ({p.popen.returncode}):\n{tail}")

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in reversed(self.procs):
            try:
                p.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.popen.wait(5)


async def wait_http(url: str, within: float = 30.0) -> None:
    import aiohttp

    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with s.get(url) as r:
                    if r.status < 500:
                        return
            await asyncio.sleep(0.3)
    raise SystemExit(f"{url} did not answer in {within:.0f}s")


# ----- the pager: one receiver for every stack ---------------------------------------------


@dataclass
class Receiver:
    port: int = 0
    first: dict[tuple[str, str], float] = field(default_factory=dict)  # (stack, device) -> t
    pages: dict[str, int] = field(default_factory=dict)
    _runner: Any = None

    async def start(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/dutyd/{who}", self._dutyd)
        app.router.add_post("/alertmanager/{stack}", self._alertmanager)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def _seen(self, stack: str, devices: list[str]) -> None:
        now = time.time()
        self.pages[stack] = self.pages.get(stack, 0) + 1
        for d in devices:
            self.first.setdefault((stack, d), now)

    async def _dutyd(self, request: Any) -> Any:
        from aiohttp import web

        text = await request.text()
        self._seen("dutyd", DEVICE_NAME.findall(text))
        return web.Response(text="ok")

    async def _alertmanager(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.json()
        devices = [
            a.get("labels", {}).get("device", "")
            for a in body.get("alerts", [])
            if a.get("status") == "firing"
        ]
        self._seen(request.match_info["stack"], devices)
        return web.Response(text="ok")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# ----- figures -----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def lag_buckets(metrics: str) -> dict[float, float]:
    out = {}
    for m in re.finditer(
        r'^dutyd_scheduler_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', metrics, re.M
    ):
        out[float(m.group(1))] = float(m.group(2))
    return out


def histogram_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """Prometheus's histogram_quantile over the window's bucket increments."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return float("nan")
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for b, c in zip(bounds, counts, strict=True):
        if c >= rank:
            if b == float("inf"):
                return prev_bound
            return prev_bound + (b - prev_bound) * (rank - prev_count) / max(c - prev_count, 1e-9)
        prev_bound, prev_count = b, c
    return bounds[-2] if len(bounds) > 1 else float("nan")


async def fetch(url: str) -> tuple[str, float]:
    import aiohttp

    t0 = time.monotonic()
    limit = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=limit) as s, s.get(url) as r:
        text = await r.text()
    return text, time.monotonic() - t0


async def prom_value(port: int, query: str) -> float:
    text, _ = await fetch(f"http://127.0.0.1:{port}/api/v1/query?query={query}")
    result = json.loads(text)["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


# ----- one run -----------------------------------------------------------------------------


async def run_size(args: argparse.Namespace, size: int, directory: Path) -> dict[str, Any]:
    import aiohttp

    receiver = Receiver()
    await receiver.start()
    spec = FleetSpec(devices=size, interval=args.interval, timeout=10.0, shards=args.shards)
    spec.control_port = free_port()
    while any(
        not _port_free(spec.control_port + k) for k in range(1, spec.shards)
    ):  # consecutive control ports
        spec.control_port = free_port()
    dutyd_port = free_port()
    stack_ports = {s: {k: free_port() for k in BINARIES} for s in args.stacks}
    base = f"http://127.0.0.1:{receiver.port}"
    write_all(spec, directory, dutyd_port=dutyd_port, receiver=base, stack_ports=stack_ports)
    counts = spec.counts()
    print(f"\n== {size} devices: {counts}, interval {args.interval:g}s ==", flush=True)

    procs = Processes(directory)
    try:
        fleet = []
        for k in range(spec.shards):
            argv = [sys.executable, "-m", "bench.fleet", "serve", "--dir", str(directory)]
            fleet.append(
                procs.start(
                    f"fleet-{k}", [*argv, "--shard", str(k)], cwd=ROOT, stdout=subprocess.PIPE
                )
            )
        loop = asyncio.get_running_loop()
        for p in fleet:
            assert p.popen.stdout is not None
            line = await asyncio.wait_for(loop.run_in_executor(None, p.popen.stdout.readline), 300)
            if not line:
                procs.check_alive()
        print(f"fleet up in {spec.shards} processes", flush=True)

        dutyd_bin = Path(sys.executable).parent / "dutyd"
        procs.start("dutyd", [str(dutyd_bin), "run", "-c", str(directory / "dutyd.yaml")])
        stacks: dict[str, dict[str, Proc]] = {}
        for stack, ports in stack_ports.items():
            env = STACK_SETTINGS[stack]["env"]
            prom_dir = directory / "prometheus"
            binary = {k: shutil.which(v) for k, v in BINARIES.items()}
            missing = [BINARIES[k] for k, v in binary.items() if v is None]
            if missing:
                raise SystemExit(f"not installed: {', '.join(missing)} (apt-get install them)")
            listen = {k: f"--web.listen-address=127.0.0.1:{v}" for k, v in ports.items()}
            stacks[stack] = {
                "snmp_exporter": procs.start(
                    f"{stack}/snmp_exporter",
                    [
                        binary["snmp"],
                        f"--config.file={prom_dir / 'snmp.yml'}",
                        listen["snmp"],
                        "--log.level=warn",
                    ],
                    env,
                ),
                "blackbox_exporter": procs.start(
                    f"{stack}/blackbox_exporter",
                    [
                        binary["blackbox"],
                        f"--config.file={prom_dir / 'blackbox.yml'}",
                        listen["blackbox"],
                        "--log.level=warn",
                    ],
                    env,
                ),
                "alertmanager": procs.start(
                    f"{stack}/alertmanager",
                    [
                        binary["alertmanager"],
                        f"--config.file={prom_dir / f'alertmanager-{stack}.yml'}",
                        f"--storage.path={directory / f'am-{stack}'}",
                        listen["alertmanager"],
                        "--cluster.listen-address=",
                        "--log.level=warn",
                    ],
                    env,
                ),
                "prometheus": procs.start(
                    f"{stack}/prometheus",
                    [
                        binary["prometheus"],
                        f"--config.file={prom_dir / f'prometheus-{stack}.yml'}",
                        f"--storage.tsdb.path={directory / f'tsdb-{stack}'}",
                        listen["prometheus"],
                        "--log.level=warn",
                    ],
                    env,
                ),
            }
        # Loading and validating thousands of targets takes a while on a busy machine.
        await wait_http(f"http://127.0.0.1:{dutyd_port}/healthz", 300)
        for ports in stack_ports.values():
            await wait_http(f"http://127.0.0.1:{ports['prometheus']}/-/ready", 120)
            await wait_http(f"http://127.0.0.1:{ports['alertmanager']}/-/ready", 120)

        warmup = args.interval + 20
        print(f"warm-up {warmup:g}s ...", flush=True)
        await asyncio.sleep(warmup)
        procs.check_alive()
        up: dict[str, float] = {}
        metrics, _ = await fetch(f"http://127.0.0.1:{dutyd_port}/metrics")
        up["dutyd"] = sum(float(v) for v in re.findall(r"^target_up\{.*\} (\S+)$", metrics, re.M))
        for stack, ports in stack_ports.items():
            up[stack] = await prom_value(
                ports["prometheus"], 'sum(up{job=~"snmp_.*"})%2Bsum(probe_success)'
            )
        print("targets up after warm-up: " + ", ".join(f"{k} {v:.0f}" for k, v in up.items()))

        # ---- the window ----
        lag0 = lag_buckets(metrics)
        watched = [p for p in procs.procs if not p.name.startswith("fleet")]
        for p in watched:
            p.cpu0 = cpu_seconds(p.pid)
        fleet_cpu0 = sum(cpu_seconds(p.pid) for p in fleet)
        t0 = time.monotonic()

        plan = spec.plan()
        upses = [d for d in plan if d.kind == "snmp_ups"]
        switches = [d for d in plan if d.kind == "switch"]
        faults: list[tuple[str, str, int]] = []
        for i in range(args.faults):
            pool, mode = (upses, "break") if i % 2 == 0 else (switches, "silent")
            d = pool[(i // 2 * 7) % len(pool)]
            faults.append((d.name, mode, spec.shard_of(d)))
        injected: dict[str, float] = {}
        gap = args.interval / max(1, args.faults)
        async with aiohttp.ClientSession() as s:
            for name, mode, shard in faults:
                url = f"http://127.0.0.1:{spec.control_port + shard}/fault"
                async with s.post(url, json={"device": name, "mode": mode}) as r:
                    injected[name] = (await r.json())["at"]
                await asyncio.sleep(gap)
        deadline = time.monotonic() + args.settle
        stacks_all = ["dutyd", *stack_ports]
        while time.monotonic() < deadline:
            done = all((s, d) in receiver.first for s in stacks_all for d in injected)
            if done:
                break
            await asyncio.sleep(1)
        procs.check_alive()
        wall = time.monotonic() - t0

        metrics, scrape_s = await fetch(f"http://127.0.0.1:{dutyd_port}/metrics")
        series = sum(1 for line in metrics.splitlines() if line and not line.startswith("#"))
        lag1 = lag_buckets(metrics)
        rows: dict[str, dict[str, float]] = {}
        for p in watched:
            rss, hwm = memory_mib(p.pid)
            rows[p.name] = {
                "cpu": (cpu_seconds(p.pid) - p.cpu0) / wall * 100,
                "rss": rss,
                "hwm": hwm,
            }
        fleet_cpu = (sum(cpu_seconds(p.pid) for p in fleet) - fleet_cpu0) / wall * 100
        latency: dict[str, dict[str, float]] = {}
        for s in stacks_all:
            got = [
                receiver.first[(s, d)] - t for d, t in injected.items() if (s, d) in receiver.first
            ]
            latency[s] = {
                "p50": percentile(got, 0.5),
                "p99": percentile(got, 0.99),
                "received": len(got),
                "injected": len(injected),
            }
        result = {
            "devices": size,
            "stacks": list(stack_ports),
            "counts": counts,
            "interval": args.interval,
            "window": wall,
            "up": up,
            "procs": rows,
            "fleet_cpu": fleet_cpu,
            "lag_p50": histogram_quantile(0.5, lag0, lag1),
            "lag_p99": histogram_quantile(0.99, lag0, lag1),
            "metrics_scrape_s": scrape_s,
            "metrics_series": series,
            "latency": latency,
            "pages": dict(receiver.pages),
        }
        print_size(result)
        return result
    finally:
        procs.stop_all()
        await receiver.stop()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def stack_total(result: dict[str, Any], stack: str) -> dict[str, float]:
    rows = [v for k, v in result["procs"].items() if k.startswith(stack + "/")]
    return {k: sum(r[k] for r in rows) for k in ("cpu", "rss", "hwm")}


def print_size(r: dict[str, Any]) -> None:
    print(f"\nwindow {r['window']:.0f}s; fleet processes used {r['fleet_cpu']:.1f} % of a core")
    print(f"{'process':<34} {'CPU % core':>10} {'RSS MiB':>9} {'peak MiB':>9}")
    for name, v in r["procs"].items():
        print(f"{name:<34} {v['cpu']:>10.2f} {v['rss']:>9.1f} {v['hwm']:>9.1f}")
    d = r["procs"]["dutyd"]
    for stack in r["stacks"]:
        t = stack_total(r, stack)
        print(f"{stack + ' stack total':<34} {t['cpu']:>10.2f} {t['rss']:>9.1f} {t['hwm']:>9.1f}")
        print(
            f"{'  dutyd / ' + stack:<34} {d['cpu'] / t['cpu']:>9.2f}x {d['rss'] / t['rss']:>8.2f}x "
            f"{d['hwm'] / t['hwm']:>8.2f}x"
        )
    print(
        f"dutyd scheduler lag p50 {r['lag_p50'] * 1000:.1f} ms, p99 {r['lag_p99'] * 1000:.1f} ms; "
        f"/metrics {r['metrics_series']} series in {r['metrics_scrape_s']:.3f}s"
    )
    for s, lat in r["latency"].items():
        print(
            f"fault -> receiver, {s:<8} p50 {lat['p50']:6.1f}s  p99 {lat['p99']:6.1f}s  "
            f"({lat['received']:.0f}/{lat['injected']:.0f} paged)"
        )


def print_summary(results: list[dict[str, Any]]) -> None:
    print("\n== summary: CPU % of one core / RSS MiB; fault -> page p50/p99 s ==")
    print(
        f"{'devices':>7} {'who':<14} {'CPU %':>7} {'RSS':>7} {'p50':>6} {'p99':>6} "
        f"{'CPU x':>6} {'RSS x':>6}"
    )
    for r in results:
        d = r["procs"]["dutyd"]
        lat = r["latency"]["dutyd"]
        print(
            f"{r['devices']:>7} {'dutyd':<14} {d['cpu']:>7.2f} {d['rss']:>7.1f} "
            f"{lat['p50']:>6.1f} {lat['p99']:>6.1f}"
        )
        for stack in r["stacks"]:
            t = stack_total(r, stack)
            lat = r["latency"][stack]
            print(
                f"{'':>7} {'prom ' + stack:<14} {t['cpu']:>7.2f} {t['rss']:>7.1f} "
                f"{lat['p50']:>6.1f} {lat['p99']:>6.1f} {d['cpu'] / t['cpu']:>6.2f} "
                f"{d['rss'] / t['rss']:>6.2f}"
            )
    print("(CPU x, RSS x: dutyd / that stack)")


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix=f"dutyd-fleet-{size}-") as tmp:
            results.append(await run_size(args, size, Path(tmp)))
    if len(results) > 1:
        print_summary(results)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="100,1000", help="devices per run, comma-separated")
    p.add_argument("--interval", type=float, default=60.0, help="poll/scrape interval, seconds")
    p.add_argument("--faults", type=int, default=20, help="faults injected per run")
    p.add_argument(
        "--settle", type=float, default=200.0, help="max wait for pages after the last fault"
    )
    p.add_argument("--shards", type=int, default=2, help="processes serving the fleet")
    p.add_argument("--stacks", default="typical,tuned", help="Prometheus stacks to run")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.stacks = [s.strip() for s in args.stacks.split(",") if s.strip()]
    unknown = set(args.stacks) - set(STACK_SETTINGS)
    if unknown:
        p.error(f"--stacks: unknown {sorted(unknown)}; known: {', '.join(STACK_SETTINGS)}")
    results = asyncio.run(main_async(args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
