"""Alerts in PostgreSQL: one row per fingerprint, replaced on save (an outage's first
firing time kept: see `AlertRepository.save`)."""

from __future__ import annotations

import json

import asyncpg

from dutyd.storage.postgres.database import PostgresDatabase, check_fence
from dutyd.storage.postgres.log import insert_entries, keyed_row
from dutyd.storage.records import NewLogEntry, StoredAlert
from dutyd.storage.repositories import AlertRepository
from dutyd.storage.rows import alert_row

# The same outage (the stored row and the saved alert both firing): its start, first firing
# time and page key (`key_at` in `extra`, which a clock step leaves where `fired_at` moved from)
# stay as first recorded, whoever writes later. The key is copied as JSON, not through a float.
_UPSERT = (
    "INSERT INTO alerts (fingerprint, rule, labels, severity, state, active_since, fired_at, "
    "resolved_at, value, summary, extra) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) "
    "ON CONFLICT (fingerprint) DO UPDATE SET rule=excluded.rule, labels=excluded.labels, "
    "severity=excluded.severity, state=excluded.state, "
    "active_since=CASE WHEN alerts.state='firing' AND excluded.state='firing' "
    "AND alerts.fired_at IS NOT NULL THEN alerts.active_since ELSE excluded.active_since END, "
    "fired_at=CASE WHEN alerts.state='firing' AND excluded.state='firing' "
    "AND alerts.fired_at IS NOT NULL THEN alerts.fired_at ELSE excluded.fired_at END, "
    "resolved_at=excluded.resolved_at, value=excluded.value, summary=excluded.summary, "
    "extra=CASE WHEN alerts.state='firing' AND excluded.state='firing' "
    "AND alerts.fired_at IS NOT NULL THEN jsonb_set(excluded.extra::jsonb, '{key_at}', "
    "COALESCE(alerts.extra::jsonb->'key_at', 'null'::jsonb))::text ELSE excluded.extra END "
    "RETURNING fired_at"
)


class PostgresAlerts(AlertRepository):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def save(self, alert: StoredAlert, epoch: int | None = None) -> float | None:
        row = alert_row(alert)

        async def upsert(c: asyncpg.Connection) -> float | None:
            async with c.transaction():
                await check_fence(c, epoch)
                return await c.fetchval(_UPSERT, *row)

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

        async def write(c: asyncpg.Connection) -> float | None:
            async with c.transaction():
                await check_fence(c, epoch)
                fired_at = None
                if row is not None:
                    fired_at = await c.fetchval(_UPSERT, *row)
                else:
                    await c.execute("DELETE FROM alerts WHERE fingerprint=$1", fingerprint)
                await insert_entries(c, [logged])
                return fired_at

        return await self.db.run(write)

    async def delete(self, fingerprint: str, epoch: int | None = None) -> None:
        async def delete(c: asyncpg.Connection) -> None:
            async with c.transaction():
                await check_fence(c, epoch)
                await c.execute("DELETE FROM alerts WHERE fingerprint=$1", fingerprint)

        await self.db.run(delete)

    async def shift_moments(self, seconds: float) -> None:
        async def update(c: asyncpg.Connection) -> None:
            await c.execute(
                "UPDATE alerts SET active_since = active_since + $1, fired_at = fired_at + $1",
                seconds,
            )

        await self.db.run(update)

    async def load_all(self) -> list[StoredAlert]:
        async def select(c: asyncpg.Connection) -> list[asyncpg.Record]:
            return await c.fetch(
                "SELECT fingerprint, rule, labels, severity, state, active_since, fired_at, "
                "resolved_at, value, summary, extra FROM alerts "
                'ORDER BY fingerprint COLLATE "C"'
            )

        return [
            StoredAlert(
                r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9],
                json.loads(r[10]),
            )
            for r in await self.db.run(select)
        ]  # fmt: skip
