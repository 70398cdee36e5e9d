"""A server that rebooted while dutyd was down is still seen: its boot time is kept in storage
and compared at the first poll after dutyd's restart. Real SSH server (asyncssh simulation of a
Linux host), the real daemon in-process, a real receiver for the page."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.agent.demo.ssh_server import SimulatedLinux, demo_state
from dutyd.core.clock import SYSTEM_CLOCK, Clock, SystemClock
from dutyd.core.records import Sample
from dutyd.duty.reboots import RebootMemory
from dutyd.storage.sqlite import SqliteStorage
from tests.ssh_fixtures import simulated_target
from tests.test_notify_delivery import Receiver


def config(tmp: Path, server: SimulatedLinux, receiver: Receiver) -> dict[str, Any]:
    key, known = server.write_files(tmp)
    return {
        "targets": [
            simulated_target(server, key, known, tmp / "trusted", interval="1s", timeout="5s")
        ],
        "rules": {"packs": ["duty"]},
        "oncall": {"people": [{"name": "Li Na", "language": "en", "contacts": ["phone"]}]},
        "notify": {"channels": {"phone": {"url": receiver.url("li")}}, "group_wait": "0s"},
        "escalation": {"policies": [{"name": "all", "steps": [{"people": ["Li Na"]}]}]},
        "http": {"port": 0},
        "storage": {"path": str(tmp / "dutyd.db")},
    }


async def polled(daemon: Daemon, at_least: int) -> None:
    for _ in range(200):
        status = daemon.latest.status.get("db1")
        if status is not None and status.up and status.consecutive_failures == 0:
            seen = [s for s in daemon.latest.samples() if s.name == "node_uptime_seconds"]
            if len(seen) >= at_least:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("db1 was never polled successfully")


def reboots(daemon: Daemon) -> list[dict[str, Any]]:
    return [a for a in daemon.operations.list_alerts() if a["rule"] == "unexpected_reboot"]


class SteppedClock(SystemClock):
    """The system clock stepped by `offset` seconds (a correction made while dutyd was
    stopped): wall time only, sleeps and monotonic time are the system's."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset


async def run_once(
    settings: Any, after: float = 2.5, clock: Clock = SYSTEM_CLOCK
) -> tuple[Daemon, list[dict[str, Any]]]:
    daemon = Daemon(settings, clock=clock)
    await daemon.start()
    try:
        await polled(daemon, 1)
        await asyncio.sleep(after)  # a few more polls, and the boot time written
        return daemon, reboots(daemon)
    finally:
        await daemon.stop()


async def test_a_reboot_while_dutyd_was_down_pages(tmp_path: Path) -> None:
    server = SimulatedLinux(demo_state(time.time()))
    server.state.uptime = 40 * 86400.0
    await server.start()
    receiver = Receiver()
    await receiver.start()
    settings = load_from_dict(config(tmp_path, server, receiver), "<test>")
    try:
        _, first = await run_once(settings)
        assert first == []

        # dutyd is down; meanwhile the uptime keeps counting: a restart of dutyd alone is
        # no reboot.
        server.state.uptime += 30.0
        _, again = await run_once(settings)
        assert again == []
        assert receiver.received == []

        # dutyd is down and the server reboots: the next start sees it on its first poll.
        server.state.uptime = 12.0
        _, after_reboot = await run_once(settings)
        assert [a["labels"]["target"] for a in after_reboot] == ["db1"], after_reboot
        await receiver.wait_for(1, 10)
        assert "db1 rebooted" in json.dumps(receiver.received[0]["body"])
    finally:
        await receiver.stop()
        await server.stop()


async def test_a_clock_correction_while_dutyd_was_down_is_no_reboot(tmp_path: Path) -> None:
    """The issue's case: NTP stepped the clock 120 s forward while dutyd was stopped; the
    boot time computed at the next start (poll time minus uptime) moved by as much. Old code:
    every device flagged as rebooted (60 s tolerance)."""
    server = SimulatedLinux(demo_state(time.time()))
    server.state.uptime = 40 * 86400.0
    await server.start()
    receiver = Receiver()
    await receiver.start()
    settings = load_from_dict(config(tmp_path, server, receiver), "<test>")
    try:
        _, first = await run_once(settings)
        assert first == []
        server.state.uptime += 30.0  # dutyd down 30 s; its clock is 120 s ahead when it starts
        _, again = await run_once(settings, clock=SteppedClock(120.0))
        assert again == []
        # The device reboots while dutyd is down again: still seen, on the corrected clock.
        server.state.uptime = 12.0
        _, after_reboot = await run_once(settings, clock=SteppedClock(120.0))
        assert [a["labels"]["target"] for a in after_reboot] == ["db1"], after_reboot
        await receiver.wait_for(1, 10)
        assert len(receiver.received) == 1
    finally:
        await receiver.stop()
        await server.stop()


