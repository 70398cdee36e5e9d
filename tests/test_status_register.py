"""The equipment running-status register, kept by itself: a real upsd stopped and started
again is an outage in the machine-room log (`target.down` with the reason, `target.up`), a
reboot reading is `target.rebooted`, and the register shows the day's availability, the
outage with its start, end and duration, and the reboots, in English and Chinese."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.agent.scheduler import PollResult
from dutyd.core.records import Sample
from dutyd.duty.registers import build_register
from dutyd.duty.report import to_csv, to_markdown
from tests.nut_fixtures import OL_VARS, UpsdPeer


@pytest.fixture
def upsd(tmp_path: Path) -> Iterator[UpsdPeer]:
    peer = UpsdPeer(tmp_path, {"rack": OL_VARS})
    try:
        peer.start()
        yield peer
    finally:
        peer.stop()


async def until(done: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not done():
        assert time.monotonic() < deadline, "not done in time"
        await asyncio.sleep(0.05)


@pytest.mark.peer
async def test_an_outage_and_a_reboot_make_the_days_running_status(
    upsd: UpsdPeer, tmp_path: Path
) -> None:
    config = {
        "targets": [
            {
                "name": "ups1",
                "kind": "nut",
                "address": f"127.0.0.1:{upsd.port}",
                "ups": "rack",
                "interval": "0.3s",
                "timeout": "1s",
            }
        ],
        "http": {"port": 0},
        "storage": {"path": str(tmp_path / "d.db")},
    }
    daemon = Daemon(load_from_dict(config))
    await daemon.start()
    try:
        status = daemon.latest.status
        await until(lambda: status["ups1"].up is True)
        started = time.time()
        upsd.stop_upsd()
        await until(lambda: status["ups1"].up is False)
        await asyncio.sleep(1.0)
        upsd.start_upsd()
        await until(lambda: status["ups1"].up is True)
        # A server whose uptime went back: the reading the SSH collector gives then.
        now = time.time()
        reboot = Sample.of("node_rebooted", 1.0, now, {"target": "db1", "kind": "ssh"})
        daemon._on_poll(PollResult("db1", "ssh", [reboot], True, "", "", now, 0.01, 0.0))
        await until(lambda: not daemon.availability._writes)
        log = await daemon.storage.log.read(kinds=["target."])
        assert [(e.kind, e.subject) for e in log] == [
            ("target.down", "ups1"),
            ("target.up", "ups1"),
            ("target.rebooted", "db1"),
        ]
        down, up = log[0], log[1]
        assert down.data["reason"] and "127.0.0.1" in down.data["error"]
        assert 0.9 <= up.timestamp - down.timestamp < 15

        end = time.time() + 1
        targets = [("ups1", "nut"), ("db1", "ssh"), ("core-sw1", "snmp")]
        report = await build_register(
            daemon.storage, "status", started - 60, end, "en", "UTC", targets
        )
        by_target = {row[1]: row for row in report.rows}
        assert set(by_target) == {"ups1", "db1", "core-sw1"}
        ups = by_target["ups1"]
        assert ups[2] == "nut" and float(ups[3].rstrip(" %")) < 100.0 and ups[4] != "0"
        assert " – " in ups[5] and ups[6] == 0
        assert by_target["db1"][6] == 1 and by_target["db1"][3] == "100.00 %"
        assert by_target["core-sw1"][3] == "100.00 %" and by_target["core-sw1"][5] == ""
        md = to_markdown(report)
        assert md.startswith("# Equipment running-status register\n")
        assert "| Day | Equipment | Kind | Availability | Down time | Outages | Reboots |" in md

        zh = await build_register(daemon.storage, "status", started - 60, end, "zh", "UTC", targets)
        rows = list(csv.reader(io.StringIO(to_csv(zh))))
        assert rows[0] == ["设备运行状况登记簿"]
        assert rows[5] == ["日期", "设备", "类型", "可用率", "中断时长", "中断", "重启次数"]
        assert len(rows[6:]) == 3 and all(r[1] in by_target for r in rows[6:])
    finally:
        await daemon.stop()


async def test_an_outage_still_going_at_the_periods_end_reads_as_ongoing(tmp_path: Path) -> None:
    from dutyd.storage.sqlite import SqliteStorage

    async with SqliteStorage(tmp_path / "d.db") as storage:
        day = 1_772_409_600.0  # 2026-03-02 00:00 UTC
        await storage.log.append(day + 3600, "target.down", "dutyd", "sw1", {"kind": "snmp"})
        # Down from 01:00 and still down two hours into the next day: 23 h of day one down,
        # all of the part of day two the period holds, that outage ongoing.
        report = await build_register(storage, "status", day, day + 86400 + 7200, "en", "UTC")
        first, second = report.rows
        assert first[:5] == ["2026-03-02", "sw1", "snmp", f"{100 * 1 / 24:.2f} %", "23h"]
        assert second[0] == "2026-03-03" and second[3] == "0.00 %" and "ongoing" in second[5]
