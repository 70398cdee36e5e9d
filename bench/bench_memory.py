"""Where dutyd's memory goes over a simulated room (bench/fleet), daemon in-process.

    python bench/bench_memory.py [--devices 1000] [--interval 60] [--wait 80] [--top 25]

The room (bench/fleet, default mix) runs in --shards child processes. dutyd runs in a child
process of its own (the room's config, `Daemon` from dutyd.agent.daemon), twice:

  1. plain: RSS before the daemon starts and after --wait seconds (every target polled at least
     once), three /metrics scrapes (time, series, bytes), and the live objects by type
     (gc.get_objects: count and shallow bytes), so the figures are the daemon's as it runs;
  2. tracemalloc (--frames, default 1: grouping by line needs no more, and more frames slow
     the daemon until polls time out): the allocations alive after --wait seconds (and every
     target up) that were made since the daemon was built, grouped by source line and by
     file, with bytes per /metrics series and per target. tracemalloc slows the daemon and
     adds its own overhead, so its RSS is not quoted.

Nothing is optimised here: the figures say where the memory is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import linecache
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fleet.configs import write_all  # noqa: E402
from bench.fleet.spec import FleetSpec  # noqa: E402


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# The scraping client runs in a process of its own: reading a 20 MB body and splitting it into
# lines in the daemon's process would leave the client's garbage in the RSS measured.
_SCRAPER = """
import sys, time, urllib.request
t0 = time.monotonic()
lines = comments = size = 0
last = b"\\n"
with urllib.request.urlopen(sys.argv[1], timeout=60) as r:
    while chunk := r.read(1 << 16):
        size += len(chunk)
        lines += chunk.count(b"\\n")
        comments += (last + chunk).count(b"\\n#")
        last = chunk[-1:]
print(time.monotonic() - t0, lines - comments, size)
"""


async def scrape(port: int) -> tuple[float, int, int]:
    """One /metrics scrape from another process: (seconds until the last byte, series, bytes).
    The seconds include the client's reading, which a dedicated scraper would do faster."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SCRAPER,
        f"http://127.0.0.1:{port}/metrics",
        stdout=subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    took, series, size = out.split()
    return float(took), int(series), int(size)


def objects_by_type(top: int) -> list[tuple[str, int, int]]:
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for o in gc.get_objects():
        name = type(o).__qualname__
        counts[name] += 1
        sizes[name] += sys.getsizeof(o)
    return [(n, counts[n], sizes[n]) for n, _ in sizes.most_common(top)]


def short(filename: str) -> str:
    for marker in ("/site-packages/", "/wt-fleet/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


async def daemon_child(
    directory: Path, mode: str, wait: float, top: int, frames: int
) -> dict[str, Any]:
    from dutyd.agent.config import load_config
    from dutyd.agent.daemon import Daemon

    settings = load_config(directory / "dutyd.yaml")
    port = settings.http.port
    targets = len(settings.targets)
    gc.collect()
    rss0 = rss_mib()
    if mode == "tracemalloc":
        tracemalloc.start(frames)
    daemon = Daemon(settings)
    task = asyncio.create_task(daemon.run())
    await asyncio.sleep(wait)
    # tracemalloc slows every allocation: wait (bounded) until every target has answered, so
    # both modes hold the same series.
    latest = daemon.latest
    deadline = time.monotonic() + 3 * settings.targets[0].interval
    while time.monotonic() < deadline:
        if sum(1 for s in latest.status.values() if s.up) >= targets:
            break
        await asyncio.sleep(2)
    up = sum(1 for s in latest.status.values() if s.up)
    out: dict[str, Any] = {"mode": mode, "targets": targets, "up": up}
    if mode == "tracemalloc":
        gc.collect()
        snap = tracemalloc.take_snapshot()
        traced, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        snap = snap.filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<*")]
        )
        _took, series, _size = await scrape(port)
        by_line = snap.statistics("lineno")
        by_file = snap.statistics("filename")
        out.update(
            traced_mib=traced / 2**20,
            peak_mib=peak / 2**20,
            series=series,
            lines=[
                (
                    short(s.traceback[0].filename),
                    s.traceback[0].lineno,
                    s.size,
                    s.count,
                    linecache.getline(s.traceback[0].filename, s.traceback[0].lineno).strip(),
                )
                for s in by_line[:top]
            ],
            files=[(short(s.traceback[0].filename), s.size, s.count) for s in by_file[:top]],
        )
    else:
        gc.collect()
        out["rss_before_mib"] = rss0
        out["rss_mib"] = rss_mib()
        scrapes = [await scrape(port) for _ in range(3)]
        out["scrapes"] = scrapes
        out["series"] = scrapes[-1][1]
        out["rss_after_scrapes_mib"] = rss_mib()
        out["objects"] = objects_by_type(top)
    daemon.request_stop()
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await asyncio.wait_for(task, 30)
    return out


