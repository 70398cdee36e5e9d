"""The shift duty diary: equipment status, room environment (min/max temperature and humidity),
problems found and the measures taken, from the duty log and the recorded environment.

The duty rules ask for such a diary for every shift; `dutyd report --shift` writes it as
Markdown (a chat hand-over), CSV or XLSX (openpyxl), with headings in English or Chinese and
times in the site's time zone. While the daemon runs, `EnvironmentRecorder` keeps the hourly
min/max of the room sensors (`ENV_METRICS`) in SQLite, since samples themselves are not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import io
import json
import sqlite3
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dutyd.core.records import Sample
from dutyd.storage.sqlite import SqliteStorage, register_schema

ENV_METRICS = ("room_temperature_celsius", "room_humidity_percent")
RECORD_EVERY = 60.0

register_schema(
    "report",
    [
        """
    CREATE TABLE environment_hourly (
        hour REAL NOT NULL,
        name TEXT NOT NULL,
        series TEXT NOT NULL,
        min REAL NOT NULL,
        max REAL NOT NULL,
        last REAL NOT NULL,
        PRIMARY KEY (hour, name, series)
    );
    """
    ],
)


class EnvironmentRecorder:
    """Every minute, fold the latest room readings into their hour's min/max row."""

    def __init__(
        self,
        storage: SqliteStorage,
        samples: Callable[[], Iterable[Sample]],
        every: float = RECORD_EVERY,
    ) -> None:
        self.storage = storage
        self.samples = samples
        self.every = every
        self._task: asyncio.Task[None] | None = None

    async def record(self) -> int:
        rows = [
            (
                s.timestamp - s.timestamp % 3600,
                s.name,
                json.dumps(dict(s.labels), sort_keys=True, ensure_ascii=False),
                s.value,
            )
            for s in self.samples()
            if s.name in ENV_METRICS
        ]
        if not rows:
            return 0

        def upsert(c: sqlite3.Connection) -> None:
            c.execute("BEGIN")
            c.executemany(
                "INSERT INTO environment_hourly (hour, name, series, min, max, last) "
                "VALUES (?1, ?2, ?3, ?4, ?4, ?4) ON CONFLICT (hour, name, series) DO UPDATE SET "
                "min = MIN(min, excluded.min), max = MAX(max, excluded.max), last = excluded.last",
                rows,
            )
            c.execute("COMMIT")

        await self.storage.run(upsert)
        return len(rows)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            with contextlib.suppress(Exception):
                await self.record()

    async def start(self, _app: object = None) -> None:
        self._task = asyncio.create_task(self._loop(), name="environment-recorder")

    async def stop(self, _app: object = None) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


# -- the report ---------------------------------------------------------------------------------

HEADINGS = {
    "en": {
        "title": "Duty diary",
        "shift": "Shift",
        "on_duty": "On duty",
        "equipment": "Equipment status",
        "environment": "Room environment",
        "problems": "Problems and measures",
        "target": "Equipment",
        "kind": "Kind",
        "status": "Status",
        "detail": "Detail",
        "sensor": "Sensor",
        "reading": "Reading",
        "min": "Min",
        "max": "Max",
        "time": "Time",
        "problem": "Problem",
        "severity": "Severity",
        "resolved": "Resolved",
        "measures": "Measures",
        "normal": "normal",
        "fault": "FAULT",
        "recovered": "recovered",
        "none": "none",
        "temperature": "temperature (°C)",
        "humidity": "humidity (%RH)",
        "still": "still active",
    },
    "zh": {
        "title": "值班日志",
        "shift": "班次",
        "on_duty": "值班人员",
        "equipment": "设备运行状态",
        "environment": "机房环境",
        "problems": "发现的问题及处理措施",
        "target": "设备",
        "kind": "类型",
        "status": "状态",
        "detail": "说明",
        "sensor": "传感器",
        "reading": "读数",
        "min": "最低",
        "max": "最高",
        "time": "时间",
        "problem": "问题",
        "severity": "级别",
        "resolved": "恢复时间",
        "measures": "处理措施",
        "normal": "正常",
        "fault": "故障",
        "recovered": "已恢复",
        "none": "无",
        "temperature": "温度（°C）",
        "humidity": "湿度（%RH）",
        "still": "仍在告警",
    },
}


@dataclass
class Report:
    language: str
    tz: str
    start: float
    end: float
    people: list[str]
    equipment: list[list[str]] = field(default_factory=list)  # target, kind, status, detail
    environment: list[list[Any]] = field(default_factory=list)  # sensor, reading, min, max
    problems: list[list[str]] = field(default_factory=list)  # time, problem, sev, resolved, m.

    def h(self, key: str) -> str:
        return HEADINGS.get(self.language, HEADINGS["en"])[key]

    def when(self, ts: float | None) -> str:
        if ts is None:
            return ""
        return dt.datetime.fromtimestamp(ts, zoneinfo.ZoneInfo(self.tz)).strftime("%m-%d %H:%M")

    def sections(self) -> list[tuple[str, list[str], list[list[Any]]]]:
        h = self.h
        return [
            (
                h("equipment"),
                [h("target"), h("kind"), h("status"), h("detail")],
                self.equipment,
            ),
            (h("environment"), [h("sensor"), h("reading"), h("min"), h("max")], self.environment),
            (
                h("problems"),
                [h("time"), h("problem"), h("severity"), h("resolved"), h("measures")],
                self.problems,
            ),
        ]

    def header(self) -> list[tuple[str, str]]:
        zone = zoneinfo.ZoneInfo(self.tz)
        start = dt.datetime.fromtimestamp(self.start, zone).strftime("%Y-%m-%d %H:%M")
        end = dt.datetime.fromtimestamp(self.end, zone).strftime("%Y-%m-%d %H:%M %Z")
        return [(self.h("shift"), f"{start} – {end}"), (self.h("on_duty"), ", ".join(self.people))]


