"""Silences and maintenance windows in SQLite: rows are marked removed, never deleted."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from dutyd.storage.records import StoredSilence, StoredWindow
from dutyd.storage.repositories import OverlayRepository
from dutyd.storage.rows import to_json
from dutyd.storage.sqlite.database import SqliteDatabase


class SqliteOverlays(OverlayRepository):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def add_silence(
        self, matchers: dict[str, Any], until: float, actor: str, reason: str, created: float
    ) -> int:
        row = (to_json(matchers), until, actor, reason, created)

        def insert(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "INSERT INTO silences (matchers, until, actor, reason, created) VALUES (?,?,?,?,?)",
                row,
            )
            return int(cur.lastrowid or 0)

        return await self.db.run(insert)

    async def end_silence(self, id: int, at: float, actor: str) -> bool:
        def update(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE silences SET removed_at=?, removed_by=? WHERE id=? AND removed_at IS NULL",
                (at, actor, id),
            )
            return cur.rowcount > 0

        return await self.db.run(update)

    async def live_silences(self, now: float) -> list[StoredSilence]:
        rows = await self.db.run(
            lambda c: c.execute(
                "SELECT id, matchers, until, actor, reason, created FROM silences "
                "WHERE removed_at IS NULL AND until > ? ORDER BY id",
                (now,),
            ).fetchall()
        )
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
        row = (to_json(targets), to_json(matchers), start, end, actor, reason, created)

        def insert(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "INSERT INTO maintenance_windows "
                '(targets, matchers, start, "end", actor, reason, created) '
                "VALUES (?,?,?,?,?,?,?)",
                row,
            )
            return int(cur.lastrowid or 0)

        return await self.db.run(insert)

    async def end_window(self, id: int, at: float, actor: str) -> bool:
        def update(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE maintenance_windows SET removed_at=?, removed_by=? "
                "WHERE id=? AND removed_at IS NULL",
                (at, actor, id),
            )
            return cur.rowcount > 0

        return await self.db.run(update)

    async def windows_ending_after(self, since: float) -> list[StoredWindow]:
        rows = await self.db.run(
            lambda c: c.execute(
                'SELECT id, targets, matchers, start, "end", actor, reason, created '
                'FROM maintenance_windows WHERE removed_at IS NULL AND "end" > ? ORDER BY id',
                (since,),
            ).fetchall()
        )
        return [
            StoredWindow(r[0], json.loads(r[1]), json.loads(r[2]), r[3], r[4], r[5], r[6], r[7])
            for r in rows
        ]

    async def prune(self, before: float, limit: int) -> int:
        def delete(c: sqlite3.Connection) -> int:
            gone = c.execute(
                "DELETE FROM silences WHERE id IN (SELECT id FROM silences "
                "WHERE until < ?1 OR removed_at < ?1 ORDER BY id LIMIT ?2)",
                (before, limit),
            ).rowcount
            return (
                gone
                + c.execute(
                    "DELETE FROM maintenance_windows WHERE id IN "
                    '(SELECT id FROM maintenance_windows WHERE "end" < ?1 OR removed_at < ?1 '
                    "ORDER BY id LIMIT ?2)",
                    (before, limit - gone),
                ).rowcount
            )

        return await self.db.run(delete)
