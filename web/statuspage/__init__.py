"""The on-call status page: one self-contained page (no CDN) at `/status`.

`status_data` (served by web/api.py at `/api/v1/status`) answers "what is wrong right now,
and who has it": alerts by severity with duration and acknowledgement, red-line countdowns,
the room environment, who is in each machine room, targets down, who is on duty and the duty
log tail. The page's acknowledge and silence buttons and its entry form (who, with whom,
purpose, items carried: in or out) call the write API, which requires the token.
"""

from __future__ import annotations

import dataclasses
import re
from importlib import resources
from typing import Any

from aiohttp import web

from dutyd.storage import LogEntry
from dutyd.web import views
from dutyd.web.context import WebContext

LOG_TAIL = 20
LOG_WINDOW = 24 * 3600.0
_STATIC = {
    "status.html": "text/html",
    "status.js": "application/javascript",
    "status.css": "text/css",
    "ack.css": "text/css",
}


def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


# Why an alert is muted, as rules.mutes.MutePolicy.reason words it, read in Chinese; the
# names and reasons inside are people's own words and stay as written.
_MUTED_ZH = (
    (re.compile(r"maintenance: (.*)", re.S), "维护窗口：{0}"),
    (re.compile(r"parent (.*) is down", re.S), "上级设备 {0} 离线"),
    (re.compile(r"silenced by (.*?): (.*)", re.S), "{0} 设置静默：{1}"),
    (re.compile(r"flapping"), "状态频繁变化"),
)


def muted_in(reason: str, lang: str) -> str:
    if lang != "zh":
        return reason
    for pattern, words in _MUTED_ZH:
        m = pattern.fullmatch(reason)
        if m:
            return words.format(*m.groups())
    return reason


def in_language(alert: dict[str, Any], lang: str) -> dict[str, Any]:
    """An alert view with its summary, reference and mute reason in the page's language."""
    summaries = alert.get("summaries") or {}
    references = alert.get("references") or {}
    return {
        **alert,
        "summary": summaries.get(lang) or alert.get("summary", ""),
        "reference": references.get(lang) or alert.get("reference", ""),
        "suppressed": muted_in(alert.get("suppressed") or "", lang),
    }


async def status_data(ctx: WebContext, lang: str | None = None) -> dict[str, Any]:
    now = ctx.clock.time()
    language = lang or ctx.language()
    alerts = [in_language(a, language) for a in ctx.operations.list_alerts()]
    statuses = list(ctx.latest.status.values())
    down = [views.target_view(s) for s in statuses if not s.up and s.last_poll_at is not None]
    tail = await ctx.storage.log.read(since=now - LOG_WINDOW, limit=LOG_TAIL, newest_first=True)
    tail = [_entry_in_language(e, language) for e in tail]
    return {
        "generated_at": now,
        "language": language,
        "timezone": ctx.timezone(),
        "alerts": views.sort_alerts(alerts),
        "environment": views.environment_view(ctx.latest),
        "targets_total": len(statuses),
        "targets_up": sum(1 for s in statuses if s.up),
        "targets_down": down,
        "oncall": _oncall(ctx, now),
        "cluster": ctx.cluster(),
        "rooms": ctx.entries.rooms_view(),
        "shift": ctx.handover.view(),
        # Who hangs off whom (configured and learned from LLDP), to see an outage's extent.
        "topology": ctx.topology(),
        "log": views.log_view(tail, language),
    }


def _entry_in_language(entry: LogEntry, lang: str) -> LogEntry:
    """A duty-log entry whose alert summary reads in the page's language (entries written
    before summaries had languages keep the one they have)."""
    text = (entry.data.get("summaries") or {}).get(lang)
    if not text:
        return entry
    return dataclasses.replace(entry, data={**entry.data, "summary": text})


def _oncall(ctx: WebContext, now: float) -> dict[str, Any] | None:
    rota = ctx.notify.rota
    if not rota.config.pairs:  # no rota configured
        return None
    current, nxt = rota.now_and_next(now)
    return {
        "now": list(rota.on_duty(now)),
        "next": list(nxt.people),
        "shift_ends": current.end.isoformat(),
    }


def add_routes(app: web.Application) -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(body=_asset("status.html"), content_type="text/html", charset="utf-8")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound(text="no such file")
        return web.Response(body=_asset(name), content_type=_STATIC[name], charset="utf-8")

    async def root(request: web.Request) -> web.Response:
        raise web.HTTPFound("/status")

    app.router.add_get("/", root)
    app.router.add_get("/status", page)
    app.router.add_get("/status/{name}", asset)
