"""The rows queued in the outbox across steps of the system clock (`notify/clockmoves.py`),
on a real SQLite store. The daemon's case, a queued retry keeping its wait across steps while
it runs, is in `test_clock_jumps`."""

from __future__ import annotations

import math
from pathlib import Path

from dutyd.notify.clockmoves import OutboxMoves, move_back
from dutyd.storage import OutboxMessage, open_storage


def message(mid: str, at: float) -> OutboxMessage:
    return OutboxMessage(mid, "Li Na", "firing", "sms", {}, created=at, next_at=at)


async def test_each_step_moves_the_rows_queued_before_it_and_a_late_write_catches_up(
    tmp_path: Path,
) -> None:
    async with open_storage(tmp_path / "d.db") as store:
        moves = OutboxMoves(store.outbox)
        await store.outbox.enqueue([message("early", 100.0)])
        moves.add(3600.0, ["early"])
        # A row stamped on the clock before the next step, whose write was on its way when
        # the step was taken (its id not yet among the queued).
        late = message("late", 3710.0)
        total_before = moves.total
        added = await store.outbox.enqueue([late])
        moves.add(-600.0, ["early"])
        moves.catch_up([late], set(added), total_before)
        assert (late.created, late.next_at) == (3110.0, 3110.0)
        assert moves.unwritten() == 3600.0 - 600.0 - 600.0  # read on the old clock meanwhile

        await moves.write()
        assert not moves and moves.unwritten() == 0.0
        rows = {r.id: r for r in await store.outbox.due(math.inf, 10)}
    assert (rows["early"].created, rows["early"].next_at) == (3100.0, 3100.0)
    assert (rows["late"].created, rows["late"].next_at) == (3110.0, 3110.0)


async def test_a_write_with_no_step_meanwhile_is_not_moved(tmp_path: Path) -> None:
    async with open_storage(tmp_path / "d.db") as store:
        moves = OutboxMoves(store.outbox)
        moves.add(60.0, [])
        row = message("row", 10.0)
        total_before = moves.total
        moves.catch_up([row], set(await store.outbox.enqueue([row])), total_before)
        assert (row.created, row.next_at) == (10.0, 10.0)
        assert moves.pending == [(60.0, [])]


async def test_a_clock_gone_back_brings_queued_retries_earlier_never_before_now(
    tmp_path: Path,
) -> None:
    async with open_storage(tmp_path / "d.db") as store:
        await store.outbox.enqueue([message("due", 50.0), message("soon", 150.0)])
        await store.outbox.enqueue([message("later", 1000.0)])
        await move_back(store.outbox, 500.0, now=100.0)
        rows = {r.id: r.next_at for r in await store.outbox.due(math.inf, 10)}
    assert rows == {"due": 50.0, "soon": 100.0, "later": 500.0}
