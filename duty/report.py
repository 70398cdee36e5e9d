"""The shift duty diary: equipment status, room environment (min/max temperature and humidity),
problems found and the measures taken, from the duty log and the recorded environment.

The duty rules ask for such a diary for every shift; `dutyd report --shift` writes it as
Markdown (a chat hand-over), CSV or XLSX (openpyxl), with headings in English or Chinese and
times in the site's time zone. While the daemon runs, `EnvironmentRecorder` keeps the hourly
min/max of the room sensors (`ENV_METRICS`) in storage, since samples themselves are not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import io
import logging
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dutyd.core.clock import SYSTEM_CLOCK, Clock
from dutyd.core.configtypes import format_duration
from dutyd.core.records import Labels, Sample
from dutyd.notify.templates import SEVERITY
from dutyd.storage import EnvironmentReading, EnvironmentRepository, Storage, StorageUnavailable

ENV_METRICS = ("room_temperature_celsius", "room_humidity_percent")
RECORD_EVERY = 60.0

log = logging.getLogger("dutyd.report")


class EnvironmentRecorder:
    """Fold every room reading into its hour's min/max, in memory, and write them each minute.

    Every sample counts, not one a minute: a 40-second excursion to 27.5 °C that paged
    someone must show in the diary's maximum (an extreme the diary misses is a diary nobody
    trusts). Writes are once a minute, whatever the poll rate.
    """

    def __init__(
        self,
        environment: EnvironmentRepository,
        every: float = RECORD_EVERY,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.environment = environment
        self.every = every
        self.clock = clock  # paces the writes; the readings carry their samples' times
        # (hour, metric, labels) -> (lowest, its time, highest, its time)
        self._pending: dict[tuple[int, str, Labels], tuple[float, float, float, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def observe(self, samples: Iterable[Sample]) -> None:
        """Called with every poll's samples; cheap: only room readings are looked at."""
        for s in samples:
            if s.name not in ENV_METRICS or s.value != s.value:  # NaN is no reading
                continue
            key = (int(s.timestamp // 3600), s.name, s.labels)
            seen = self._pending.get(key)
            if seen is None:
                self._pending[key] = (s.value, s.timestamp, s.value, s.timestamp)
                continue
            low, low_at, high, high_at = seen
            if s.value < low:
                low, low_at = s.value, s.timestamp
            if s.value > high:
                high, high_at = s.value, s.timestamp
            self._pending[key] = (low, low_at, high, high_at)

    async def flush(self) -> int:
        """Write the folded extremes; returns how many readings were written."""
        pending, self._pending = self._pending, {}
        readings: list[EnvironmentReading] = []
        for (_, name, labels), (low, low_at, high, high_at) in pending.items():
            readings.append(EnvironmentReading(low_at, name, dict(labels), low))
            if high_at != low_at or high != low:
                readings.append(EnvironmentReading(high_at, name, dict(labels), high))
        if readings:
            try:
                await self.environment.record(readings)
            except Exception:
                # A full disk loses no extreme: they are folded in again at the next flush.
                for r in readings:
                    self.observe([Sample.of(r.name, r.value, r.timestamp, r.labels)])
                raise
        return len(readings)

    async def _loop(self) -> None:
        while True:
            await self.clock.sleep(self.every)
            try:
                await self.flush()
            except StorageUnavailable:
                pass  # kept for the next minute; the fault is logged once by the store
            except Exception:
                log.warning("recording the room environment failed; kept for the next minute")

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="environment-recorder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()


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
        "handover": "Hand-over",
        "who": "Who",
        "what": "What",
        "note": "Note",
        "handover_note": "hand-over note",
        "confirmed": "confirmed on duty",
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
        "handover": "交接班",
        "who": "人员",
        "what": "事项",
        "note": "说明",
        "handover_note": "交班记录",
        "confirmed": "确认到岗",
    },
}


