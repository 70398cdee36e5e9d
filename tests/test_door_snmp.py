"""The door contact from an environment monitor over SNMP, on the real daemon (FakeClock, real
notification receiver): its door OID polled from a real net-snmp snmpd as the user OID map's
`room_door_open{room}`, and its door-open / door-shut traps (net-snmp's snmptrap, sent from the
monitor's address) received by the trap listener, authenticated by community as for any trap
and mapped by `traps.maps`. Each drives `room_door_open_unregistered` to page and resolve;
an approved person inside, or a trap with a wrong community, stays quiet."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers import free_port, require_binary
from tests.snmp_fixtures import COMMUNITY, SnmpdPeer
from tests.test_entry_register import Site, make_site  # noqa: F401 - the fixture

UPTIME = "1.3.6.1.2.1.1.3.0"
# The environment monitor's private MIB (as a vendor's: door contact, temperature, traps).
DOOR_OID = "1.3.6.1.4.1.99999.9.1.0"  # 1 open, 0 shut
TEMPERATURE_OID = "1.3.6.1.4.1.99999.9.2.0"
DOOR_OPEN_TRAP = "1.3.6.1.4.1.99999.9.0.1"
DOOR_SHUT_TRAP = "1.3.6.1.4.1.99999.9.0.2"
TRAP_COMMUNITY = "env-monitor-traps"


def monitor_values(door_open: bool) -> dict[str, list[Any]]:
    return {
        UPTIME: ["timeticks", 360000],
        DOOR_OID: ["integer", 1 if door_open else 0],
        TEMPERATURE_OID: ["integer", 23],
    }


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[SnmpdPeer]:
    d = tmp_path / "env-monitor"
    d.mkdir()
    peer = SnmpdPeer(d, monitor_values(door_open=False))
    yield peer
    peer.stop()


def polled_door(monitor: SnmpdPeer) -> dict[str, Any]:
    """The monitor polled every second for its door contact (user OID map)."""
    return {
        "name": "env-a",
        "kind": "snmp",
        "address": monitor.address,
        "community": COMMUNITY,
        "interval": "1s",
        "timeout": "1s",
        "labels": {"room": "room-a"},
        "oids": [{"name": "room_door_open", "oid": DOOR_OID}],
    }


def trapped_door(monitor: SnmpdPeer, trap_port: int) -> dict[str, Any]:
    """The monitor polled hourly for its temperature; its door comes as traps alone."""
    return {
        "targets": [
            {
                "name": "env-a",
                "kind": "snmp",
                "address": monitor.address,
                "community": COMMUNITY,
                "interval": "1h",
                "timeout": "1s",
                "labels": {"room": "room-a"},
                "oids": [{"name": "env_temperature_celsius", "oid": TEMPERATURE_OID}],
            }
        ],
        "traps": {
            "listen": "127.0.0.1",
            "port": trap_port,
            "communities": [{"community": TRAP_COMMUNITY, "targets": ["env-a"]}],
            "maps": [
                {"trap": DOOR_OPEN_TRAP, "metric": "room_door_open", "value": 1},
                {"trap": DOOR_SHUT_TRAP, "metric": "room_door_open", "value": 0},
            ],
        },
    }


async def send_trap(port: int, trap: str, community: str = TRAP_COMMUNITY) -> None:
    binary = require_binary("snmptrap")
    done = await asyncio.to_thread(
        subprocess.run,
        [binary, "-v", "2c", "-c", community, f"127.0.0.1:{port}", "", trap],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"MIBS": "", "MIBDIRS": "/nonexistent", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr


async def test_snmp_door_value_opening_with_nobody_registered_pages_and_resolves(
    make_site,  # noqa: F811
    monitor: SnmpdPeer,
) -> None:
    s: Site = await make_site(targets=[polled_door(monitor)])
    await s.until(lambda: s.entries.state["room-a"].door_open is False, within=20)
    monitor.set_values(monitor_values(door_open=True))
    await s.until(lambda: s.to("zhang", "li"), within=20)
    assert "door of machine room room-a is open" in s.pages()[0][1]
    (alert,) = s.alerts("room_door_open_unregistered")
    assert alert["state"] == "firing" and alert["labels"]["room"] == "room-a"
    # The door is shut again: resolved, and both are told.
    monitor.set_values(monitor_values(door_open=False))
    await s.until(lambda: len(s.pages()) == 4, within=20)
    assert [a["state"] for a in s.alerts("room_door_open_unregistered")] == ["resolved"]


async def test_snmp_door_value_with_an_approved_person_in_stays_quiet(
    make_site,  # noqa: F811
    monitor: SnmpdPeer,
) -> None:
    s: Site = await make_site(targets=[polled_door(monitor)])
    await s.entries.enter("room-a", "Zhang Wei", "Zhang Wei", ["Li Na"], "fan alarm")
    monitor.set_values(monitor_values(door_open=True))
    await s.until(lambda: s.entries.state["room-a"].door_open is True, within=20)
    monitor.set_values(monitor_values(door_open=False))
    await s.until(lambda: s.entries.state["room-a"].door_open is False, within=20)
    await s.run_for(0.5)
    assert s.pages() == []
    assert s.alerts("room_door_open_unregistered") == []


async def test_door_open_trap_pages_at_once_and_the_shut_trap_resolves(
    make_site,  # noqa: F811
    monitor: SnmpdPeer,
) -> None:
    port = free_port("udp")
    s: Site = await make_site(**trapped_door(monitor, port))
    await send_trap(port, DOOR_OPEN_TRAP)
    await s.until(lambda: s.to("zhang", "li"), within=20)
    assert "door of machine room room-a is open" in s.pages()[0][1]
    (alert,) = s.alerts("room_door_open_unregistered")
    assert alert["state"] == "firing" and alert["labels"]["room"] == "room-a"
    await send_trap(port, DOOR_SHUT_TRAP)
    await s.until(lambda: len(s.pages()) == 4, within=20)
    assert [a["state"] for a in s.alerts("room_door_open_unregistered")] == ["resolved"]


async def test_a_door_trap_with_a_wrong_community_stays_quiet(
    make_site,  # noqa: F811
    monitor: SnmpdPeer,
) -> None:
    port = free_port("udp")
    s: Site = await make_site(**trapped_door(monitor, port))
    await send_trap(port, DOOR_OPEN_TRAP, community="guessed-community")
    received = s.daemon.metrics.traps_received
    await s.until(lambda: received.labels("v2c_trap", "bad_community")._value.get() >= 1)
    await s.run_for(0.5)
    assert s.pages() == []
    assert s.entries.state["room-a"].door_open is None
    assert s.alerts("room_door_open_unregistered") == []
