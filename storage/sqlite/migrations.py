"""The SQLite schema as one versioned list of migrations, applied in order at open.

`PRAGMA user_version` holds how many have run; each runs in its own transaction together with
the version bump, so a failed change leaves the database as it was. Append new migrations at
the end; never edit one that has shipped.

Databases written before this list existed recorded a version per layer in a `schema_version`
table (each layer registered its own scripts); `LEGACY` names the (layer, version) each of the
first migrations was, so such a database is recognised and brought onto the list.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: alerts and the duty log.
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
    # 2: the rules layer's alert fields, silences, maintenance windows and event counts.
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
    # 3: the notification outbox and the ids delivered lately.
    """
    CREATE TABLE outbox (
        id TEXT PRIMARY KEY,
        recipient TEXT NOT NULL,
        kind TEXT NOT NULL,
        channel TEXT NOT NULL,
        fallbacks TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        channel_failures INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        next_at REAL NOT NULL,
        last_error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX outbox_next ON outbox (next_at);
    CREATE TABLE outbox_sent (
        id TEXT PRIMARY KEY,
        ts REAL NOT NULL
    );
    """,
    # 4: ack links already used.
    """
    CREATE TABLE ack_tokens_used (
        nonce TEXT PRIMARY KEY,
        used_at REAL NOT NULL,
        expires REAL NOT NULL
    );
    """,
    # 5: the room environment's hourly min/max.
    """
    CREATE TABLE environment_hourly (
        hour REAL NOT NULL,
        name TEXT NOT NULL,
        series TEXT NOT NULL,
        min REAL NOT NULL,
        max REAL NOT NULL,
        last REAL NOT NULL,
        PRIMARY KEY (hour, name, series)
    );
    """,
    # 6: outbox claims for a shared outbox, and the fence (highest claim epoch seen).
    """
    ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
    ALTER TABLE outbox ADD COLUMN claim_epoch INTEGER;
    ALTER TABLE outbox ADD COLUMN claim_until REAL;
    CREATE TABLE outbox_fence (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        epoch INTEGER NOT NULL
    );
    INSERT INTO outbox_fence (id, epoch) VALUES (1, 0);
    """,
    # 7: the cluster: members' heartbeats, leases with a fencing epoch, targets' status.
    """
    CREATE TABLE cluster_members (
        node TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        shard TEXT,
        started REAL NOT NULL,
        last_seen REAL NOT NULL
    );
    CREATE TABLE cluster_leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        acquired REAL NOT NULL,
        expires REAL NOT NULL
    );
    CREATE TABLE target_status (
        target TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        up INTEGER NOT NULL,
        reason TEXT NOT NULL,
        last_poll REAL,
        updated REAL NOT NULL
    );
    """,
    # 8: each target's last known boot time, to see a reboot that happened while dutyd was down.
    """
    CREATE TABLE boot_times (
        target TEXT NOT NULL,
        metric TEXT NOT NULL,
        boot_time REAL NOT NULL,
        PRIMARY KEY (target, metric)
    );
    """,
    # 9: the holds of the member series of `across` groups, each written by the node that polls
    # its target, so a group spread over shards is judged on all of its series.
    """
    CREATE TABLE group_members (
        rule TEXT NOT NULL,
        group_key TEXT NOT NULL,
        series_key TEXT NOT NULL,
        holds INTEGER NOT NULL,
        node TEXT NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (rule, group_key, series_key)
    );
    CREATE INDEX group_members_updated ON group_members (updated);
    """,
    # 10: the duty log by alert (the alert-detail API read it with a scan), the ends of
    # silences and windows (retention deletes those over long ago), and one row the daemon
    # writes to learn whether the disk takes writes again after a fault.
    """
    CREATE INDEX duty_log_subject ON duty_log (subject, id);
    CREATE INDEX silences_until ON silences (until);
    CREATE INDEX maintenance_windows_end ON maintenance_windows ("end");
    CREATE INDEX rule_events_ts ON rule_events (ts);
    CREATE TABLE storage_probe (id INTEGER PRIMARY KEY, at REAL NOT NULL);
    """,
    # 11: the room environment's hourly rows compact (a year of 50 sensors was 250 MB): the
    # series named once, each hour a row of integers and three values, keyed by (hour,
    # series) without a rowid, so the diary's range read and retention walk one B-tree.
    """
    CREATE TABLE environment_series (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        series TEXT NOT NULL,
        UNIQUE (name, series)
    );
    CREATE TABLE environment_hours (
        hour INTEGER NOT NULL,
        series_id INTEGER NOT NULL,
        min REAL NOT NULL,
        max REAL NOT NULL,
        last REAL NOT NULL,
        PRIMARY KEY (hour, series_id)
    ) WITHOUT ROWID;
    INSERT INTO environment_series (name, series)
        SELECT DISTINCT name, series FROM environment_hourly ORDER BY series, name;
    INSERT INTO environment_hours (hour, series_id, min, max, last)
        SELECT CAST(h.hour AS INTEGER), s.id, h.min, h.max, h.last
        FROM environment_hourly h JOIN environment_series s USING (name, series);
    DROP TABLE environment_hourly;
    """,
    # 12 (i25): the machine room's entry register, append-only: the triggers refuse any
    # change or removal of a line, so the register stands as evidence.
    """
    CREATE TABLE room_entries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        room TEXT NOT NULL,
        person TEXT NOT NULL,
        direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
        companions TEXT NOT NULL,
        purpose TEXT NOT NULL,
        items TEXT NOT NULL,
        approved_by TEXT NOT NULL,
        actor TEXT NOT NULL
    );
    CREATE INDEX room_entries_ts ON room_entries (ts);
    CREATE INDEX room_entries_room_person ON room_entries (room, person, id);
    CREATE TRIGGER room_entries_no_update BEFORE UPDATE ON room_entries
    BEGIN SELECT RAISE(ABORT, 'the entry register is append-only'); END;
    CREATE TRIGGER room_entries_no_delete BEFORE DELETE ON room_entries
    BEGIN SELECT RAISE(ABORT, 'the entry register is append-only'); END;
    """,
    # 13 (i25): the equipment register's history (what each target is), append-only.
    """
    CREATE TABLE equipment_facts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        target TEXT NOT NULL,
        kind TEXT NOT NULL,
        facts TEXT NOT NULL
    );
    CREATE INDEX equipment_facts_target ON equipment_facts (target, id);
    CREATE INDEX equipment_facts_ts ON equipment_facts (ts);
    CREATE TRIGGER equipment_facts_no_update BEFORE UPDATE ON equipment_facts
    BEGIN SELECT RAISE(ABORT, 'the equipment register is append-only'); END;
    CREATE TRIGGER equipment_facts_no_delete BEFORE DELETE ON equipment_facts
    BEGIN SELECT RAISE(ABORT, 'the equipment register is append-only'); END;
    """,
    # 14: each duty log entry's own key (`NewLogEntry.key`), so an entry written again after a
    # write that timed out on a frozen disk and landed later is not in the log twice.
    """
    ALTER TABLE duty_log ADD COLUMN key INTEGER;
    CREATE INDEX duty_log_key ON duty_log (key) WHERE key IS NOT NULL;
    """,
    # 15 (i26): the sysName each device of a `{sysName}`-named group last told, by address.
    """
    CREATE TABLE sys_names (
        address TEXT PRIMARY KEY,
        sys_name TEXT NOT NULL
    );
    """,
    # 16 (i22): each member's epoch (fencing a shard agent's writes) and the member timeout it
    # wrote; the last epoch given (from 2**40: below are the lease's), never given again.
    """
    ALTER TABLE cluster_members ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE cluster_members ADD COLUMN stale_after REAL NOT NULL DEFAULT 0;
    CREATE INDEX cluster_members_epoch ON cluster_members (epoch);
    CREATE TABLE member_epochs (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL);
    INSERT INTO member_epochs (id, last) VALUES (1, 1099511627775);
    """,
]

# (layer, version) in the old per-layer `schema_version` table, for MIGRATIONS[i].
LEGACY: list[tuple[str, int]] = [
    ("core", 1),
    ("rules", 1),
    ("outbox", 1),
    ("acklinks", 1),
    ("report", 1),
]
