"""The duty log while the disk refuses writes: entries are held in memory, in order, and
written before any newer one once it takes writes again (`flush`, called by the store's
probe), so the log has nothing missing afterwards and nothing out of order. A write that
timed out (a frozen disk) may land after all: the held copy carries the entry's key and the
store skips an entry it already has, so nothing is in the log twice either. (SQLite's: a
single node, so an entry held loses its fencing epoch; a writer of an older epoch is refused
as long as the disk takes its writes.)"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from dutyd.storage.health import StorageHealth, StorageUnavailable
from dutyd.storage.records import LogEntry, NewLogEntry
from dutyd.storage.repositories import DutyLogRepository

log = logging.getLogger("dutyd.storage")

# Held entries beyond this (days of a full disk at a busy site) are dropped, oldest first,
# and the drop is counted and written to the log when it returns: memory stays bounded.
MAX_HELD = 200_000
FLUSH_CHUNK = 2000


class HeldDutyLog(DutyLogRepository):
    def __init__(self, inner: DutyLogRepository, health: StorageHealth) -> None:
        self.inner = inner
        # During a fault, entries go straight to memory: the disk is not asked again for
        # each one (the probe asks, with backoff, and flushes).
        self.health = health
        self.held: list[NewLogEntry] = []
        self.dropped = 0
        self._marker: NewLogEntry | None = None  # "n entries lost", until it is written

    async def append(
        self,
        timestamp: float,
        kind: str,
        actor: str,
        subject: str,
        data: dict[str, Any],
        epoch: int | None = None,
    ) -> int:
        entry = NewLogEntry(timestamp, kind, actor, subject, data)
        if not self.health.writable or (self.held and not await self.flush()):
            self._hold([entry])
            return 0
        try:
            # By the entry, key and all: if this write times out and lands later (a frozen
            # disk), the held copy written by `flush` is found by its key, not added twice.
            return await self.inner.append_entry(entry, epoch)
        except StorageUnavailable:
            self._hold([entry])
            return 0

    async def append_many(self, entries: Sequence[NewLogEntry], epoch: int | None = None) -> None:
        if not self.health.writable or (self.held and not await self.flush()):
            self._hold(entries)
            return
        try:
            await self.inner.append_many(entries, epoch)
        except StorageUnavailable:
            self._hold(entries)

    def _hold(self, entries: Sequence[NewLogEntry]) -> None:
        self.held.extend(entries)
        over = len(self.held) - MAX_HELD
        if over > 0:
            del self.held[:over]
            self.dropped += over

    async def flush(self) -> bool:
        """Write the held entries, oldest first, FLUSH_CHUNK to a transaction (each well
        inside the write deadline, however many were held); False while the store still
        refuses. A chunk whose write timed out and landed is found again by its keys."""
        written = lost = 0
        while self.held or self.dropped:
            batch = list(self.held[:FLUSH_CHUNK])
            taken = len(batch)
            marker = None
            if self.dropped:
                if self._marker is None:  # made once: its key holds across retries
                    ts = batch[0].timestamp if batch else 0.0
                    self._marker = NewLogEntry(
                        ts, "storage.log_entries_lost", "dutyd", "", {"count": self.dropped}
                    )
                marker = self._marker
                batch.insert(0, marker)
            try:
                await self.inner.append_many(batch)
            except StorageUnavailable:
                return False
            # Only what was written: entries held while this write was on its way stay held,
            # behind it.
            del self.held[:taken]
            written += taken
            if marker is not None:
                self.dropped -= int(marker.data["count"])
                lost += int(marker.data["count"])
                self._marker = None
        if written or lost:
            log.info(
                "duty log entries held during the storage fault written",
                extra={"fields": {"count": written, "lost": lost}},
            )
        return True

    async def read(
        self,
        since: float | None = None,
        until: float | None = None,
        kinds: Sequence[str] = (),
        subject: str | None = None,
        limit: int | None = 1000,
        newest_first: bool = False,
        subject_prefix: str | None = None,
    ) -> list[LogEntry]:
        return await self.inner.read(
            since, until, kinds, subject, limit, newest_first, subject_prefix
        )

    async def first_timestamp(self) -> float | None:
        return await self.inner.first_timestamp()

    async def prune(self, before: float, limit: int) -> int:
        return await self.inner.prune(before, limit)
