"""The notification outbox in PostgreSQL: queued messages, their claims, the fence, and the
ids delivered lately. Shared by the nodes of an HA pair: see `OutboxRepository`."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence

import asyncpg

from dutyd.storage.postgres.database import PostgresDatabase, check_fence
from dutyd.storage.postgres.log import insert_entries, keyed_row
from dutyd.storage.records import NewLogEntry, OutboxMessage, OutboxStats
from dutyd.storage.repositories import OutboxRepository
from dutyd.storage.rows import LAST_ERROR_MAX, message_row

COLUMNS = (
    "id, recipient, kind, channel, payload, fallbacks, attempts, channel_failures, created, "
    "next_at, last_error"
)


class PostgresOutbox(OutboxRepository):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def enqueue(self, messages: Sequence[OutboxMessage]) -> list[str]:
        rows = [message_row(m) for m in messages]
        if not rows:
            return []

        async def insert(c: asyncpg.Connection) -> list[str]:
            added = []
            async with c.transaction():
                ids = list(dict.fromkeys(r[0] for r in rows))
                sent = {
                    r[0]
                    for r in await c.fetch("SELECT id FROM outbox_sent WHERE id = ANY($1)", ids)
                }
                for row in rows:
                    if row[0] in sent:
                        continue
                    got = await c.fetchval(
                        "INSERT INTO outbox (id, recipient, kind, channel, fallbacks, payload, "
                        "attempts, channel_failures, created, next_at, last_error) "
                        "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) "
                        "ON CONFLICT (id) DO NOTHING RETURNING id",
                        *row,
                    )
                    if got is not None:
                        added.append(got)
            return added

        return await self.db.run(insert)

    async def due(
        self, now: float, limit: int, exclude: Collection[str] = ()
    ) -> list[OutboxMessage]:
        skip = list(set(exclude))

        async def select(c: asyncpg.Connection) -> list[asyncpg.Record]:
            return await c.fetch(
                f"SELECT {COLUMNS} FROM outbox "  # noqa: S608 - a constant column list
                "WHERE next_at <= $1 AND (claim_until IS NULL OR claim_until <= $1 "
                "OR claim_epoch < (SELECT epoch FROM outbox_fence WHERE id=1)) "
                "AND NOT (id = ANY($2)) ORDER BY next_at, created, id COLLATE \"C\" LIMIT $3",
                now, skip, limit,
            )  # fmt: skip

        return [
            OutboxMessage(
                r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]), r[6], r[7], r[8],
                r[9], r[10],
            )
            for r in await self.db.run(select)
        ]  # fmt: skip

    async def claim(self, message_id: str, node: str, epoch: int, now: float, until: float) -> bool:
        async def claim(c: asyncpg.Connection) -> bool:
            async with c.transaction():
                # The fence row first (it also serialises claims): a stale epoch claims nothing.
                status = await c.execute(
                    "UPDATE outbox_fence SET epoch=$1 WHERE id=1 AND epoch<=$1", epoch
                )
                if status == "UPDATE 0":
                    return False
                status = await c.execute(
                    "UPDATE outbox SET claimed_by=$1, claim_epoch=$2, claim_until=$3 WHERE id=$4 "
                    "AND (claimed_by IS NULL OR claim_until <= $5 OR claim_epoch < $2 "
                    "OR (claimed_by=$1 AND claim_epoch=$2))",
                    node, epoch, until, message_id, now,
                )  # fmt: skip
                return status != "UPDATE 0"

        return await self.db.run(claim)

    async def queued_among(self, page_ids: Collection[str]) -> set[str]:
        wanted = list(set(page_ids))
        if not wanted:
            return set()

        async def select(c: asyncpg.Connection) -> set[str]:
            rows = await c.fetch(
                "SELECT DISTINCT p FROM outbox, "
                "jsonb_array_elements_text(COALESCE(payload::jsonb->'pages', '[]'::jsonb)) AS p "
                "WHERE p = ANY($1)",
                wanted,
            )
            return {r[0] for r in rows}

        return await self.db.run(select)

    async def raise_fence(self, epoch: int) -> None:
        async def update(c: asyncpg.Connection) -> None:
            await c.execute("UPDATE outbox_fence SET epoch=GREATEST(epoch, $1) WHERE id=1", epoch)

        await self.db.run(update)

    async def mark_delivered(
        self,
        message_id: str,
        at: float,
        also_sent: Sequence[str] = (),
        log: NewLogEntry | None = None,
        epoch: int | None = None,
    ) -> None:
        ids = [(i, at) for i in dict.fromkeys([message_id, *also_sent])]
        entry = keyed_row(log) if log is not None else None

        async def done(c: asyncpg.Connection) -> None:
            async with c.transaction():
                await check_fence(c, epoch)
                await c.execute("DELETE FROM outbox WHERE id=$1", message_id)
                await c.executemany(
                    "INSERT INTO outbox_sent (id, ts) VALUES ($1,$2) "
                    "ON CONFLICT (id) DO UPDATE SET ts=excluded.ts",
                    ids,
                )
                if entry is not None:
                    await insert_entries(c, [entry])

        await self.db.run(done)

    async def sent_among(self, ids: Collection[str]) -> set[str]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return set()

        async def select(c: asyncpg.Connection) -> set[str]:
            rows = await c.fetch("SELECT id FROM outbox_sent WHERE id = ANY($1)", wanted)
            return {r[0] for r in rows}

        return await self.db.run(select)

    async def drop(self, message_id: str, epoch: int | None = None) -> None:
        async def delete(c: asyncpg.Connection) -> None:
            async with c.transaction():
                await check_fence(c, epoch)
                await c.execute("DELETE FROM outbox WHERE id=$1", message_id)

        await self.db.run(delete)

    async def shift_moments(self, seconds: float, ids: Sequence[str]) -> None:
        async def update(c: asyncpg.Connection) -> None:
            await c.execute(
                "UPDATE outbox SET next_at = next_at + $1, created = created + $1 "
                "WHERE id = ANY($2::text[])",
                seconds,
                list(ids),
            )

        if ids:
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

        async def update(c: asyncpg.Connection) -> None:
            async with c.transaction():
                await check_fence(c, epoch)
                await c.execute(
                    "UPDATE outbox SET channel=$1, fallbacks=$2, attempts=$3, channel_failures=$4, "
                    "next_at=$5, last_error=$6, claimed_by=NULL, claim_epoch=NULL, "
                    "claim_until=NULL WHERE id=$7",
                    *row,
                )

        await self.db.run(update)

    async def stats(self, now: float) -> OutboxStats:
        async def select(c: asyncpg.Connection) -> asyncpg.Record:
            return await c.fetchrow(
                "SELECT COUNT(*), MIN(created), MIN(CASE WHEN next_at > $1 THEN next_at END) "
                "FROM outbox",
                now,
            )

        count, oldest, nxt = await self.db.run(select)
        return OutboxStats(int(count), oldest, nxt)

    async def forget_sent(self, before: float) -> None:
        async def delete(c: asyncpg.Connection) -> None:
            await c.execute("DELETE FROM outbox_sent WHERE ts < $1", before)

        await self.db.run(delete)
