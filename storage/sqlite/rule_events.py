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
            # A row of the series at the same moment with the same counter is the same
            # reading: written by a call that timed out (a frozen disk) and landed later, its
            # put-back copy is not counted twice (one probe of the series index each).
            with transaction(c):
                check_fence(c, epoch)
                c.executemany(
                    "INSERT INTO rule_events (rule, series, ts, increment, counter) "
                    "SELECT ?1, ?2, ?3, ?4, ?5 WHERE NOT EXISTS (SELECT 1 FROM rule_events "
                    "WHERE rule=?1 AND series=?2 AND ts=?3 AND counter=?5)",
                    data,
                )

        await self.db.run(insert)

    async def load(self, since: float) -> list[RuleEventRow]:
        def select(c: sqlite3.Connection) -> list[tuple[Any, ...]]:
            # Increases inside the window (on the index by time), and each series' latest row
            # for its last value: a UNION, since an OR of the two scanned the whole table
            # (half a second for a year of a site's counters, on the one database thread).
            return c.execute(
                "SELECT id, rule, series, ts, increment, counter FROM rule_events "
                "WHERE ts >= ? AND increment > 0 UNION "
                "SELECT id, rule, series, ts, increment, counter FROM rule_events "
                "WHERE id IN (SELECT MAX(id) FROM rule_events GROUP BY rule, series) "
                "ORDER BY id",
                (since,),
            ).fetchall()

        labels: dict[str, dict[str, str]] = {}  # each series' JSON parsed once (read-only)
        out: list[RuleEventRow] = []
        for r in await self.db.run(select):
            series = labels.get(r[2])
            if series is None:
                series = labels[r[2]] = json.loads(r[2])
            out.append((r[1], series, r[3], r[4], r[5]))
        return out

    async def prune(self, before: float, limit: int) -> int:
        def delete(c: sqlite3.Connection) -> int:
            # A row is kept when it is its series' latest (`load` reads its counter value).
            return c.execute(
                "DELETE FROM rule_events WHERE id IN (SELECT e.id FROM rule_events e "
                "WHERE e.ts < ? AND EXISTS (SELECT 1 FROM rule_events n WHERE n.rule = e.rule "
                "AND n.series = e.series AND n.id > e.id) ORDER BY e.ts LIMIT ?)",
                (before, limit),
            ).rowcount

        return await self.db.run(delete)
