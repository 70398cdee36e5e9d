"""The equipment register's history in PostgreSQL (append-only: a trigger refuses changes)."""

from __future__ import annotations

import asyncpg

from dutyd.storage.postgres.database import PostgresDatabase
from dutyd.storage.records import EquipmentFacts
from dutyd.storage.repositories import EquipmentRepository
from dutyd.storage.rows import EQUIPMENT_COLUMNS, equipment_facts, to_json


class PostgresEquipment(EquipmentRepository):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def record(self, timestamp: float, target: str, kind: str, facts: dict[str, str]) -> int:
        async def insert(c: asyncpg.Connection) -> int:
            return int(
                await c.fetchval(
                    "INSERT INTO equipment_facts (ts, target, kind, facts) "
                    "VALUES ($1,$2,$3,$4) RETURNING id",
                    timestamp,
                    target,
                    kind,
                    to_json(facts),
                )
            )

        return await self.db.run(insert)

    async def latest(self, until: float | None = None) -> list[EquipmentFacts]:
        sql = (
            f"SELECT {EQUIPMENT_COLUMNS} FROM equipment_facts WHERE id IN "  # noqa: S608
            "(SELECT MAX(id) FROM equipment_facts WHERE ts < $1 GROUP BY target) ORDER BY target"
        )
        bound = float("inf") if until is None else until

        async def select(c: asyncpg.Connection) -> list[asyncpg.Record]:
            return await c.fetch(sql, bound)

        return [equipment_facts(r) for r in await self.db.run(select)]

    async def history(self, since: float, until: float) -> list[EquipmentFacts]:
        sql = (
            f"SELECT {EQUIPMENT_COLUMNS} FROM equipment_facts "  # noqa: S608
            "WHERE ts >= $1 AND ts < $2 ORDER BY id"
        )

        async def select(c: asyncpg.Connection) -> list[asyncpg.Record]:
            return await c.fetch(sql, since, until)

        return [equipment_facts(r) for r in await self.db.run(select)]
