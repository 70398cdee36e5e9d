"""The duty log while the disk refuses writes: entries are held in memory, in order, and
written before any newer one once it takes writes again (`flush`, called by the store's
probe), so the log has nothing missing afterwards and nothing out of order. A write that
timed out (a frozen disk) may land after all: the held copy carries the entry's key and the
store skips an entry it already has, so nothing is in the log twice either. An entry keeps
the fencing epoch it was written with (a cluster node's, on PostgreSQL): held entries of an
epoch the store refuses by the time they are written (another node took over meanwhile, and
records those events itself) are dropped, counted and said once, never written unfenced."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from dutyd.storage.base import FencedOut
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
        self._epochs: list[int | None] = []  # held[i]'s fencing epoch
        self.dropped = 0
        self.fenced = 0  # held entries refused by the fence when written
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
        return await self.append_entry(NewLogEntry(timestamp, kind, actor, subject, data), epoch)

    async def append_entry(self, entry: NewLogEntry, epoch: int | None = None) -> int:
        if not self.health.writable or (self.held and not await self.flush()):
            self._hold([entry], epoch)
            return 0
        try:
            # By the entry, key and all: if this write times out and lands later (a frozen
            # disk), the held copy written by `flush` is found by its key, not added twice.
            return await self.inner.append_entry(entry, epoch)
        except StorageUnavailable:
            self._hold([entry], epoch)
            return 0

    async def append_many(self, entries: Sequence[NewLogEntry], epoch: int | None = None) -> None:
        if not self.health.writable or (self.held and not await self.flush()):
            self._hold(entries, epoch)
            return
        try:
            await self.inner.append_many(entries, epoch)
        except StorageUnavailable:
            self._hold(entries, epoch)

    def _hold(self, entries: Sequence[NewLogEntry], epoch: int | None = None) -> None:
        self.held.extend(entries)
        self._epochs.extend([epoch] * len(entries))
        over = len(self.held) - MAX_HELD
        if over > 0:
            del self.held[:over]
            del self._epochs[:over]
            self.dropped += over

    async def flush(self) -> bool:
        """Write the held entries, oldest first, FLUSH_CHUNK to a transaction (each well
        inside the write deadline, however many were held); False while the store still
        refuses. A chunk whose write timed out and landed is found again by its keys."""
        written = lost = fenced = 0
        while self.held or self.dropped:
            if self.dropped:
                if self._marker is None:  # made once: its key holds across retries
                    ts = self.held[0].timestamp if self.held else 0.0
                    self._marker = NewLogEntry(
                        ts, "storage.log_entries_lost", "dutyd", "", {"count": self.dropped}
                    )
                try:
                    await self.inner.append_many([self._marker])
                except StorageUnavailable:
                    return False
                self.dropped -= int(self._marker.data["count"])
                lost += int(self._marker.data["count"])
                self._marker = None
                continue
            # A chunk of one epoch: the store checks it against the fence in its transaction.
            epoch = self._epochs[0]
            taken = 1
            while taken < min(FLUSH_CHUNK, len(self.held)) and self._epochs[taken] == epoch:
                taken += 1
            try:
                await self.inner.append_many(self.held[:taken], epoch)
            except FencedOut:
                # Written by a node that lost its place meanwhile: the node that took over
                # records those events. Dropped, never written without the fence.
                fenced += taken
                self.fenced += taken
            except StorageUnavailable:
                return False
            else:
                written += taken
            # Only what was written (or refused): entries held while this write was on its
            # way stay held, behind it.
            del self.held[:taken]
            del self._epochs[:taken]
        if written or lost:
            log.info(
                "duty log entries held during the storage fault written",
                extra={"fields": {"count": written, "lost": lost}},
            )
        if fenced:
            log.warning(
                "duty log entries held during the storage fault refused by the fence: "
                "another node took over meanwhile and records those events",
                extra={"fields": {"count": fenced}},
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
