"""The SQLite store (standard library sqlite3, WAL mode): one connection on one thread
(`database`), the schema as one migration list (`migrations`), one module per repository."""

from __future__ import annotations

import logging
from pathlib import Path

from dutyd.storage.base import Storage
from dutyd.storage.health import StorageHealth
from dutyd.storage.held import HeldDutyLog
from dutyd.storage.sqlite.ack_links import SqliteAckLinks
from dutyd.storage.sqlite.alerts import SqliteAlerts
from dutyd.storage.sqlite.boot_times import SqliteBootTimes
from dutyd.storage.sqlite.cluster import SqliteCluster
from dutyd.storage.sqlite.database import SqliteDatabase
from dutyd.storage.sqlite.environment import SqliteEnvironment
from dutyd.storage.sqlite.equipment import SqliteEquipment
from dutyd.storage.sqlite.log import SqliteDrills, SqliteDutyLog
from dutyd.storage.sqlite.outbox import SqliteOutbox
from dutyd.storage.sqlite.overlays import SqliteOverlays
from dutyd.storage.sqlite.room_entries import SqliteRoomEntries
from dutyd.storage.sqlite.rule_events import SqliteRuleEvents
from dutyd.storage.sqlite.sys_names import SqliteSysNames

log = logging.getLogger("dutyd.storage")


class SqliteStorage(Storage):
    def __init__(
        self, path: Path | str, read_only: bool = False, write_deadline: float = 5.0
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.health = StorageHealth()
        self._db = SqliteDatabase(self.path, read_only, self.health, write_deadline)
        self.alerts = SqliteAlerts(self._db)
        self.overlays = SqliteOverlays(self._db)
        self.rule_events = SqliteRuleEvents(self._db)
        # Entries the disk refuses wait in memory and are written when it takes them again.
        self.log = (
            SqliteDutyLog(self._db)
            if read_only
            else HeldDutyLog(SqliteDutyLog(self._db), self.health)
        )
        self.drills = SqliteDrills(self._db)
        self.outbox = SqliteOutbox(self._db)
        self.ack_links = SqliteAckLinks(self._db)
        self.cluster = SqliteCluster(self._db)
        self.environment = SqliteEnvironment(self._db)
        self.room_entries = SqliteRoomEntries(self._db)
        self.equipment = SqliteEquipment(self._db)
        self.boot_times = SqliteBootTimes(self._db)
        self.sys_names = SqliteSysNames(self._db)

    async def open(self) -> None:
        await self._db.open()

    async def open_in_memory(self, reason: str) -> None:
        await self._db.open_in_memory(reason)

    @property
    def in_memory(self) -> bool:
        return self._db.in_memory

    async def probe(self) -> bool:
        if not await self._db.probe():
            return False
        if isinstance(self.log, HeldDutyLog) and not await self.log.flush():
            return False
        self.health.succeeded()
        return True

    async def compact(self) -> None:
        await self._db.checkpoint()

    async def close(self) -> None:
        await self.outbox.drain()
        if isinstance(self.log, HeldDutyLog) and self.log.held and not await self.log.flush():
            # Said, never dropped in silence.
            log.error(
                "closing with duty log entries the disk refused: they are lost",
                extra={"fields": {"count": len(self.log.held)}},
            )
        await self._db.close()


__all__ = ["SqliteStorage"]
