"""The machine room's registers, exported and signed off.

`dutyd report --register entry|log --from --to` writes a register for a period as Markdown,
CSV or XLSX (the writers of the duty diary, `duty/report.py`), with English or Chinese
headings (the registers' usual Chinese names) and times in the site's time zone:

- `entry`: the entry register (机房出入登记簿), from `storage.room_entries`;
- `equipment`: the equipment register (设备登记簿): what each target is at the period's end
  (`storage.equipment`, read from the devices by `duty/equipment.py`), and the changes within;
- `status`: the equipment running-status register (设备运行状况登记簿): per day and target, the
  availability, the outages (start, end, duration) and the reboots, from the machine-room
  log's `target.down`, `target.up` and `target.rebooted` (`duty/availability.py`);
- `software`: the software system usage register (软件系统使用登记簿): the logins to each
  server in the period, and the account review at its end (what breaks the rules: more than
  one uid 0, login accounts unused for 90 days, the password policy) with every account that
  can log in and its last login (`duty/software.py`); run over a quarter, the quarterly review;
  and per day and server the journal's entries of priority err and above with their most
  frequent sources (`duty/logerrors.py`); run over a week, the weekly log review;
- `network`: the network status register (网络状况登记簿): per day and watched switch port
  (the uplinks and ports that carry one), the up time, the outages (start, end, duration) and
  the error and discard counts, from the log's `port.down`, `port.up` and `port.counters`
  (`duty/network.py`);
- `log`: the machine-room log (机房日志), the duty log.

The person in charge signs a period of a register off (`dutyd register sign`, through the
API): a duty-log entry `register.signed` with their name, the time and the period. The
export names who signed the period; `unsigned` gives the monthly summary's gaps: the parts of
a month no signature of that register covers.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dutyd.collectors.ssh.commands import JOURNAL_LINES
from dutyd.core.configtypes import format_duration
from dutyd.duty import logerrors, network, software
from dutyd.storage import LogEntry, Storage

SIGNED = "register.signed"

# The six registers of the machine room.
REGISTERS = ("entry", "equipment", "status", "network", "software", "log")

NAMES = {
    "en": {
        "entry": "Machine-room entry register",
        "log": "Machine-room log",
        "equipment": "Equipment register",
        "software": "Software system usage register",
        "status": "Equipment running-status register",
        "network": "Network status register",
    },
    "zh": {
        "entry": "机房出入登记簿",
        "log": "机房日志",
        "equipment": "设备登记簿",
        "software": "软件系统使用登记簿",
        "status": "设备运行状况登记簿",
        "network": "网络状况登记簿",
    },
}

HEADINGS = {
    "en": {
        "period": "Period",
        "signed": "Signed off",
        "unsigned": "not signed off",
        "lines": "Lines",
        "none": "none",
        "time": "Time",
        "room": "Room",
        "person": "Person",
        "direction": "In/out",
        "in": "in",
        "out": "out",
        "with": "With",
        "purpose": "Purpose",
        "items": "Items carried",
        "approved_by": "Approved by",
        "registered_by": "Registered by",
        "kind": "Event",
        "actor": "By",
        "subject": "Subject",
        "detail": "Detail",
        "equipment": "Equipment",
        "type": "Kind",
        "vendor": "Vendor",
        "model": "Model",
        "serial": "Serial",
        "firmware": "Firmware",
        "other": "Other",
        "recorded": "Read on",
        "changes": "Changes in the period",
        "change": "Change",
        "day": "Day",
        "availability": "Availability",
        "outages": "Outages",
        "down_time": "Down time",
        "reboots": "Reboots",
        "ongoing": "ongoing",
        "server": "Server",
        "user": "User",
        "line": "Line",
        "from": "From",
        "review": "Account review",
        "rule": "Rule",
        "finding": "Finding",
        "accounts": "Accounts that can log in",
        "account": "Account",
        "shell": "Shell",
        "last_login": "Last login",
        "never": "never",
        "uid0": "more than one uid 0",
        "unused": f"unused for {software.UNUSED_DAYS} days",
        "pass_max_days": f"PASS_MAX_DAYS unset or above {software.MAX_PASS_DAYS}",
        "min_length": f"minimum password length unset or below {software.MIN_LENGTH}",
        "empty_password": "empty password (logs in without one)",
        "passwords_unread": "password states (/etc/shadow) not read",
        "password": "Password",
        "locked": "locked",
        "set": "set",
        "empty": "EMPTY",
        "port": "Port",
        "up_time": "Up time",
        "errors": "Errors",
        "discards": "Discards",
        "log_errors": "Errors in the servers' logs (journal, priority err and above)",
        "error_count": "Errors",
        "sources": "Most frequent sources",
        "note": "Note",
        "not_read": "not read",
        "partly_read": "read {start}–{end} only",
        "capped": f"at least: a reading stopped at {JOURNAL_LINES} entries",
    },
    "zh": {
        "period": "期间",
        "signed": "签字",
        "unsigned": "未签字",
        "lines": "记录",
        "none": "无",
        "time": "时间",
        "room": "机房",
        "person": "人员",
        "direction": "进/出",
        "in": "进入",
        "out": "离开",
        "with": "同行人员",
        "purpose": "事由",
        "items": "携带物品",
        "approved_by": "批准人",
        "registered_by": "登记人",
        "kind": "事件",
        "actor": "人员",
        "subject": "对象",
        "detail": "说明",
        "equipment": "设备",
        "type": "类型",
        "vendor": "厂商",
        "model": "型号",
        "serial": "序列号",
        "firmware": "固件版本",
        "other": "其他",
        "recorded": "读取时间",
        "changes": "期间变更",
        "change": "变更",
        "day": "日期",
        "availability": "可用率",
        "outages": "中断",
        "down_time": "中断时长",
        "reboots": "重启次数",
        "ongoing": "仍中断",
        "server": "服务器",
        "user": "用户",
        "line": "终端",
        "from": "来源",
        "review": "账户检查",
        "rule": "规则",
        "finding": "问题",
        "accounts": "可登录账户",
        "account": "账户",
        "shell": "登录Shell",
        "last_login": "最近登录",
        "never": "从未",
        "uid0": "多个uid为0的账户",
        "unused": f"{software.UNUSED_DAYS}天未使用",
        "pass_max_days": f"密码有效期(PASS_MAX_DAYS)未设或超过{software.MAX_PASS_DAYS}天",
        "min_length": f"密码最短长度未设或小于{software.MIN_LENGTH}",
        "empty_password": "空密码（无需密码即可登录）",
        "passwords_unread": "未能读取密码状态（/etc/shadow）",
        "password": "密码",
        "locked": "已锁定",
        "set": "已设置",
        "empty": "空密码",
        "port": "端口",
        "up_time": "在线率",
        "errors": "错误包数",
        "discards": "丢弃包数",
        "log_errors": "服务器日志错误统计（journal，err 及以上级别）",
        "error_count": "错误数",
        "sources": "主要来源",
        "note": "备注",
        "not_read": "未读取",
        "partly_read": "仅读取 {start}–{end}",
        "capped": f"至少：单次读取达 {JOURNAL_LINES} 条上限",
    },
}


@dataclass
class RegisterReport:
    """One register over one period, shaped as the duty diary's `Report` for its writers."""

    register: str
    language: str
    tz: str
    start: float
    end: float
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)
    more: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)

    def h(self, key: str) -> str:
        if key == "title":
            return NAMES.get(self.language, NAMES["en"])[self.register]
        return HEADINGS.get(self.language, HEADINGS["en"])[key]

    def when(self, ts: float, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
        return dt.datetime.fromtimestamp(ts, zoneinfo.ZoneInfo(self.tz)).strftime(fmt)

    def header(self) -> list[tuple[str, str]]:
        start = self.when(self.start, "%Y-%m-%d %H:%M")
        period = f"{start} – {self.when(self.end, '%Y-%m-%d %H:%M %Z')}"
        signed = "; ".join(self.signatures) or self.h("unsigned")
        return [(self.h("period"), period), (self.h("signed"), signed)]

    def sections(self) -> list[tuple[str, list[str], list[list[Any]]]]:
        return [(self.h("lines"), self.columns, self.rows), *self.more]


async def signatures(storage: Storage, register: str) -> list[LogEntry]:
    """Every sign-off of `register`, in writing order."""
    entries = await storage.log.read(kinds=[SIGNED], subject=f"register:{register}", limit=None)
    return [e for e in entries if e.data.get("register") == register]


async def build_register(
    storage: Storage,
    register: str,
    start: float,
    end: float,
    language: str = "en",
    tz: str = "UTC",
    targets: Sequence[tuple[str, str]] = (),
) -> RegisterReport:
    """The register over [start, end). `targets` (name, kind): the watched targets, listed by
    the status register even on days without an outage."""
    if register not in REGISTERS:
        raise ValueError(f"register {register!r} is not kept; kept: {', '.join(REGISTERS)}")
    if not start < end:
        raise ValueError("the period must end after it starts")
    report = RegisterReport(register, language, tz, start, end)
    h = report.h
    if register == "entry":
        report.columns = [
            h(k)
            for k in (
                "time", "room", "person", "direction", "with", "purpose", "items",
                "approved_by", "registered_by",
            )
        ]  # fmt: skip
        for e in await storage.room_entries.read(since=start, until=end):
            report.rows.append(
                [
                    report.when(e.timestamp),
                    e.room,
                    e.person,
                    h(e.direction),
                    ", ".join(e.companions),
                    e.purpose,
                    e.items,
                    e.approved_by,
                    e.actor,
                ]
            )
    elif register == "equipment":
        await _equipment(storage, report)
    elif register == "status":
        await _status(storage, report, targets)
    elif register == "software":
        await _software(storage, report)
    elif register == "network":
        await _network(storage, report)
    else:
        report.columns = [h("time"), h("kind"), h("actor"), h("subject"), h("detail")]
        for e in await storage.log.read(since=start, until=end, limit=None):
            if e.kind in (software.ACCOUNTS, software.LOGINS, network.COUNTERS, logerrors.KIND):
                continue  # readings of the software and network registers, exported there
            report.rows.append([report.when(e.timestamp), e.kind, e.actor, e.subject, _detail(e)])
    for s in await signatures(storage, register):
        if s.data.get("from", 0) <= start and end <= s.data.get("to", 0):
            report.signatures.append(f"{s.actor} {report.when(s.timestamp, '%Y-%m-%d %H:%M')}")
    return report


# The facts with a column of their own; the others go to "Other" as key=value.
_FACT_COLUMNS = ("vendor", "model", "serial", "firmware")


async def _equipment(storage: Storage, report: RegisterReport) -> None:
    h = report.h
    report.columns = [h("equipment"), h("type"), *map(h, _FACT_COLUMNS), h("other"), h("recorded")]
    for f in await storage.equipment.latest(until=report.end):
        other = "; ".join(f"{k}={v}" for k, v in sorted(f.facts.items()) if k not in _FACT_COLUMNS)
        report.rows.append(
            [
                f.target,
                f.kind,
                *(f.facts.get(k, "") for k in _FACT_COLUMNS),
                other,
                report.when(f.timestamp),
            ]
        )
    changed = await storage.log.read(
        since=report.start, until=report.end, kinds=["equipment.changed"], limit=None
    )
    rows: list[list[Any]] = [
        [report.when(e.timestamp), e.subject, _changes(e.data.get("changes") or {})]
        for e in changed
    ]
    report.more.append((h("changes"), [h("time"), h("equipment"), h("change")], rows))


async def _software(storage: Storage, report: RegisterReport) -> None:
    h = report.h
    report.columns = [h("time"), h("server"), h("user"), h("line"), h("from")]
    # Logins are recorded on the daily reading after them: read on past the period's end.
    logins = await storage.log.read(kinds=[software.LOGINS], limit=None)
    for e in logins:
        for login in e.data.get("logins") or []:
            if report.start <= float(login["start"]) < report.end:
                report.rows.append(
                    [
                        float(login["start"]),
                        e.subject,
                        login["user"],
                        login["line"],
                        login["host"],
                    ]
                )
    report.rows.sort(key=lambda r: (r[0], r[1]))
    for row in report.rows:
        row[0] = report.when(row[0])
    snapshots = await storage.log.read(until=report.end, kinds=[software.ACCOUNTS], limit=None)
    state, findings, last = software.review(snapshots, logins, report.end)
    report.more.append(
        (
            h("review"),
            [h("server"), h("rule"), h("finding")],
            [[f.target, h(f.rule), f.detail] for f in findings],
        )
    )
    rows: list[list[Any]] = []
    for target in sorted(state):
        for a in state[target].get("accounts") or []:
            if a.get("login"):
                seen = last.get((target, str(a["name"])))
                when = h("never") if seen is None else report.when(seen)
                password = h(a["password"]) if a.get("password") else h("not_read")
                rows.append([target, a["name"], a["uid"], a["shell"], password, when])
    columns = [h("server"), h("account"), "uid", h("shell"), h("password"), h("last_login")]
    report.more.append((h("accounts"), columns, rows))
    report.more.append((h("log_errors"), *await _log_errors(storage, report)))


async def _log_errors(
    storage: Storage, report: RegisterReport
) -> tuple[list[str], list[list[Any]]]:
    """Per day and server, the journal's errors (the weekly log review)."""
    h = report.h
    columns = [h("day"), h("server"), h("error_count"), h("sources"), h("note")]
    # A window is recorded when it has been read, after its end: read from the period's start.
    entries = await storage.log.read(since=report.start, kinds=[logerrors.KIND], limit=None)
    days = _days(report)
    rows: list[list[Any]] = []
    for (date, target), day in sorted(logerrors.per_day(entries, days).items()):
        if not day.read:
            note = h("not_read") + (f": {day.problem}" if day.problem else "")
            rows.append([date, target, "", "", note])
            continue
        notes = []
        lo, hi = next((lo, hi) for d, lo, hi in days if d == date)
        if day.read < hi - lo:
            assert day.first is not None and day.last is not None
            start, end = report.when(day.first, "%H:%M"), report.when(day.last, "%H:%M")
            if day.last >= hi:
                end = "24:00"
            notes.append(h("partly_read").format(start=start, end=end))
        if day.capped:
            notes.append(h("capped"))
        top = ", ".join(f"{source} ×{n}" for source, n in (day.top or Counter()).most_common(3))
        rows.append([date, target, day.count, top, "; ".join(notes)])
    return columns, rows


def _days(report: RegisterReport) -> list[tuple[str, float, float]]:
    """The period's days in the site's zone: (date, start, end), cut to the period."""
    zone = zoneinfo.ZoneInfo(report.tz)
    day = dt.datetime.fromtimestamp(report.start, zone).replace(hour=0, minute=0, second=0)
    days = []
    while day.timestamp() < report.end:
        nxt = (day + dt.timedelta(days=1, hours=2)).replace(hour=0)  # DST-proof next midnight
        lo, hi = max(day.timestamp(), report.start), min(nxt.timestamp(), report.end)
        days.append((day.strftime("%Y-%m-%d"), lo, hi))
        day = nxt
    return days


def _spans(
    report: RegisterReport, spans: list[list[float | None]], lo: float, hi: float
) -> tuple[float, list[str]]:
    """Down time within [lo, hi) and each outage as people read it."""
    h = report.h
    down = 0.0
    shown = []
    for s, e in spans:
        assert s is not None  # an outage always has its start
        end = hi if e is None else e
        if s < hi and end > lo:
            down += min(end, hi) - max(s, lo)
            ongoing = e is None and hi >= report.end
            until = h("ongoing") if ongoing else report.when(end, "%m-%d %H:%M:%S")
            took = format_duration(end - s, report.language)
            shown.append(f"{report.when(s, '%m-%d %H:%M:%S')} – {until} ({took})")
    return down, shown


async def _network(storage: Storage, report: RegisterReport) -> None:
    h = report.h
    report.columns = [
        h("day"), h("equipment"), h("port"), h("up_time"), h("down_time"), h("outages"),
        h("errors"), h("discards"),
    ]  # fmt: skip
    entries = await storage.log.read(until=report.end, kinds=[network.DOWN, network.UP], limit=None)
    outages: dict[tuple[str, str], list[list[float | None]]] = {}
    for e in entries:
        spans = outages.setdefault((e.subject, str(e.data.get("port", ""))), [])
        if e.kind == network.DOWN and not (spans and spans[-1][1] is None):
            spans.append([e.timestamp, None])
        elif e.kind == network.UP and spans and spans[-1][1] is None:
            spans[-1][1] = e.timestamp
    # Counts are written at the next day's first poll: read on past the period's end.
    counts: dict[tuple[str, str, str], dict[str, float]] = {}
    for e in await storage.log.read(since=report.start, kinds=[network.COUNTERS], limit=None):
        for port, per in (e.data.get("ports") or {}).items():
            counts[(str(e.data.get("day")), e.subject, port)] = per
    ports = sorted(outages.keys() | {(t, p) for _, t, p in counts})
    for day, lo, hi in _days(report):
        for target, port in ports:
            down, shown = _spans(report, outages.get((target, port), []), lo, hi)
            share = 100.0 * (1 - down / (hi - lo)) if hi > lo else 100.0
            per = counts.get((day, target, port))
            report.rows.append(
                [
                    day,
                    target,
                    port,
                    f"{share:.2f} %",
                    format_duration(down, report.language) if down else "0",
                    "; ".join(shown),
                    "" if per is None else int(per.get("errors", 0)),
                    "" if per is None else int(per.get("discards", 0)),
                ]
            )


TRANSITIONS = ("target.down", "target.up", "target.rebooted")


async def _status(
    storage: Storage, report: RegisterReport, targets: Sequence[tuple[str, str]]
) -> None:
    h = report.h
    report.columns = [
        h("day"), h("equipment"), h("type"), h("availability"), h("down_time"), h("outages"),
        h("reboots"),
    ]  # fmt: skip
    entries = await storage.log.read(until=report.end, kinds=list(TRANSITIONS), limit=None)
    kinds = dict(targets)
    # Each target's outages as (start, end or None while ongoing) and reboot times.
    outages: dict[str, list[list[float | None]]] = {}
    reboots: dict[str, list[float]] = {}
    for e in entries:
        kinds.setdefault(e.subject, str(e.data.get("kind", "")))
        spans = outages.setdefault(e.subject, [])
        if e.kind == "target.down" and not (spans and spans[-1][1] is None):
            spans.append([e.timestamp, None])
        elif e.kind == "target.up" and spans and spans[-1][1] is None:
            spans[-1][1] = e.timestamp
        elif e.kind == "target.rebooted":
            reboots.setdefault(e.subject, []).append(e.timestamp)
    zone = zoneinfo.ZoneInfo(report.tz)
    day = dt.datetime.fromtimestamp(report.start, zone).replace(hour=0, minute=0, second=0)
    while day.timestamp() < report.end:
        nxt = (day + dt.timedelta(days=1, hours=2)).replace(hour=0)  # DST-proof next midnight
        lo, hi = max(day.timestamp(), report.start), min(nxt.timestamp(), report.end)
        for name in sorted(kinds):
            down, shown = _spans(report, outages.get(name, []), lo, hi)
            restarts = sum(1 for t in reboots.get(name, []) if lo <= t < hi)
            share = 100.0 * (1 - down / (hi - lo)) if hi > lo else 100.0
            report.rows.append(
                [
                    day.strftime("%Y-%m-%d"),
                    name,
                    kinds[name],
                    f"{share:.2f} %",
                    format_duration(down, report.language) if down else "0",
                    "; ".join(shown),
                    restarts,
                ]
            )
        day = nxt


def _changes(changes: dict[str, list[str]]) -> str:
    return "; ".join(f"{k}: {old or '-'} → {new or '-'}" for k, (old, new) in changes.items())


def _detail(e: LogEntry) -> str:
    data = e.data
    text = data.get("summary") or data.get("note") or data.get("reason") or data.get("error")
    if not text and e.kind in ("entry.in", "entry.out"):
        text = ", ".join(data.get("people", [])) + (
            f": {data['purpose']}" if data.get("purpose") else ""
        )
    return str(text or "")


def month_bounds(month: str, tz: str) -> tuple[float, float]:
    """[start, end) of a month (`2026-03`) in the site's time zone."""
    try:
        first = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=zoneinfo.ZoneInfo(tz))
    except ValueError:
        raise ValueError(f"{month!r} is not a month (2026-03)") from None
    nxt = (first + dt.timedelta(days=32)).replace(day=1)
    return first.timestamp(), nxt.timestamp()


