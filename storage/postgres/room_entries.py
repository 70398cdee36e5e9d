"""The machine room's entry register in PostgreSQL (append-only: a trigger refuses changes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from dutyd.storage.postgres.database import PostgresDatabase
from dutyd.storage.records import NewRoomEntry, RoomEntry
from dutyd.storage.repositories import RoomEntryRepository
from dutyd.storage.rows import ROOM_ENTRY_COLUMNS, room_entry, room_entry_row

INSERT = (
    "INSERT INTO room_entries (ts, room, person, direction, companions, purpose, items, "
    "approved_by, actor) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) RETURNING id"
)


class PostgresRoomEntries(RoomEntryRepository):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def append(self, entries: Sequence[NewRoomEntry]) -> list[int]:
        rows = [room_entry_row(e) for e in entries]

        async def insert(c: asyncpg.Connection) -> list[int]:
            async with c.transaction():
                return [int(await c.fetchval(INSERT, *row)) for row in rows]

        return await self.db.run(insert) if rows else []

    async def read(
        self,
        since: float | None = None,
        until: float | None = None,
        room: str | None = None,
        limit: int | None = None,
    ) -> list[RoomEntry]:
        where = ["TRUE"]
        params: list[Any] = []
        for column, op, value in (("ts", ">=", since), ("ts", "<", until), ("room", "=", room)):
            if value is not None:
                params.append(value)
                where.append(f"{column} {op} ${len(params)}")
        # Only fixed clause texts and $n placeholders are joined; every value is bound.
        sql = (
            f"SELECT {ROOM_ENTRY_COLUMNS} FROM room_entries WHERE "  # noqa: S608
            + " AND ".join(where)
            + " ORDER BY id"
        )
        if limit is not None:
            params.append(limit)
            sql += f" LIMIT ${len(params)}"

        async def select(c: asyncpg.Connection) -> list[asyncpg.Record]:
            return await c.fetch(sql, *params)

        return [room_entry(r) for r in await self.db.run(select)]

    async def inside(self) -> list[RoomEntry]:
        sql = (
            f"SELECT {ROOM_ENTRY_COLUMNS} FROM room_entries WHERE id IN "  # noqa: S608
            "(SELECT MAX(id) FROM room_entries GROUP BY room, person) AND direction = 'in' "
            "ORDER BY id"
        )

        async def select(c: asyncpg.Connection) -> list[asyncpg.Record]:
            return await c.fetch(sql)

        return [room_entry(r) for r in await self.db.run(select)]
