"""The duty log in PostgreSQL, and the drills read back from it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from dutyd.storage.postgres.database import PostgresDatabase, check_fence, deleted
from dutyd.storage.records import LogEntry, NewLogEntry
from dutyd.storage.repositories import DrillRepository, DutyLogRepository
from dutyd.storage.rows import log_row

INSERT = "INSERT INTO duty_log (ts, kind, actor, subject, data, key) VALUES ($1,$2,$3,$4,$5,$6)"
# An entry of this key and moment already there is the same entry, written by a call that timed
# out after its commit had reached the server (migration 10): not written again.
_FOUND = "SELECT id FROM duty_log WHERE key=$1 AND ts=$2 AND kind=$3"

KeyedRow = tuple[float, str, str, str, str, int]


def keyed_row(entry: NewLogEntry) -> KeyedRow:
    return (*log_row(entry), entry.key)


async def insert_entries(c: asyncpg.Connection, rows: Sequence[KeyedRow]) -> int:
    """Inside a transaction: insert the rows not already there (by key); the last row's id."""
    last = 0
    for row in rows:
        found = await c.fetchval(_FOUND, row[5], row[0], row[1])
        last = (
            int(found)
            if found is not None
            else int(await c.fetchval(INSERT + " RETURNING id", *row))
        )
    return last


class PostgresDutyLog(DutyLogRepository):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def append(
        self,
        timestamp: float,
        kind: str,
        actor: str,
        subject: str,
        data: dict[str, Any],
        epoch: int | None = None,
    ) -> int:
        return await self.append_entry(NewLogEntry(timestamp, kind, actor, subject, data), epoch)

    async def append_entry(self, entry: NewLogEntry, epoch: int | None = None) -> int:
        row = keyed_row(entry)

        async def insert(c: asyncpg.Connection) -> int:
            async with c.transaction():
                await check_fence(c, epoch)
                return await insert_entries(c, [row])

        return await self.db.run(insert)

    async def append_many(self, entries: Sequence[NewLogEntry], epoch: int | None = None) -> None:
        rows = [keyed_row(e) for e in entries]
        if not rows:
            return

        async def insert(c: asyncpg.Connection) -> None:
            async with c.transaction():
                await check_fence(c, epoch)
                await insert_entries(c, rows)

        await self.db.run(insert)

    async def read(
        self,
        since: float | None = None,
        until: float | None = None,
        kinds: Sequence[str] = (),
        subject: str | None = None,
        limit: int | None = 1000,
        newest_first: bool = False,
        subject_prefix: str | None = None,
    ) -> list[LogEntry]:
        where: list[str] = ["TRUE"]
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if since is not None:
            where.append(f"ts >= {param(since)}")
        if until is not None:
            where.append(f"ts < {param(until)}")
        if kinds:
            # starts_with is literal: no wildcards, no collation.
            clauses = [
                f"starts_with(kind, {param(k)})" if k.endswith(".") else f"kind = {param(k)}"
                for k in kinds
            ]
            where.append("(" + " OR ".join(clauses) + ")")
        if subject is not None:
            where.append(f"subject = {param(subject)}")
        if subject_prefix is not None:
            where.append(f"starts_with(subject, {param(subject_prefix)})")
        # Only fixed clause texts and $n placeholders are joined; every value is bound.
        sql = (
            "SELECT id, ts, kind, actor, subject, data FROM duty_log WHERE "  # noqa: S608
            + " AND ".join(where)
            + (" ORDER BY id DESC" if newest_first else " ORDER BY id")
        )
        if limit is not None:
            sql += f" LIMIT {param(limit)}"

        async def select(c: asyncpg.Connection) -> list[asyncpg.Record]:
            return await c.fetch(sql, *params)

        return [
            LogEntry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]))
            for r in await self.db.run(select)
        ]

    async def first_timestamp(self) -> float | None:
        async def select(c: asyncpg.Connection) -> float | None:
            return await c.fetchval("SELECT MIN(ts) FROM duty_log")

        value = await self.db.run(select)
        return None if value is None else float(value)

    async def prune(self, before: float, limit: int) -> int:
        async def delete(c: asyncpg.Connection) -> int:
            status = await c.execute(
                "DELETE FROM duty_log WHERE id IN "
                "(SELECT id FROM duty_log WHERE ts < $1 ORDER BY ts LIMIT $2)",
                before,
                limit,
            )
            return deleted(status)

        return await self.db.run(delete)


class PostgresDrills(DrillRepository):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def last_answered_start(self) -> float | None:
        async def select(c: asyncpg.Connection) -> float | None:
            return await c.fetchval(
                "SELECT MAX(COALESCE((data::jsonb->>'started')::double precision, ts)) "
                "FROM duty_log WHERE kind='drill.end' AND (data::jsonb->'answered') = 'true'"
            )

        value = await self.db.run(select)
        return None if value is None else float(value)
