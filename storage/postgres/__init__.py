"""The PostgreSQL store (asyncpg): a connection pool that rides out outages (`database`), the
schema as one migration list applied under an advisory lock (`migrations`), one module per
repository. Several dutyd nodes share it: an HA pair, or agents splitting the targets."""

from __future__ import annotations

import logging

from dutyd.storage.base import Storage
from dutyd.storage.health import StorageHealth
from dutyd.storage.held import HeldDutyLog
from dutyd.storage.postgres.ack_links import PostgresAckLinks
from dutyd.storage.postgres.alerts import PostgresAlerts
from dutyd.storage.postgres.boot_times import PostgresBootTimes
from dutyd.storage.postgres.cluster import PostgresCluster
from dutyd.storage.postgres.database import PostgresDatabase
from dutyd.storage.postgres.environment import PostgresEnvironment
from dutyd.storage.postgres.equipment import PostgresEquipment
from dutyd.storage.postgres.log import PostgresDrills, PostgresDutyLog
from dutyd.storage.postgres.outbox import PostgresOutbox
from dutyd.storage.postgres.overlays import PostgresOverlays
from dutyd.storage.postgres.room_entries import PostgresRoomEntries
from dutyd.storage.postgres.rule_events import PostgresRuleEvents
from dutyd.storage.postgres.sys_names import PostgresSysNames

log = logging.getLogger("dutyd.storage")


class PostgresStorage(Storage):
    def __init__(
        self,
        url: str,
        password: str | None = None,
        read_only: bool = False,
        pool_size: int = 5,
        retry_for: float = 120.0,
        deadline: float = 5.0,
    ) -> None:
        self.url = url
        self.read_only = read_only
        # A database that cannot be reached or does not answer within the deadline: the same
        # fault as a failed disk (`storage/health.py`; in a cluster see `cluster/` and `ha`).
        self.health = StorageHealth()
        self._db = PostgresDatabase(
            url, password, read_only, pool_size, retry_for, deadline, self.health
        )
        self.alerts = PostgresAlerts(self._db)
        self.overlays = PostgresOverlays(self._db)
        self.rule_events = PostgresRuleEvents(self._db)
        # Entries the database refuses wait in memory, with their fencing epoch, and are
        # written when it answers again.
        self.log = (
            PostgresDutyLog(self._db)
            if read_only
            else HeldDutyLog(PostgresDutyLog(self._db), self.health)
        )
        self.drills = PostgresDrills(self._db)
        self.outbox = PostgresOutbox(self._db)
        self.ack_links = PostgresAckLinks(self._db)
        self.cluster = PostgresCluster(self._db)
        self.environment = PostgresEnvironment(self._db)
        self.room_entries = PostgresRoomEntries(self._db)
        self.equipment = PostgresEquipment(self._db)
        self.boot_times = PostgresBootTimes(self._db)
        self.sys_names = PostgresSysNames(self._db)

    async def open(self) -> None:
        await self._db.open()

    async def probe(self) -> bool:
        if not await self._db.probe():
            return False
        if isinstance(self.log, HeldDutyLog) and not await self.log.flush():
            return False
        self.health.succeeded()
        return True

    async def close(self) -> None:
        if isinstance(self.log, HeldDutyLog) and self.log.held and not await self.log.flush():
            # Said, never dropped in silence.
            log.error(
                "closing with duty log entries the database refused: they are lost",
                extra={"fields": {"count": len(self.log.held)}},
            )
        await self._db.close()


__all__ = ["PostgresStorage"]
