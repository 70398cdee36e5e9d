"""The notification outbox's writes a full disk refuses, held in memory (`notify/heldoutbox.py`)
and written back once it takes writes again, on a real SQLite store on a small tmpfs that is
filled (root, as in `test_storage_faults`). The end-to-end cases, a real `dutyd run` paging
through the fault, are in `test_storage_faults`."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from dutyd.notify.heldoutbox import HeldOutbox
from dutyd.storage import (
    FencedOut,
    NewLogEntry,
    OutboxMessage,
    StorageUnavailable,
    open_storage,
)
from tests.test_storage_faults import fill, small_disk


def message(mid: str, at: float) -> OutboxMessage:
    return OutboxMessage(
        mid, "Li Na", "firing", "sms", {"pages": [f"page-{mid}"]}, created=at, next_at=at
    )


async def test_refused_writes_are_held_and_written_back_as_they_are_now(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "1m") as disk:
        async with open_storage(disk / "d.db") as store:
            sent, dropped, retried = (
                message("sent", 1.0),
                message("dropped", 2.0),
                message("r", 3.0),
            )
            await store.outbox.enqueue([sent, dropped, retried])
            held = HeldOutbox(store.outbox, lambda: None, hold_reschedules=True)
            filler = await asyncio.to_thread(fill, disk)

            new = message("new", 4.0)
            with pytest.raises(StorageUnavailable):
                await store.outbox.enqueue([new])
            assert held.hold([new]) == [new]
            assert held.hold([new]) == []  # held already
            entry = NewLogEntry(5.0, "notify.sent", "dutyd", "sent", {})
            await held.delivered(sent, 5.0, ["page-sent"], entry)
            await held.drop(dropped)
            retried.next_at, retried.attempts = 60.0, 1
            await held.reschedule(retried)

            # Memory is their record: none is read from the store, none is due again early,
            # and the pages of those held or delivered count as queued.
            assert held.ids() == {"sent", "dropped", "r", "new"}
            assert [r.id for r in held.due(10.0, busy=())] == ["new"]
            assert [r.id for r in held.due(60.0, busy={"new"})] == ["r"]
            assert [r.id for r in held.due(60.0, busy=())] == ["new", "r"]
            assert held.pages() == {"page-sent", "page-new", "page-r"}

            filler.unlink()
            assert await store.probe()
            await held.write_back(sending={"new"})  # its delivery writes it
            assert held.ids() == {"new"} and held.new == {"new"}
            await held.write_back(sending=())
            assert not held
            queued = {r.id: r for r in await store.outbox.due(math.inf, 10)}
            log = await store.log.read(kinds=["notify.sent"])
            sent_ids = await store.outbox.sent_among(["sent", "page-sent", "dropped"])
    assert sorted(queued) == ["new", "r"]
    assert (queued["r"].next_at, queued["r"].attempts) == (60.0, 1)
    assert sent_ids == {"sent", "page-sent"}
    assert [e.subject for e in log] == ["sent"]


async def test_a_cluster_node_holds_no_reschedule(tmp_path: Path) -> None:
    """Its claim keeps the row from being due before the claim ends: nothing to send from
    memory (a cluster node sends nothing it could not write)."""
    with small_disk(tmp_path / "disk", "1m") as disk:
        async with open_storage(disk / "d.db") as store:
            row = message("r", 1.0)
            await store.outbox.enqueue([row])
            held = HeldOutbox(store.outbox, lambda: None, hold_reschedules=False)
            await asyncio.to_thread(fill, disk)
            row.next_at = 60.0
            with pytest.raises(StorageUnavailable):
                await store.outbox.reschedule(row)
            await held.reschedule(row)  # refused too, and not raised
            assert not held
            assert held.due(math.inf, busy=()) == []


async def test_a_cluster_nodes_held_delivery_is_forgotten_once_another_node_took_over(
    tmp_path: Path,
) -> None:
    """Delivered under epoch 1 while the disk refused the record; by the time it takes writes
    again another node holds the lease (epoch 2). The write-back is refused by the fence and
    the held record forgotten (the new active sends the message again under the same id);
    before, it was refused at every round, and the refusal ended the delivery loop."""
    with small_disk(tmp_path / "disk", "1m") as disk:
        async with open_storage(disk / "d.db") as store:
            lease = await store.cluster.acquire_lease("notifier", "a", 30.0)
            row = message("m", 1.0)
            await store.outbox.enqueue([row])
            held = HeldOutbox(store.outbox, lambda: lease.epoch, hold_reschedules=False)
            filler = await asyncio.to_thread(fill, disk)
            entry = NewLogEntry(5.0, "notify.sent", "dutyd", "m", {})
            await held.delivered(row, 5.0, ["page-m"], entry)
            assert held.done.keys() == {"m"}
            filler.unlink()
            assert await store.probe()
            await store.cluster.release_lease("notifier", "a")
            taken = await store.cluster.acquire_lease("notifier", "b", 30.0)
            assert taken.epoch > lease.epoch
            with pytest.raises(FencedOut):
                await held.write_back(sending=())
            assert not held  # forgotten: refused again at every round, it kept the loop busy
            await held.write_back(sending=())  # nothing left to write, nothing refused
            due = [r.id for r in await store.outbox.due(math.inf, 10)]
            sent = await store.outbox.sent_among(["m", "page-m"])
    assert due == ["m"]  # the new active's to send
    assert sent == set()
