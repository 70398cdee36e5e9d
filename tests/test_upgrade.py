"""Upgrades lose nothing: databases written by older dutyd versions open with this one, every
alert (with its acknowledgement), duty log line, queued and delivered page, used ack link,
silence, maintenance window, event count and room reading still there.

SQLite: the fixtures in tests/fixtures/upgrade/ were written by the old versions' own code
(`make_old_db.py` there says how), the oldest from before the migration list (each layer's
version in a `schema_version` table). PostgreSQL: a database at its first migration, filled
with the same old rows (its first migration is the SQLite schema after 5 migrations, table
for table), then opened by this dutyd, which migrates it to the newest schema.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from dutyd.duty.rulestate import alert_from_row
from dutyd.storage import Storage, open_storage
from dutyd.storage.postgres import PostgresStorage
from dutyd.storage.postgres.migrations import MIGRATIONS as PG_MIGRATIONS
from dutyd.storage.records import NewLogEntry, OutboxMessage
from dutyd.storage.sqlite.migrations import MIGRATIONS as SQLITE_MIGRATIONS
from tests.fixtures.upgrade import make_old_db as old
from tests.postgres_fixtures import PASSWORD, USER, PostgresServer

FIXTURES = Path(__file__).parent / "fixtures" / "upgrade"
SQLITE_FIXTURES = sorted(FIXTURES.glob("sqlite-*.db"))
FIRST_SCHEMA = FIXTURES / "sqlite-v5-6483bb3.db"  # the first schema of storage/sqlite
# The tables of the first schema (SQLite after 5 migrations = PostgreSQL migration 1).
FIRST_TABLES = [
    "alerts",
    "duty_log",
    "silences",
    "maintenance_windows",
    "rule_events",
    "outbox",
    "outbox_sent",
    "ack_tokens_used",
    "environment_hourly",
]


def test_the_fixtures_are_there() -> None:
    """The per-layer schema from before the migration list, the first schema of the list and
    the one before the newest; a fixture lost is a test lost."""
    assert [p.name for p in SQLITE_FIXTURES] == [
        "sqlite-legacy-ed5d080.db",
        "sqlite-v14-dc920b4.db",  # (sorted by name)
        "sqlite-v15-bc12751.db",
        "sqlite-v5-6483bb3.db",
        "sqlite-v8-5a0c312.db",
        "sqlite-v9-e7d1ddf.db",
    ]
    assert len(SQLITE_MIGRATIONS) > 14, "a fixture of the schema before the newest is due"


async def everything_survived(storage: Storage, boot_times: bool) -> None:
    T0 = old.T0
    alerts = {a.rule: a for a in await storage.alerts.load_all()}
    assert set(alerts) == {a["rule"] for a in old.ALERTS}
    for want in old.ALERTS:
        row = alerts[want["rule"]]
        assert (row.labels, row.severity, row.state, row.active_since, row.fired_at) == (
            want["labels"],
            want["severity"],
            want["state"],
            want["active_since"],
            want["fired_at"],
        )
        assert (row.value, row.summary, row.resolved_at) == (want["value"], want["summary"], None)
        alert = alert_from_row(row)  # as the rules get it back at start
        if want["ack"] is None:
            assert alert.ack is None
        else:
            assert alert.ack is not None
            assert alert.ack.to_dict() == want["ack"]

    log = await storage.log.read(limit=None)
    assert [(e.timestamp, e.kind, e.actor, e.subject, e.data) for e in log] == old.LOG

    queued = await storage.outbox.due(T0 + 1000, 10)
    assert len(queued) == 1
    assert {k: getattr(queued[0], k) for k in old.QUEUED} == old.QUEUED
    assert await storage.outbox.sent_among({"page-sent-1", "page-queued-1"}) == {"page-sent-1"}
    # Delivered before the upgrade: not queued again when regenerated after it.
    assert await storage.outbox.enqueue([OutboxMessage(**old.DELIVERED)]) == []
    assert (await storage.outbox.stats(T0 + 1000)).depth == 1

    for nonce, at, expires in old.ACK_NONCES:
        assert not await storage.ack_links.use(nonce, at + 60, expires), "an ack link works twice"

    (silence,) = await storage.overlays.live_silences(T0 + 200)
    assert {k: getattr(silence, k) for k in old.SILENCE} == old.SILENCE
    (window,) = await storage.overlays.windows_ending_after(T0)
    assert {k: getattr(window, k) for k in old.WINDOW} == old.WINDOW

    assert await storage.rule_events.load(T0) == old.RULE_EVENTS
    (room,) = await storage.environment.ranges(T0 - 3600, T0 + 3600)
    assert (room.name, room.labels, room.min, room.max) == (
        "room_temperature_celsius",
        {"room": "A"},
        24.5,
        29.5,
    )
    assert await storage.boot_times.load_all() == (old.BOOT_TIMES if boot_times else {})

    # And the upgraded store takes new writes after the old rows.
    new_id = await storage.log.append(T0 + 5000, "daemon.start", "dutyd", "", {})
    await storage.log.append_many([NewLogEntry(T0 + 5001, "config.reload", "dutyd", "", {})])
    assert new_id > max(e.id for e in log)
    assert len(await storage.log.read(limit=None)) == len(old.LOG) + 2


@pytest.mark.parametrize("fixture", SQLITE_FIXTURES, ids=lambda p: p.stem)
async def test_sqlite_database_of_an_older_dutyd(tmp_path: Path, fixture: Path) -> None:
    before = sqlite3.connect(fixture).execute("PRAGMA user_version").fetchone()[0]
    assert before < len(SQLITE_MIGRATIONS)
    (tmp_path / "state").mkdir(mode=0o700)
    db = tmp_path / "state" / "dutyd.db"
    shutil.copy(fixture, db)
    db.chmod(0o600)
    storage = open_storage(db)
    await storage.open()
    try:
        await everything_survived(storage, boot_times=before >= 8)
    finally:
        await storage.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(SQLITE_MIGRATIONS)


async def test_postgres_database_at_its_first_migration(postgres: PostgresServer) -> None:
    url = postgres.create_database("upgrade_first")
    conn = await asyncpg.connect(
        host="127.0.0.1", port=postgres.port, user=USER, password=PASSWORD, database="upgrade_first"
    )
    try:
        # What the current migration code leaves after migration 1 alone.
        await conn.execute(
            "CREATE TABLE dutyd_schema ("
            "version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
        await conn.execute(PG_MIGRATIONS[0])
        await conn.execute("INSERT INTO dutyd_schema VALUES (1, $1)", old.T0)
        # The old dutyd's rows, table for table, ids and all.
        # Immutable: a missing fixture is an error, and no -wal/-shm file is left beside it.
        with sqlite3.connect(f"file:{FIRST_SCHEMA}?immutable=1", uri=True) as lite:
            for table in FIRST_TABLES:
                cursor = lite.execute(f"SELECT * FROM {table}")
                columns = [c[0] for c in cursor.description]
                names = ", ".join(f'"{c}"' for c in columns)
                marks = ", ".join(f"${i + 1}" for i in range(len(columns)))
                await conn.executemany(
                    f"INSERT INTO {table} ({names}) VALUES ({marks})",
                    cursor.fetchall(),
                )
                if "id" in columns and table not in ("outbox", "outbox_sent"):
                    # As the old store's own inserts would have left its sequence.
                    await conn.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT MAX(id) FROM {table}))"
                    )
    finally:
        await conn.close()

    storage = PostgresStorage(url, PASSWORD)
    await storage.open()
    try:
        await everything_survived(storage, boot_times=False)
    finally:
        await storage.close()
    versions = postgres.psql("SELECT version FROM dutyd_schema ORDER BY version", "upgrade_first")
    assert versions.split() == [str(i + 1) for i in range(len(PG_MIGRATIONS))]


def test_version_names_dutyd_its_libraries_and_python() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dutyd.agent.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    from importlib.metadata import version

    lines = done.stdout.splitlines()
    assert lines[0] == f"dutyd {version('dutyd')}"
    shown = dict(line.split() for line in lines[1:])
    for dist in (
        "pysnmp",
        "asyncssh",
        "apprise",
        "aiohttp",
        "pydantic",
        "prometheus-client",
        "pyModbusTCP",
        "asyncpg",
        "cryptography",
    ):
        assert shown.get(dist) == version(dist), (dist, done.stdout)
    assert shown["Python"] == ".".join(map(str, sys.version_info[:3]))
    assert done.stderr == ""  # no library's warning on an operator's terminal
