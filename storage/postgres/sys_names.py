"""The sysNames devices of `{sysName}`-named groups last told, in PostgreSQL."""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg

from dutyd.storage.postgres.database import PostgresDatabase
from dutyd.storage.repositories import SysNameRepository


class PostgresSysNames(SysNameRepository):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def load_all(self) -> dict[str, str]:
        async def select(c: asyncpg.Connection) -> dict[str, str]:
            rows = await c.fetch("SELECT address, sys_name FROM sys_names")
            return {r["address"]: r["sys_name"] for r in rows}

        return await self.db.run(select)

    async def save(self, names: Mapping[str, str]) -> None:
        rows = list(names.items())
        if not rows:
            return

        async def upsert(c: asyncpg.Connection) -> None:
            async with c.transaction():
                await c.executemany(
                    "INSERT INTO sys_names (address, sys_name) VALUES ($1,$2) "
                    "ON CONFLICT (address) DO UPDATE SET sys_name = EXCLUDED.sys_name",
                    rows,
                )

        await self.db.run(upsert)