def report(plain: dict[str, Any], traced: dict[str, Any]) -> None:
    targets, series = plain["targets"], plain["series"]
    print(f"\n== dutyd, {targets} targets, {series} series on /metrics ==")
    print(f"targets up when measured: plain {plain['up']}, tracemalloc {traced['up']}")
    grown = plain["rss_mib"] - plain["rss_before_mib"]
    print(
        f"RSS {plain['rss_mib']:.1f} MiB ({plain['rss_before_mib']:.1f} MiB before the daemon "
        f"was built: interpreter, imports, config; {grown:.1f} MiB grown = "
        f"{grown * 2**20 / series:.0f} B per series, {grown * 1024 / targets:.1f} KiB per "
        f"target); after 3 scrapes {plain['rss_after_scrapes_mib']:.1f} MiB"
    )
    for took, n, size in plain["scrapes"]:
        print(f"/metrics scrape: {took:.3f}s, {n} series, {size / 2**20:.1f} MiB")
    print("\nlive objects by type (shallow sizes; gc-tracked objects only):")
    print(f"{'type':<28} {'count':>10} {'MiB':>8}")
    for name, count, size in plain["objects"]:
        print(f"{name:<28} {count:>10} {size / 2**20:>8.1f}")
    ts = traced["series"] or series
    print(
        f"\ntracemalloc: {traced['traced_mib']:.1f} MiB alive, allocated since the daemon was built"
        f" (peak {traced['peak_mib']:.1f}) = {traced['traced_mib'] * 2**20 / ts:.0f} B per series,"
        f" {traced['traced_mib'] * 1024 / targets:.1f} KiB per target"
    )
    print(f"\n{'top allocation sites (line)':<62} {'MiB':>7} {'B/series':>9} {'B/target':>9}")
    for filename, lineno, size, count, code in traced["lines"]:
        where = f"{filename}:{lineno}"
        print(
            f"{where[-62:]:<62} {size / 2**20:>7.2f} {size / ts:>9.1f} {size / targets:>9.0f}"
            f"  ({count} blocks)\n      {code[:110]}"
        )
    print(f"\n{'by file':<62} {'MiB':>7} {'B/series':>9}")
    for filename, size, _count in traced["files"]:
        print(f"{filename[-62:]:<62} {size / 2**20:>7.2f} {size / ts:>9.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--interval", type=float, default=60.0)
    p.add_argument("--wait", type=float, default=80.0, help="seconds the daemon runs first")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--frames", type=int, default=1, help="tracemalloc frames per allocation")
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--role", default="", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="plain", help=argparse.SUPPRESS)
    p.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "daemon":
        import logging

        logging.basicConfig(level=logging.WARNING)
        result = asyncio.run(daemon_child(args.dir, args.mode, args.wait, args.top, args.frames))
        print(json.dumps(result), flush=True)
        return

    from bench.bench_fleet import free_port

    with tempfile.TemporaryDirectory(prefix="dutyd-memory-") as tmp:
        directory = Path(tmp)
        # subnet 1: beside a bench_fleet.py room
        spec = FleetSpec(devices=args.devices, interval=args.interval, shards=args.shards, subnet=1)
        spec.control_port = free_port()
        write_all(spec, directory, dutyd_port=free_port(), receiver="http://127.0.0.1:9")
        fleet = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.fleet", "serve", "--dir", tmp, "--shard", str(k)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            for k in range(args.shards)
        ]
        results = {}
        try:
            for f in fleet:
                assert f.stdout is not None
                if not f.stdout.readline():
                    raise SystemExit("a fleet shard did not start")
            print(f"fleet: {spec.counts()}; daemon runs {args.wait:g}s per mode", flush=True)
            child_argv = [sys.executable, __file__, "--role", "daemon", "--wait", str(args.wait)]
            child_argv += ["--top", str(args.top), "--frames", str(args.frames)]
            for mode in ("plain", "tracemalloc"):
                child = subprocess.run(
                    [*child_argv, "--mode", mode, "--dir", tmp],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=args.wait * 4 + 180,
                )
                if child.returncode != 0 or not child.stdout.strip():
                    raise SystemExit(f"daemon child ({mode}) failed:\n{child.stderr[-2000:]}")
                results[mode] = json.loads(child.stdout.strip().splitlines()[-1])
        finally:
            for f in fleet:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(f.pid, signal.SIGTERM)
            for f in fleet:
                try:
                    f.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(f.pid, signal.SIGKILL)
                    f.wait(5)
    report(results["plain"], results["tracemalloc"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
