"""The PostgreSQL schema as one versioned list of migrations, applied in order at open.

Table `dutyd_schema` holds one row per migration that has run; each runs in its own
transaction with its row. Nodes that start at the same time serialise on an advisory lock
(`MIGRATION_LOCK`) held for the whole check-and-apply, so a migration never runs twice.
Append new migrations at the end; never edit one that has shipped.

Times are seconds since the epoch (DOUBLE PRECISION) as in SQLite, so the repositories return
the same values; JSON is stored as canonical text, so ordering by it matches SQLite's.
"""

from __future__ import annotations

# pg_advisory_lock key: "dutyd" in ASCII, then 1 for migrations.
MIGRATION_LOCK = 0x6475747964_01

MIGRATIONS: list[str] = [
    # 1: what the SQLite schema holds after its 5 migrations.
    """
    CREATE TABLE alerts (
        fingerprint TEXT PRIMARY KEY,
        rule TEXT NOT NULL,
        labels TEXT NOT NULL,
        severity TEXT NOT NULL,
        state TEXT NOT NULL,
        active_since DOUBLE PRECISION,
        fired_at DOUBLE PRECISION,
        resolved_at DOUBLE PRECISION,
        value DOUBLE PRECISION,
        summary TEXT NOT NULL DEFAULT '',
        extra TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE duty_log (
        id BIGSERIAL PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        subject TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX duty_log_ts ON duty_log (ts);
    CREATE INDEX duty_log_kind_ts ON duty_log (kind, ts);
    CREATE TABLE silences (
        id BIGSERIAL PRIMARY KEY,
        matchers TEXT NOT NULL,
        until DOUBLE PRECISION NOT NULL,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        removed_at DOUBLE PRECISION,
        removed_by TEXT
    );
    CREATE TABLE maintenance_windows (
        id BIGSERIAL PRIMARY KEY,
        targets TEXT NOT NULL,
        matchers TEXT NOT NULL,
        start DOUBLE PRECISION NOT NULL,
        "end" DOUBLE PRECISION NOT NULL,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        removed_at DOUBLE PRECISION,
        removed_by TEXT
    );
    CREATE TABLE rule_events (
        id BIGSERIAL PRIMARY KEY,
        rule TEXT NOT NULL,
        series TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        increment DOUBLE PRECISION NOT NULL,
        counter DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX rule_events_series ON rule_events (rule, series, ts);
    CREATE TABLE outbox (
        id TEXT PRIMARY KEY,
        recipient TEXT NOT NULL,
        kind TEXT NOT NULL,
        channel TEXT NOT NULL,
        fallbacks TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        channel_failures INTEGER NOT NULL DEFAULT 0,
        created DOUBLE PRECISION NOT NULL,
        next_at DOUBLE PRECISION NOT NULL,
        last_error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX outbox_next ON outbox (next_at);
    CREATE TABLE outbox_sent (
        id TEXT PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE ack_tokens_used (
        nonce TEXT PRIMARY KEY,
        used_at DOUBLE PRECISION NOT NULL,
        expires DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE environment_hourly (
        hour DOUBLE PRECISION NOT NULL,
        name TEXT NOT NULL,
        series TEXT NOT NULL,
        min DOUBLE PRECISION NOT NULL,
        max DOUBLE PRECISION NOT NULL,
        last DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (hour, name, series)
    );
    """,
    # 2: outbox claims for a shared outbox, and the fence (highest claim epoch seen).
    """
    ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
    ALTER TABLE outbox ADD COLUMN claim_epoch BIGINT;
    ALTER TABLE outbox ADD COLUMN claim_until DOUBLE PRECISION;
    CREATE TABLE outbox_fence (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        epoch BIGINT NOT NULL
    );
    INSERT INTO outbox_fence (id, epoch) VALUES (1, 0);
    """,
    # 3: the cluster: members' heartbeats, leases with a fencing epoch, targets' status; the
    # server's clock as the one time every node agrees on.
    """
    CREATE FUNCTION dutyd_now() RETURNS DOUBLE PRECISION
        LANGUAGE sql VOLATILE AS 'SELECT extract(epoch FROM clock_timestamp())::double precision';
    CREATE TABLE cluster_members (
        node TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        shard TEXT,
        started DOUBLE PRECISION NOT NULL,
        last_seen DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE cluster_leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        acquired DOUBLE PRECISION NOT NULL,
        expires DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE target_status (
        target TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        up BOOLEAN NOT NULL,
        reason TEXT NOT NULL,
        last_poll DOUBLE PRECISION,
        updated DOUBLE PRECISION NOT NULL
    );
    """,
    # 4: each target's last known boot time, to see a reboot that happened while dutyd was down.
    """
    CREATE TABLE boot_times (
        target TEXT NOT NULL,
        metric TEXT NOT NULL,
        boot_time DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (target, metric)
    );
    """,
    # 5: the holds of the member series of `across` groups, each written by the node that polls
    # its target, so a group spread over shards is judged on all of its series.
    """
    CREATE TABLE group_members (
        rule TEXT NOT NULL,
        group_key TEXT NOT NULL,
        series_key TEXT NOT NULL,
        holds BOOLEAN NOT NULL,
        node TEXT NOT NULL,
        updated DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (rule, group_key, series_key)
    );
    CREATE INDEX group_members_updated ON group_members (updated);
    """,
    # 6: the duty log by alert (the alert-detail API read it with a scan), and the ends of
    # silences and windows and the times of rule events (retention deletes the old ones).
    """
    CREATE INDEX duty_log_subject ON duty_log (subject, id);
    CREATE INDEX silences_until ON silences (until);
    CREATE INDEX maintenance_windows_end ON maintenance_windows ("end");
    CREATE INDEX rule_events_ts ON rule_events (ts);
    """,
    # 7 (i25): the machine room's entry register, append-only: the trigger refuses any change
    # or removal of a line (TRUNCATE too), so the register stands as evidence.
    """
    CREATE TABLE room_entries (
        id BIGSERIAL PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
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
    CREATE FUNCTION dutyd_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the % register is append-only', TG_TABLE_NAME;
    END $$;
    CREATE TRIGGER room_entries_append_only BEFORE UPDATE OR DELETE ON room_entries
        FOR EACH ROW EXECUTE FUNCTION dutyd_append_only();
    CREATE TRIGGER room_entries_no_truncate BEFORE TRUNCATE ON room_entries
        FOR EACH STATEMENT EXECUTE FUNCTION dutyd_append_only();
    """,
    # 8 (i25): the equipment register's history (what each target is), append-only.
    """
    CREATE TABLE equipment_facts (
        id BIGSERIAL PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        target TEXT NOT NULL,
        kind TEXT NOT NULL,
        facts TEXT NOT NULL
    );
    CREATE INDEX equipment_facts_target ON equipment_facts (target, id);
    CREATE INDEX equipment_facts_ts ON equipment_facts (ts);
    CREATE TRIGGER equipment_facts_append_only BEFORE UPDATE OR DELETE ON equipment_facts
        FOR EACH ROW EXECUTE FUNCTION dutyd_append_only();
    CREATE TRIGGER equipment_facts_no_truncate BEFORE TRUNCATE ON equipment_facts
        FOR EACH STATEMENT EXECUTE FUNCTION dutyd_append_only();
    """,
    # 9 (i26): the sysName each device of a `{sysName}`-named group last told, by address.
    """
    CREATE TABLE sys_names (
        address TEXT PRIMARY KEY,
        sys_name TEXT NOT NULL
    );
    """,
    # 10 (i22): each duty log entry's own key (`NewLogEntry.key`), so an entry written again
    # after a call that timed out once its commit had reached the server is not there twice.
    """
    ALTER TABLE duty_log ADD COLUMN key BIGINT;
    CREATE INDEX duty_log_key ON duty_log (key) WHERE key IS NOT NULL;
    """,
    # 11 (i22): each member's epoch (fencing a shard agent's writes) and the member timeout
    # it wrote, past which its epoch fences nothing in; epochs from 2**40 (below: the lease's).
    """
    ALTER TABLE cluster_members ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE cluster_members ADD COLUMN stale_after DOUBLE PRECISION NOT NULL DEFAULT 0;
    CREATE SEQUENCE member_epochs START WITH 1099511627776;
    CREATE INDEX cluster_members_epoch ON cluster_members (epoch);
    """,
]
