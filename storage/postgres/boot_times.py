"""Targets' last known boot times in PostgreSQL."""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg

from dutyd.storage.postgres.database import PostgresDatabase
from dutyd.storage.repositories import BootTimeRepository


class PostgresBootTimes(BootTimeRepository):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def load_all(self) -> dict[tuple[str, str], float]:
        async def select(c: asyncpg.Connection) -> dict[tuple[str, str], float]:
            rows = await c.fetch("SELECT target, metric, boot_time FROM boot_times")
            return {(r["target"], r["metric"]): float(r["boot_time"]) for r in rows}

        return await self.db.run(select)

    async def save(self, boot_times: Mapping[tuple[str, str], float]) -> None:
        rows = [(target, metric, boot) for (target, metric), boot in boot_times.items()]
        if not rows:
            return

        async def upsert(c: asyncpg.Connection) -> None:
            async with c.transaction():
                await c.executemany(
                    "INSERT INTO boot_times (target, metric, boot_time) VALUES ($1,$2,$3) "
                    "ON CONFLICT (target, metric) DO UPDATE SET boot_time = EXCLUDED.boot_time",
                    rows,
                )

        await self.db.run(upsert)
