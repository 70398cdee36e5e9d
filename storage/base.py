"""The bundle of repositories one store provides, and the error it raises.

Apart from the package's `__init__` so that the implementations (`storage/sqlite/`,
`storage/postgres/`) import it without importing the package that chooses between them:
`dutyd.storage` imports the implementations, they import this module, no cycle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType

from dutyd.core.errors import DutydError
from dutyd.storage.health import StorageHealth, StorageUnavailable
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


class StorageError(DutydError):
    """The store cannot be used: missing, unreadable, or of a schema this dutyd cannot read."""


class DatabaseUnavailable(StorageError, StorageUnavailable):
    """A database server that did not answer: unreachable past `storage.retry_for`, or no
    answer within `storage.write_deadline`. A storage fault like a failed disk
    (`StorageUnavailable`: already counted and logged by the store's health), and an error of
    the store for tools that only read (`StorageError`)."""


class FencedOut(StorageError):
    """A write carried an epoch below the store's fence: another node took the notifier
    lease since, and this node's write was refused (nothing of it was written)."""


class Storage(ABC):
    """The repositories of one store, opened and closed together."""

    alerts: AlertRepository
    overlays: OverlayRepository
    rule_events: RuleEventRepository
    log: DutyLogRepository
    drills: DrillRepository
    outbox: OutboxRepository
    ack_links: AckLinkRepository
    environment: EnvironmentRepository
    boot_times: BootTimeRepository
    cluster: ClusterRepository
    # Whether writes go through (see `storage/health.py`).
    health: StorageHealth
    room_entries: RoomEntryRepository
    equipment: EquipmentRepository
    sys_names: SysNameRepository

    @abstractmethod
    async def open(self) -> None: ...

    async def open_in_memory(self, reason: str) -> None:
        """Open without durable state (the file cannot be written): only SQLite can."""
        raise StorageError(reason)

    async def probe(self) -> bool:
        """Whether the store takes writes now; on the way back, what was held is written."""
        return True

    async def compact(self) -> None:
        """Give the space of deleted rows back and bound the write-ahead log (SQLite); a
        server database does this itself (autovacuum)."""
        return None

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Storage:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
