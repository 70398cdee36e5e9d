"""The registers out: `dutyd report --register entry|log --from --to` in Markdown, CSV and
XLSX with English and Chinese headings and times in the site's zone, each read back; and
`dutyd register sign` (through the running daemon's API) with the month's summary of the
periods nobody signed."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
import yaml
from openpyxl import load_workbook

from dutyd.agent.cli import main as cli_main
from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.storage import NewRoomEntry
from dutyd.storage.sqlite import SqliteStorage

TOKEN = "register-api-token"
ZONE = zoneinfo.ZoneInfo("Asia/Shanghai")


def at(day: int, hour: int, minute: int = 0) -> float:
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=ZONE).timestamp()


def site(tmp: Path) -> dict[str, Any]:
    return {
        "http": {"port": 0},
        "storage": {"path": str(tmp / "d.db")},
        "api": {"token": TOKEN},
        "notify": {"timezone": "Asia/Shanghai"},
        "oncall": {"timezone": "Asia/Shanghai"},
        "rooms": [{"name": "机房A"}],
    }


@pytest.fixture
async def register_db(tmp_path: Path) -> Path:
    """A store with a morning's entries, written as the daemon writes them."""
    config = tmp_path / "dutyd.yaml"
    config.write_text(yaml.safe_dump(site(tmp_path), allow_unicode=True))
    async with SqliteStorage(tmp_path / "d.db") as storage:
        await storage.room_entries.append(
            [
                NewRoomEntry(
                    at(2, 9, 15), "机房A", "张伟", "in", ("Li Na",), "更换硬盘", "硬盘 2 块", "",
                    "张伟",
                ),
                NewRoomEntry(
                    at(2, 9, 15), "机房A", "Li Na", "in", ("张伟",), "更换硬盘", "硬盘 2 块", "",
                    "张伟",
                ),
                NewRoomEntry(
                    at(2, 9, 20), "机房A", "Vendor", "in", (), "=HYPERLINK(\"x\")", "",
                    "Wang Fang", "张伟",
                ),
                NewRoomEntry(
                    at(2, 10, 5), "机房A", "Li Na", "out", (), "", "旧硬盘 2 块", "", "Li Na"
                ),
                # Outside the period asked for.
                NewRoomEntry(at(3, 8, 0), "机房A", "张伟", "out", (), "", "", "", "张伟"),
            ]
        )  # fmt: skip
        await storage.log.append(
            at(2, 9, 15), "entry.in", "张伟", "room:机房A", {"people": ["张伟"]}
        )
    return config


def dutyd(*argv: str) -> int:
    return cli_main(list(argv))


EXPECTED_ZH = [
    ["时间", "机房", "人员", "进/出", "同行人员", "事由", "携带物品", "批准人", "登记人"],
    ["2026-03-02 09:15:00", "机房A", "张伟", "进入", "Li Na", "更换硬盘", "硬盘 2 块", "", "张伟"],
    ["2026-03-02 09:15:00", "机房A", "Li Na", "进入", "张伟", "更换硬盘", "硬盘 2 块", "", "张伟"],
    ["2026-03-02 09:20:00", "机房A", "Vendor", "进入", "", '=HYPERLINK("x")', "", "Wang Fang",
     "张伟"],
    ["2026-03-02 10:05:00", "机房A", "Li Na", "离开", "", "", "旧硬盘 2 块", "", "Li Na"],
]  # fmt: skip


