"""The sysNames devices of `{sysName}`-named groups last told, in SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from dutyd.storage.repositories import SysNameRepository
from dutyd.storage.sqlite.database import SqliteDatabase, transaction


class SqliteSysNames(SysNameRepository):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def load_all(self) -> dict[str, str]:
        def select(c: sqlite3.Connection) -> dict[str, str]:
            rows = c.execute("SELECT address, sys_name FROM sys_names").fetchall()
            return {str(address): str(name) for address, name in rows}

        return await self.db.run(select)

    async def save(self, names: Mapping[str, str]) -> None:
        rows = list(names.items())
        if not rows:
            return

        def upsert(c: sqlite3.Connection) -> None:
            with transaction(c):
                c.executemany(
                    "INSERT OR REPLACE INTO sys_names (address, sys_name) VALUES (?,?)", rows
                )

        await self.db.run(upsert)
