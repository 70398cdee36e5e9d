"""The outbox's queued rows across a step of the system clock (`duty.clockwatch`).

When the daemon's clock is re-anchored onto a stepped system clock, `NotifyService.shift`
moves every moment it keeps in the same event-loop turn; the rows queued in the store are
moved later, by the delivery loop before it next reads them (`OutboxMoves.write`), each move
with the ids queued at its step (a row queued after the step is on the new clock already).
A row written while a step was taken was stamped on the old clock: `catch_up` moves it too.
At start, a clock that went back moves the queued retries back by as much (`move_back`),
never later, so none waits for a clock that went back.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

from dutyd.storage import OutboxMessage, OutboxRepository


class OutboxMoves:
    """The moves of the rows queued in the store still to be written."""

    def __init__(self, outbox: OutboxRepository) -> None:
        self.outbox = outbox
        self.pending: list[tuple[float, list[str]]] = []  # (seconds, ids queued at the step)
        self.total = 0.0  # every step taken: a write on its way tells by it that it missed one

    def __bool__(self) -> bool:
        return bool(self.pending)

    def add(self, seconds: float, ids: list[str]) -> None:
        """A step of `seconds`: the rows `ids` (queued in the store) are to move by as much."""
        self.pending.append((seconds, ids))
        self.total += seconds

    def unwritten(self) -> float:
        """The seconds the stored rows are still to move: they are read on their old clock."""
        return sum(seconds for seconds, _ in self.pending)

    async def write(self) -> None:
        """Move the stored rows, oldest step first (one that fails is written again next)."""
        while self.pending:
            seconds, ids = self.pending[0]
            await self.outbox.shift_moments(seconds, ids)
            self.pending.pop(0)

    def catch_up(
        self, rows: Sequence[OutboxMessage], added: Collection[str], total_before: float
    ) -> None:
        """`rows` were stamped when the moves' total was `total_before` and `added` to the
        store: a step taken while that write was on its way moves them too."""
        if total_before == self.total or not added:
            return
        late = self.total - total_before
        for row in rows:
            row.next_at += late
            row.created += late
        self.pending.append((late, sorted(added)))


async def move_back(outbox: OutboxRepository, seconds: float, now: float) -> None:
    """Bring each queued retry due after `now` earlier by `seconds`, never before `now`."""
    for row in await outbox.due(math.inf, 1 << 30):
        if row.next_at > now:
            row.next_at = max(now, row.next_at - seconds)
            await outbox.reschedule(row)