def _log(conn: sqlite3.Connection, start: float, end: float) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT ts, kind, actor, subject, data FROM duty_log WHERE ts >= ? AND ts < ? ORDER BY id",
        (start, end),
    ).fetchall()


def build_report(
    conn: sqlite3.Connection,
    targets: list[tuple[str, str]],
    start: float,
    end: float,
    people: list[str],
    language: str = "en",
    tz: str = "UTC",
) -> Report:
    """The diary of the shift [start, end) from the duty log and environment table."""
    report = Report(language, tz, start, end, people)
    h = report.h
    # Alerts touched during the shift, in order of first appearance.
    alerts: dict[str, dict[str, Any]] = {}
    measures: list[tuple[float, str]] = []
    for ts, kind, actor, subject, raw in _log(conn, start, end):
        data = json.loads(raw)
        if kind.startswith("alert."):
            if data.get("labels", {}).get("kind") == "drill":
                continue
            a = alerts.setdefault(
                subject,
                {"first": None, "resolved": None, "state": None, "acts": [], **data},
            )
            a["state"] = data.get("state", a["state"])
            if kind == "alert.firing" and a["first"] is None:
                a["first"] = ts
                texts = data.get("summaries") or {}
                a["summary"] = texts.get(report.language) or data.get("summary", "")
            elif kind == "alert.resolved":
                a["resolved"] = ts
            elif kind in ("alert.acknowledged", "alert.red_line"):
                note = data.get("note") or ""
                word = "ack" if kind == "alert.acknowledged" else "red line"
                text = f"{report.when(ts)} {word} {actor}" + (f": {note}" if note else "")
                a["acts"].append(text)
        elif kind in ("silence.add", "maintenance.add"):
            word = "silence" if kind == "silence.add" else "maintenance"
            measures.append((ts, f"{report.when(ts)} {word} {actor}: {data.get('reason', '')}"))
        elif kind == "drill.end":
            answers = ", ".join(
                f"{a['actor']} {a['seconds']:.0f}s" for a in data.get("answers", [])
            )
            measures.append((ts, f"{report.when(ts)} drill: {answers or h('none')}"))
    fired = {fp: a for fp, a in alerts.items() if a["first"] is not None}
    for a in fired.values():
        resolved = report.when(a["resolved"]) if a["resolved"] else h("still")
        report.problems.append(
            [
                report.when(a["first"]),
                a.get("summary", ""),
                a.get("severity", ""),
                resolved,
                "; ".join(a["acts"]),
            ]
        )
    for _, text in measures:
        report.problems.append(["", "", "", "", text])
    by_target: dict[str, list[dict[str, Any]]] = {}
    for a in fired.values():
        by_target.setdefault(a.get("labels", {}).get("target", ""), []).append(a)
    for name, kind in targets:
        mine = by_target.get(name, [])
        if not mine:
            report.equipment.append([name, kind, h("normal"), ""])
            continue
        active = [a for a in mine if a["state"] in ("firing", "pending")]
        status = h("fault") if active else h("recovered")
        detail = "; ".join(a.get("summary", "") for a in mine)
        report.equipment.append([name, kind, status, detail])
    hour0 = start - start % 3600
    rows = conn.execute(
        "SELECT name, series, MIN(min), MAX(max) FROM environment_hourly "
        "WHERE hour >= ? AND hour < ? GROUP BY name, series ORDER BY series, name",
        (hour0, end),
    ).fetchall()
    for name, series, lo, hi in rows:
        labels = json.loads(series)
        where = "/".join(labels[k] for k in ("room", "target", "sensor") if labels.get(k))
        reading = h("temperature") if "temperature" in name else h("humidity")
        report.environment.append([where, reading, round(lo, 1), round(hi, 1)])
    return report


def to_markdown(report: Report) -> str:
    out = [f"# {report.h('title')}", ""]
    out += [f"- **{k}**: {v}" for k, v in report.header()]
    for title, heads, rows in report.sections():
        out += ["", f"## {title}", ""]
        if not rows:
            out.append(report.h("none"))
            continue
        out.append("| " + " | ".join(heads) + " |")
        out.append("|" + "---|" * len(heads))
        for row in rows:
            cells = [str(c).replace("|", "\\|").replace("\n", " ") for c in row]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


# Notes, reasons and alert text come from API callers and ack links: a spreadsheet must show
# them as text, never run them as formulas (=HYPERLINK(...), =cmd|...).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def to_csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([report.h("title")])
    for k, v in report.header():
        w.writerow([_csv_cell(k), _csv_cell(v)])
    for title, heads, rows in report.sections():
        w.writerow([])
        w.writerow([title])
        w.writerow(heads)
        w.writerows([[_csv_cell(c) for c in row] for row in rows])
    return buf.getvalue()


def to_xlsx(report: Report, path: Path) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = report.h("title")[:31]
    bold = Font(bold=True)
    ws.append([report.h("title")])
    ws["A1"].font = Font(bold=True, size=14)
    for k, v in report.header():
        ws.append([k, v])
    for title, heads, rows in report.sections():
        ws.append([])
        ws.append([title])
        ws.cell(ws.max_row, 1).font = bold
        ws.append(heads)
        for cell in ws[ws.max_row]:
            cell.font = bold
        for row in rows:
            ws.append(row)
            for cell in ws[ws.max_row]:
                if cell.data_type == "f":  # openpyxl reads any "=..." string as a formula
                    cell.data_type = "s"
    for col, width in zip("ABCDE", (18, 44, 12, 16, 50), strict=True):
        ws.column_dimensions[col].width = width
    wb.save(path)
