"""JSON views of the daemon's state, shared by the HTTP API and the on-call status page.

Plain functions from live objects (target status, samples, duty-log entries) to JSON-ready
dicts; an alert's view is the rule engine's (`RuleEngine.view`). Secrets never reach them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dutyd.core.latest import LatestSamples, TargetStatus
from dutyd.core.records import AlertState
from dutyd.storage import LogEntry, RoomEntry

# The order the page and the API list alerts in: what needs a human first.
_SEVERITY_ORDER = {"critical": 0, "major": 1, "warning": 2, "minor": 3, "info": 4}
_STATE_ORDER = {AlertState.FIRING: 0, AlertState.PENDING: 1, AlertState.RESOLVED: 2}

TEMPERATURE = "room_temperature_celsius"
HUMIDITY = "room_humidity_percent"


def sort_alerts(views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        views,
        key=lambda v: (
            _STATE_ORDER.get(AlertState(v["state"]), 3),
            _SEVERITY_ORDER.get(v["severity"], 5),
            -(v["duration"] or 0),
        ),
    )


def target_view(status: TargetStatus) -> dict[str, Any]:
    return {
        "name": status.name,
        "kind": status.kind,
        "up": status.up,
        "reason": status.reason,
        "message": status.message,
        "last_poll_at": status.last_poll_at,
        "last_success_at": status.last_success_at,
        "last_duration_seconds": status.last_duration,
        "consecutive_failures": status.consecutive_failures,
        "error_counts": dict(status.error_counts),
    }


def environment_view(store: LatestSamples) -> list[dict[str, Any]]:
    """Temperature and humidity now, one row per sensor (target and sensor label)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for sample in store.samples(only_up=True):
        if sample.name not in (TEMPERATURE, HUMIDITY):
            continue
        key = (sample.label("target"), sample.label("sensor"))
        row = rows.setdefault(
            key,
            {
                "target": key[0],
                "sensor": key[1],
                "site": sample.label("site"),
                "room": sample.label("room"),
                "temperature_celsius": None,
                "humidity_percent": None,
                "timestamp": sample.timestamp,
            },
        )
        field = "temperature_celsius" if sample.name == TEMPERATURE else "humidity_percent"
        row[field] = sample.value
    return [rows[k] for k in sorted(rows)]


# What each duty-log kind reads as on a Chinese status page (the English page shows the kind
# itself, which is also what `dutyd log --kind` filters on). Unknown kinds show as they are.
LOG_WORDS_ZH: dict[str, str] = {
    "alert.firing": "告警",
    "alert.pending": "待定",
    "alert.resolved": "已恢复",
    "alert.acknowledged": "已确认",
    "alert.unacknowledged": "确认已撤销",
    "alert.red_line": "已超过红线",
    "alert.flapping": "状态频繁变化",
    "alert.settled": "已稳定",
    "alert.explained": "由上级设备故障引起",
    "alert.resumed": "上级设备已恢复，告警仍在",
    "notify.sent": "已通知",
    "notify.retry": "通知失败，将重试",
    "notify.failover": "改用备用联系方式",
    "notify.dropped": "通知已放弃",
    "notify.no_contact": "无可用联系方式",
    "notify.no_recipient": "升级步骤无人可通知",
    "notify.no_policy": "无匹配的升级策略",
    "silence.add": "设置静默",
    "silence.remove": "取消静默",
    "maintenance.add": "设置维护窗口",
    "maintenance.remove": "结束维护窗口",
    "drill.start": "应急演练开始",
    "drill.ack": "演练已确认",
    "drill.end": "应急演练结束",
    "daemon.start": "dutyd 已启动",
    "daemon.stop": "dutyd 已停止",
    "config.reload": "配置已重新加载",
    "config.reload_rejected": "新配置无效，未加载",
    "entry.in": "进入机房",
    "entry.out": "离开机房",
    "door.open": "机房门打开",
    "door.shut": "机房门关闭",
    "target.down": "设备中断",
    "target.up": "设备恢复",
    "target.rebooted": "设备重启",
    "equipment.changed": "设备变更",
    "shift.confirm": "确认到岗",
    "shift.handover": "交班记录",
    "register.signed": "登记簿签字",
    "account.added": "新增可登录账户",
    "account.uid0": "新增uid为0的账户",
    "software.accounts": "服务器账户记录",
    "software.logins": "服务器登录记录",
    "port.down": "端口中断",
    "port.up": "端口恢复",
    "port.counters": "端口日错误/丢弃计数",
    "journal.errors": "服务器日志错误计数",
    "topology.change": "拓扑变化（设备所连交换机端口变化）",
}
# escalation.<page kind>: which page went out (see notify.escalation.PageKind).
ESCALATION_WORDS_ZH: dict[str, str] = {
    "firing": "第 {step} 级告警通知",
    "repeat": "重复提醒（第 {step} 次）",
    "red_line": "红线通知",
    "acknowledged": "确认通知",
    "resolved": "恢复通知",
    "ack_expired": "确认过期通知",
    "flapping": "状态频繁变化通知",
    "settled": "已稳定通知",
    "explained": "上级设备故障说明通知",
    "resumed": "恢复升级通知",
}


