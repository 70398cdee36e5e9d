"""The shift duty diary from a recorded day: equipment, environment min/max, problems and
measures; Markdown/CSV/XLSX through `dutyd report`, and `dutyd log` filters."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import zoneinfo
from pathlib import Path

import openpyxl
import pytest
import yaml

from dutyd.agent.cli import main
from dutyd.core.records import Sample
from dutyd.duty.report import EnvironmentRecorder
from dutyd.storage.sqlite import SqliteStorage
from tests.daemon_fixtures import DaemonProcess, room_sensor_target
from tests.test_e2e_daemon import RoomSensor
from tests.test_notify_delivery import Receiver

SH = zoneinfo.ZoneInfo("Asia/Shanghai")


def at(hour: int, minute: int = 0, day: int = 15) -> float:
    return dt.datetime(2026, 10, day, hour, minute, tzinfo=SH).timestamp()


async def record_day(db: Path) -> None:
    storage = SqliteStorage(db)
    await storage.open()
    try:
        log = storage.log.append
        ups = {"target": "ups1", "site": "hq", "room": "A"}
        await log(
            at(7),
            "alert.firing",
            "dutyd",
            "fp-old",
            {
                "summary": "before the shift",
                "labels": {"target": "sw1"},
                "state": "firing",
                "severity": "warning",
            },
        )
        await log(
            at(9, 5),
            "alert.firing",
            "dutyd",
            "fp-ups",
            {
                "rule": "ups_on_battery",
                "summary": "UPS ups1 on battery",
                "labels": ups,
                "severity": "critical",
                "state": "firing",
            },
        )
        await log(
            at(9, 6),
            "notify.sent",
            "dutyd",
            "msg-0001",
            {"channel": "sms", "recipient": "Zhang Wei", "kind": "page", "attempts": 1},
        )
        await log(
            at(9, 7),
            "alert.acknowledged",
            "Li Na",
            "fp-ups",
            {"labels": ups, "state": "firing", "note": "mains breaker tripped, reset"},
        )
        await log(
            at(9, 30),
            "alert.resolved",
            "dutyd",
            "fp-ups",
            {"labels": ups, "state": "resolved", "summary": "UPS ups1 on battery"},
        )
        await log(
            at(14),
            "alert.firing",
            "dutyd",
            "fp-disk",
            {
                "summary": "/data on db1 is 93% full",
                "labels": {"target": "db1"},
                "severity": "warning",
                "state": "firing",
            },
        )
        await log(
            at(15),
            "maintenance.add",
            "Zhang Wei",
            "maintenance:1",
            {"reason": "replace switch fan"},
        )
        await log(
            at(21),
            "alert.firing",
            "dutyd",
            "fp-late",
            {
                "summary": "next shift",
                "labels": {"target": "db1"},
                "state": "firing",
                "severity": "warning",
            },
        )
        for hour, temp, hum in ((9, 22.5, 48.0), (12, 27.1, 52.0), (18, 21.0, 45.5)):
            samples = [
                Sample.of(
                    "room_temperature_celsius", temp, at(hour), {"target": "env1", "room": "A"}
                ),
                Sample.of("room_humidity_percent", hum, at(hour), {"target": "env1", "room": "A"}),
                Sample.of("ups_load_percent", 50, at(hour), {"target": "ups1"}),
            ]
            recorder = EnvironmentRecorder(storage.environment)
            recorder.observe(samples)
            assert await recorder.flush() == 2
    finally:
        await storage.close()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "dutyd.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "storage": {"path": str(tmp_path / "d.db")},
                "targets": [
                    {"name": "ups1", "kind": "nut", "address": "127.0.0.1", "ups": "ups1"},
                    {"name": "db1", "kind": "tcp", "address": "127.0.0.1", "port": 5432},
                    {"name": "sw1", "kind": "tcp", "address": "127.0.0.1", "port": 22},
                ],
                "oncall": {
                    "timezone": "Asia/Shanghai",
                    "handovers": ["08:30", "20:30"],
                    "start": "2026-11-01",
                    "pairs": [["Zhang Wei", "Li Na"], ["Liu Yang", "Zhao Min"]],
                    "people": [{"name": n} for n in ("Zhang Wei", "Li Na", "Liu Yang", "Zhao Min")],
                },
            }
        ),
        encoding="utf-8",
    )
    return path


def test_shift_report_xlsx_md_csv(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The CLI runs its own event loop, so the recording runs before it, not around it.
    asyncio.run(record_day(tmp_path / "d.db"))
    out = tmp_path / "shift.xlsx"
    day = "2026-10-15T12:00"
    assert (
        main(
            [
                "report",
                "-c",
                str(config),
                "--shift",
                "--at",
                day,
                "--format",
                "xlsx",
                "--lang",
                "zh",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    ws = openpyxl.load_workbook(out).active
    rows = [[c for c in row if c is not None] for row in ws.iter_rows(values_only=True)]
    flat = [" ".join(str(c) for c in r) for r in rows]
    assert rows[0] == ["值班日志"]
    assert rows[1] == ["班次", "2026-10-15 08:30 – 2026-10-15 20:30 CST"]
    assert rows[2] == ["值班人员", "Zhang Wei, Li Na"]
    assert ["ups1", "nut", "已恢复", "UPS ups1 on battery"] in rows
    assert ["db1", "tcp", "故障", "/data on db1 is 93% full"] in rows
    assert ["sw1", "tcp", "正常"] in rows  # its alert fired before the shift
    assert ["A/env1", "温度（°C）", 21.0, 27.1] in rows
    assert ["A/env1", "湿度（%RH）", 45.5, 52.0] in rows
    ups = next(r for r in rows if "UPS ups1 on battery" in r and r[0] == "10-15 09:05")
    # A Chinese diary says what people did in Chinese; names and their notes stay as written.
    assert ups[2] == "严重"
    assert ups[-1] == "10-15 09:07 Li Na 已确认：mains breaker tripped, reset"
    assert any("Zhang Wei 设置维护窗口：replace switch fan" in f for f in flat)
    assert not any(" ack " in f or "maintenance" in f or "critical" in f for f in flat)
    assert not any("next shift" in f or "before the shift" in f for f in flat)

    capsys.readouterr()
    assert main(["report", "-c", str(config), "--at", day]) == 0
    md = capsys.readouterr().out
    assert "# Duty diary" in md and "| ups1 | nut | recovered | UPS ups1 on battery |" in md
    assert "| critical | 10-15 09:30 | 10-15 09:07 ack Li Na: mains breaker tripped, reset |" in md
    assert "10-15 15:00 maintenance Zhang Wei: replace switch fan |" in md
    assert main(["report", "-c", str(config), "--at", day, "--format", "csv"]) == 0
    assert "Room environment" in capsys.readouterr().out
    # The previous shift is the night one of Liu Yang and Zhao Min.
    assert main(["report", "-c", str(config), "--at", day, "--previous"]) == 0
    assert "Liu Yang, Zhao Min" in capsys.readouterr().out


def test_duty_log_filters(tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The CLI runs its own event loop, so the recording runs before it, not around it.
    asyncio.run(record_day(tmp_path / "d.db"))
    capsys.readouterr()
    assert main(["log", "-c", str(config), "--kind", "alert.", "--subject", "fp-ups"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # Times in the site's zone (the rota runs on Asia/Shanghai), to the second, zone named.
    assert all(line.split()[2] == "CST" for line in lines), lines
    assert [line.split()[3] for line in lines] == [
        "alert.firing",
        "alert.acknowledged",
        "alert.resolved",
    ]
    # A delivery says to whom and through which channel, not only the message id.
    assert main(["log", "-c", str(config), "--kind", "notify.sent"]) == 0
    (sent,) = capsys.readouterr().out.splitlines()
    assert "to Zhang Wei via sms" in sent and "09:06:00 CST" in sent
    assert main(["log", "-c", str(config), "--kind", "maintenance.add", "--json"]) == 0
    assert '"reason": "replace switch fan"' in capsys.readouterr().out
    assert main(["log", "--db", str(tmp_path / "d.db"), "--since", "1h"]) == 0
    assert capsys.readouterr().out == ""  # the recorded day is long past


def test_exports_keep_injected_text_as_text(tmp_path: Path) -> None:
    """An ack note or alert text such as `=HYPERLINK(...)` must stay text in the spreadsheet
    and the CSV a duty engineer opens, never become a live formula."""
    from dutyd.duty.report import Report, to_csv, to_xlsx

    evil = '=HYPERLINK("http://198.51.100.7/x","open")'
    report = Report("en", "Asia/Shanghai", at(8), at(20), ["Li Na"])
    report.problems.append(["10-15 09:00", "portal down", "critical", "", evil])
    report.equipment.append(["portal", "http", "fault", "+cmd|' /C calc'!A0"])
    report.environment.append(["room1", "22.0 °C", -1.5, 23.0])

    out = tmp_path / "shift.xlsx"
    to_xlsx(report, out)
    ws = openpyxl.load_workbook(out).active
    assert ws is not None
    cells = {c.value: c.data_type for row in ws.iter_rows() for c in row if c.value is not None}
    assert cells[evil] == "s"
    assert all(t != "f" for t in cells.values())
    assert cells[-1.5] == "n"  # numbers stay numbers

    text = to_csv(report)
    assert "'" + evil.replace('"', '""') in text
    assert "'+cmd|" in text
    assert ",-1.5," in text


async def test_the_diary_keeps_every_extreme_not_one_reading_a_minute(tmp_path: Path) -> None:
    """The room reached 27.5 °C and 35 %RH for a few seconds between two minute marks: both
    paged, so both must be the diary's extremes (the old recorder kept one reading a minute)."""
    storage = SqliteStorage(tmp_path / "d.db")
    await storage.open()
    try:
        recorder = EnvironmentRecorder(storage.environment)
        labels = {"target": "env1", "room": "A"}
        base = at(10)
        readings = [(0, 22.0, 48.0), (20, 27.5, 35.0), (25, 24.0, 41.0), (59, 22.0, 48.0)]
        for second, temp, hum in readings:
            recorder.observe(
                [
                    Sample.of("room_temperature_celsius", temp, base + second, labels),
                    Sample.of("room_humidity_percent", hum, base + second, labels),
                    Sample.of("ups_load_percent", 99.0, base + second, {"target": "ups1"}),
                ]
            )
        assert await recorder.flush() == 4  # min and max of two series
        assert await recorder.flush() == 0  # nothing twice
        ranges = {r.name: (r.min, r.max) for r in await storage.environment.ranges(at(0), at(23))}
        assert ranges == {
            "room_temperature_celsius": (22.0, 27.5),
            "room_humidity_percent": (35.0, 48.0),
        }
    finally:
        await storage.close()


