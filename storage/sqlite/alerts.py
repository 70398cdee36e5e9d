"""Alerts in SQLite: one row per fingerprint, replaced on save (an outage's first firing
time kept: see `AlertRepository.save`)."""

from __future__ import annotations

import json
import sqlite3

from dutyd.storage.records import NewLogEntry, StoredAlert
from dutyd.storage.repositories import AlertRepository
from dutyd.storage.rows import alert_row
from dutyd.storage.sqlite.database import SqliteDatabase, check_fence, transaction
from dutyd.storage.sqlite.log import insert_entries, keyed_row

# The same outage (the stored row and the saved alert both firing): its start, first firing
# time and page key (`key_at` in `extra`) stay as first recorded, whoever writes later. `->`
# gives the key's JSON text as stored (json_extract would round it through a REAL).
_UPSERT = (
    "INSERT INTO alerts (fingerprint, rule, labels, severity, state, active_since, fired_at, "
    "resolved_at, value, summary, extra) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (fingerprint) DO UPDATE SET rule=excluded.rule, labels=excluded.labels, "
    "severity=excluded.severity, state=excluded.state, "
    "active_since=CASE WHEN alerts.state='firing' AND excluded.state='firing' "
    "AND alerts.fired_at IS NOT NULL THEN alerts.active_since ELSE excluded.active_since END, "
    "fired_at=CASE WHEN alerts.state='firing' AND excluded.state='firing' "
    "AND alerts.fired_at IS NOT NULL THEN alerts.fired_at ELSE excluded.fired_at END, "
    "resolved_at=excluded.resolved_at, value=excluded.value, summary=excluded.summary, "
    "extra=CASE WHEN alerts.state='firing' AND excluded.state='firing' "
    "AND alerts.fired_at IS NOT NULL THEN json_set(excluded.extra, '$.key_at', "
    "json(COALESCE(alerts.extra -> '$.key_at', 'null'))) ELSE excluded.extra END"
)


class SqliteAlerts(AlertRepository):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def save(self, alert: StoredAlert, epoch: int | None = None) -> float | None:
        row = alert_row(alert)

        def upsert(c: sqlite3.Connection) -> float | None:
            with transaction(c):
                check_fence(c, epoch)
                c.execute(_UPSERT, row)
                got = c.execute(
                    "SELECT fired_at FROM alerts WHERE fingerprint=?", (row[0],)
                ).fetchone()
            return None if got is None else got[0]

        return await self.db.run(upsert)

    async def record(
        self,
        fingerprint: str,
        alert: StoredAlert | None,
        entry: NewLogEntry,
        epoch: int | None = None,
    ) -> float | None:
        row = alert_row(alert) if alert is not None else None
        logged = keyed_row(entry)

        def write(c: sqlite3.Connection) -> float | None:
            with transaction(c):
                check_fence(c, epoch)
                fired_at = None
                if row is not None:
                    c.execute(_UPSERT, row)
                    got = c.execute(
                        "SELECT fired_at FROM alerts WHERE fingerprint=?", (fingerprint,)
                    ).fetchone()
                    fired_at = None if got is None else got[0]
                else:
                    c.execute("DELETE FROM alerts WHERE fingerprint=?", (fingerprint,))
                insert_entries(c, [logged])
            return fired_at

        return await self.db.run(write)

    async def delete(self, fingerprint: str, epoch: int | None = None) -> None:
        def delete(c: sqlite3.Connection) -> None:
            with transaction(c):
                check_fence(c, epoch)
                c.execute("DELETE FROM alerts WHERE fingerprint=?", (fingerprint,))

        await self.db.run(delete)

    async def shift_moments(self, seconds: float) -> None:
        def update(c: sqlite3.Connection) -> None:
            with transaction(c):
                c.execute(
                    "UPDATE alerts SET active_since = active_since + ?, fired_at = fired_at + ?",
                    (seconds, seconds),
                )

        await self.db.run(update)

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
