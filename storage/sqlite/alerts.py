"""Alerts in SQLite: one row per fingerprint, replaced on save."""

from __future__ import annotations

import json
import sqlite3

from dutyd.storage.records import StoredAlert
from dutyd.storage.repositories import AlertRepository
from dutyd.storage.rows import alert_row
from dutyd.storage.sqlite.database import SqliteDatabase


class SqliteAlerts(AlertRepository):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def save(self, alert: StoredAlert) -> None:
        row = alert_row(alert)

        def upsert(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT OR REPLACE INTO alerts (fingerprint, rule, labels, severity, state, "
                "active_since, fired_at, resolved_at, value, summary, extra) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                row,
            )

        await self.db.run(upsert)

    async def delete(self, fingerprint: str) -> None:
        await self.db.run(
            lambda c: c.execute("DELETE FROM alerts WHERE fingerprint=?", (fingerprint,))
        )

    async def load_all(self) -> list[StoredAlert]:
        rows = await self.db.run(
            lambda c: c.execute(
                "SELECT fingerprint, rule, labels, severity, state, active_since, fired_at, "
                "resolved_at, value, summary, extra FROM alerts ORDER BY fingerprint"
            ).fetchall()
        )
        return [
            StoredAlert(
                r[0],
                r[1],
                json.loads(r[2]),
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                r[8],
                r[9],
                json.loads(r[10]),
            )
            for r in rows
        ]
