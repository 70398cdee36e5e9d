"""SQLite storage (standard library sqlite3, WAL mode) on one dedicated thread.

All statements run on a single-thread executor that owns the connection, so the event loop
never blocks on disk and sqlite3's thread rules hold. Each layer owns its tables: it registers
its schema scripts under its own name (`register_schema("outbox", [...])`, append-only, one
script per change) and the `schema_version` table records how many of each have run.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from dutyd.storage import (
    LogEntry,
    RuleEventRow,
    Storage,
    StoredAlert,
    StoredSilence,
    StoredWindow,
)

T = TypeVar("T")

SCHEMAS: dict[str, list[str]] = {}


def register_schema(component: str, scripts: list[str]) -> None:
    """Declare a layer's tables: scripts run once each, in order, when the store opens."""
    SCHEMAS[component] = scripts


register_schema(
    "core",
    [
        """
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
    """,
    ],
)

# The rules layer: alert overlays and history. Silences and windows are never deleted, only
# marked removed, so the duty log and reports can say who muted what and when.
register_schema(
    "rules",
    [
        """
    ALTER TABLE alerts ADD COLUMN extra TEXT NOT NULL DEFAULT '{}';
    CREATE TABLE silences (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        matchers TEXT NOT NULL,
        until REAL NOT NULL,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
        created REAL NOT NULL,
        removed_at REAL,
        removed_by TEXT
    );
    CREATE TABLE maintenance_windows (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        targets TEXT NOT NULL,
        matchers TEXT NOT NULL,
        start REAL NOT NULL,
        "end" REAL NOT NULL,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
        created REAL NOT NULL,
        removed_at REAL,
        removed_by TEXT
    );
    CREATE TABLE rule_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        rule TEXT NOT NULL,
        series TEXT NOT NULL,
        ts REAL NOT NULL,
        increment REAL NOT NULL,
        counter REAL NOT NULL
    );
    CREATE INDEX rule_events_series ON rule_events (rule, series, ts);
    """,
    ],
)


def _json(data: object) -> str:
    return json.dumps(data, ensure_ascii=False, sort_keys=True)


