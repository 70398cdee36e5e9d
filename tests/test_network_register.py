"""The network status register against a real snmpd serving a switch's IF-MIB: a watched
port that goes down and comes back is a machine-room log entry each way; the day's error and
discard counts are written at the next day's first poll; the register reads back per day and
port in English and Chinese; an unwatched port stays out."""

from __future__ import annotations

import asyncio
import calendar
import time
from pathlib import Path
from typing import Any

import pytest

from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.core.clock import FakeClock
from dutyd.core.records import Sample
from dutyd.duty.network import NetworkRegister
from dutyd.duty.registers import build_register
from dutyd.duty.report import to_markdown
from tests.daemon_fixtures import run_until
from tests.snmp_fixtures import COMMUNITY, SnmpdPeer, switch_values
from tests.test_storage_contract import Store, store  # noqa: F401 - both stores

IF = "1.3.6.1.2.1.2.2.1"


def utc(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")))


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
        await run_until(clock, lambda: "core-sw1" in register.day_start, step=0.25)
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
        await run_until(clock, lambda: register.up.get(("core-sw1", "Gi0/2")) is False, step=0.25)
        down_at = clock.time()
        await clock.advance(120)
        snmpd.change({f"{IF}.8.2": ["integer", 1]})
        await run_until(clock, lambda: register.up.get(("core-sw1", "Gi0/2")) is True, step=0.25)
        entries = await logged(["port.down", "port.up"])
        assert [(e.kind, e.subject, e.data["port"]) for e in entries] == [
            ("port.down", "core-sw1", "Gi0/2"),
            ("port.up", "core-sw1", "Gi0/2"),
        ]
        assert ("core-sw1", "Gi0/3") not in register.up
        # Past midnight: the day's counts are written at the first poll of the next day.
        await clock.advance(utc("2026-12-08 00:00:01") - clock.time())
        await run_until(clock, lambda: register.day_start["core-sw1"][0] == "2026-12-08", step=0.25)
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


def port_samples(at: float, up2: bool, errors2: float) -> list[Sample]:
    ports = {"Gi0/1": (True, 3.0), "Gi0/2": (up2, errors2)}
    samples = []
    for port, (up, errors) in ports.items():
        labels = {"target": "sw1", "port": port}
        samples.append(Sample.of("if_oper_up", 1.0 if up else 0.0, at, labels))
        samples.append(Sample.of("if_in_errors_total", errors, at, labels))
        samples.append(Sample.of("if_out_discards_total", 2.0 * errors, at, labels))
    return samples


async def test_network_register_on_both_stores_survives_a_restart(
    store: Store,  # noqa: F811
) -> None:
    """Both stores keep the port transitions and the day's counts; a restart does not log a
    port's state again; the day's register reads them back (site zone Asia/Shanghai)."""
    t0 = utc("2026-12-07 15:00:00")  # 23:00 in Shanghai
    register = NetworkRegister(store.s, lambda: "Asia/Shanghai")
    await register.start()
    register.observe("sw1", port_samples(t0, True, 10.0), t0)
    register.observe("sw1", port_samples(t0 + 600, False, 15.0), t0 + 600)
    await asyncio.gather(*register._writes)
    s = await store.reopen()
    again = NetworkRegister(s, lambda: "Asia/Shanghai")
    await again.start()
    assert again.up == {("sw1", "Gi0/2"): False}
    # After the restart: still down (nothing new), up at 23:40, then the next day's poll.
    again.observe("sw1", port_samples(t0 + 1200, False, 20.0), t0 + 1200)
    again.observe("sw1", port_samples(t0 + 2400, True, 30.0), t0 + 2400)
    again.observe("sw1", port_samples(t0 + 3660, True, 31.0), t0 + 3660)
    await asyncio.gather(*again._writes)
    kinds = [(e.kind, e.data.get("port")) for e in await s.log.read(limit=None)]
    assert kinds == [("port.down", "Gi0/2"), ("port.up", "Gi0/2"), ("port.counters", None)]
    start = utc("2026-12-06 16:00:00")  # 2026-12-07 00:00 in Shanghai
    report = await build_register(s, "network", start, start + 86400, "en", "Asia/Shanghai")
    # Counted from the first poll seen after the restart (20 -> 31): 11 errors, 22 discards.
    assert [r[2:4] + r[6:] for r in report.rows] == [
        ["Gi0/1", "100.00 %", 0, 0],
        ["Gi0/2", f"{100.0 * (1 - 1800 / 86400):.2f} %", 11, 22],
    ]
    assert report.rows[1][5].startswith("12-07 23:10:00 – 12-07 23:40:00")
