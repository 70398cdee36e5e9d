"""The notification outbox in SQLite: queued messages and the ids delivered lately.

Deliveries are committed in groups: a burst of a thousand accepted sends was a thousand
transactions, each a hand-over to the database thread and back, and the database thread was
the burst's bottleneck. Each `mark_delivered` still returns only once its own row is gone.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from dutyd.storage.records import NewLogEntry, OutboxMessage, OutboxStats
from dutyd.storage.repositories import OutboxRepository
from dutyd.storage.rows import LAST_ERROR_MAX, message_row
from dutyd.storage.sqlite.database import SqliteDatabase, check_fence, transaction
from dutyd.storage.sqlite.log import insert_entries, keyed_row


@dataclass(slots=True)
class _Delivered:
    """One `mark_delivered` waiting for the transaction of its group."""

    message_id: str
    sent: list[tuple[str, float]]  # (id, ts) rows of outbox_sent
    entry: tuple[float, str, str, str, str, int] | None  # a duty log row
    epoch: int | None  # the writer's, fenced
    done: asyncio.Future[None]


def _write_delivered(c: sqlite3.Connection, group: Sequence[_Delivered]) -> None:
    with transaction(c):
        for d in group:  # a stale one fails the group; written one by one, it fails alone
            check_fence(c, d.epoch)
        c.executemany("DELETE FROM outbox WHERE id=?", [(d.message_id,) for d in group])
        c.executemany(
            "INSERT OR REPLACE INTO outbox_sent (id, ts) VALUES (?,?)",
            [row for d in group for row in d.sent],
        )
        entries = [d.entry for d in group if d.entry is not None]
        if entries:
            insert_entries(c, entries)


class SqliteOutbox(OutboxRepository):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        # Group commit: deliveries that end while a group is being written wait for the next
        # group, written by one task (not by a caller, whose cancellation would leave the
        # others of its group waiting for ever).
        self._delivered: list[_Delivered] = []
        self._writer: asyncio.Task[None] | None = None

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
                "WHERE next_at <= ? AND (claim_until IS NULL OR claim_until <= ? "
                "OR claim_epoch < (SELECT epoch FROM outbox_fence WHERE id=1)) "
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
                    "AND (claimed_by IS NULL OR claim_until <= ? OR claim_epoch < ? "
                    "OR (claimed_by=? AND claim_epoch=?))",
                    (node, epoch, until, message_id, now, epoch, node, epoch),
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
        epoch: int | None = None,
    ) -> None:
        item = _Delivered(
            message_id,
            [(i, at) for i in dict.fromkeys([message_id, *also_sent])],
            keyed_row(log) if log is not None else None,
            epoch,
            asyncio.get_running_loop().create_future(),
        )
        self._delivered.append(item)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_groups(), name="outbox-delivered")
        # Shielded: a caller cancelled (the service stopping) does not cancel the group's
        # write; its row is then deleted or not, as for a cancel during any statement.
        await asyncio.shield(item.done)

    async def drain(self) -> None:
        """Wait until every delivery marked so far is written (before the store closes: a
        delivery not recorded would be sent again at the next start)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer])

    async def _write_groups(self) -> None:
        while self._delivered:
            group, self._delivered = self._delivered, []
            try:
                await self.db.run(functools.partial(_write_delivered, group=group))
            except Exception as exc:
                if len(group) > 1:
                    # One at a time: a row that cannot be written fails its own caller only.
                    await self._write_one_by_one(group)
                    continue
                _settle(group, exc)
            else:
                _settle(group, None)

    async def _write_one_by_one(self, group: list[_Delivered]) -> None:
        for item in group:
            try:
                await self.db.run(functools.partial(_write_delivered, group=[item]))
            except Exception as exc:
                _settle([item], exc)
            else:
                _settle([item], None)

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

    async def drop(self, message_id: str, epoch: int | None = None) -> None:
        def delete(c: sqlite3.Connection) -> None:
            with transaction(c):
                check_fence(c, epoch)
                c.execute("DELETE FROM outbox WHERE id=?", (message_id,))

        await self.db.run(delete)

    async def shift_moments(self, seconds: float, ids: Sequence[str]) -> None:
        rows = [(seconds, seconds, i) for i in ids]

        def update(c: sqlite3.Connection) -> None:
            with transaction(c):
                c.executemany(
                    "UPDATE outbox SET next_at = next_at + ?, created = created + ? WHERE id=?",
                    rows,
                )

        if rows:
            await self.db.run(update)

    async def reschedule(self, message: OutboxMessage, epoch: int | None = None) -> None:
        row = (
            message.channel,
            json.dumps(message.fallbacks),
            message.attempts,
            message.channel_failures,
            message.next_at,
            message.last_error[:LAST_ERROR_MAX],
            message.id,
        )

        def update(c: sqlite3.Connection) -> None:
            with transaction(c):
                check_fence(c, epoch)
                c.execute(
                    "UPDATE outbox SET channel=?, fallbacks=?, attempts=?, channel_failures=?, "
                    "next_at=?, last_error=?, claimed_by=NULL, claim_epoch=NULL, "
                    "claim_until=NULL WHERE id=?",
                    row,
                )

        await self.db.run(update)

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


def _settle(group: Sequence[_Delivered], error: Exception | None) -> None:
    for item in group:
        if item.done.done():
            continue
        if error is None:
            item.done.set_result(None)
        else:
            item.done.set_exception(error)
            # Its caller may be gone (cancelled): no "exception never retrieved" at exit.
            item.done.exception()
