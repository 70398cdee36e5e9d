"""SQLite storage of the rules layer: alerts with their overlay fields, silences, maintenance
windows and event counts, across a close and re-open, and the upgrade of an older database."""

from __future__ import annotations

import sqlite3

from dutyd.storage import StoredAlert
from dutyd.storage.sqlite import SCHEMAS, SqliteStorage


async def test_alert_extra_silences_windows_and_events_survive_reopen(tmp_path):
    path = tmp_path / "d.db"
    db = SqliteStorage(path)
    await db.open()
    extra = {"ack": {"by": "li", "note": "n", "at": 5.0, "expires_at": None}, "flapping": True}
    alert = StoredAlert(
        "fp1", "hot", {"target": "a"}, "critical", "firing", 1.0, 2.0, None, 30.0, "s", extra
    )
    await db.save_alert(alert)
    sid = await db.add_silence({"target": {"=~": "db.*"}}, 100.0, "li", "patching", 1.0)
    old = await db.add_silence({"target": "x"}, 50.0, "li", "short", 1.0)
    wid = await db.add_window(["core-sw1"], {}, 10.0, 20.0, "wang", "IOS upgrade", 1.0)
    gone = await db.add_window(["core-sw2"], {}, 10.0, 20.0, "wang", "cancelled", 1.0)
    assert await db.end_window(gone, 2.0, "wang")
    assert not await db.end_window(gone, 3.0, "wang")  # already ended
    await db.append_rule_events(
        [("virus", {"target": "av"}, 1.0, 0.0, 7.0), ("virus", {"target": "av"}, 5.0, 2.0, 9.0)]
    )
    await db.close()

    db = SqliteStorage(path)
    await db.open()
    try:
        assert await db.load_alerts() == [alert]
        silences = await db.load_silences(now=60.0)
        assert [(s.id, s.matchers, s.reason) for s in silences] == [
            (sid, {"target": {"=~": "db.*"}}, "patching")
        ]
        assert old not in [s.id for s in silences]  # over at 50
        assert await db.end_silence(sid, 61.0, "li")
        assert await db.load_silences(now=62.0) == []
        windows = await db.load_windows(since=0.0)
        assert [(w.id, w.targets, w.reason) for w in windows] == [
            (wid, ["core-sw1"], "IOS upgrade")
        ]
        # Increases in the window, plus each series' last row for its counter value.
        assert await db.load_rule_events(since=2.0) == [("virus", {"target": "av"}, 5.0, 2.0, 9.0)]
        assert len(await db.load_rule_events(since=0.0)) == 1  # the baseline row has no increase
        log = await db.read_log()
        assert log == []
    finally:
        await db.close()


async def test_database_from_before_the_rules_schema_is_upgraded(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMAS["core"][0])
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
        (row,) = await db.load_alerts()
        assert (row.state, row.active_since, row.extra) == ("pending", 1.0, {})
        versions = dict(await db.execute("SELECT component, version FROM schema_version"))
        assert versions["rules"] == len(SCHEMAS["rules"])
    finally:
        await db.close()
