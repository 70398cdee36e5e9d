"""The outbox while the disk refuses writes (a single node): the messages whose state is in
memory only, and their replay once the disk takes writes again.

A message the outbox could not take (`hold`) is sent from memory, in the same delivery order
and with the same backoff. A reschedule the disk refused keeps the row in memory too, so it
is never due again at once (issue 22 measured 8,800 sends in 15 s of a full disk); a
delivery or a drop the disk refused is remembered, so a delivered message is never sent
again. Memory is their record until `write_back` (the delivery loop, once the store's probe
finds the disk writable again) records the deliveries (with their `notify.sent` entries),
then the drops, then the messages still to send as they are now.

A cluster node holds no message to send (it sends nothing it could not write: its claim and
fence are in the store), so `hold_reschedules` is False there; its refused deliveries and
drops are remembered as a single node's are, until another node took the lease: its outbox
is the record then, and the write-back refused by the fence forgets them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection, Iterable

from dutyd.storage import (
    FencedOut,
    NewLogEntry,
    OutboxMessage,
    OutboxRepository,
    StorageUnavailable,
)

log = logging.getLogger("dutyd.notify")


class HeldOutbox:
    """The outbox's writes the disk refused, held in memory; the store's outbox otherwise."""

    def __init__(
        self,
        outbox: OutboxRepository,
        epoch: Callable[[], int | None],
        hold_reschedules: bool,
    ) -> None:
        self.outbox = outbox
        self._epoch = epoch  # what every write carries (see `NotifyService`)
        self._hold_reschedules = hold_reschedules
        # Messages whose state is in memory only: never written (`new`), or a reschedule
        # not written.
        self.rows: dict[str, OutboxMessage] = {}
        self.new: set[str] = set()
        # Deliveries (when, the pages sent, the duty-log entry) and drops not yet recorded.
        self.done: dict[str, tuple[float, list[str], NewLogEntry]] = {}
        self.dropped: set[str] = set()

    def __bool__(self) -> bool:
        """Something is held: the store's outbox is not (yet) the whole record."""
        return bool(self.rows or self.done or self.dropped)

    def ids(self) -> set[str]:
        """The messages whose state is in memory: not to be read from the store."""
        return {*self.rows, *self.done, *self.dropped}

    def pages(self) -> set[str]:
        """The page ids of the messages held or delivered from memory: queued already."""
        pages = {p for row in self.rows.values() for p in row.payload.get("pages", ())}
        pages.update(p for _, done, _ in self.done.values() for p in done)
        return pages

    def hold(self, rows: Iterable[OutboxMessage]) -> list[OutboxMessage]:
        """Keep messages the outbox could not take, to send them from memory; those not held
        already (the caller adds them to the delivery order)."""
        held = []
        for row in rows:
            if row.id in self.rows or row.id in self.done:
                continue
            self.rows[row.id] = row
            self.new.add(row.id)
            held.append(row)
        return held

    def due(self, now: float, busy: Collection[str]) -> list[OutboxMessage]:
        """The held messages due by `now` and not `busy`, in the store's order."""
        due = [r for r in self.rows.values() if r.next_at <= now and r.id not in busy]
        return sorted(due, key=lambda r: (r.next_at, r.created, r.id))

    def shift(self, seconds: float) -> None:
        """The daemon's clock was re-anchored: the held rows keep their place in the queue."""
        for row in self.rows.values():
            row.next_at += seconds
            row.created += seconds

    async def reschedule(self, row: OutboxMessage) -> None:
        if row.id in self.rows:
            return  # memory is its record (the row object itself) until the disk is back
        try:
            await self.outbox.reschedule(row, self._epoch())
        except StorageUnavailable:
            if self._hold_reschedules:
                self.rows[row.id] = row  # not due again before its `next_at`
            # A cluster node's claim keeps the row from being due before the claim ends.

    async def delivered(
        self, row: OutboxMessage, at: float, pages: list[str], entry: NewLogEntry
    ) -> None:
        """Delivered is delivered, whether or not the disk heard: a failed write is retried
        from memory and the message is never sent again."""
        self.rows.pop(row.id, None)
        self.new.discard(row.id)
        try:
            await self.outbox.mark_delivered(row.id, at, pages, entry, self._epoch())
        except StorageUnavailable:
            self.done[row.id] = (at, pages, entry)

    async def drop(self, row: OutboxMessage) -> None:
        self.rows.pop(row.id, None)
        if row.id in self.new:
            self.new.discard(row.id)
            return  # never written
        try:
            await self.outbox.drop(row.id, self._epoch())
        except StorageUnavailable:
            self.dropped.add(row.id)

    async def write_back(self, sending: Collection[str]) -> None:
        """The disk takes writes again: record what happened meanwhile (deliveries with their
        duty-log entries, drops, then the rows still to send, as they are now; those being
        `sending` are written by their delivery)."""
        try:
            for mid, (at, pages, entry) in list(self.done.items()):
                await self.outbox.mark_delivered(mid, at, pages, entry, self._epoch())
                del self.done[mid]
            for mid in list(self.dropped):
                await self.outbox.drop(mid, self._epoch())
                self.dropped.discard(mid)
        except FencedOut:
            # A cluster node that lost the lease while these waited: the outbox is the new
            # active's record now (it sends such a message again, under the same id: the
            # receiver's dedup window). Kept, they would be refused at every round and keep
            # this node's queue from being read again.
            log.warning(
                "deliveries and drops made before another node took over are not recorded "
                "here: the new active node sends those messages again under the same ids",
                extra={"fields": {"deliveries": len(self.done), "drops": len(self.dropped)}},
            )
            self.done.clear()
            self.dropped.clear()
            raise
        idle = [r for r in self.rows.values() if r.id not in sending]
        if not idle:
            return
        new = [r for r in idle if r.id in self.new]
        if new:
            added = set(await self.outbox.enqueue(new))
            for r in new:
                self.new.discard(r.id)
                if r.id in added:
                    del self.rows[r.id]
                # Else its first write timed out and landed late (a frozen disk): the row is
                # there as it was then; the reschedule below writes it as it is now.
        for r in idle:
            if r.id in self.rows:
                await self.outbox.reschedule(r, self._epoch())
                del self.rows[r.id]
        log.info(
            "notifications held in memory written to the outbox",
            extra={"fields": {"written": len(idle), "still_held": len(self.rows)}},
        )

    async def close(self, sending: Collection[str]) -> None:
        """At stop: a last write-back; what the disk still refuses is said, never dropped in
        silence."""
        if not self:
            return
        with contextlib.suppress(StorageUnavailable):
            await self.write_back(sending)
        if self:
            log.error(
                "stopping with notifications the disk refused: they are lost",
                extra={
                    "fields": {"unsent": len(self.rows), "deliveries_unrecorded": len(self.done)}
                },
            )
