"""The room environment's hourly min/max/last in SQLite."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from dutyd.storage.records import EnvironmentRange, EnvironmentReading
from dutyd.storage.repositories import EnvironmentRepository
from dutyd.storage.rows import to_json
from dutyd.storage.sqlite.database import SqliteDatabase, transaction

HOUR = 3600.0


class SqliteEnvironment(EnvironmentRepository):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def record(self, readings: Sequence[EnvironmentReading]) -> None:
        rows = [
            (r.timestamp - r.timestamp % HOUR, r.name, to_json(r.labels), r.value) for r in readings
        ]
        if not rows:
            return

        def upsert(c: sqlite3.Connection) -> None:
            with transaction(c):
                c.executemany(
                    "INSERT INTO environment_hourly (hour, name, series, min, max, last) "
                    "VALUES (?1, ?2, ?3, ?4, ?4, ?4) ON CONFLICT (hour, name, series) DO UPDATE "
                    "SET min = MIN(min, excluded.min), max = MAX(max, excluded.max), "
                    "last = excluded.last",
                    rows,
                )

        await self.db.run(upsert)

    async def ranges(self, start: float, end: float) -> list[EnvironmentRange]:
        hour0 = start - start % HOUR
        rows = await self.db.run(
            lambda c: c.execute(
                "SELECT name, series, MIN(min), MAX(max) FROM environment_hourly "
                "WHERE hour >= ? AND hour < ? GROUP BY name, series ORDER BY series, name",
                (hour0, end),
            ).fetchall()
        )
        return [EnvironmentRange(r[0], json.loads(r[1]), r[2], r[3]) for r in rows]

    async def prune(self, before: float, limit: int) -> int:
        return await self.db.run(
            lambda c: (
                c.execute(
                    "DELETE FROM environment_hourly WHERE rowid IN "
                    "(SELECT rowid FROM environment_hourly WHERE hour < ? ORDER BY hour LIMIT ?)",
                    (before - before % HOUR, limit),
                ).rowcount
            )
        )
