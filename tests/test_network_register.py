"""The network status register against a real snmpd serving a switch's IF-MIB: a watched
port that goes down and comes back is a machine-room log entry each way; the day's error and
discard counts are written at the next day's first poll; the register reads back per day and
port in English and Chinese; an unwatched port stays out."""

from __future__ import annotations

import asyncio
import calendar
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.core.clock import FakeClock
from dutyd.duty.registers import build_register
from dutyd.duty.report import to_markdown
from tests.snmp_fixtures import COMMUNITY, SnmpdPeer, switch_values

IF = "1.3.6.1.2.1.2.2.1"


def utc(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")))


async def run_until(clock: FakeClock, done: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not done():
        assert time.monotonic() < deadline, "not done in time"
        await clock.advance(0.25)
        await asyncio.sleep(0.05)


@pytest.mark.peer
async def test_uplink_outage_and_counts_make_the_days_network_status(tmp_path: Path) -> None:
    snmpd = SnmpdPeer(tmp_path, switch_values(ports=3))
    clock = FakeClock(utc("2026-12-07 23:50:00"))
    config: dict[str, Any] = {
        "targets": [
            {
                "name": "core-sw1", "kind": "snmp", "address": snmpd.address,
                "community": COMMUNITY, "profiles": ["switch"], "ports": ["Gi0/1", "Gi0/2"],
                "interval": "1s", "timeout": "2s",
            }
        ],
        "http": {"port": 0},
        "storage": {"path": str(tmp_path / "d.db")},
        "notify": {"timezone": "UTC"},
    }  # fmt: skip
    daemon = Daemon(load_from_dict(config), clock=clock)
    await daemon.start()
    try:
        register = daemon.network
        await run_until(clock, lambda: "core-sw1" in register.day_start)
        log = daemon.storage.log

        async def logged(kinds: list[str]) -> list[Any]:
            await asyncio.gather(*register._writes)
            return await log.read(kinds=kinds, limit=None)

        # All up: nothing logged.
        assert await logged(["port."]) == []
        # The uplink Gi0/2 goes down (ifOperStatus down(2)) and errors and discards grow;
        # Gi0/3 (not watched) goes down too.
        snmpd.change(
            {
                f"{IF}.8.2": ["integer", 2], f"{IF}.8.3": ["integer", 2],
                f"{IF}.14.2": ["counter", 2 + 40], f"{IF}.20.2": ["counter", 5],
                f"{IF}.13.2": ["counter", 7], f"{IF}.19.2": ["counter", 1],
            }
        )  # fmt: skip
        await run_until(clock, lambda: register.up.get(("core-sw1", "Gi0/2")) is False)
        down_at = clock.time()
        await clock.advance(120)
        snmpd.change({f"{IF}.8.2": ["integer", 1]})
        await run_until(clock, lambda: register.up.get(("core-sw1", "Gi0/2")) is True)
        entries = await logged(["port.down", "port.up"])
        assert [(e.kind, e.subject, e.data["port"]) for e in entries] == [
            ("port.down", "core-sw1", "Gi0/2"),
            ("port.up", "core-sw1", "Gi0/2"),
        ]
        assert ("core-sw1", "Gi0/3") not in register.up
        # Past midnight: the day's counts are written at the first poll of the next day.
        await clock.advance(utc("2026-12-08 00:00:01") - clock.time())
        await run_until(clock, lambda: register.day_start["core-sw1"][0] == "2026-12-08")
        (counted,) = await logged(["port.counters"])
        assert counted.data == {
            "day": "2026-12-07",
            "ports": {
                "Gi0/1": {"errors": 0.0, "discards": 0.0},
                "Gi0/2": {"errors": 45.0, "discards": 8.0},
            },
        }

        start, end = utc("2026-12-07 00:00:00"), utc("2026-12-08 00:00:00")
        en = await build_register(daemon.storage, "network", start, end, "en", "UTC")
        assert en.columns == [
            "Day", "Equipment", "Port", "Up time", "Down time", "Outages", "Errors", "Discards",
        ]  # fmt: skip
        gi1, gi2 = en.rows
        assert gi1 == ["2026-12-07", "core-sw1", "Gi0/1", "100.00 %", "0", "", 0, 0]
        assert gi2[:3] == ["2026-12-07", "core-sw1", "Gi0/2"] and gi2[6:] == [45, 8]
        up_at = entries[1].timestamp
        assert entries[0].timestamp == pytest.approx(down_at, abs=3)
        share = 100.0 * (1 - (up_at - entries[0].timestamp) / 86400)
        assert gi2[3] == f"{share:.2f} %" and gi2[5].startswith("12-07 23:5")
        zh = to_markdown(await build_register(daemon.storage, "network", start, end, "zh", "UTC"))
        assert "网络状况登记簿" in zh and "错误包数" in zh and "丢弃包数" in zh
    finally:
        await daemon.stop()
        snmpd.stop()