async def unsigned(
    storage: Storage, register: str, start: float, end: float
) -> list[tuple[float, float]]:
    """The parts of [start, end) no sign-off of `register` covers, in order."""
    covered = sorted(
        (max(start, float(s.data["from"])), min(end, float(s.data["to"])))
        for s in await signatures(storage, register)
        if float(s.data["from"]) < end and float(s.data["to"]) > start
    )
    gaps: list[tuple[float, float]] = []
    at = start
    for lo, hi in covered:
        if lo > at:
            gaps.append((at, lo))
        at = max(at, hi)
    if at < end:
        gaps.append((at, end))
    return gaps


async def sign(
    storage: Storage, actor: str, register: str, start: float, end: float, note: str, now: float
) -> int:
    """The person in charge signs [start, end) of `register` off: a duty-log entry with their
    name and the time. A period not yet over cannot be signed."""
    if register not in REGISTERS:
        raise ValueError(f"register {register!r} is not kept; kept: {', '.join(REGISTERS)}")
    if not start < end:
        raise ValueError("the signed period must end after it starts")
    if end > now:
        raise ValueError("the period is not over yet: sign it off once it has ended")
    data = {"register": register, "from": start, "to": end, "note": note}
    return await storage.log.append(now, SIGNED, actor, f"register:{register}", data)