def _escalation(entry: LogEntry, language: str) -> str:
    """Who a step paged and for which alert: `step 2 to Wang Fang (disk_full on db1)`;
    entries written before the rule and target were logged name only the people."""
    data, zh = entry.data, language == "zh"
    people = ("，" if zh else ", ").join(str(r) for r in data.get("recipients") or [])
    step, rule, target = data.get("step") or 0, data.get("rule"), data.get("target")
    if zh:
        about = f"（{target}，{rule}）" if rule and target else (f"（{rule}）" if rule else "")
        return f"{people}{about}"
    head = f"step {step} to {people}" if step and entry.kind == "escalation.firing" else people
    about = f" ({rule} on {target})" if rule and target else (f" ({rule})" if rule else "")
    return f"{head}{about}"


def log_detail(entry: LogEntry, language: str = "en") -> str:
    """What a duty-log entry is about, for people: the alert's summary, the note or reason;
    for a delivery, who was reached through which channel (not only the message id); for an
    escalation step, whom it paged."""
    data, zh = entry.data, language == "zh"
    if entry.kind in ("entry.in", "entry.out") and data.get("people"):
        return _entry_detail(data, zh)
    detail = data.get("summary") or data.get("note") or data.get("reason") or data.get("error")
    if entry.kind.startswith("notify.") and data.get("recipient"):
        who, via = data["recipient"], data.get("channel", "?")
        reached = f"{who}（{via}）" if zh else f"to {who} via {via}"
        return f"{reached}{'：' if zh else ' '}{detail}" if detail else reached
    if entry.kind.startswith("escalation.") and data.get("recipients"):
        return _escalation(entry, language)
    return str(detail or "")


def _entry_detail(data: dict[str, Any], zh: bool) -> str:
    """`Zhang Wei, Li Na into room-a: disk swap (carrying 2 disks)`."""
    people = ("、" if zh else ", ").join(str(p) for p in data["people"])
    room, purpose, items = data.get("room", ""), data.get("purpose", ""), data.get("items", "")
    if zh:
        text = f"{people}，机房 {room}" + (f"，事由：{purpose}" if purpose else "")
        return text + (f"，携带：{items}" if items else "")
    text = f"{people}, room {room}" + (f": {purpose}" if purpose else "")
    return text + (f" (carrying {items})" if items else "")


def room_entry_view(e: RoomEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "timestamp": e.timestamp,
        "room": e.room,
        "person": e.person,
        "direction": e.direction,
        "with": list(e.companions),
        "purpose": e.purpose,
        "items": e.items,
        "approved_by": e.approved_by,
        "actor": e.actor,
    }


def log_text(entry: LogEntry, language: str = "en") -> str:
    """One line of the duty log for people: what happened, to what, by whom. In Chinese the
    kind reads as words too: `已通知 Chen Jie（phone_5）`, not `notify.sent: to ...`."""
    detail = log_detail(entry, language) or entry.subject
    if language != "zh":
        who = "" if entry.actor in ("", "dutyd") else f" [{entry.actor}]"
        return f"{entry.kind}{who}: {detail}" if detail else f"{entry.kind}{who}"
    who = "" if entry.actor in ("", "dutyd") else f"（{entry.actor}）"
    if entry.kind.startswith("escalation."):
        page = entry.kind.removeprefix("escalation.")
        word = ESCALATION_WORDS_ZH.get(page, entry.kind).format(step=entry.data.get("step", ""))
    else:
        word = LOG_WORDS_ZH.get(entry.kind, entry.kind)
    if entry.kind.startswith("notify.") and entry.data.get("recipient"):
        return f"{word} {detail}"  # 已通知 Chen Jie（phone_5）
    return f"{word}{who}：{detail}" if detail else f"{word}{who}"


def log_view(entries: Iterable[LogEntry], language: str = "en") -> list[dict[str, Any]]:
    return [
        {
            "id": e.id,
            "timestamp": e.timestamp,
            "kind": e.kind,
            "actor": e.actor,
            "subject": e.subject,
            "data": e.data,
            "text": log_text(e, language),
        }
        for e in entries
    ]
