"""Years of data in SQLite (issue 22, item 4): retention through the daemon's `Retention`
(configured keep times, small batches, the space given back), the WAL kept bounded, the
switch of an existing file to incremental vacuum, and the duty log read by alert on its
index. The per-table prune semantics on both stores are in tests/test_storage_contract.py."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

from dutyd.core.clock import FakeClock
from dutyd.duty.retention import RULE_EVENTS_MARGIN, Retention, rule_events_keep
from dutyd.rules.config import RulesConfig
from dutyd.rules.engine import RuleEngine
from dutyd.rules.packs import effective_rules
from dutyd.storage import EnvironmentReading, NewLogEntry, RetentionConfig, open_storage
from dutyd.storage.sqlite.database import JOURNAL_SIZE_LIMIT
from dutyd.storage.sqlite.migrations import MIGRATIONS

DAY = 86400.0
NOW = 1_750_000_000.0


def wal_size(wal: Path) -> int:
    return os.stat(wal).st_size  # a stat, not a blocking read


def engine_with_events_window(over: str) -> RuleEngine:
    rules = RulesConfig.model_validate(
        {
            "packs": [],
            "custom": [
                {
                    "name": "resets",
                    "metric": "if_resets_total",
                    "events": {"more_than": 3, "over": over},
                    "severity": "warning",
                    "summary": "{target} resets",
                }
            ],
        }
    )
    return RuleEngine(effective_rules(rules))


async def test_retention_round_prunes_by_keep_time_and_gives_space_back(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    engine = engine_with_events_window("7d")
    assert rule_events_keep(engine, None) == 7 * DAY + RULE_EVENTS_MARGIN
    async with open_storage(path) as store:
        big = {"note": "x" * 2000}
        # 3 years of duty log (kept: for ever by default) and of hourly environment rows.
        await store.log.append_many(
            [NewLogEntry(NOW - d * DAY, "alert.firing", "dutyd", "fp", big) for d in range(1095)]
        )
        await store.environment.record(
            [
                EnvironmentReading(NOW - h * 3600.0, "temp_celsius", {"sensor": f"s{s}"}, 20.0)
                for h in range(0, 3 * 365 * 24, 24)
                for s in range(3)
            ]
        )
        await store.rule_events.append(
            [("resets", {"target": "sw1"}, NOW - d * DAY, 1.0, float(d)) for d in range(30, 0, -1)]
        )
        silence = await store.overlays.add_silence(
            {}, NOW - 100 * DAY, "li", "old", NOW - 101 * DAY
        )
        retention = Retention(
            store, lambda: RetentionConfig(batch=50), lambda: engine, FakeClock(NOW)
        )
        counts = await retention.prune(NOW)
        assert "duty_log" not in counts  # for ever unless set
        assert counts["environment"] == 3 * (1095 - 731)  # 2 years kept
        assert counts["rule_events"] == 30 - 8  # the 7d window plus a day
        assert counts["overlays"] == 1
        assert len(await store.log.read(limit=None)) == 1095
        assert silence not in {s.id for s in await store.overlays.live_silences(0.0)}
        size_before = path.stat().st_size
        # The duty log with a keep time: old entries go, and the file shrinks.
        retention.config = lambda: RetentionConfig(duty_log=30 * DAY, batch=100)
        counts = await retention.prune(NOW)
        assert counts == {"duty_log": 1095 - 31}
        kept = sorted(e.timestamp for e in await store.log.read(limit=None))
        assert (kept[0], kept[-1], len(kept)) == (NOW - 30 * DAY, NOW, 31)
        assert path.stat().st_size < size_before / 3, (path.stat().st_size, size_before)


async def test_the_wal_is_truncated_once_no_reader_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    wal = Path(f"{path}-wal")
    async with open_storage(path) as store:
        reader = sqlite3.connect(path)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM duty_log").fetchall()  # a snapshot held open
        entry = {"note": "y" * 4000}
        for i in range(100):
            await store.log.append_many(
                [NewLogEntry(float(i), "k", "dutyd", "s", entry) for _ in range(10)]
            )
        held = wal_size(wal)
        assert held > JOURNAL_SIZE_LIMIT  # the reader keeps the WAL from restarting
        await store.compact()
        assert wal_size(wal) > 0  # still held
        reader.execute("COMMIT")
        reader.close()
        await store.compact()
        assert wal_size(wal) == 0
        assert len(await store.log.read(limit=None)) == 1000


def test_an_existing_file_is_switched_to_incremental_vacuum_and_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for number, script in enumerate(MIGRATIONS[:9], start=1):
        conn.executescript(f"BEGIN;\n{script};\nPRAGMA user_version = {number};\nCOMMIT;")
    conn.execute(
        "INSERT INTO duty_log (ts, kind, actor, subject, data) VALUES (1, 'k', 'a', 'fp', '{}')"
    )
    conn.executemany(
        "INSERT INTO environment_hourly (hour, name, series, min, max, last) VALUES (?,?,?,?,?,?)",
        [
            (3600.0, "room_temperature_celsius", '{"sensor":"a"}', 19.5, 24.0, 22.0),
            (7200.0, "room_temperature_celsius", '{"sensor":"a"}', 20.0, 26.5, 21.0),
            (7200.0, "room_humidity_percent", '{"sensor":"a"}', 40.0, 45.0, 41.0),
        ],
    )
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    conn.close()

    async def open_it() -> None:
        async with open_storage(path) as store:
            (entry,) = await store.log.read(subject="fp")
            assert entry.kind == "k"
            # The hourly environment rows came over to the compact table (migration 11).
            ranges = await store.environment.ranges(0.0, 3 * 3600.0)
            assert [(r.name, r.labels, r.min, r.max) for r in ranges] == [
                ("room_humidity_percent", {"sensor": "a"}, 40.0, 45.0),
                ("room_temperature_celsius", {"sensor": "a"}, 19.5, 26.5),
            ]

    asyncio.run(open_it())
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    # The alert-detail read (by subject) uses the index, not a scan of the log.
    plan = " ".join(
        str(r[-1])
        for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM duty_log WHERE subject = ? ORDER BY id LIMIT 1000",
            ("fp",),
        )
    )
    assert "duty_log_subject" in plan, plan
    conn.close()


async def test_the_wal_stays_near_its_limit_while_writing(tmp_path: Path) -> None:
    """Issue 22: on a 2 MB volume the WAL alone filled it (SQLite's checkpoint every 1,000
    pages, 4 MB, and a WAL never cut back)."""
    path = tmp_path / "d.db"
    wal = Path(f"{path}-wal")
    largest = 0
    async with open_storage(path) as store:
        for i in range(200):  # 8 MB of duty log, 40 KB a transaction
            await store.log.append_many(
                [NewLogEntry(float(i), "k", "dutyd", "s", {"note": "z" * 4000}) for _ in range(10)]
            )
            largest = max(largest, wal_size(wal))
    assert largest < JOURNAL_SIZE_LIMIT + 256 * 1024, largest