class SqliteStorage(Storage):
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None

    async def _run(self, func: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._conn is None:
                raise RuntimeError("storage is not open")
            return func(self._conn)

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def open(self) -> None:
        def connect() -> None:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode is durable against process crashes (SIGKILL); only an OS
            # crash may lose the last transactions.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
            for component, scripts in SCHEMAS.items():
                row = conn.execute(
                    "SELECT version FROM schema_version WHERE component=?", (component,)
                ).fetchone()
                done = row[0] if row else 0
                for i, script in enumerate(scripts[done:], start=done + 1):
                    # One transaction per script, so a failed change leaves the version as it
                    # was (executescript commits whatever is open first, so BEGIN goes inside).
                    try:
                        conn.executescript("BEGIN;\n" + script)
                        conn.execute(
                            "INSERT OR REPLACE INTO schema_version VALUES (?, ?)", (component, i)
                        )
                    except BaseException:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
            self._conn = conn

        await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement; for the layers that add their own tables via `register_schema`."""
        return await self._run(lambda c: c.execute(sql, params).fetchall())

    async def run(self, func: Callable[[sqlite3.Connection], T]) -> T:
        """Run `func(connection)` on the storage thread: several statements in one go."""
        return await self._run(func)

    async def save_alert(self, alert: StoredAlert) -> None:
        row = (
            alert.fingerprint,
            alert.rule,
            json.dumps(alert.labels, ensure_ascii=False, sort_keys=True),
            alert.severity,
            alert.state,
            alert.active_since,
            alert.fired_at,
            alert.resolved_at,
            alert.value,
            alert.summary,
            _json(alert.extra),
        )
        await self._run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO alerts (fingerprint, rule, labels, severity, state, "
                "active_since, fired_at, resolved_at, value, summary, extra) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                row,
            )
        )

    async def delete_alert(self, fingerprint: str) -> None:
        await self._run(
            lambda c: c.execute("DELETE FROM alerts WHERE fingerprint=?", (fingerprint,))
        )

    async def load_alerts(self) -> list[StoredAlert]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT fingerprint, rule, labels, severity, state, active_since, fired_at, "
                "resolved_at, value, summary, extra FROM alerts"
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

    async def add_silence(
        self, matchers: dict[str, Any], until: float, actor: str, reason: str, created: float
    ) -> int:
        row = (_json(matchers), until, actor, reason, created)

        def insert(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "INSERT INTO silences (matchers, until, actor, reason, created) VALUES (?,?,?,?,?)",
                row,
            )
            return int(cur.lastrowid or 0)

        return await self._run(insert)

    async def end_silence(self, id: int, at: float, actor: str) -> bool:
        def update(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE silences SET removed_at=?, removed_by=? WHERE id=? AND removed_at IS NULL",
                (at, actor, id),
            )
            return cur.rowcount > 0

        return await self._run(update)

    async def load_silences(self, now: float) -> list[StoredSilence]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT id, matchers, until, actor, reason, created FROM silences "
                "WHERE removed_at IS NULL AND until > ? ORDER BY id",
                (now,),
            ).fetchall()
        )
        return [StoredSilence(r[0], json.loads(r[1]), r[2], r[3], r[4], r[5]) for r in rows]

    async def add_window(
        self,
        targets: list[str],
        matchers: dict[str, Any],
        start: float,
        end: float,
        actor: str,
        reason: str,
        created: float,
    ) -> int:
        row = (_json(targets), _json(matchers), start, end, actor, reason, created)

        def insert(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "INSERT INTO maintenance_windows "
                '(targets, matchers, start, "end", actor, reason, created) '
                "VALUES (?,?,?,?,?,?,?)",
                row,
            )
            return int(cur.lastrowid or 0)

        return await self._run(insert)

    async def end_window(self, id: int, at: float, actor: str) -> bool:
        def update(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE maintenance_windows SET removed_at=?, removed_by=? "
                "WHERE id=? AND removed_at IS NULL",
                (at, actor, id),
            )
            return cur.rowcount > 0

        return await self._run(update)

    async def load_windows(self, since: float) -> list[StoredWindow]:
        rows = await self._run(
            lambda c: c.execute(
                'SELECT id, targets, matchers, start, "end", actor, reason, created '
                'FROM maintenance_windows WHERE removed_at IS NULL AND "end" > ? ORDER BY id',
                (since,),
            ).fetchall()
        )
        return [
            StoredWindow(r[0], json.loads(r[1]), json.loads(r[2]), r[3], r[4], r[5], r[6], r[7])
            for r in rows
        ]

    async def append_rule_events(self, rows: Sequence[RuleEventRow]) -> None:
        data = [(rule, _json(series), ts, inc, counter) for rule, series, ts, inc, counter in rows]
        if not data:
            return

        def insert(c: sqlite3.Connection) -> None:
            c.execute("BEGIN")
            c.executemany(
                "INSERT INTO rule_events (rule, series, ts, increment, counter) VALUES (?,?,?,?,?)",
                data,
            )
            c.execute("COMMIT")

        await self._run(insert)

    async def load_rule_events(self, since: float) -> list[RuleEventRow]:
        def select(c: sqlite3.Connection) -> list[tuple[Any, ...]]:
            # Increases inside the window, and each series' latest row for its last value.
            return c.execute(
                "SELECT rule, series, ts, increment, counter FROM rule_events "
                "WHERE (ts >= ? AND increment > 0) OR id IN "
                "(SELECT MAX(id) FROM rule_events GROUP BY rule, series) ORDER BY id",
                (since,),
            ).fetchall()

        rows = await self._run(select)
        return [(r[0], json.loads(r[1]), r[2], r[3], r[4]) for r in rows]

    async def append_log(
        self, timestamp: float, kind: str, actor: str, subject: str, data: dict[str, Any]
    ) -> int:
        payload = json.dumps(data, ensure_ascii=False, sort_keys=True, default=str)

        def insert(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "INSERT INTO duty_log (ts, kind, actor, subject, data) VALUES (?,?,?,?,?)",
                (timestamp, kind, actor, subject, payload),
            )
            return int(cur.lastrowid or 0)

        return await self._run(insert)

    async def read_log(
        self,
        since: float | None = None,
        until: float | None = None,
        kinds: Sequence[str] = (),
        subject: str | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[LogEntry]:
        where, params = ["1=1"], []
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        if until is not None:
            where.append("ts < ?")
            params.append(until)
        if kinds:
            # A kind ending in '.' is a prefix: "alert." matches alert.firing, alert.resolved.
            clauses = []
            for k in kinds:
                if k.endswith("."):
                    clauses.append("kind LIKE ?")
                    params.append(k + "%")
                else:
                    clauses.append("kind = ?")
                    params.append(k)
            where.append("(" + " OR ".join(clauses) + ")")
        if subject is not None:
            where.append("subject = ?")
            params.append(subject)
        # Only fixed clause texts are joined here; every value is a bound parameter.
        sql = (
            "SELECT id, ts, kind, actor, subject, data FROM duty_log WHERE "  # noqa: S608
            + " AND ".join(where)
            + (" ORDER BY id DESC LIMIT ?" if newest_first else " ORDER BY id LIMIT ?")
        )
        params.append(limit)
        rows = await self._run(lambda c: c.execute(sql, params).fetchall())
        return [LogEntry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]