def test_the_status_page_log_says_who_was_reached() -> None:
    from dutyd.storage import LogEntry
    from dutyd.web.views import log_text

    sent = LogEntry(
        1, 0.0, "notify.sent", "dutyd", "msg-1", {"recipient": "Li Na", "channel": "sms"}
    )
    assert log_text(sent) == "notify.sent: to Li Na via sms"


async def test_daemon_diary_lists_a_short_excursion_that_paged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Defect 8 of issue 13 at the daemon: the room sensor (a real Modbus TCP server) spikes
    to 27.5 °C and 35 %RH for a few seconds between two minute marks; both page (a real
    receiver gets them), and the shift diary that `dutyd report --shift` prints from the
    daemon's database lists them as the extremes (the old recorder kept the latest reading
    once a minute, so the spike never reached the diary)."""
    sensor = RoomSensor()
    sensor.set(22.0, 48.0)
    receiver = Receiver()
    await receiver.start()
    rule = {"for": "1s", "severity": "critical"}
    config = {
        "targets": [room_sensor_target(sensor.port, interval="0.5s")],
        "rules": {
            "packs": [],
            "custom": [
                {
                    **rule,
                    "name": "room_hot",
                    "metric": "room_temperature_celsius",
                    "condition": {"outside": [18, 26]},
                    "summary": "Room {target} at {value} °C",
                },
                {
                    **rule,
                    "name": "room_dry",
                    "metric": "room_humidity_percent",
                    "condition": {"outside": [40, 60]},
                    "summary": "Room {target} at {value} %RH",
                },
            ],
        },
        "oncall": {"people": [{"name": "Li Na", "contacts": ["phone"]}]},
        "notify": {"channels": {"phone": {"url": receiver.url("li")}}, "group_wait": "0s"},
        "escalation": {"policies": [{"name": "all", "steps": [{"people": ["Li Na"]}]}]},
    }
    daemon: DaemonProcess | None = None
    try:
        daemon = await asyncio.to_thread(DaemonProcess, tmp_path, config)
        await asyncio.to_thread(
            daemon.wait_until,
            lambda: daemon.metric_value("room_temperature_celsius", target="room-a-sensor") == 22.0,
            15,
            "the first reading",
        )
        spike = time.time()
        sensor.set(27.5, 35.0)

        def told() -> str:
            return "\n".join(json.dumps(r["body"], ensure_ascii=False) for r in receiver.received)

        for _ in range(100):  # both pages at the receiver
            if "at 27.5 °C" in told() and "at 35 %RH" in told():
                break
            await asyncio.sleep(0.1)
        assert "at 27.5 °C" in told() and "at 35 %RH" in told(), told()
        sensor.set(22.0, 48.0)
        await asyncio.to_thread(
            daemon.wait_until,
            lambda: daemon.metric_value("room_humidity_percent", target="room-a-sensor") == 48.0,
            10,
            "the room back to normal",
        )
        await asyncio.sleep(1.0)  # normal readings after the spike, in the same minute
        assert time.time() - spike < 60
        code, _ = await asyncio.to_thread(daemon.terminate, 10)
        assert code == 0, daemon.peer.log()[-3000:]
    finally:
        if daemon is not None:
            daemon.stop()
        sensor.stop()
        await receiver.stop()

    capsys.readouterr()
    at = dt.datetime.fromtimestamp(spike, dt.UTC).isoformat()
    code = await asyncio.to_thread(
        main, ["report", "-c", str(daemon.config_path), "--shift", "--at", at]
    )
    assert code == 0
    diary = capsys.readouterr().out
    rows = {
        cells[1]: cells[2:]
        for line in diary.splitlines()
        if line.startswith("| A/room-a-sensor |")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    assert rows == {
        "temperature (°C)": ["22.0", "27.5"],
        "humidity (%RH)": ["35.0", "48.0"],
    }, diary


async def test_a_chinese_diary_has_no_english_words_but_names_and_ids(tmp_path: Path) -> None:
    """Every column of a zh diary (severity, problems, measures, equipment, environment) is
    Chinese; the only Latin words are names, target ids and kinds, units and a mount path."""
    import re

    from dutyd.duty.report import build_report, to_markdown

    storage = SqliteStorage(tmp_path / "d.db")
    await storage.open()
    try:
        log = storage.log.append
        ups = {"target": "ups1", "kind": "nut"}
        texts = {
            "en": "UPS ups1 runs on battery for 10s: mains power is out",
            "zh": "市电中断：UPS ups1 已转电池供电 10秒",
        }
        fired = {"labels": ups, "severity": "critical", "state": "firing"}
        await log(at(9, 5), "alert.firing", "dutyd", "fp-ups", {**fired, "summaries": texts})
        await log(
            at(9, 6), "alert.acknowledged", "Li Na", "fp-ups", {"labels": ups, "note": "已复位"}
        )
        await log(
            at(11, 5), "alert.red_line", "dutyd", "fp-ups", {"labels": ups, "red_line": 7200.0}
        )
        await log(at(12), "alert.resolved", "dutyd", "fp-ups", {"labels": ups, "state": "resolved"})
        disk = {"target": "db1", "kind": "ssh", "mount": "/var"}
        await log(
            at(14),
            "alert.firing",
            "dutyd",
            "fp-disk",
            {
                "labels": disk,
                "severity": "warning",
                "state": "firing",
                "summaries": {
                    "en": "/var on db1 is 98 % full (above 85 %) for 5m",
                    "zh": "磁盘空间不足：db1 的 /var 已用 98 %（高于 85 %），已持续 5分钟",
                },
            },
        )
        await log(at(15), "silence.add", "Zhang Wei", "silence:1", {"reason": "扩容中"})
        await log(at(16), "maintenance.add", "Zhang Wei", "maintenance:1", {"reason": "换风扇"})
        answers = [{"actor": "Li Na", "seconds": 12.0}, {"actor": "Wang Fang", "seconds": 95.0}]
        await log(at(17), "drill.end", "Zhang Wei", "fp-drill", {"answers": answers})
        env = EnvironmentRecorder(storage.environment)
        env.observe([Sample.of("room_humidity_percent", 39.8, at(10), {"target": "env1"})])
        await env.flush()
        report = await build_report(
            storage,
            [("ups1", "nut"), ("db1", "ssh"), ("env1", "modbus")],
            at(8, 30),
            at(20, 30),
            ["Zhang Wei", "Li Na"],
            "zh",
            "Asia/Shanghai",
        )
    finally:
        await storage.close()
    text = to_markdown(report)
    problems = [row for row in report.problems if row[1]]
    assert [row[2] for row in problems] == ["严重", "警告"]
    assert problems[0][-1] == "10-15 09:06 Li Na 已确认：已复位；10-15 11:05 已超过红线（2小时）"
    measures = [row[-1] for row in report.problems if not row[1]]
    assert measures == [
        "10-15 15:00 Zhang Wei 设置静默：扩容中",
        "10-15 16:00 Zhang Wei 设置维护窗口：换风扇",
        "10-15 17:00 应急演练：Li Na 12秒，Wang Fang 1分35秒",
    ]
    names_and_ids = {"Zhang", "Wei", "Li", "Na", "Wang", "Fang", "ups1", "db1", "env1"}
    kinds_and_units = {"nut", "ssh", "modbus", "UPS", "var", "RH", "C", "CST"}
    words = set(re.findall(r"[A-Za-z][A-Za-z0-9]*", text))
    assert words - names_and_ids - kinds_and_units == set(), text


def test_the_status_page_log_reads_in_the_pages_language() -> None:
    """A Chinese status page reads `已通知 Chen Jie（phone_5）`, not `notify.sent: to Chen Jie
    via phone_5`, and an escalation step names whom it paged for which alert, not the
    alert's fingerprint."""
    from dutyd.storage import LogEntry
    from dutyd.web.views import log_text

    sent = LogEntry(
        1, 0.0, "notify.sent", "dutyd", "msg-1", {"recipient": "Chen Jie", "channel": "phone_5"}
    )
    assert log_text(sent, "zh") == "已通知 Chen Jie（phone_5）"
    step = LogEntry(
        2,
        0.0,
        "escalation.firing",
        "dutyd",
        "c53d85e831b210ef",
        {"step": 2, "recipients": ["Wang Fang"], "rule": "disk_full", "target": "db1"},
    )
    assert log_text(step) == "escalation.firing: step 2 to Wang Fang (disk_full on db1)"
    assert log_text(step, "zh") == "第 2 级告警通知：Wang Fang（db1，disk_full）"
    acked = LogEntry(
        3, 0.0, "alert.acknowledged", "Li Na", "fp", {"summary": "on my way", "note": "x"}
    )
    assert log_text(acked) == "alert.acknowledged [Li Na]: on my way"
    assert log_text(acked, "zh") == "已确认（Li Na）：on my way"
    started = LogEntry(4, 0.0, "daemon.start", "dutyd", "", {"targets": 3})
    assert log_text(started, "zh") == "dutyd 已启动"


def test_a_muted_alert_says_why_in_the_pages_language() -> None:
    from dutyd.web.statuspage import muted_in

    assert muted_in("maintenance: replace fan", "zh") == "维护窗口：replace fan"
    assert muted_in("parent core-sw1 is down", "zh") == "上级设备 core-sw1 离线"
    assert muted_in("silenced by Li Na: disk swap", "zh") == "Li Na 设置静默：disk swap"
    assert muted_in("flapping", "zh") == "状态频繁变化"
    assert muted_in("parent core-sw1 is down", "en") == "parent core-sw1 is down"
