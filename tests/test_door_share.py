"""A door's state shared between the nodes of a cluster through the duty log
(`duty/doorshare.py`), on one real SQLite store the two "nodes" share. The end-to-end case (a
webhook posted to the standby of a real pair on PostgreSQL pages from the active node) is in
`tests/test_ha.py`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dutyd.core.records import Sample
from dutyd.duty.config import RoomConfig
from dutyd.duty.doorshare import DoorChange, DoorShare, door_entry
from dutyd.duty.entries import DOOR_UNREGISTERED, EntryRegister
from dutyd.notify.config import OncallConfig
from dutyd.notify.oncall import Rota
from dutyd.storage import Storage, open_storage


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Storage]:
    async with open_storage(tmp_path / "d.db") as s:
        yield s


async def test_a_change_seen_by_the_node_that_stands_for_the_target_reaches_the_others(
    store: Storage,
) -> None:
    # A pair: a is the active node (it records every target), b the standby.
    a = DoorShare(store.log, "a", records_target=lambda target: True)
    b = DoorShare(store.log, "b", records_target=lambda target: False)
    assert await a.others() == [] and await b.others() == []
    opened = DoorChange("room-a", True, 10.0, webhook=False)
    a.seen_on_target(opened, "door-a")
    b.seen_on_target(opened, "door-a")  # the standby polls the same contact: writes nothing
    await a.flush()
    await b.flush()
    log = await store.log.read(kinds=["door."])
    assert [(e.kind, e.actor, e.data) for e in log] == [
        ("door.open", "door-a", {"room": "room-a", "node": "a", "via": "target"})
    ]
    assert await b.others() == [opened]
    assert await b.others() == []  # read once
    assert await a.others() == []  # its own


async def test_a_webhook_reaching_the_standby_is_read_by_the_active_node(store: Storage) -> None:
    a = DoorShare(store.log, "a", records_target=lambda target: True)
    await a.others()
    # What `EntryRegister.door_event` writes on node b (`door_entry`).
    shut = DoorChange("room-b", False, 21.0, webhook=True)
    await store.log.append_entry(door_entry(DoorChange("room-b", True, 20.0, True), "door:b", "b"))
    await store.log.append_entry(door_entry(shut, "door:b", "b"))
    assert await a.others() == [DoorChange("room-b", True, 20.0, True), shut]  # in order


async def test_a_node_that_starts_takes_the_newest_state_of_each_room(store: Storage) -> None:
    b = DoorShare(store.log, "b", records_target=lambda target: True)
    for at, is_open in ((1.0, True), (2.0, False), (3.0, True)):
        b.seen_on_target(DoorChange("room-a", is_open, at, webhook=False), "door-a")
    b.seen_on_target(DoorChange("room-c", False, 4.0, webhook=False), "door-c")
    await b.flush()
    a = DoorShare(store.log, "a", records_target=lambda target: True)
    # a's own last word on room-c, written in its earlier run, is newer than b's: kept.
    a.seen_on_target(DoorChange("room-c", True, 5.0, webhook=False), "door-c")
    await a.flush()
    assert await a.others() == [DoorChange("room-a", True, 3.0, False)]


async def test_a_node_alone_writes_no_poll_and_reads_nothing(store: Storage) -> None:
    alone = DoorShare(store.log, "", records_target=lambda target: True)
    alone.seen_on_target(DoorChange("room-a", True, 1.0, webhook=False), "door-a")
    await alone.flush()
    assert await store.log.read(kinds=["door."]) == []
    other = DoorShare(store.log, "b", records_target=lambda target: True)
    other.seen_on_target(DoorChange("room-a", True, 1.0, webhook=False), "door-a")
    await other.flush()
    assert await alone.others() == []


async def test_a_write_the_store_refuses_waits_for_the_next_flush(store: Storage) -> None:
    """The entry stays queued, in order, until a flush gets it written."""
    a = DoorShare(store.log, "a", records_target=lambda target: True)
    a.seen_on_target(DoorChange("room-a", True, 1.0, webhook=False), "door-a")
    a.seen_on_target(DoorChange("room-a", False, 2.0, webhook=False), "door-a")
    append = store.log.append_entry
    calls = 0

    async def refusing(entry, epoch=None):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk full")
        return await append(entry, epoch)

    store.log.append_entry = refusing  # type: ignore[method-assign]
    with pytest.raises(OSError):
        await a.flush()
    await a.flush()
    kinds = [e.kind for e in await store.log.read(kinds=["door."])]
    assert kinds == ["door.open", "door.shut"]


class Rules:
    """Where the register's samples go (the daemon's `DutyOperations.ingest_samples`)."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def ingest_samples(self, samples: list[Sample]) -> None:
        self.samples.extend(samples)

    def unregistered(self, room: str) -> float | None:
        got = [
            s.value for s in self.samples if s.name == DOOR_UNREGISTERED and s.label("room") == room
        ]
        return got[-1] if got else None


def register(store: Storage, node: str, records: bool, rules: Rules) -> EntryRegister:
    rota = Rota(OncallConfig.model_validate({"pairs": [], "people": []}))
    return EntryRegister(
        lambda: [RoomConfig(name="room-a")],
        lambda: {"Zhang Wei"},
        lambda: rota,
        rules,  # type: ignore[arg-type]
        store,
        doors=DoorShare(store.log, node, records_target=lambda target: records),
    )


async def test_a_door_polled_by_one_shards_agent_reaches_the_lease_holders_rules(
    store: Storage,
) -> None:
    """Agent a polls the door contact (its shard); b holds the lease and records the
    register's alerts. a's poll sees the door open: at b's next sync its rules get
    `room_door_open_unregistered` 1, and 0 again when a sees it shut. A door first heard of
    as shut (at every start) is not written."""
    a_rules, b_rules = Rules(), Rules()
    a = register(store, "a", records=True, rules=a_rules)
    b = register(store, "b", records=False, rules=b_rules)
    await a.start()
    await b.start()
    try:

        def poll(value: float) -> list[Sample]:
            return [Sample.of("room_door_open", value, 1.0, {"target": "door-a", "room": "room-a"})]

        a.observe(poll(0.0))
        await a._doors.flush()
        assert await store.log.read(kinds=["door."]) == []
        a.observe(poll(1.0))
        await a._doors.flush()
        await b.sync()
        assert b.state["room-a"].door_open is True
        assert b_rules.unregistered("room-a") == 1.0
        # A polled contact's own `room_door_open` is the polling agent's: not fed on b too
        # (its held-open alert would page twice).
        assert not [s for s in b_rules.samples if s.name == "room_door_open"]
        a.observe(poll(0.0))
        await a._doors.flush()
        await b.sync()
        assert b.state["room-a"].door_open is False
        assert b_rules.unregistered("room-a") == 0.0
        assert [e.kind for e in await store.log.read(kinds=["door."])] == ["door.open", "door.shut"]
    finally:
        await a.close()
        await b.close()
