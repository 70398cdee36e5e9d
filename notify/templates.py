"""Message texts in English and Simplified Chinese; times in the site's time zone.

A message covers one group of pages (alerts of one site that started together) for one
recipient, in the recipient's language: the frame from `TEXT`, the alert summaries from the
event's own per-language texts (`AlertEvent.summary_in`, its duration as of sending).
Texts are plain UTF-8 (every apprise target shows it).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Sequence

from dutyd.core.configtypes import format_duration
from dutyd.notify.escalation import Page, PageKind

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "firing": "ALERT",
        "repeat": "STILL UNACKNOWLEDGED",
        "red_line": "RED LINE CROSSED",
        "acknowledged": "ACKNOWLEDGED",
        "resolved": "RESOLVED",
        "ack_expired": "ACKNOWLEDGEMENT EXPIRED",
        "flapping": "FLAPPING, NOTIFICATIONS HELD",
        "settled": "SETTLED, NOTIFICATIONS RESUME",
        "explained": "EXPLAINED BY PARENT {parent} (DOWN), ESCALATION PAUSED",
        "resumed": "PARENT {parent} IS BACK, STILL FAILING, ESCALATION RESUMES",
        "drill": "[DRILL - TEST ONLY]",
        "alerts": "{n} alerts",
        "site": "site",
        "since": "since",
        "for": "for",
        "step": "escalation step {n}",
        "by": "by",
        "ack": "Acknowledge",
        "ref": "ref",
        "outage": "outage {d}, red line {r}",
    },
    "zh": {
        "firing": "告警",
        "repeat": "仍未确认",
        "red_line": "已超过红线",
        "acknowledged": "已确认",
        "resolved": "已恢复",
        "ack_expired": "确认已过期",
        "flapping": "状态频繁变化，通知暂停",
        "settled": "已稳定，恢复通知",
        "explained": "由上级设备 {parent} 故障引起，暂停升级",
        "resumed": "上级设备 {parent} 已恢复，本告警仍未恢复，继续升级",
        "drill": "【演练 - 仅为测试】",
        "alerts": "{n} 条告警",
        "site": "机房",
        "since": "开始于",
        "for": "持续",
        "step": "第 {n} 级升级",
        "by": "确认人",
        "ack": "点击确认",
        "ref": "编号",
        "outage": "中断 {d}，红线 {r}",
    },
}

SEVERITY = {
    "en": {"critical": "critical", "warning": "warning", "info": "info"},
    "zh": {"critical": "严重", "warning": "警告", "info": "提示"},
}


def local_time(ts: float, tz: str) -> str:
    t = dt.datetime.fromtimestamp(ts, zoneinfo.ZoneInfo(tz))
    return t.strftime("%Y-%m-%d %H:%M:%S %Z")


def render(
    pages: Sequence[Page],
    language: str,
    tz: str,
    now: float,
    message_id: str,
    ack_links: dict[str, str] | None = None,
) -> tuple[str, str]:
    """(title, body) for pages of one kind, one site, one recipient."""
    text = TEXT.get(language, TEXT["en"])
    first = pages[0]
    kind = str(first.kind)
    drill = any(dict(p.event.labels).get("drill") == "true" for p in pages)
    prefix = (text["drill"] + " ") if drill else ""
    site = first.site
    # A dependency notice names the parent (the event's note).
    head = text[kind].format(parent=first.event.note) if "{parent}" in text[kind] else text[kind]
    if len(pages) == 1:
        title = f"{prefix}{head}: {first.event.summary_in(language, now)}"
    else:
        title = f"{prefix}{head}: {text['alerts'].format(n=len(pages))}"
        if site:
            title += f" ({text['site']} {site})"
    lines = []
    for p in pages:
        ev = p.event
        sev = SEVERITY.get(language, SEVERITY["en"]).get(ev.severity, ev.severity)
        labels = dict(ev.labels)
        where = " ".join(f"{k}={labels[k]}" for k in ("site", "room", "target") if k in labels)
        line = f"[{sev}] {ev.summary_in(language, now)} ({where})"
        since = ev.active_since or ev.timestamp
        line += f"\n  {text['since']} {local_time(since, tz)}, {text['for']} "
        line += format_duration(max(0.0, now - since), language)
        if p.kind is PageKind.FIRING and p.step > 1:
            line += f", {text['step'].format(n=p.step)}"
        if p.kind is PageKind.RED_LINE and ev.red_line:
            line += ", " + text["outage"].format(
                d=format_duration(max(0.0, now - since), language),
                r=format_duration(ev.red_line, language),
            )
        if p.kind is PageKind.ACKNOWLEDGED and ev.actor:
            line += f", {text['by']} {ev.actor}" + (f": {ev.note}" if ev.note else "")
        if p.kind is PageKind.RESOLVED:
            line += f" -> {local_time(ev.timestamp, tz)}"
        link = (ack_links or {}).get(ev.fingerprint)
        if link:
            line += f"\n  {text['ack']}: {link}"
        lines.append(line)
    lines.append(f"{text['ref']}: {message_id}")
    return title, "\n".join(lines)
