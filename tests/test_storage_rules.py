"""SQLite storage of the rules layer: alerts with their overlay fields, silences, maintenance
windows and event counts, across a close and re-open, and the upgrade of an older database."""

from __future__ import annotations

import sqlite3

from dutyd.storage import OutboxStats, StoredAlert
from dutyd.storage.sqlite import SqliteStorage
from dutyd.storage.sqlite.migrations import MIGRATIONS


async def test_alert_extra_silences_windows_and_events_survive_reopen(tmp_path):
    path = tmp_path / "d.db"
    db = SqliteStorage(path)
    await db.open()
    extra = {"ack": {"by": "li", "note": "n", "at": 5.0, "expires_at": None}, "flapping": True}
    alert = StoredAlert(
        "fp1", "hot", {"target": "a"}, "critical", "firing", 1.0, 2.0, None, 30.0, "s", extra
    )
    await db.alerts.save(alert)
    sid = await db.overlays.add_silence({"target": {"=~": "db.*"}}, 100.0, "li", "patching", 1.0)
    old = await db.overlays.add_silence({"target": "x"}, 50.0, "li", "short", 1.0)
    wid = await db.overlays.add_window(["core-sw1"], {}, 10.0, 20.0, "wang", "IOS upgrade", 1.0)
    gone = await db.overlays.add_window(["core-sw2"], {}, 10.0, 20.0, "wang", "cancelled", 1.0)
    assert await db.overlays.end_window(gone, 2.0, "wang")
    assert not await db.overlays.end_window(gone, 3.0, "wang")  # already ended
    await db.rule_events.append(
        [("virus", {"target": "av"}, 1.0, 0.0, 7.0), ("virus", {"target": "av"}, 5.0, 2.0, 9.0)]
    )
    await db.close()

    db = SqliteStorage(path)
    await db.open()
    try:
        assert await db.alerts.load_all() == [alert]
        silences = await db.overlays.live_silences(now=60.0)
        assert [(s.id, s.matchers, s.reason) for s in silences] == [
            (sid, {"target": {"=~": "db.*"}}, "patching")
        ]
        assert old not in [s.id for s in silences]  # over at 50
        assert await db.overlays.end_silence(sid, 61.0, "li")
        assert await db.overlays.live_silences(now=62.0) == []
        windows = await db.overlays.windows_ending_after(since=0.0)
        assert [(w.id, w.targets, w.reason) for w in windows] == [
            (wid, ["core-sw1"], "IOS upgrade")
        ]
        # Increases in the window, plus each series' last row for its counter value.
        assert await db.rule_events.load(since=2.0) == [("virus", {"target": "av"}, 5.0, 2.0, 9.0)]
        assert len(await db.rule_events.load(since=0.0)) == 1  # the baseline row has no increase
        log = await db.log.read()
        assert log == []
    finally:
        await db.close()


# The first schema script of a database from before the rules layer, as it shipped.
OLD_CORE_SCHEMA = """
CREATE TABLE alerts (
    fingerprint TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    labels TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    active_since REAL,
    fired_at REAL,
    resolved_at REAL,
    value REAL,
    summary TEXT NOT NULL DEFAULT ''
);
CREATE TABLE duty_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    subject TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX duty_log_ts ON duty_log (ts);
CREATE INDEX duty_log_kind_ts ON duty_log (kind, ts);
"""


async def test_database_from_before_the_rules_schema_is_upgraded(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_CORE_SCHEMA)
    conn.execute("CREATE TABLE schema_version (component TEXT PRIMARY KEY, version INTEGER)")
    conn.execute("INSERT INTO schema_version VALUES ('core', 1)")
    conn.execute(
        "INSERT INTO alerts VALUES ('fp', 'hot', '{}', 'critical', 'pending', 1, NULL, NULL, 30,"
        " 'old')"
    )
    conn.commit()
    conn.close()
    db = SqliteStorage(path)
    await db.open()
    try:
        (row,) = await db.alerts.load_all()
        assert (row.state, row.active_since, row.extra) == ("pending", 1.0, {})
        # Every later table is there too: the rules layer's and the rest of the list.
        await db.overlays.add_silence({}, 10.0, "li", "r", 1.0)
        assert await db.outbox.stats(0.0) == OutboxStats(0, None, None)
    finally:
        await db.close()
    conn = sqlite3.connect(path)
    try:
        # One schema version now, for the whole list; the per-layer table is gone.
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "schema_version" not in tables
        assert {"silences", "maintenance_windows", "rule_events", "outbox"} <= tables
    finally:
        conn.close()