# The measures column: what people did during the shift, one entry each, in the report's
# language (a Chinese diary must not read "ack Li Na" or "maintenance ..."). Names, notes and
# reasons are the people's own words and stay as written.
MEASURES = {
    "en": {
        "ack": "{when} ack {actor}",
        "red_line": "{when} red line {actor}",
        "silence": "{when} silence {actor}: {reason}",
        "maintenance": "{when} maintenance {actor}: {reason}",
        "drill": "{when} drill: {answers}",
        "note": ": {note}",
        "list": ", ",
        "sep": "; ",
    },
    "zh": {
        "ack": "{when} {actor} 已确认",
        "red_line": "{when} 已超过红线（{limit}）",
        "silence": "{when} {actor} 设置静默：{reason}",
        "maintenance": "{when} {actor} 设置维护窗口：{reason}",
        "drill": "{when} 应急演练：{answers}",
        "note": "：{note}",
        "list": "，",
        "sep": "；",
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
    # time, who, what (hand-over note / confirmed on duty), note: each signed by its writer.
    handover: list[list[str]] = field(default_factory=list)

    def h(self, key: str) -> str:
        return HEADINGS.get(self.language, HEADINGS["en"])[key]

    def measure(self, key: str, **values: Any) -> str:
        return MEASURES.get(self.language, MEASURES["en"])[key].format(**values)

    def severity(self, severity: str) -> str:
        """严重 / 警告 in a Chinese diary, as on the pages (notify.templates.SEVERITY)."""
        return SEVERITY.get(self.language, SEVERITY["en"]).get(severity, severity)

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
            (h("handover"), [h("time"), h("who"), h("what"), h("note")], self.handover),
        ]

    def header(self) -> list[tuple[str, str]]:
        zone = zoneinfo.ZoneInfo(self.tz)
        start = dt.datetime.fromtimestamp(self.start, zone).strftime("%Y-%m-%d %H:%M")
        end = dt.datetime.fromtimestamp(self.end, zone).strftime("%Y-%m-%d %H:%M %Z")
        return [(self.h("shift"), f"{start} – {end}"), (self.h("on_duty"), ", ".join(self.people))]


# The duty log kinds the diary is made of.
REPORT_KINDS = ("alert.", "silence.add", "maintenance.add", "drill.end", "shift.")


async def build_report(
    storage: Storage,
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
    for entry in await storage.log.read(since=start, until=end, kinds=REPORT_KINDS, limit=None):
        ts, kind, actor, subject, data = (
            entry.timestamp,
            entry.kind,
            entry.actor,
            entry.subject,
            entry.data,
        )
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
                limit = data.get("red_line") or 0.0  # the crossed red line, in seconds
                text = report.measure(
                    "ack" if kind == "alert.acknowledged" else "red_line",
                    when=report.when(ts),
                    actor=actor,
                    limit=format_duration(limit, report.language),
                )
                a["acts"].append(text + (report.measure("note", note=note) if note else ""))
        elif kind in ("silence.add", "maintenance.add"):
            word = "silence" if kind == "silence.add" else "maintenance"
            text = report.measure(
                word, when=report.when(ts), actor=actor, reason=data.get("reason", "")
            )
            measures.append((ts, text))
        elif kind in ("shift.handover", "shift.confirm"):
            what = h("handover_note") if kind == "shift.handover" else h("confirmed")
            report.handover.append([report.when(ts), actor, what, data.get("note", "")])
        elif kind == "drill.end":
            answers = report.measure("list").join(
                f"{a['actor']} {format_duration(a['seconds'], report.language)}"
                for a in data.get("answers", [])
            )
            text = report.measure("drill", when=report.when(ts), answers=answers or h("none"))
            measures.append((ts, text))
    fired = {fp: a for fp, a in alerts.items() if a["first"] is not None}
    for a in fired.values():
        resolved = report.when(a["resolved"]) if a["resolved"] else h("still")
        report.problems.append(
            [
                report.when(a["first"]),
                a.get("summary", ""),
                report.severity(a.get("severity", "")),
                resolved,
                report.measure("sep").join(a["acts"]),
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
        detail = report.measure("sep").join(a.get("summary", "") for a in mine)
        report.equipment.append([name, kind, status, detail])
    for span in await storage.environment.ranges(start, end):
        name, labels, lo, hi = span.name, span.labels, span.min, span.max
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
