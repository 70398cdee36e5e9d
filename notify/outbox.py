"""The durable outbox: every notification is a row before it is sent, deleted once accepted.

A row names its message id (stable: a hash of what it says and to whom, so a receiver can drop
duplicates), the channel to try now and the fallbacks after it, and when to try next. After a
crash (even SIGKILL between write and send) the rows are still there and go out at restart:
at least once. Delivered ids are remembered for a week in `outbox_sent`, so a page regenerated
after a restart is not sent twice.
"""

from __future__ import annotations

import json
import random
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from dutyd.storage.sqlite import SqliteStorage, register_schema

SENT_RETENTION = 7 * 86400.0

register_schema(
    "outbox",
    [
        """
    CREATE TABLE outbox (
        id TEXT PRIMARY KEY,
        recipient TEXT NOT NULL,
        kind TEXT NOT NULL,
        channel TEXT NOT NULL,
        fallbacks TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        channel_failures INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        next_at REAL NOT NULL,
        last_error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX outbox_next ON outbox (next_at);
    CREATE TABLE outbox_sent (
        id TEXT PRIMARY KEY,
        ts REAL NOT NULL
    );
    """
    ],
)


@dataclass(slots=True)
class OutboxRow:
    id: str
    recipient: str  # person name, "#channel", or "alertmanager"
    kind: str  # page kind: firing, resolved, ... (for the log)
    channel: str
    payload: dict[str, Any]
    fallbacks: list[str] = field(default_factory=list)
    attempts: int = 0
    channel_failures: int = 0
    created: float = 0.0
    next_at: float = 0.0
    last_error: str = ""


def backoff(attempts: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter in [0.5, 1.0] of the step, so retries of many
    messages to one recovering receiver spread out instead of arriving together."""
    step = min(maximum, initial * (2 ** min(attempts - 1, 30)))
    return step * (0.5 + 0.5 * rng.random())


class Outbox:
    def __init__(self, storage: SqliteStorage) -> None:
        self.storage = storage

    async def put(self, rows: list[OutboxRow]) -> list[str]:
        """Insert new rows in one transaction; returns the ids actually added (a row whose id
        is queued or was delivered recently is a duplicate and is skipped)."""

        def insert(c: sqlite3.Connection) -> list[str]:
            added = []
            c.execute("BEGIN IMMEDIATE")
            try:
                for r in rows:
                    if c.execute("SELECT 1 FROM outbox_sent WHERE id=?", (r.id,)).fetchone():
                        continue
                    cur = c.execute(
                        "INSERT OR IGNORE INTO outbox (id, recipient, kind, channel, fallbacks, "
                        "payload, attempts, channel_failures, created, next_at, last_error) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            r.id,
                            r.recipient,
                            r.kind,
                            r.channel,
                            json.dumps(r.fallbacks),
                            json.dumps(r.payload, ensure_ascii=False),
                            r.attempts,
                            r.channel_failures,
                            r.created,
                            r.next_at,
                            r.last_error,
                        ),
                    )
                    if cur.rowcount:
                        added.append(r.id)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            return added

        return await self.storage.run(insert)

    async def due(self, now: float, limit: int, exclude: set[str]) -> list[OutboxRow]:
        def select(c: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return c.execute(
                "SELECT id, recipient, kind, channel, payload, fallbacks, attempts, "
                "channel_failures, created, next_at, last_error FROM outbox "
                "WHERE next_at <= ? ORDER BY next_at, created LIMIT ?",
                (now, limit + len(exclude)),
            ).fetchall()

        rows = await self.storage.run(select)
        out = []
        for r in rows:
            if r[0] in exclude:
                continue
            out.append(
                OutboxRow(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]), *r[6:])
            )
        return out[:limit]

    async def delivered(
        self,
        row_id: str,
        now: float,
        page_ids: list[str] | None = None,
        log: tuple[str, str, dict[str, Any]] | None = None,
    ) -> None:
        """Remove the row, remember its id and its pages' ids as delivered, and write the duty
        log entry `log` = (kind, actor, data), all in one transaction."""
        ids = [row_id, *(page_ids or [])]
        entry = None
        if log is not None:
            data = json.dumps(log[2], ensure_ascii=False, sort_keys=True, default=str)
            entry = (now, log[0], log[1], row_id, data)

        def done(c: sqlite3.Connection) -> None:
            c.execute("BEGIN IMMEDIATE")
            c.execute("DELETE FROM outbox WHERE id=?", (row_id,))
            c.executemany(
                "INSERT OR REPLACE INTO outbox_sent (id, ts) VALUES (?,?)", [(i, now) for i in ids]
            )
            if entry is not None:
                c.execute(
                    "INSERT INTO duty_log (ts, kind, actor, subject, data) VALUES (?,?,?,?,?)",
                    entry,
                )
            c.execute("COMMIT")

        await self.storage.run(done)

    async def already_sent(self, ids: list[str]) -> set[str]:
        def select(c: sqlite3.Connection) -> set[str]:
            marks = ",".join("?" * len(ids))
            # Only "?" placeholders are joined into the text; the ids are bound parameters.
            sql = f"SELECT id FROM outbox_sent WHERE id IN ({marks})"  # noqa: S608
            return {r[0] for r in c.execute(sql, ids).fetchall()}

        if not ids:
            return set()

        return await self.storage.run(select)

    async def drop(self, row_id: str) -> None:
        await self.storage.execute("DELETE FROM outbox WHERE id=?", (row_id,))

    async def reschedule(self, row: OutboxRow) -> None:
        await self.storage.execute(
            "UPDATE outbox SET channel=?, fallbacks=?, attempts=?, channel_failures=?, "
            "next_at=?, last_error=? WHERE id=?",
            (
                row.channel,
                json.dumps(row.fallbacks),
                row.attempts,
                row.channel_failures,
                row.next_at,
                row.last_error[:500],
                row.id,
            ),
        )

    async def stats(self, now: float) -> tuple[int, float | None, float | None]:
        """(depth, oldest created, earliest next_at still in the future)."""
        rows = await self.storage.execute(
            "SELECT COUNT(*), MIN(created), MIN(CASE WHEN next_at > ? THEN next_at END) "
            "FROM outbox",
            (now,),
        )
        count, oldest, nxt = rows[0]
        return int(count), oldest, nxt

    async def prune_sent(self, now: float) -> None:
        await self.storage.execute("DELETE FROM outbox_sent WHERE ts < ?", (now - SENT_RETENTION,))
