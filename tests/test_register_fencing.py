"""The machine-room register lines dutyd writes by itself (outages, ports) are the active node's
writes like its alerts: a node that lost the notifier lease (a stale epoch) adds none, so a
frozen node woken after the takeover cannot write a second `target.down` for the same outage."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dutyd.core.records import Sample
from dutyd.duty.availability import AvailabilityRecorder
from dutyd.duty.network import NetworkRegister
from dutyd.storage.sqlite import SqliteStorage


async def test_a_stale_node_writes_no_register_line(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "dutyd.db")
    await storage.open()
    try:
        await storage.outbox.raise_fence(2)  # the new active node took the lease at epoch 2
        epoch = 1  # this node's, from before
        outages = AvailabilityRecorder(storage, lambda: epoch)
        ports = NetworkRegister(storage, lambda: "UTC", active=lambda: True, fence=lambda: epoch)
        up = Sample.of("if_oper_up", 0.0, 100.0, {"target": "sw1", "port": "Gi0/1"})
        outages.observe("ups1", "nut", 100.0, False, True, "timeout", "no answer", [])
        ports.observe("sw1", [Sample.of("if_oper_up", 1.0, 50.0, dict(up.labels))], 50.0)
        ports.observe("sw1", [up], 100.0)
        await outages.close()
        await ports.close()
        assert await storage.log.read(limit=None) == []

        epoch = 2  # the same node once it holds the lease again: its lines are written
        outages.observe("ups1", "nut", 200.0, False, True, "timeout", "no answer", [])
        await outages.close()
        await asyncio.sleep(0)
        assert [e.kind for e in await storage.log.read(limit=None)] == ["target.down"]
    finally:
        await storage.close()