async def test_a_hundred_devices_and_a_clock_correction_no_reboot(tmp_path: Path) -> None:
    """100 switches polled, dutyd stopped 30 s, the clock corrected by +120 s (or -120 s)
    meanwhile: none is flagged; the one that did reboot (uptime 20 s) is."""
    uptimes = {f"sw{i}": 86400.0 * (i + 1) for i in range(100)}

    def poll(at: float, uptime: dict[str, float]) -> list[Sample]:
        return [
            s
            for name, up in uptime.items()
            for s in (
                Sample.of("device_uptime_seconds", up, at, {"target": name, "kind": "snmp"}),
                Sample.of("device_rebooted", 0.0, at, {"target": name, "kind": "snmp"}),
            )
        ]

    async def start_with(at: float, uptime: dict[str, float]) -> set[str]:
        storage = SqliteStorage(tmp_path / "d.db")
        await storage.open()
        try:
            memory = RebootMemory(storage.boot_times)
            await memory.load()
            out = memory.check(poll(at, uptime))
            await memory.flush()
            return {s.label("target") for s in out if s.name == "device_rebooted" and s.value}
        finally:
            await storage.close()

    t = 1_750_000_000.0
    assert await start_with(t, uptimes) == set()
    later = {n: u + 30 for n, u in uptimes.items()}
    assert await start_with(t + 30 + 120, later) == set()
    later = {n: u + 60 for n, u in uptimes.items()}
    later["sw7"] = 20.0
    assert await start_with(t + 60 + 120 - 240, later) == {"sw7"}


async def test_a_step_while_dutyd_runs_is_no_reboot_at_its_next_start(tmp_path: Path) -> None:
    """The system clock stepped 2 h forward while dutyd ran: its samples stay on its steady
    clock, and the boot times it keeps move onto the system clock (the offset), which the next
    run starts on. Without that, every device read as rebooted 2 h later at the restart."""
    labels = {"target": "sw1", "kind": "snmp"}

    def poll(at: float, up: float) -> list[Sample]:
        return [
            Sample.of("device_uptime_seconds", up, at, labels),
            Sample.of("device_rebooted", 0.0, at, labels),
        ]

    t = 1_750_000_000.0
    storage = SqliteStorage(tmp_path / "d.db")
    await storage.open()
    try:
        memory = RebootMemory(storage.boot_times)
        await memory.load()
        memory.check(poll(t, 5000.0))
        # 60 s later by the steady clock, the system clock 2 h ahead of it now.
        assert memory.check(poll(t + 60, 5060.0), clock_offset=7200.0)[1].value == 0.0
        await memory.flush()
    finally:
        await storage.close()
    storage = SqliteStorage(tmp_path / "d.db")
    await storage.open()
    try:
        memory = RebootMemory(storage.boot_times)
        await memory.load()
        # Restarted 70 s later, on the system clock.
        assert memory.check(poll(t + 7200 + 130, 5130.0))[1].value == 0.0
    finally:
        await storage.close()


async def test_boot_times_survive_a_restart_of_the_store(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "d.db")
    await storage.open()
    try:
        memory = RebootMemory(storage.boot_times)
        await memory.load()
        labels = {"target": "sw1", "kind": "snmp"}
        first = [
            Sample.of("device_uptime_seconds", 5000.0, 10_000.0, labels),
            Sample.of("device_rebooted", 0.0, 10_000.0, labels),
        ]
        assert memory.check(first) == first
        await memory.flush()
    finally:
        await storage.close()
    storage = SqliteStorage(tmp_path / "d.db")
    await storage.open()
    try:
        memory = RebootMemory(storage.boot_times)
        await memory.load()
        rebooted = memory.check(
            [
                Sample.of("device_uptime_seconds", 100.0, 20_000.0, labels),
                Sample.of("device_rebooted", 0.0, 20_000.0, labels),
            ]
        )
        assert [(s.name, s.value) for s in rebooted][1] == ("device_rebooted", 1.0)
        # Only the first poll after the start is compared; later ones are the collector's.
        later = memory.check(
            [
                Sample.of("device_uptime_seconds", 110.0, 20_010.0, labels),
                Sample.of("device_rebooted", 0.0, 20_010.0, labels),
            ]
        )
        assert [s.value for s in later] == [110.0, 0.0]
    finally:
        await storage.close()
