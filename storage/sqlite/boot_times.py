"""Targets' last known boot times in SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from dutyd.storage.repositories import BootTimeRepository
from dutyd.storage.sqlite.database import SqliteDatabase, transaction


class SqliteBootTimes(BootTimeRepository):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def load_all(self) -> dict[tuple[str, str], float]:
        def select(c: sqlite3.Connection) -> dict[tuple[str, str], float]:
            rows = c.execute("SELECT target, metric, boot_time FROM boot_times").fetchall()
            return {(target, metric): float(boot) for target, metric, boot in rows}

        return await self.db.run(select)

    async def save(self, boot_times: Mapping[tuple[str, str], float]) -> None:
        rows = [(target, metric, boot) for (target, metric), boot in boot_times.items()]
        if not rows:
            return

        def upsert(c: sqlite3.Connection) -> None:
            with transaction(c):
                c.executemany(
                    "INSERT OR REPLACE INTO boot_times (target, metric, boot_time) VALUES (?,?,?)",
                    rows,
                )

        await self.db.run(upsert)
