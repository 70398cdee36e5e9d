"""The room environment's hourly min/max/last in PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Sequence

import asyncpg

from dutyd.storage.postgres.database import PostgresDatabase, deleted
from dutyd.storage.records import EnvironmentRange, EnvironmentReading
from dutyd.storage.repositories import EnvironmentRepository
from dutyd.storage.rows import to_json

HOUR = 3600.0


class PostgresEnvironment(EnvironmentRepository):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def record(self, readings: Sequence[EnvironmentReading]) -> None:
        rows = [
            (r.timestamp - r.timestamp % HOUR, r.name, to_json(r.labels), r.value) for r in readings
        ]
        if not rows:
            return

        async def upsert(c: asyncpg.Connection) -> None:
            async with c.transaction():
                await c.executemany(
                    "INSERT INTO environment_hourly (hour, name, series, min, max, last) "
                    "VALUES ($1, $2, $3, $4, $4, $4) ON CONFLICT (hour, name, series) DO UPDATE "
                    "SET min = LEAST(environment_hourly.min, excluded.min), "
                    "max = GREATEST(environment_hourly.max, excluded.max), last = excluded.last",
                    rows,
                )

        await self.db.run(upsert)

    async def ranges(self, start: float, end: float) -> list[EnvironmentRange]:
        hour0 = start - start % HOUR

        async def select(c: asyncpg.Connection) -> list[asyncpg.Record]:
            # Byte order, as SQLite sorts, whatever the database's collation.
            return await c.fetch(
                "SELECT name, series, MIN(min), MAX(max) FROM environment_hourly "
                "WHERE hour >= $1 AND hour < $2 GROUP BY name, series "
                'ORDER BY series COLLATE "C", name COLLATE "C"',
                hour0, end,
            )  # fmt: skip

        return [
            EnvironmentRange(r[0], json.loads(r[1]), r[2], r[3]) for r in await self.db.run(select)
        ]

    async def prune(self, before: float, limit: int) -> int:
        async def delete(c: asyncpg.Connection) -> int:
            status = await c.execute(
                "DELETE FROM environment_hourly WHERE ctid IN "
                "(SELECT ctid FROM environment_hourly WHERE hour < $1 ORDER BY hour LIMIT $2)",
                before - before % HOUR,
                limit,
            )
            return deleted(status)

        return await self.db.run(delete)
