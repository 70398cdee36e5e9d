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
from dutyd.duty.reboots import RebootMemory
from dutyd.storage.sqlite import SqliteStorage
from tests.test_notify_delivery import Receiver


def config(tmp: Path, server: SimulatedLinux, receiver: Receiver) -> dict[str, Any]:
    key, known = server.write_files(tmp)
    return {
        "targets": [
            {
                "name": "db1",
                "kind": "ssh",
                "address": "127.0.0.1",
                "port": server.port,
                "username": server.username,
                "client_keys": [str(key)],
                "known_hosts": str(known),
                "interval": "1s",
                "timeout": "5s",
            }
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


async def run_once(settings: Any, after: float = 2.5) -> tuple[Daemon, list[dict[str, Any]]]:
    daemon = Daemon(settings)
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


async def test_boot_times_survive_a_restart_of_the_store(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "d.db")
    await storage.open()
    try:
        memory = RebootMemory(storage.boot_times)
        await memory.load()
        from dutyd.core.records import Sample

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
