"""On-call rota: daily and day/night shifts in the site time zone, overrides for leave."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path

import pytest
import yaml

from dutyd.agent.cli import main
from dutyd.notify.config import OncallConfig
from dutyd.notify.oncall import Rota

SH = zoneinfo.ZoneInfo("Asia/Shanghai")
PEOPLE = [{"name": n} for n in ("A", "B", "C", "D", "E")]


def at(*args: int) -> float:
    return dt.datetime(*args, tzinfo=SH).timestamp()  # type: ignore[misc]


def test_daily_shifts_hand_over_at_local_time() -> None:
    rota = Rota(
        OncallConfig.model_validate(
            {
                "timezone": "Asia/Shanghai",
                "handovers": ["08:30"],
                "start": "2026-11-01",
                "pairs": [["A", "B"], ["C", "D"]],
                "people": PEOPLE,
            }
        )
    )
    assert rota.on_duty(at(2026, 11, 1, 8, 30)) == ("A", "B")
    assert rota.on_duty(at(2026, 11, 2, 8, 29)) == ("A", "B")
    assert rota.on_duty(at(2026, 11, 2, 8, 30)) == ("C", "D")
    assert rota.on_duty(at(2026, 11, 3, 3, 0)) == ("C", "D")
    # Before the rota's first day it still rotates (backwards).
    assert rota.on_duty(at(2026, 11, 1, 8, 0)) == ("C", "D")
    now, nxt = rota.now_and_next(at(2026, 11, 3, 12, 0))
    assert now.people == ("A", "B") and nxt.people == ("C", "D")
    assert now.start == dt.datetime(2026, 11, 3, 8, 30, tzinfo=SH)
    assert nxt.start == now.end == dt.datetime(2026, 11, 4, 8, 30, tzinfo=SH)


def test_day_night_and_overrides() -> None:
    rota = Rota(
        OncallConfig.model_validate(
            {
                "timezone": "Asia/Shanghai",
                "handovers": ["08:30", "20:30"],
                "start": "2026-11-01",
                "pairs": [["A", "B"], ["C", "D"]],
                "people": PEOPLE,
                "overrides": [
                    {
                        "start": "2026-11-01T20:30",
                        "end": "2026-11-02T08:30",
                        "replace": "D",
                        "by": "E",
                        "reason": "leave",
                    },
                    {
                        "start": "2026-11-02T12:00",
                        "end": "2026-11-02T14:00",
                        "replace": "A",
                        "by": "C",
                    },
                ],
            }
        )
    )
    assert rota.on_duty(at(2026, 11, 1, 12, 0)) == ("A", "B")
    night = rota.shift_at(at(2026, 11, 2, 2, 0))
    assert night.people == ("C", "E") and night.scheduled == ("C", "D")
    assert night.notes == ("D -> E (leave)",)
    assert night.end == dt.datetime(2026, 11, 2, 8, 30, tzinfo=SH)
    assert rota.on_duty(at(2026, 11, 2, 9, 0)) == ("A", "B")
    assert rota.on_duty(at(2026, 11, 2, 13, 0)) == ("C", "B")  # a swap for two hours
    assert rota.on_duty(at(2026, 11, 2, 14, 0)) == ("A", "B")


def test_dutyd_oncall_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "dutyd.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "oncall": {
                    "timezone": "Asia/Shanghai",
                    "handovers": ["08:30", "20:30"],
                    "start": "2026-11-01",
                    "pairs": [["A", "B"], ["C", "D"]],
                    "people": PEOPLE,
                    "roles": {"manager": ["E"]},
                    "overrides": [
                        {
                            "start": "2026-11-02T08:30",
                            "end": "2026-11-02T20:30",
                            "replace": "B",
                            "by": "E",
                            "reason": "leave",
                        }
                    ],
                }
            }
        )
    )
    assert main(["oncall", "-c", str(config), "--at", "2026-11-02T12:00"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "now   2026-11-02T08:30 - 2026-11-02T20:30  A, E"
    assert out[1] == "        override: B -> E (leave)"
    assert out[2] == "next  2026-11-02T20:30 - 2026-11-03T08:30  C, D"
    assert out[3] == "manager: E"
    assert main(["oncall", "-c", str(config), "--json"]) == 0
    assert '"on_duty"' in capsys.readouterr().out
