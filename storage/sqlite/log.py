"""The duty log in SQLite, and the drills read back from it."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from dutyd.storage.records import LogEntry, NewLogEntry
from dutyd.storage.repositories import DrillRepository, DutyLogRepository
from dutyd.storage.rows import log_row
from dutyd.storage.sqlite.database import SqliteDatabase, check_fence, transaction

# Above every character: `x >= p AND x < p || _TOP` is "x starts with p", and uses the index.
_TOP = "\U0010ffff"

INSERT = "INSERT INTO duty_log (ts, kind, actor, subject, data, key) VALUES (?,?,?,?,?,?)"
# An entry of this key and moment already there is the same entry, written by a call that timed
# out and landed later: not written again. (The moment too: a key drawn twice by chance, 1 in
# 2**63, is not taken for the same entry.)
_FOUND = "SELECT id FROM duty_log WHERE key=? AND ts=? AND kind=?"


def keyed_row(entry: NewLogEntry) -> tuple[float, str, str, str, str, int]:
    return (*log_row(entry), entry.key)


def insert_entries(
    c: sqlite3.Connection, rows: Sequence[tuple[float, str, str, str, str, int]]
) -> int:
    """Insert the rows not already there (by key); the last row's id."""
    last = 0
    for row in rows:
        found = c.execute(_FOUND, (row[5], row[0], row[1])).fetchone()
        last = int(found[0]) if found else int(c.execute(INSERT, row).lastrowid or 0)
    return last


class SqliteDutyLog(DutyLogRepository):
    def __init__(self, db: SqliteDatabase) -> None:
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

        def insert(c: sqlite3.Connection) -> int:
            with transaction(c):
                check_fence(c, epoch)
                return insert_entries(c, [row])

        return await self.db.run(insert)

    async def append_many(self, entries: Sequence[NewLogEntry], epoch: int | None = None) -> None:
        rows = [keyed_row(e) for e in entries]
        if not rows:
            return

        def insert(c: sqlite3.Connection) -> None:
            with transaction(c):
                check_fence(c, epoch)
                insert_entries(c, rows)

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
        where: list[str] = ["1=1"]
        params: list[Any] = []
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        if until is not None:
            where.append("ts < ?")
            params.append(until)
        if kinds:
            clauses = []
            for k in kinds:
                if k.endswith("."):
                    clauses.append("(kind >= ? AND kind < ?)")
                    params += [k, k + _TOP]
                else:
                    clauses.append("kind = ?")
                    params.append(k)
            where.append("(" + " OR ".join(clauses) + ")")
        if subject is not None:
            where.append("subject = ?")
            params.append(subject)
        if subject_prefix is not None:
            where.append("(subject >= ? AND subject < ?)")
            params += [subject_prefix, subject_prefix + _TOP]
        # Only fixed clause texts are joined here; every value is a bound parameter.
        sql = (
            "SELECT id, ts, kind, actor, subject, data FROM duty_log WHERE "  # noqa: S608
            + " AND ".join(where)
            + (" ORDER BY id DESC" if newest_first else " ORDER BY id")
            + ("" if limit is None else " LIMIT ?")
        )
        if limit is not None:
            params.append(limit)
        rows = await self.db.run(lambda c: c.execute(sql, params).fetchall())
        return [LogEntry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]

    async def first_timestamp(self) -> float | None:
        rows = await self.db.run(lambda c: c.execute("SELECT MIN(ts) FROM duty_log").fetchall())
        return None if rows[0][0] is None else float(rows[0][0])

    async def prune(self, before: float, limit: int) -> int:
        # By id (the oldest first): the rowid range is one index walk, the ts check a filter.
        return await self.db.run(
            lambda c: (
                c.execute(
                    "DELETE FROM duty_log WHERE id IN "
                    "(SELECT id FROM duty_log WHERE ts < ? ORDER BY ts LIMIT ?)",
                    (before, limit),
                ).rowcount
            )
        )


class SqliteDrills(DrillRepository):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def last_answered_start(self) -> float | None:
        rows = await self.db.run(
            lambda c: c.execute(
                "SELECT MAX(COALESCE(json_extract(data, '$.started'), ts)) FROM duty_log"
                " WHERE kind='drill.end' AND json_extract(data, '$.answered') = 1"
            ).fetchall()
        )
        return None if rows[0][0] is None else float(rows[0][0])
