"""End to end: SIGKILL the daemon while one alert is pending and one is firing; the restarted
daemon has the same alerts with the same start times, fires the pending one when its `for`
runs out counted from the original start, and does not page the firing one again."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyModbusTCP.server import ModbusServer

from dutyd.storage import LogEntry, StoredAlert, open_storage
from tests.daemon_fixtures import DaemonProcess
from tests.peers import free_port

SLOW_FOR = 10.0


@pytest.fixture
def sensor() -> Iterator[ModbusServer]:
    server = ModbusServer(host="127.0.0.1", port=free_port(), no_block=True)
    server.start()
    server.data_bank.set_holding_registers(0, [220])
    yield server
    server.stop()


def config(port: int) -> dict:
    rule = {"metric": "room_temperature_celsius", "condition": {"above": 26}}
    return {
        "targets": [
            {
                "name": "room-a-sensor",
                "kind": "modbus",
                "address": f"127.0.0.1:{port}",
                "interval": "0.3s",
                "timeout": "1s",
                "registers": [
                    {
                        "name": "room_temperature_celsius",
                        "address": 0,
                        "type": "int16",
                        "scale": 0.1,
                    }
                ],
            }
        ],
        "rules": {
            "custom": [
                {"name": "hot_fast", "for": "1s", **rule},
                {"name": "hot_slow", "for": f"{SLOW_FOR}s", **rule},
            ]
        },
    }


async def _read(db: Path) -> tuple[list[StoredAlert], list[LogEntry]]:
    # Read-only, as `dutyd log` reads it while the daemon runs.
    async with open_storage(db, read_only=True) as storage:
        return await storage.alerts.load_all(), await storage.log.read(
            kinds=["alert.firing"], limit=None
        )


def alerts(db: Path) -> dict[str, tuple[str, float | None, float | None]]:
    stored, _ = asyncio.run(_read(db))
    return {a.rule: (a.state, a.active_since, a.fired_at) for a in stored}


def firing_pages(db: Path, rule: str) -> int:
    _, entries = asyncio.run(_read(db))
    return sum(1 for e in entries if e.data.get("rule") == rule and e.data.get("notify") is True)


def test_sigkill_restart_keeps_alerts_and_start_times(tmp_path, sensor):
    cfg = config(sensor.port)
    db = tmp_path / "dutyd.db"
    daemon = DaemonProcess(tmp_path, cfg)
    try:
        sensor.data_bank.set_holding_registers(0, [275])
        daemon.wait_until(
            lambda: (
                alerts(db).get("hot_fast", ("",))[0] == "firing"
                and alerts(db).get("hot_slow", ("",))[0] == "pending"
            ),
            15,
            "hot_fast firing and hot_slow pending",
        )
        time.sleep(3)  # part of hot_slow's `for` goes by before the crash
        before = alerts(db)
        daemon.signal(signal.SIGKILL)
        daemon.peer.proc.wait(5)
        daemon.stop()
    finally:
        daemon.stop()
    assert before["hot_slow"][0] == "pending"

    restarted_at = time.time()
    daemon = DaemonProcess(tmp_path, cfg)
    try:
        daemon.wait_until(
            lambda: alerts(db)["hot_slow"][0] == "firing", 20, "hot_slow to fire after restart"
        )
        after = alerts(db)
        assert after["hot_fast"][:2] == before["hot_fast"][:2]  # still firing, same start
        assert after["hot_fast"][2] == before["hot_fast"][2]
        _, since, fired_at = after["hot_slow"]
        assert since == before["hot_slow"][1]
        assert fired_at is not None
        # Fired when `for` ran out from the original start, not a full `for` after restart.
        assert fired_at - since < SLOW_FOR + 2.0
        assert fired_at < restarted_at + SLOW_FOR - 1.0
        assert "alerts restored" in daemon.peer.log()
        assert firing_pages(db, "hot_fast") == 1  # not paged again after the restart
        code, _ = daemon.terminate()
        assert code == 0
    finally:
        daemon.stop()
