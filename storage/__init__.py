"""Durable state behind repositories; SQLite (WAL) is the embedded default.

Everything the daemon must not lose lives here: alerts, silences and maintenance windows, event
counts, the duty log, the notification outbox, used ack links, drills, the room environment,
targets' boot times, the entry and equipment registers. `Storage` bundles one repository per thing
(`storage.alerts`, `storage.log`, `storage.outbox`, ...), opened and closed together. A server
database replaces SQLite by implementing the repositories of `dutyd.storage.repositories`,
passing the contract suite in `tests/test_storage_contract.py`, and registering its URL scheme in
`open_storage`.
"""

from __future__ import annotations

from pathlib import Path

from dutyd.storage.base import DatabaseUnavailable, FencedOut, Storage, StorageError
from dutyd.storage.config import RetentionConfig, StorageConfig, is_postgres_url
from dutyd.storage.health import StorageHealth, StorageUnavailable
from dutyd.storage.records import (
    EnvironmentRange,
    EnvironmentReading,
    EquipmentFacts,
    GroupHold,
    GroupMemberRow,
    LeaseState,
    LogEntry,
    Member,
    NewLogEntry,
    NewRoomEntry,
    OutboxMessage,
    OutboxStats,
    RoomEntry,
    RuleEventRow,
    StoredAlert,
    StoredSilence,
    StoredWindow,
    TargetStatusRow,
)
from dutyd.storage.repositories import (
    AckLinkRepository,
    AlertRepository,
    BootTimeRepository,
    ClusterRepository,
    DrillRepository,
    DutyLogRepository,
    EnvironmentRepository,
    EquipmentRepository,
    OutboxRepository,
    OverlayRepository,
    RoomEntryRepository,
    RuleEventRepository,
    SysNameRepository,
)


def open_storage(
    location: Path | str,
    read_only: bool = False,
    password: str | None = None,
    pool_size: int = 5,
    retry_for: float = 120.0,
    write_deadline: float = 5.0,
) -> Storage:
    """The storage for a configured location, not yet opened: a postgresql:// URL means
    PostgreSQL (with `password`, never part of the URL), a file path SQLite. `read_only` for
    tools that only read (the `dutyd log` and `report` commands)."""
    # Imported here so that a process loads one database driver, the one it uses (asyncpg is
    # not loaded for SQLite). No cycle needs this: the implementations import
    # `dutyd.storage.base`, not this package.
    if is_postgres_url(location):
        from dutyd.storage.postgres import PostgresStorage

        return PostgresStorage(
            str(location), password, read_only, pool_size, retry_for, write_deadline
        )
    from dutyd.storage.sqlite import SqliteStorage

    return SqliteStorage(location, read_only=read_only, write_deadline=write_deadline)


def open_configured(config: StorageConfig, read_only: bool = False) -> Storage:
    """The storage a `storage:` config section names, not yet opened."""
    return open_storage(
        config.location,
        read_only,
        config.password(),
        config.pool_size,
        config.retry_for,
        config.write_deadline,
    )


__all__ = [
    "AckLinkRepository",
    "AlertRepository",
    "BootTimeRepository",
    "ClusterRepository",
    "DatabaseUnavailable",
    "DrillRepository",
    "DutyLogRepository",
    "EnvironmentRange",
    "EnvironmentReading",
    "EnvironmentRepository",
    "EquipmentFacts",
    "EquipmentRepository",
    "FencedOut",
    "GroupHold",
    "GroupMemberRow",
    "LeaseState",
    "LogEntry",
    "Member",
    "NewLogEntry",
    "NewRoomEntry",
    "OutboxMessage",
    "OutboxRepository",
    "OutboxStats",
    "OverlayRepository",
    "RetentionConfig",
    "RoomEntry",
    "RoomEntryRepository",
    "RuleEventRepository",
    "RuleEventRow",
    "Storage",
    "StorageConfig",
    "StorageError",
    "StorageHealth",
    "StorageUnavailable",
    "StoredAlert",
    "StoredSilence",
    "StoredWindow",
    "SysNameRepository",
    "TargetStatusRow",
    "open_configured",
    "open_storage",
]
