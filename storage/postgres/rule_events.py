"""Counter increases of `events` rules in PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Sequence

import asyncpg

from dutyd.storage.postgres.database import PostgresDatabase, check_fence, deleted
from dutyd.storage.records import RuleEventRow
from dutyd.storage.repositories import RuleEventRepository
from dutyd.storage.rows import to_json


class PostgresRuleEvents(RuleEventRepository):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def append(self, rows: Sequence[RuleEventRow], epoch: int | None = None) -> None:
        data = [(rule, to_json(labels), ts, inc, value) for rule, labels, ts, inc, value in rows]
        if not data:
            return

        async def insert(c: asyncpg.Connection) -> None:
            async with c.transaction():
                await check_fence(c, epoch)
                await c.executemany(
                    "INSERT INTO rule_events (rule, series, ts, increment, counter) "
                    "VALUES ($1,$2,$3,$4,$5)",
                    data,
                )

        await self.db.run(insert)

    async def load(self, since: float) -> list[RuleEventRow]:
        async def select(c: asyncpg.Connection) -> list[asyncpg.Record]:
            # Increases inside the window, and each series' latest row for its last value.
            return await c.fetch(
                "SELECT rule, series, ts, increment, counter FROM rule_events "
                "WHERE (ts >= $1 AND increment > 0) OR id IN "
                "(SELECT MAX(id) FROM rule_events GROUP BY rule, series) ORDER BY id",
                since,
            )

        return [(r[0], json.loads(r[1]), r[2], r[3], r[4]) for r in await self.db.run(select)]

    async def prune(self, before: float, limit: int) -> int:
        async def delete(c: asyncpg.Connection) -> int:
            # A row is kept when it is its series' latest (`load` reads its counter value).
            status = await c.execute(
                "DELETE FROM rule_events WHERE id IN (SELECT e.id FROM rule_events e "
                "WHERE e.ts < $1 AND EXISTS (SELECT 1 FROM rule_events n WHERE n.rule = e.rule "
                "AND n.series = e.series AND n.id > e.id) ORDER BY e.ts LIMIT $2)",
                before,
                limit,
            )
            return deleted(status)

        return await self.db.run(delete)
