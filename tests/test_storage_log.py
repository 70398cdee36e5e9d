"""The duty log in SQLite: filters, order, and the newest-first tail the status page reads."""

from __future__ import annotations

from pathlib import Path

from dutyd.storage.sqlite import SqliteStorage


async def test_log_filters_and_newest_first_tail(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "log.db")
    await storage.open()
    try:
        for i in range(30):
            kind = "alert.firing" if i % 2 else "notify.sent"
            await storage.log.append(1000.0 + i, kind, "dutyd", f"s{i}", {"i": i})
        oldest = await storage.log.read(limit=3)
        assert [e.data["i"] for e in oldest] == [0, 1, 2]
        tail = await storage.log.read(limit=3, newest_first=True)
        assert [e.data["i"] for e in tail] == [29, 28, 27]
        window = await storage.log.read(since=1010.0, until=1020.0, kinds=["alert."])
        assert [e.data["i"] for e in window] == [11, 13, 15, 17, 19]
        recent_alerts = await storage.log.read(kinds=["alert.firing"], limit=2, newest_first=True)
        assert [e.subject for e in recent_alerts] == ["s29", "s27"]
    finally:
        await storage.close()
