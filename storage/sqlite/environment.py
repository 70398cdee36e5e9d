"""The room environment's hourly min/max/last in SQLite.

Compact, since a site keeps two years of it: each series (metric and labels) is named once in
`environment_series`; an hour of one series is a row of (hour, series id, min, max, last) in
`environment_hours`, a table without rowid keyed by (hour, series id), so reading a shift's
or a week's hours and deleting the oldest walk that one B-tree.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from dutyd.storage.records import EnvironmentRange, EnvironmentReading
from dutyd.storage.repositories import EnvironmentRepository
from dutyd.storage.rows import to_json
from dutyd.storage.sqlite.database import SqliteDatabase, transaction

HOUR = 3600.0


def _hour(ts: float) -> int:
    return int(ts - ts % HOUR)


class SqliteEnvironment(EnvironmentRepository):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        # (name, labels JSON) -> series id; used on the database thread only.
        self._ids: dict[tuple[str, str], int] = {}

    def _series_ids(self, c: sqlite3.Connection, keys: set[tuple[str, str]]) -> None:
        for key in keys - self._ids.keys():
            c.execute("INSERT OR IGNORE INTO environment_series (name, series) VALUES (?,?)", key)
            row = c.execute(
                "SELECT id FROM environment_series WHERE name=? AND series=?", key
            ).fetchone()
            self._ids[key] = int(row[0])

    async def record(self, readings: Sequence[EnvironmentReading]) -> None:
        rows = [(_hour(r.timestamp), r.name, to_json(r.labels), r.value) for r in readings]
        if not rows:
            return

        def upsert(c: sqlite3.Connection) -> None:
            try:
                with transaction(c):
                    self._series_ids(c, {(name, series) for _, name, series, _ in rows})
                    c.executemany(
                        "INSERT INTO environment_hours (hour, series_id, min, max, last) "
                        "VALUES (?1, ?2, ?3, ?3, ?3) ON CONFLICT (hour, series_id) DO UPDATE "
                        "SET min = MIN(min, excluded.min), max = MAX(max, excluded.max), "
                        "last = excluded.last",
                        [(h, self._ids[(n, s)], v) for h, n, s, v in rows],
                    )
            except BaseException:
                self._ids.clear()  # ids of a rolled-back insert must not be used
                raise

        await self.db.run(upsert)

    async def ranges(self, start: float, end: float) -> list[EnvironmentRange]:
        rows = await self.db.run(
            lambda c: c.execute(
                "SELECT s.name, s.series, r.low, r.high FROM (SELECT series_id, MIN(min) AS low, "
                "MAX(max) AS high FROM environment_hours WHERE hour >= ? AND hour < ? "
                "GROUP BY series_id) r JOIN environment_series s ON s.id = r.series_id "
                "ORDER BY s.series, s.name",
                (_hour(start), end),
            ).fetchall()
        )
        return [EnvironmentRange(r[0], json.loads(r[1]), r[2], r[3]) for r in rows]

    async def prune(self, before: float, limit: int) -> int:
        return await self.db.run(
            lambda c: (
                c.execute(
                    "DELETE FROM environment_hours WHERE (hour, series_id) IN "
                    "(SELECT hour, series_id FROM environment_hours WHERE hour < ? "
                    "ORDER BY hour LIMIT ?)",
                    (_hour(before), limit),
                ).rowcount
            )
        )
