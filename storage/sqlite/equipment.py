"""The equipment register's history in SQLite (append-only: triggers refuse changes)."""

from __future__ import annotations

import sqlite3

from dutyd.storage.records import EquipmentFacts
from dutyd.storage.repositories import EquipmentRepository
from dutyd.storage.rows import EQUIPMENT_COLUMNS, equipment_facts, to_json
from dutyd.storage.sqlite.database import SqliteDatabase


class SqliteEquipment(EquipmentRepository):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def record(self, timestamp: float, target: str, kind: str, facts: dict[str, str]) -> int:
        row = (timestamp, target, kind, to_json(facts))

        def insert(c: sqlite3.Connection) -> int:
            sql = "INSERT INTO equipment_facts (ts, target, kind, facts) VALUES (?,?,?,?)"
            return int(c.execute(sql, row).lastrowid or 0)

        return await self.db.run(insert)

    async def latest(self, until: float | None = None) -> list[EquipmentFacts]:
        sql = (
            f"SELECT {EQUIPMENT_COLUMNS} FROM equipment_facts WHERE id IN "  # noqa: S608
            "(SELECT MAX(id) FROM equipment_facts WHERE ts < ? GROUP BY target) ORDER BY target"
        )
        bound = float("inf") if until is None else until
        rows = await self.db.run(lambda c: c.execute(sql, (bound,)).fetchall())
        return [equipment_facts(r) for r in rows]

    async def history(self, since: float, until: float) -> list[EquipmentFacts]:
        sql = (
            f"SELECT {EQUIPMENT_COLUMNS} FROM equipment_facts "  # noqa: S608
            "WHERE ts >= ? AND ts < ? ORDER BY id"
        )
        rows = await self.db.run(lambda c: c.execute(sql, (since, until)).fetchall())
        return [equipment_facts(r) for r in rows]
