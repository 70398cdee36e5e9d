"""Silences and maintenance windows in PostgreSQL: rows are marked removed, never deleted."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from dutyd.storage.postgres.database import PostgresDatabase, deleted
from dutyd.storage.records import StoredSilence, StoredWindow
from dutyd.storage.repositories import OverlayRepository
from dutyd.storage.rows import to_json


class PostgresOverlays(OverlayRepository):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def add_silence(
        self, matchers: dict[str, Any], until: float, actor: str, reason: str, created: float
    ) -> int:
        async def insert(c: asyncpg.Connection) -> int:
            return int(
                await c.fetchval(
                    "INSERT INTO silences (matchers, until, actor, reason, created) "
                    "VALUES ($1,$2,$3,$4,$5) RETURNING id",
                    to_json(matchers), until, actor, reason, created,
                )
            )  # fmt: skip

        return await self.db.run(insert)

    async def end_silence(self, id: int, at: float, actor: str) -> bool:
        async def update(c: asyncpg.Connection) -> bool:
            status = await c.execute(
                "UPDATE silences SET removed_at=$1, removed_by=$2 "
                "WHERE id=$3 AND removed_at IS NULL",
                at, actor, id,
            )  # fmt: skip
            return status != "UPDATE 0"

        return await self.db.run(update)

    async def live_silences(self, now: float) -> list[StoredSilence]:
        async def select(c: asyncpg.Connection) -> list[asyncpg.Record]:
            return await c.fetch(
                "SELECT id, matchers, until, actor, reason, created FROM silences "
                "WHERE removed_at IS NULL AND until > $1 ORDER BY id",
                now,
            )

        rows = await self.db.run(select)
        return [StoredSilence(r[0], json.loads(r[1]), r[2], r[3], r[4], r[5]) for r in rows]

    async def add_window(
        self,
        targets: list[str],
        matchers: dict[str, Any],
        start: float,
        end: float,
        actor: str,
        reason: str,
        created: float,
    ) -> int:
        async def insert(c: asyncpg.Connection) -> int:
            return int(
                await c.fetchval(
                    "INSERT INTO maintenance_windows "
                    '(targets, matchers, start, "end", actor, reason, created) '
                    "VALUES ($1,$2,$3,$4,$5,$6,$7) RETURNING id",
                    to_json(targets), to_json(matchers), start, end, actor, reason, created,
                )
            )  # fmt: skip

        return await self.db.run(insert)

    async def end_window(self, id: int, at: float, actor: str) -> bool:
        async def update(c: asyncpg.Connection) -> bool:
            status = await c.execute(
                "UPDATE maintenance_windows SET removed_at=$1, removed_by=$2 "
                "WHERE id=$3 AND removed_at IS NULL",
                at, actor, id,
            )  # fmt: skip
            return status != "UPDATE 0"

        return await self.db.run(update)

    async def windows_ending_after(self, since: float) -> list[StoredWindow]:
        async def select(c: asyncpg.Connection) -> list[asyncpg.Record]:
            return await c.fetch(
                'SELECT id, targets, matchers, start, "end", actor, reason, created '
                'FROM maintenance_windows WHERE removed_at IS NULL AND "end" > $1 ORDER BY id',
                since,
            )

        return [
            StoredWindow(r[0], json.loads(r[1]), json.loads(r[2]), r[3], r[4], r[5], r[6], r[7])
            for r in await self.db.run(select)
        ]

    async def prune(self, before: float, limit: int) -> int:
        async def delete(c: asyncpg.Connection) -> int:
            async with c.transaction():
                gone = deleted(
                    await c.execute(
                        "DELETE FROM silences WHERE id IN (SELECT id FROM silences "
                        "WHERE until < $1 OR removed_at < $1 ORDER BY id LIMIT $2)",
                        before,
                        limit,
                    )
                )
                return gone + deleted(
                    await c.execute(
                        "DELETE FROM maintenance_windows WHERE id IN (SELECT id FROM "
                        'maintenance_windows WHERE "end" < $1 OR removed_at < $1 '
                        "ORDER BY id LIMIT $2)",
                        before,
                        limit - gone,
                    )
                )

        return await self.db.run(delete)
