"""The notification outbox in SQLite: queued messages and the ids delivered lately."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

from dutyd.storage.records import NewLogEntry, OutboxMessage, OutboxStats
from dutyd.storage.repositories import OutboxRepository
from dutyd.storage.rows import LAST_ERROR_MAX, log_row, message_row
from dutyd.storage.sqlite.database import SqliteDatabase, transaction
from dutyd.storage.sqlite.log import INSERT as INSERT_LOG


class SqliteOutbox(OutboxRepository):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def enqueue(self, messages: Sequence[OutboxMessage]) -> list[str]:
        rows = [message_row(m) for m in messages]

        def insert(c: sqlite3.Connection) -> list[str]:
            added = []
            with transaction(c):
                for row in rows:
                    if c.execute("SELECT 1 FROM outbox_sent WHERE id=?", (row[0],)).fetchone():
                        continue
                    cur = c.execute(
                        "INSERT OR IGNORE INTO outbox (id, recipient, kind, channel, fallbacks, "
                        "payload, attempts, channel_failures, created, next_at, last_error) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        row,
                    )
                    if cur.rowcount:
                        added.append(row[0])
            return added

        return await self.db.run(insert)

    async def due(
        self, now: float, limit: int, exclude: Collection[str] = ()
    ) -> list[OutboxMessage]:
        skip = set(exclude)

        def select(c: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return c.execute(
                "SELECT id, recipient, kind, channel, payload, fallbacks, attempts, "
                "channel_failures, created, next_at, last_error FROM outbox "
                "WHERE next_at <= ? AND (claim_until IS NULL OR claim_until <= ?) "
                "ORDER BY next_at, created, id LIMIT ?",
                (now, now, limit + len(skip)),
            ).fetchall()

        out = []
        for r in await self.db.run(select):
            if r[0] in skip:
                continue
            out.append(
                OutboxMessage(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]), *r[6:])
            )
        return out[:limit]

    async def claim(self, message_id: str, node: str, epoch: int, now: float, until: float) -> bool:
        def claim(c: sqlite3.Connection) -> bool:
            with transaction(c):
                # The fence first: a stale epoch claims nothing.
                if not c.execute(
                    "UPDATE outbox_fence SET epoch=? WHERE id=1 AND epoch<=?", (epoch, epoch)
                ).rowcount:
                    return False
                cur = c.execute(
                    "UPDATE outbox SET claimed_by=?, claim_epoch=?, claim_until=? WHERE id=? "
                    "AND (claimed_by IS NULL OR claim_until <= ? "
                    "OR (claimed_by=? AND claim_epoch=?))",
                    (node, epoch, until, message_id, now, node, epoch),
                )
                return cur.rowcount > 0

        return await self.db.run(claim)

    async def raise_fence(self, epoch: int) -> None:
        await self.db.run(
            lambda c: c.execute("UPDATE outbox_fence SET epoch=MAX(epoch, ?) WHERE id=1", (epoch,))
        )

    async def mark_delivered(
        self,
        message_id: str,
        at: float,
        also_sent: Sequence[str] = (),
        log: NewLogEntry | None = None,
    ) -> None:
        ids = [(i, at) for i in dict.fromkeys([message_id, *also_sent])]
        entry = log_row(log) if log is not None else None

        def done(c: sqlite3.Connection) -> None:
            with transaction(c):
                c.execute("DELETE FROM outbox WHERE id=?", (message_id,))
                c.executemany("INSERT OR REPLACE INTO outbox_sent (id, ts) VALUES (?,?)", ids)
                if entry is not None:
                    c.execute(INSERT_LOG, entry)

        await self.db.run(done)

    async def sent_among(self, ids: Collection[str]) -> set[str]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return set()

        def select(c: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            # In chunks below SQLite's bound-parameter limit. Only "?" placeholders are joined
            # into the text; the ids are bound parameters.
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                sql = f"SELECT id FROM outbox_sent WHERE id IN ({','.join('?' * len(chunk))})"  # noqa: S608
                found.update(r[0] for r in c.execute(sql, chunk).fetchall())
            return found

        return await self.db.run(select)

    async def queued_among(self, page_ids: Collection[str]) -> set[str]:
        wanted = list(dict.fromkeys(page_ids))
        if not wanted:
            return set()

        def select(c: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for i in range(0, len(wanted), 500):  # below SQLite's bound-parameter limit
                chunk = wanted[i : i + 500]
                sql = (
                    "SELECT DISTINCT p.value FROM outbox, json_each(outbox.payload, '$.pages') p "  # noqa: S608
                    f"WHERE p.value IN ({','.join('?' * len(chunk))})"
                )
                found.update(r[0] for r in c.execute(sql, chunk).fetchall())
            return found

        return await self.db.run(select)

    async def drop(self, message_id: str) -> None:
        await self.db.run(lambda c: c.execute("DELETE FROM outbox WHERE id=?", (message_id,)))

    async def reschedule(self, message: OutboxMessage) -> None:
        row = (
            message.channel,
            json.dumps(message.fallbacks),
            message.attempts,
            message.channel_failures,
            message.next_at,
            message.last_error[:LAST_ERROR_MAX],
            message.id,
        )
        await self.db.run(
            lambda c: c.execute(
                "UPDATE outbox SET channel=?, fallbacks=?, attempts=?, channel_failures=?, "
                "next_at=?, last_error=?, claimed_by=NULL, claim_epoch=NULL, claim_until=NULL "
                "WHERE id=?",
                row,
            )
        )

    async def stats(self, now: float) -> OutboxStats:
        rows = await self.db.run(
            lambda c: c.execute(
                "SELECT COUNT(*), MIN(created), MIN(CASE WHEN next_at > ? THEN next_at END) "
                "FROM outbox",
                (now,),
            ).fetchall()
        )
        count, oldest, nxt = rows[0]
        return OutboxStats(int(count), oldest, nxt)

    async def forget_sent(self, before: float) -> None:
        await self.db.run(lambda c: c.execute("DELETE FROM outbox_sent WHERE ts < ?", (before,)))
