"""Counter increases of `events` rules in SQLite."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from dutyd.storage.records import RuleEventRow
from dutyd.storage.repositories import RuleEventRepository
from dutyd.storage.rows import to_json
from dutyd.storage.sqlite.database import SqliteDatabase, check_fence, transaction


class SqliteRuleEvents(RuleEventRepository):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def append(self, rows: Sequence[RuleEventRow], epoch: int | None = None) -> None:
        data = [(rule, to_json(labels), ts, inc, value) for rule, labels, ts, inc, value in rows]
        if not data:
            return

        def insert(c: sqlite3.Connection) -> None:
            with transaction(c):
                check_fence(c, epoch)
                c.executemany(
                    "INSERT INTO rule_events (rule, series, ts, increment, counter) "
                    "VALUES (?,?,?,?,?)",
                    data,
                )

        await self.db.run(insert)

    async def load(self, since: float) -> list[RuleEventRow]:
        def select(c: sqlite3.Connection) -> list[tuple[Any, ...]]:
            # Increases inside the window, and each series' latest row for its last value.
            return c.execute(
                "SELECT rule, series, ts, increment, counter FROM rule_events "
                "WHERE (ts >= ? AND increment > 0) OR id IN "
                "(SELECT MAX(id) FROM rule_events GROUP BY rule, series) ORDER BY id",
                (since,),
            ).fetchall()

        rows = await self.db.run(select)
        return [(r[0], json.loads(r[1]), r[2], r[3], r[4]) for r in rows]
