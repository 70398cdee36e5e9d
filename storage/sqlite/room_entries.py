"""The machine room's entry register in SQLite (append-only: triggers refuse changes)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from dutyd.storage.records import NewRoomEntry, RoomEntry
from dutyd.storage.repositories import RoomEntryRepository
from dutyd.storage.rows import ROOM_ENTRY_COLUMNS, room_entry, room_entry_row
from dutyd.storage.sqlite.database import SqliteDatabase, transaction

INSERT = (
    "INSERT INTO room_entries (ts, room, person, direction, companions, purpose, items, "
    "approved_by, actor) VALUES (?,?,?,?,?,?,?,?,?)"
)


class SqliteRoomEntries(RoomEntryRepository):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def append(self, entries: Sequence[NewRoomEntry]) -> list[int]:
        rows = [room_entry_row(e) for e in entries]

        def insert(c: sqlite3.Connection) -> list[int]:
            with transaction(c):
                return [int(c.execute(INSERT, row).lastrowid or 0) for row in rows]

        return await self.db.run(insert) if rows else []

    async def read(
        self,
        since: float | None = None,
        until: float | None = None,
        room: str | None = None,
        limit: int | None = None,
    ) -> list[RoomEntry]:
        where = ["1=1"]
        params: list[Any] = []
        for clause, value in (("ts >= ?", since), ("ts < ?", until), ("room = ?", room)):
            if value is not None:
                where.append(clause)
                params.append(value)
        # Only fixed clause texts are joined; every value is a bound parameter.
        sql = (
            f"SELECT {ROOM_ENTRY_COLUMNS} FROM room_entries WHERE "  # noqa: S608
            + " AND ".join(where)
            + " ORDER BY id"
            + ("" if limit is None else " LIMIT ?")
        )
        if limit is not None:
            params.append(limit)
        rows = await self.db.run(lambda c: c.execute(sql, params).fetchall())
        return [room_entry(r) for r in rows]

    async def inside(self) -> list[RoomEntry]:
        sql = (
            f"SELECT {ROOM_ENTRY_COLUMNS} FROM room_entries WHERE id IN "  # noqa: S608
            "(SELECT MAX(id) FROM room_entries GROUP BY room, person) AND direction = 'in' "
            "ORDER BY id"
        )
        rows = await self.db.run(lambda c: c.execute(sql).fetchall())
        return [room_entry(r) for r in rows]