async def test_entry_register_exports_in_three_formats_and_two_languages(
    register_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    period = ["--from", "2026-03-02", "--to", "2026-03-03"]
    base = ["report", "-c", str(register_db), "--register", "entry", *period]

    # CSV in Chinese, read back: the same lines, times in Shanghai time.
    out = tmp_path / "entry.csv"
    assert (
        await asyncio.to_thread(dutyd, *base, "--format", "csv", "--lang", "zh", "-o", str(out))
        == 0
    )
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert rows[0] == ["机房出入登记簿"]
    assert rows[1] == ["期间", "2026-03-02 00:00 – 2026-03-03 00:00 CST"]
    assert rows[2] == ["签字", "未签字"]
    table = rows[5:]
    # A cell that a spreadsheet would run as a formula is kept as text.
    assert table[3][5] == '\'=HYPERLINK("x")'
    table[3][5] = table[3][5][1:]
    assert table == EXPECTED_ZH

    # XLSX in English, read back.
    out = tmp_path / "entry.xlsx"
    assert (
        await asyncio.to_thread(dutyd, *base, "--format", "xlsx", "--lang", "en", "-o", str(out))
        == 0
    )
    sheet = load_workbook(out).active
    assert sheet is not None
    cells = [[c if c is not None else "" for c in row] for row in sheet.iter_rows(values_only=True)]
    assert cells[0][0] == "Machine-room entry register"
    heads = cells[5][:9]
    assert heads == [
        "Time", "Room", "Person", "In/out", "With", "Purpose", "Items carried", "Approved by",
        "Registered by",
    ]  # fmt: skip
    lines = [row[:9] for row in cells[6:]]
    assert [(r[0], r[2], r[3], r[6]) for r in lines] == [
        ("2026-03-02 09:15:00", "张伟", "in", "硬盘 2 块"),
        ("2026-03-02 09:15:00", "Li Na", "in", "硬盘 2 块"),
        ("2026-03-02 09:20:00", "Vendor", "in", ""),
        ("2026-03-02 10:05:00", "Li Na", "out", "旧硬盘 2 块"),
    ]
    assert lines[2][5] == '=HYPERLINK("x")'  # text, not a formula
    assert sheet.cell(9, 6).data_type == "s"

    # Markdown to stdout.
    capsys.readouterr()
    assert await asyncio.to_thread(dutyd, *base, "--lang", "zh") == 0
    md = capsys.readouterr().out
    assert md.startswith("# 机房出入登记簿\n")
    assert "| 2026-03-02 10:05:00 | 机房A | Li Na | 离开 |  |  | 旧硬盘 2 块 |  | Li Na |" in md

    # The machine-room log is the duty log.
    assert (
        await asyncio.to_thread(
            dutyd, "report", "-c", str(register_db), "--register", "log", *period, "--lang", "en"
        )
        == 0
    )
    md = capsys.readouterr().out
    assert (
        md.startswith("# Machine-room log\n") and "| 2026-03-02 09:15:00 | entry.in | 张伟 |" in md
    )


async def test_register_sign_and_the_months_unsigned_periods(
    register_db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = yaml.safe_load(await asyncio.to_thread(register_db.read_text))
    daemon = Daemon(load_from_dict(config))
    await daemon.start()
    monkeypatch.setenv("DUTYD_API_TOKEN", TOKEN)
    try:
        url = daemon.http.url
        common = ["-c", str(register_db), "--url", url, "--actor", "王芳"]
        sign = ["register", "sign", *common, "--register", "entry"]
        assert (
            await asyncio.to_thread(dutyd, *sign, "--from", "2026-03-01", "--to", "2026-03-08") == 0
        )
        assert "signed off by 王芳" in capsys.readouterr().out
        assert (
            await asyncio.to_thread(
                dutyd, *sign, "--from", "2026-03-15", "--to", "2026-04-01", "--note", "checked"
            )
            == 0
        )
        with pytest.raises(SystemExit, match="not over yet"):
            await asyncio.to_thread(dutyd, *sign, "--from", "2026-03-01", "--to", "2099-01-01")
        with pytest.raises(SystemExit, match="neither a duration"):
            await asyncio.to_thread(
                dutyd, "register", "sign", *common, "--register", "entry", "--from", "x"
            )
        capsys.readouterr()
        assert (
            await asyncio.to_thread(
                dutyd, "register", "summary", "-c", str(register_db), "--month", "2026-03"
            )
            == 0
        )
        out = capsys.readouterr().out
    finally:
        await daemon.stop()
    assert "entry register, 2026-03:" in out
    assert "signed 2026-03-01 00:00:00 CST – 2026-03-08 00:00:00 CST by 王芳" in out
    assert "NOT SIGNED 2026-03-08 00:00:00 CST – 2026-03-15 00:00:00 CST" in out
    # Nobody signed the machine-room log at all.
    assert (
        "log register, 2026-03:\n  NOT SIGNED 2026-03-01 00:00:00 CST – 2026-04-01 00:00:00 CST"
        in out
    )
    # The export names who signed the period.
    assert await asyncio.to_thread(
        dutyd, "report", "-c", str(register_db), "--register", "entry",
        "--from", "2026-03-02", "--to", "2026-03-03", "--format", "csv",
    ) == 0  # fmt: skip
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[2][0] == "Signed off" and rows[2][1].startswith("王芳 ")
