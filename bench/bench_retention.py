"""Benchmark: a simulated year of the example site's SQLite database, with retention.

    python bench/bench_retention.py [--days 365] [--devices 1000] [--sensors 50]
        [--alerts-per-day 20] [--duty-log-keep DAYS] [--no-retention]
    python bench/bench_retention.py --detail-rows 1000000

Writes what dutyd writes over `--days` on a fake clock, through the real storage
repositories (`dutyd.storage`) and the real retention round (`dutyd.duty.retention`), run
once per simulated hour as the daemon runs it, plus the WAL checkpoint the daemon runs:

- the room environment: `--sensors` sensors x (temperature, humidity), their hourly
  min/max/last rows (the recorder upserts the same hourly rows every minute; the rows, not the
  upserts, make the file, so one upsert per hour of min, max and last is written here);
- the duty log: `--alerts-per-day` alerts, each with the entries the journal and the
  notification service write (pending, firing, escalation, two sends, acknowledged,
  resolved, escalation, two sends), with the journal's payloads; a daemon start/stop a week;
- the outbox: each page queued, then delivered (delivered ids kept 7 days, as dutyd does);
- rule events: the counters of `events` rules (one per 20 devices: the duty pack's virus
  outbreak count of each firewall) stepping up to 3 times on half of the days;
- a silence and a maintenance window a week; the devices' boot times.

Then times the reads dutyd makes (the alert detail, the status page's tail, the live
silences and windows, the outbox, the rule events read at start; and those of `dutyd report`,
a process of its own: the shift diary's environment and log) over the year-old database,
each repeated (wall-clock median and slowest, median CPU time), and prints the file size
(database + WAL) at each month's end.
Retention defaults apply (environment 2 years, duty log for ever, rule events past the
longest window, overlays 90 days); `--duty-log-keep` sets the duty log's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dutyd.core.clock import FakeClock
from dutyd.duty.report import REPORT_KINDS
from dutyd.duty.retention import Retention
from dutyd.rules.config import RulesConfig
from dutyd.rules.engine import RuleEngine
from dutyd.rules.packs import effective_rules
from dutyd.storage import (
    EnvironmentReading,
    NewLogEntry,
    OutboxMessage,
    RetentionConfig,
    Storage,
    open_storage,
)

DAY = 86400.0
HOUR = 3600.0
START = 1_735_689_600.0  # 2025-01-01T00:00Z
PEOPLE = ("Li Na", "Zhou Min")


def alert_data(n: int, target: str, state: str) -> dict[str, object]:
    """A duty-log payload as the journal writes it."""
    return {
        "rule": "ups_on_battery",
        "labels": {"target": target, "kind": "snmp", "site": "hq", "room": "A", "role": "ups"},
        "summary": f"UPS {target} is on battery ({n})",
        "summaries": {"en": f"UPS {target} is on battery", "zh": f"UPS {target} 正在使用电池供电"},
        "value": 1.0,
        "severity": "critical",
        "active_since": START,
        "state": state,
        "notify": True,
        "muted_reason": "",
        "note": "",
        "red_line": False,
    }


async def simulate_day(
    store: Storage, day: int, rng: random.Random, args: argparse.Namespace
) -> None:
    t0 = START + day * DAY
    entries: list[NewLogEntry] = []
    for a in range(args.alerts_per_day):
        fired = t0 + rng.uniform(0, DAY - 2 * HOUR)
        target = f"ups-{rng.randrange(args.devices):04d}"
        fp = f"{day:04d}{a:04x}{rng.getrandbits(32):08x}"
        resolved = fired + rng.uniform(120, 3600)
        entries += [
            NewLogEntry(fired - 60, "alert.pending", "dutyd", fp, alert_data(a, target, "pending")),
            NewLogEntry(fired, "alert.firing", "dutyd", fp, alert_data(a, target, "firing")),
            NewLogEntry(
                fired,
                "escalation.firing",
                "dutyd",
                fp,
                {"step": 0, "recipients": list(PEOPLE), "rule": "ups_on_battery", "target": target},
            ),
            NewLogEntry(
                fired + 90, "alert.acknowledged", "li", fp, alert_data(a, target, "firing")
            ),
            NewLogEntry(resolved, "alert.resolved", "dutyd", fp, alert_data(a, target, "resolved")),
            NewLogEntry(
                resolved,
                "escalation.resolved",
                "dutyd",
                fp,
                {"step": 0, "recipients": list(PEOPLE), "rule": "ups_on_battery", "target": target},
            ),
        ]
        for at, kind in ((fired, "firing"), (resolved, "resolved")):
            rows = [
                OutboxMessage(
                    f"{fp}-{kind}-{i}",
                    person,
                    kind,
                    f"hook{i}",
                    {
                        "title": f"ALERT: UPS {target} is on battery",
                        "body": "x" * 300,
                        "pages": [f"{fp}|{kind}|{person}"],
                        "fingerprints": [fp],
                        "due": at,
                    },
                    [],
                    created=at + i * 1e-3,
                    next_at=at,
                )
                for i, person in enumerate(PEOPLE)
            ]
            await store.outbox.enqueue(rows)
            for i, row in enumerate(rows):
                info = {"channel": row.channel, "recipient": row.recipient, "kind": kind}
                info.update(fingerprints=[fp], attempts=1)
                await store.outbox.mark_delivered(
                    row.id,
                    at + 1 + i,
                    row.payload["pages"],
                    NewLogEntry(at + 1 + i, "notify.sent", "dutyd", row.id, info),
                )
    if day % 7 == 0:
        entries += [
            NewLogEntry(t0 + 100, "daemon.stop", "dutyd", "", {}),
            NewLogEntry(t0 + 110, "daemon.start", "dutyd", "", {"targets": args.devices}),
        ]
        await store.overlays.add_silence(
            {"target": "sw-0001"}, t0 + 2 * HOUR, "li", "firmware upgrade", t0
        )
        await store.overlays.add_window(
            ["ups-0001"], {}, t0 + DAY / 2, t0 + DAY / 2 + HOUR, "zhou", "battery swap", t0
        )
        entries.append(NewLogEntry(t0, "silence.add", "li", "1", {"reason": "firmware"}))
    entries.sort(key=lambda e: e.timestamp)
    await store.log.append_many(entries)
    # Rule events: the `events` counter of one device in 20 steps, on `--event-days` of the
    # days, up to 3 times that day.
    steps = []
    for d in range(0, args.devices, 20):
        for k in range(rng.randrange(0, 4) if rng.random() < args.event_days else 0):
            steps.append(
                (
                    "virus_outbreaks_red_line",
                    {"target": f"fw-{d:04d}", "kind": "snmp"},
                    t0 + k * 6 * HOUR,
                    1.0,
                    float(day * 4 + k),
                )
            )
    await store.rule_events.append(steps)


async def environment_hour(store: Storage, ts: float, sensors: int, rng: random.Random) -> None:
    readings = []
    for s in range(sensors):
        labels = {"target": f"room-{s:04d}", "kind": "modbus", "site": "hq", "sensor": "inlet"}
        for name, mid in (("room_temperature_celsius", 23.0), ("room_humidity_percent", 45.0)):
            for offset in (5.0, 1800.0, 3500.0):  # min, max and last of the hour
                readings.append(
                    EnvironmentReading(ts + offset, name, labels, mid + rng.gauss(0, 1))
                )
    await store.environment.record(readings)


async def timed(
    what: str,
    func,  # type: ignore[no-untyped-def]
    repeat: int,
    results: dict[str, tuple[float, float, float]],
) -> None:
    """Wall-clock median and slowest of `repeat` calls, and the median CPU time of the
    process (every thread: the database's included), the sturdier figure on a shared machine."""
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        await func()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    results[what] = (statistics.median(wall), max(wall), statistics.median(cpu))


def size_of(path: Path) -> int:
    return sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if os.path.exists(p))


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(22)
    tmp = Path(tempfile.mkdtemp(prefix="dutyd-bench-retention-"))
    path = tmp / "dutyd.db"
    rules = RulesConfig.model_validate({"packs": ["duty"]})
    engine = RuleEngine(effective_rules(rules))
    cfg = RetentionConfig(duty_log=args.duty_log_keep * DAY if args.duty_log_keep else None)
    t_start = time.perf_counter()
    async with open_storage(path) as store:
        await store.boot_times.save(
            {(f"dev-{d:04d}", "sysUpTime"): START - 86400.0 * (d % 30) for d in range(args.devices)}
        )
        retention = Retention(store, lambda: cfg, lambda: engine, FakeClock(START))
        deleted: dict[str, int] = {}
        print(f"simulating {args.days} days into {path}")
        print("month  size_MB  (database + WAL)")
        for day in range(args.days):
            await simulate_day(store, day, rng, args)
            for h in range(24):
                now = START + day * DAY + h * HOUR
                await environment_hour(store, now, args.sensors, rng)
                if not args.no_retention:
                    for table, n in (await retention.prune(now)).items():
                        deleted[table] = deleted.get(table, 0) + n
            await store.outbox.forget_sent(START + (day + 1) * DAY - 7 * DAY)
            await store.compact()  # the daemon's truncating checkpoint (every minute there)
            if (day + 1) % 30 == 0 or day + 1 == args.days:
                print(f"{(day + 1) // 30:5d}  {size_of(path) / 1e6:7.1f}")
        end = START + args.days * DAY
        # The reads, on the year-old database.
        fps = [
            e.subject
            for e in await store.log.read(kinds=["alert.firing"], limit=None, newest_first=True)
        ]
        sample = [fps[i] for i in range(0, len(fps), max(1, len(fps) // 50))]
        reads: dict[str, tuple[float, float, float]] = {}

        async def detail() -> None:
            for fp in sample[:5]:
                await store.log.read(subject=fp, limit=1000)

        await timed("alert detail (duty log by alert, x5)", detail, 10, reads)
        await timed(
            "shift diary: environment of 12 h",
            lambda: store.environment.ranges(end - 12 * HOUR, end),
            20,
            reads,
        )
        await timed(
            "week diary: environment of 7 d",
            lambda: store.environment.ranges(end - 7 * DAY, end),
            10,
            reads,
        )
        await timed(
            "shift diary: duty log of 12 h",
            lambda: store.log.read(
                since=end - 12 * HOUR, until=end, kinds=REPORT_KINDS, limit=None
            ),
            20,
            reads,
        )
        await timed(
            "status page: log tail of 24 h",
            lambda: store.log.read(since=end - DAY, limit=20, newest_first=True),
            20,
            reads,
        )
        await timed("live silences", lambda: store.overlays.live_silences(end), 20, reads)
        await timed(
            "windows for red lines",
            lambda: store.overlays.windows_ending_after(end - DAY),
            20,
            reads,
        )
        await timed(
            "rule events at start", lambda: store.rule_events.load(end - 365 * DAY), 5, reads
        )
        await timed("outbox due", lambda: store.outbox.due(end, 128), 20, reads)
        await timed("outbox stats", lambda: store.outbox.stats(end), 20, reads)
        await timed("retention round (nothing due)", lambda: retention.prune(end), 5, reads)
    took = time.perf_counter() - t_start
    # Row counts read from the file itself (after the store closed).
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    tables = ["duty_log", "environment_hours", "rule_events", "silences", "maintenance_windows"]
    rows = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
    rows["outbox_sent"] = conn.execute("SELECT COUNT(*) FROM outbox_sent").fetchone()[0]
    conn.close()
    print(f"\nfinal size: {size_of(path) / 1e6:.1f} MB (database + WAL) after {args.days} days")
    print("rows:", ", ".join(f"{k} {v:,}" for k, v in rows.items()))
    print("deleted by retention:", ", ".join(f"{k} {v:,}" for k, v in deleted.items()) or "none")
    print(f"{'read':42s} {'median':>9s} {'slowest':>9s} {'CPU':>9s}")
    for what, (median, worst, cpu) in reads.items():
        print(f"  {what:40s} {median * 1e3:6.2f} ms {worst * 1e3:6.2f} ms {cpu * 1e3:6.2f} ms")
    print(f"(simulation took {took:.0f} s)")
    shutil.rmtree(tmp)


async def alert_detail_at(rows: int) -> None:
    """The alert-detail read (the duty log of one alert) in a log of `rows` entries, with the
    index by alert and without it (as before issue 22)."""
    rng = random.Random(1)
    tmp = Path(tempfile.mkdtemp(prefix="dutyd-bench-detail-"))
    path = tmp / "dutyd.db"
    data = alert_data(0, "ups-0001", "firing")
    async with open_storage(path) as store:
        for b in range(0, rows, 10_000):
            await store.log.append_many(
                [
                    NewLogEntry(
                        START + b + i, "alert.firing", "dutyd", f"{rng.getrandbits(64):016x}", data
                    )
                    for i in range(min(10_000, rows - b))
                ]
            )
        fp = (await store.log.read(limit=1, newest_first=True))[0].subject
        results: dict[str, tuple[float, float, float]] = {}
        await timed("with the index", lambda: store.log.read(subject=fp, limit=1000), 20, results)
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX duty_log_subject")
    conn.close()
    async with open_storage(path, read_only=True) as store:
        await timed("without (before)", lambda: store.log.read(subject=fp, limit=1000), 5, results)
    print(f"alert detail in a duty log of {rows:,} entries:")
    for what, (median, worst, cpu) in results.items():
        figures = f"median {median * 1e3:8.2f} ms, slowest {worst * 1e3:8.2f} ms"
        print(f"  {what:20s} {figures}, CPU {cpu * 1e3:8.2f} ms")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--sensors", type=int, default=50)
    parser.add_argument("--alerts-per-day", type=int, default=20)
    parser.add_argument("--duty-log-keep", type=float, default=0.0, help="days; 0: for ever")
    parser.add_argument("--no-retention", action="store_true")
    parser.add_argument(
        "--event-days", type=float, default=0.5, help="share of days an events counter steps"
    )
    parser.add_argument(
        "--detail-rows",
        type=int,
        default=0,
        help="instead: time the alert-detail read in a duty log of this many entries",
    )
    args = parser.parse_args()
    asyncio.run(alert_detail_at(args.detail_rows) if args.detail_rows else main(args))
