"""The daemon's JSON API (aiohttp routes on the HTTP server's app): duty operations.

Tokens travel in `X-Dutyd-Token: <token>` (or `Authorization: Bearer <token>` while basic auth
is off: with it, `Authorization` carries the login). Writes need the API token (`api.token_env`
/ `api.token_file`); without a configured one they answer 403. Reads need the API token, the
read-only token or a basic-auth login (401 without); local processes read without one only
with `api.open_loopback_reads`. Bad input is a 4xx with the reason in JSON
(`{"error": "..."}`), never a 500.

    POST /api/v1/ack            {"alert": FP | FP prefix | rule, "actor", "note", "expires_in"}
    POST /api/v1/silences       {"matchers": {...}, "duration": "2h" | "until": ts, "actor",
                                 "reason"}
    POST /api/v1/maintenance    {"targets": [...], "matchers": {...}, "start", "end" | "duration",
                                 "actor", "reason"}
    POST /api/v1/drills         {"actor", "wait": "10m", "speed": 1}
    GET  /api/v1/drills/{id}
    GET  /api/v1/oncall         who is on duty now and next
    GET  /api/v1/alerts[?state=&severity=&target=&rule=]   alerts with their overlays
    GET  /api/v1/alerts/{fp}    one alert and its duty-log history
    GET  /api/v1/targets[?up=0] targets with their last poll result
    GET  /api/v1/silences, /api/v1/maintenance, /api/v1/log[?since=&until=&kind=&subject=]
    GET  /api/v1/openapi.json   the OpenAPI description (web/openapi.py; no token needed)
    GET  /status, /api/v1/status  the on-call status page and its data (web/statuspage/)
    GET  /api/v1/cluster          this node's place in the cluster (active, members, shards)
    POST /api/v1/entries        {"room", "person", "direction": "in"|"out", "with": [...],
                                 "purpose", "items", "approved_by", "actor"}: the entry register
    GET  /api/v1/entries[?room=&since=&until=&limit=]   its lines
    GET  /api/v1/rooms          each room's door and who is in it
    POST /api/v1/registers/sign {"register", "from", "to", "actor", "note"}: sign a period off
    GET  /api/v1/shift          the current shift's check-in: its people, who confirmed
    POST /api/v1/shift/confirm  {"actor", "note"}: the actor (of the current shift) is on duty
    POST /api/v1/shift/handover {"actor", "note"}: the outgoing person's hand-over note
    POST /api/v1/doors/{room}   {"open": true|false}: a room's door webhook, with the door's own
                                token in X-Dutyd-Token (rooms[].door), not the API token
    GET  /ack/{token}           the signed link of a notification: a confirmation page
    POST /ack/{token}           acknowledges (a GET never changes state: mail scanners follow
                                links, and must not acknowledge alerts on the engineer's behalf)
"""

from __future__ import annotations

import functools
import hmac
import html
import ipaddress
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from dutyd.core.configtypes import format_duration, parse_duration
from dutyd.core.redact import redact_address
from dutyd.duty import registers
from dutyd.notify.acklink import InvalidToken
from dutyd.notify.templates import local_time
from dutyd.storage import StorageUnavailable
from dutyd.web import openapi, statuspage, views
from dutyd.web.context import WebContext
from dutyd.web.server import authenticated_user

log = logging.getLogger("dutyd.api")

CONTEXT = web.AppKey("context", WebContext)
# The API token's own header: with basic auth on, `Authorization` carries the password.
TOKEN_HEADER = "X-Dutyd-Token"  # noqa: S105 - a header name, not a secret
DEFAULT_DRILL_WAIT = 600.0


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _errors(handler: Handler) -> Handler:
    """Turn refusals into 4xx with a reason; anything unexpected is logged and a 503."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return web.json_response({"error": exc.message}, status=exc.status)
        except LookupError as exc:  # rules.engine.UnknownAlert and friends
            return web.json_response({"error": str(exc).strip("'\"")}, status=404)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except web.HTTPException:
            raise
        except StorageUnavailable as exc:
            return web.json_response({"error": str(exc)}, status=503)
        except Exception:
            log.exception("API request failed")
            return web.json_response({"error": "internal error, see the dutyd log"}, status=503)

    return wrapped


def _ctx(request: web.Request) -> WebContext:
    return request.app[CONTEXT]


def _presented_token(request: web.Request) -> str:
    """The token a client sent: `X-Dutyd-Token`, or a bearer token when basic auth is off
    (with basic auth, `Authorization` carries the password, so the token needs its own
    header)."""
    given = request.headers.get(TOKEN_HEADER, "")
    if given:
        return given
    scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
    return bearer if scheme.lower() == "bearer" else ""


def _matches(given: str, token: str | None) -> bool:
    if not token or not given:
        return False
    return hmac.compare_digest(given.encode(), token.encode())


def _authorize(request: web.Request) -> None:
    """Writes need the API token."""
    token = _ctx(request).api_token()
    if not token:
        raise ApiError(403, "the write API is off: set api.token_env or api.token_file")
    if not _matches(_presented_token(request), token):
        raise ApiError(401, f"a valid '{TOKEN_HEADER}: <token>' header is required")


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the body must be a JSON object") from None
    except RecursionError:
        raise ApiError(400, "the body is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return data


def _text(data: dict[str, Any], key: str, required: bool = True, limit: int = 500) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise ApiError(400, f"{key!r} must be a string")
    if required and not value.strip():
        raise ApiError(400, f"{key!r} is required")
    if len(value) > limit:
        raise ApiError(400, f"{key!r} is longer than {limit} characters")
    return value.strip()


def authorize_read(request: web.Request, ctx: WebContext) -> None:
    """Reads (alerts, the duty log, who is on duty) need a credential: a basic-auth login,
    the API token or the read-only token. Local processes read without one only where
    `api.open_loopback_reads` says so: every local user and every client of a reverse proxy
    on this host comes from loopback."""
    if ctx.server.authenticates:
        return
    # A DNS-rebinding page comes from loopback too, with its own name as Host. The server
    # refuses that Host with 421; checked here again so that the open reads never depend on
    # the middleware's order. (Without a Host it is no browser: the middleware decides.)
    host = request.headers.get("Host")
    if (
        ctx.open_loopback_reads()
        and _is_loopback(request.remote)
        and (host is None or ctx.server.host_allowed(host))
    ):
        return
    given = _presented_token(request)
    if _matches(given, ctx.api_token()) or _matches(given, ctx.read_token()):
        return
    if not ctx.api_token() and not ctx.read_token():
        raise ApiError(
            403,
            "reads need a credential: set api.read_token_env (or api.token_env), basic auth "
            "in http.web_config_file, or api.open_loopback_reads for local reads",
        )
    raise ApiError(401, f"a valid '{TOKEN_HEADER}: <token>' header is required to read")


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def _actor(data: dict[str, Any]) -> str:
    """Who does it: the basic-auth login when there is one (it cannot be claimed in the
    body), else the body's `actor`."""
    given = _text(data, "actor", required=False, limit=100)
    actor = authenticated_user() or given
    if not actor:
        raise ApiError(400, "'actor' (who does this) is required")
    return actor


def _seconds(data: dict[str, Any], key: str) -> float | None:
    if key not in data or data[key] is None:
        return None
    try:
        seconds = parse_duration(data[key])
    except ValueError as exc:
        raise ApiError(400, f"{key!r}: {exc}") from None
    # JSON readers accept NaN and Infinity: a NaN end never compares and fails in storage.
    if not math.isfinite(seconds) or seconds < 0:
        raise ApiError(400, f"{key!r} must be a finite, non-negative duration such as 30m")
    return seconds


def _timestamp(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f"{key!r} must be Unix seconds")
    return float(value)


def resolve_alert(ctx: WebContext, ref: str) -> str:
    """A fingerprint from a fingerprint, a unique prefix of one, or a rule with one alert."""
    views = [v for v in ctx.operations.list_alerts() if v["state"] in ("pending", "firing")]
    if any(v["fingerprint"] == ref for v in views):
        return ref
    found = [v for v in views if len(ref) >= 4 and v["fingerprint"].startswith(ref)]
    found = found or [v for v in views if v["rule"] == ref]
    if not found:
        raise ApiError(404, f"no pending or firing alert matches {ref!r}")
    if len(found) > 1:
        names = ", ".join(f"{v['fingerprint'][:12]} ({v['rule']})" for v in found[:10])
        raise ApiError(409, f"{ref!r} matches {len(found)} alerts; use a fingerprint: {names}")
    return str(found[0]["fingerprint"])


@_errors
async def post_ack(request: web.Request) -> web.Response:
    _authorize(request)
    data = await _body(request)
    ctx = _ctx(request)
    ref = _text(data, "alert", limit=200)
    actor = _actor(data)
    note = _text(data, "note", required=False)
    expires_in = _seconds(data, "expires_in")
    if expires_in is not None and expires_in <= 0:
        # A zero expiry used to fall through as "no expiry": the ack never lapsed.
        raise ApiError(
            400,
            "'expires_in' must be longer than 0 s; leave it out for an acknowledgement that "
            "does not expire",
        )
    drill = _ctx(request).drills.find(ref)
    if drill is not None:
        answer = await _ctx(request).drills.acknowledge(drill, actor, note)
        return web.json_response({"drill": drill.id, **answer})
    fp = resolve_alert(ctx, ref)
    expires = ctx.clock.time() + expires_in if expires_in is not None else None
    event = await ctx.operations.acknowledge(fp, actor, note, expires)
    return web.json_response({"fingerprint": fp, "rule": event.rule, "acknowledged_by": actor})


@_errors
async def post_silence(request: web.Request) -> web.Response:
    _authorize(request)
    data = await _body(request)
    matchers = data.get("matchers")
    if not isinstance(matchers, dict) or not matchers:
        raise ApiError(400, "'matchers' must be a non-empty object of label matchers")
    until = _timestamp(data, "until")
    duration = _seconds(data, "duration")
    if (until is None) == (duration is None):
        raise ApiError(400, "give either 'duration' or 'until'")
    end = until if until is not None else _ctx(request).clock.time() + (duration or 0)
    sid = await _ctx(request).operations.silence(matchers, end, _actor(data), _text(data, "reason"))
    return web.json_response({"silence": sid, "until": end}, status=201)


@_errors
async def post_maintenance(request: web.Request) -> web.Response:
    _authorize(request)
    data = await _body(request)
    targets = data.get("targets") or []
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ApiError(400, "'targets' must be a list of target names")
    matchers = data.get("matchers") or {}
    if not isinstance(matchers, dict):
        raise ApiError(400, "'matchers' must be an object of label matchers")
    start = _timestamp(data, "start") or _ctx(request).clock.time()
    end = _timestamp(data, "end")
    duration = _seconds(data, "duration")
    if (end is None) == (duration is None):
        raise ApiError(400, "give either 'duration' or 'end'")
    end = end if end is not None else start + (duration or 0)
    wid = await _ctx(request).operations.add_maintenance(
        start, end, _actor(data), _text(data, "reason"), targets, matchers
    )
    return web.json_response({"maintenance": wid, "start": start, "end": end}, status=201)


@_errors
async def post_drill(request: web.Request) -> web.Response:
    _authorize(request)
    data = await _body(request)
    wait = _seconds(data, "wait")
    speed = data.get("speed", 1)
    if isinstance(speed, bool) or not isinstance(speed, int | float):
        raise ApiError(400, "'speed' must be a number")
    severity = _text(data, "severity", required=False, limit=20) or "critical"
    run = await _ctx(request).drills.start(
        _actor(data), DEFAULT_DRILL_WAIT if wait is None else wait, float(speed), severity
    )
    return web.json_response(run.status(), status=201)


@_errors
async def get_drill(request: web.Request) -> web.Response:
    authorize_read(request, _ctx(request))
    run = _ctx(request).drills.runs.get(request.match_info["id"])
    if run is None:
        raise ApiError(404, "no such drill (drills are kept until dutyd restarts)")
    return web.json_response(run.status())


@_errors
async def get_oncall(request: web.Request) -> web.Response:
    authorize_read(request, _ctx(request))
    ctx = _ctx(request)
    return web.json_response(oncall_view(ctx.notify.rota, ctx.clock.time()))


def oncall_view(rota: Any, now: float) -> dict[str, Any]:
    current, nxt = rota.now_and_next(now)

    def shift(s: Any) -> dict[str, Any]:
        return {
            "start": s.start.isoformat(),
            "end": s.end.isoformat(),
            "people": list(s.people),
            "scheduled": list(s.scheduled),
            "overrides": list(s.notes),
        }

    return {
        "now": shift(current),
        "on_duty": list(rota.on_duty(now)),
        "next": shift(nxt),
        "roles": {k: list(v) for k, v in rota.config.roles.items()},
    }


_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>dutyd</title>
<link rel="stylesheet" href="/status/ack.css"></head>
<body class="ack">{body}</body></html>"""


def _page(body: str, status: int = 200, lang: str = "en") -> web.Response:
    text = _PAGE.format(body=body).replace("<html>", f'<html lang="{_HTML_LANG[lang]}">', 1)
    return web.Response(text=text, status=status, content_type="text/html")


_HTML_LANG = {"en": "en", "zh": "zh-CN"}
# The ack page's words. The page opens in the language of the person the link was made for
# (their pages' language), like the page that carried the link.
ACK_TEXT = {
    "en": {
        "note": "note (what you are doing)",
        "button": "Acknowledge as {actor}",
        "acked": "Acknowledged by {actor}.",
        "drill": "Drill answered in {seconds}.",
        "gone": "This alert is no longer active.",
        "check_in": "Shift check-in: {actor}",
        "confirm": "I am on duty: {actor}",
        "confirmed": "{actor} is on duty: recorded in the duty diary.",
    },
    "zh": {
        "note": "备注（处理措施）",
        "button": "确认（{actor}）",
        "acked": "已确认（{actor}）。",
        "drill": "演练已确认，用时 {seconds}。",
        "gone": "该告警已不再活动。",
        "check_in": "到岗确认：{actor}",
        "confirm": "确认到岗（{actor}）",
        "confirmed": "{actor} 已确认到岗，已记入值班日志。",
    },
}
# InvalidToken's reasons, for a link that cannot be trusted to say whose it is.
_LINK_ERRORS_ZH = {
    "malformed link": "链接格式错误",
    "the link's signature does not match (altered or from elsewhere)": (
        "链接签名不符（被修改或来自别处）"
    ),
    "the link has expired": "链接已过期",
    "the link has already been used": "链接已被使用",
    "ack links are not configured": "未配置确认链接",
}


def _ack_language(request: web.Request, actor: str | None = None, site: str = "") -> str:
    """`?lang=` when given; else the language of the person the link was made for; for a
    link that names nobody (invalid), the browser's Accept-Language, then the site's."""
    ctx = _ctx(request)
    asked = request.query.get("lang")
    if asked is not None and asked in ACK_TEXT:
        return asked
    if actor is not None:
        return ctx.notify.language_of(actor, site)
    for part in request.headers.get("Accept-Language", "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    lang = ctx.language()
    return lang if lang in ACK_TEXT else "en"


def _error_page(message: str, status: int, lang: str) -> web.Response:
    text = _LINK_ERRORS_ZH.get(message, message) if lang == "zh" else message
    return _page(f"<p>{html.escape(text)}</p>", status, lang)


def _linked_alert(ctx: WebContext, claim: Any) -> tuple[dict[str, Any] | None, str]:
    """The alert view an ack link names (None once it has left memory, or when the alert
    fired again since: a link acknowledges only the episode it was made for) and its site."""
    view = next(
        (
            v
            for v in ctx.operations.list_alerts()
            if v["fingerprint"] == claim.fingerprint and claim.same_episode(v["active_since"])
        ),
        None,
    )
    return view, str(((view or {}).get("labels") or {}).get("site", ""))


def _claim(request: web.Request) -> Any:
    ctx = _ctx(request)
    links = ctx.notify.links
    if links is None:
        raise ApiError(404, "ack links are not configured")
    try:
        return links.verify(request.match_info["token"], ctx.clock.time())
    except InvalidToken as exc:
        raise ApiError(403, exc.reason) from None


async def get_ack_link(request: web.Request) -> web.Response:
    try:
        claim = _claim(request)
    except ApiError as exc:
        return _error_page(exc.message, exc.status, _ack_language(request))
    ctx = _ctx(request)
    view, site = _linked_alert(ctx, claim)
    drill = _ctx(request).drills.find(claim.fingerprint)
    lang = _ack_language(request, claim.actor, site)
    words = ACK_TEXT[lang]
    if ctx.handover.find(claim.fingerprint) is not None:
        return _page(
            f"<h2>{html.escape(words['check_in'].format(actor=claim.actor))}</h2>"
            f'<form method="post"><p><input name="note" placeholder="{html.escape(words["note"])}" '
            f'class="note"></p><button type="submit">'
            f"{html.escape(words['confirm'].format(actor=claim.actor))}</button></form>",
            lang=lang,
        )
    if view:
        summary = (view.get("summaries") or {}).get(lang) or view["summary"]
    else:
        summary = drill.event.summary_in(lang) if drill else claim.fingerprint
    since = (view or {}).get("active_since") or (drill.started if drill else None)
    when = local_time(since, ctx.timezone()) if since else ""
    return _page(
        f"<h2>{html.escape(summary)}</h2><p>{html.escape(when)}</p>"
        f'<form method="post"><p><input name="note" placeholder="{html.escape(words["note"])}" '
        f'class="note"></p><button type="submit">'
        f"{html.escape(words['button'].format(actor=claim.actor))}</button></form>",
        lang=lang,
    )


async def post_ack_link(request: web.Request) -> web.Response:
    lang = _ack_language(request)
    try:
        claim = _claim(request)
        ctx = _ctx(request)
        view, site = _linked_alert(ctx, claim)
        lang = _ack_language(request, claim.actor, site)
        words = ACK_TEXT[lang]
        form = await request.post()
        note = str(form.get("note", ""))[:500] or "via ack link"
        shift = ctx.handover.find(claim.fingerprint)
        if shift is not None:
            ctx.handover.ensure_current(shift)  # a stale link stays unused
            await ctx.notify.links.consume(ctx.storage.ack_links, claim, ctx.clock.time())  # type: ignore[union-attr]
            await ctx.handover.confirm(claim.actor, note, "link", shift)
            return _page(
                f"<p>{html.escape(words['confirmed'].format(actor=claim.actor))}</p>", lang=lang
            )
        drill = _ctx(request).drills.find(claim.fingerprint)
        active = view is not None and view["state"] in ("pending", "firing")
        if drill is None and not active:
            # Checked before the link is spent: a link to a resolved alert stays unused.
            raise LookupError(claim.fingerprint)
        await ctx.notify.links.consume(ctx.storage.ack_links, claim, ctx.clock.time())  # type: ignore[union-attr]
        if drill is not None:
            answer = await _ctx(request).drills.acknowledge(drill, claim.actor, note)
            took = format_duration(round(answer["seconds"]), lang)
            return _page(f"<p>{html.escape(words['drill'].format(seconds=took))}</p>", lang=lang)
        await ctx.operations.acknowledge(claim.fingerprint, claim.actor, note)
    except ApiError as exc:
        return _error_page(exc.message, exc.status, lang)
    except InvalidToken as exc:  # used before
        return _error_page(exc.reason, 403, lang)
    except LookupError:
        return _page(f"<p>{html.escape(ACK_TEXT[lang]['gone'])}</p>", 410, lang)
    except ValueError as exc:
        return _page(f"<p>{html.escape(str(exc))}</p>", 400, lang)
    return _page(f"<p>{html.escape(words['acked'].format(actor=claim.actor))}</p>", lang=lang)


# -- read endpoints (a read credential or login: authorize_read) -------------------------------

_STATES = frozenset({"pending", "firing", "resolved"})


def _query_list(request: web.Request, key: str, allowed: frozenset[str] | None = None) -> set[str]:
    values = {v for raw in request.query.getall(key, []) for v in raw.split(",") if v}
    if allowed is not None and not values <= allowed:
        bad = ", ".join(sorted(values - allowed))
        raise ApiError(400, f"unknown {key} {bad!r}: use {', '.join(sorted(allowed))}")
    return values


@_errors
async def get_alerts(request: web.Request) -> web.Response:
    """Alerts with their overlays; filters: state, severity, target, rule (comma lists)."""
    authorize_read(request, _ctx(request))
    states = _query_list(request, "state", _STATES)
    severities = _query_list(request, "severity")
    targets = _query_list(request, "target")
    rules = _query_list(request, "rule")
    out = [
        a
        for a in _ctx(request).operations.list_alerts(states)
        if (not severities or a["severity"] in severities)
        and (not targets or a["labels"].get("target") in targets)
        and (not rules or a["rule"] in rules)
    ]
    return web.json_response({"alerts": views.sort_alerts(out)})


@_errors
async def get_alert(request: web.Request) -> web.Response:
    """One alert (by fingerprint or unique prefix) with its duty-log history."""
    authorize_read(request, _ctx(request))
    ctx = _ctx(request)
    fp = resolve_alert(ctx, request.match_info["fingerprint"])
    alert = next((a for a in ctx.operations.list_alerts() if a["fingerprint"] == fp), None)
    history = await ctx.storage.log.read(subject=fp, limit=1000)
    return web.json_response({"alert": alert, "history": views.log_view(history)})


@_errors
async def get_targets(request: web.Request) -> web.Response:
    authorize_read(request, _ctx(request))
    ctx = _ctx(request)
    kinds = {t.name: t for t in ctx.targets()}
    out = []
    for status in ctx.latest.status.values():
        view = views.target_view(status)
        cfg = kinds.get(status.name)
        view["labels"] = dict(cfg.labels) if cfg is not None else {}
        view["address"] = redact_address(cfg.address) if cfg is not None else ""
        out.append(view)
    if request.query.get("up") in ("0", "false"):
        out = [t for t in out if not t["up"]]
    return web.json_response({"targets": sorted(out, key=lambda t: t["name"])})


def _reader(key: str, view: Callable[[WebContext], Any]) -> Handler:
    """A GET handler answering `{key: view(context)}` to a client that may read."""

    @_errors
    async def handler(request: web.Request) -> web.Response:
        ctx = _ctx(request)
        authorize_read(request, ctx)
        return web.json_response({key: view(ctx)})

    return handler


get_silences = _reader("silences", lambda ctx: ctx.operations.list_silences())
get_maintenance = _reader("maintenance", lambda ctx: ctx.operations.list_maintenance())
get_rooms = _reader("rooms", lambda ctx: ctx.entries.rooms_view())
get_shift = _reader("shift", lambda ctx: ctx.handover.view())


def _period(request: web.Request, default_limit: int) -> tuple[float | None, float | None, int]:
    """A register read's `since` and `until` (Unix seconds, either left out) and `limit`
    (1 to 10000 lines)."""
    try:
        since = float(request.query["since"]) if "since" in request.query else None
        until = float(request.query["until"]) if "until" in request.query else None
        limit = int(request.query.get("limit", str(default_limit)))
    except ValueError as exc:
        raise ApiError(400, f"since, until and limit must be numbers: {exc}") from None
    if not 0 < limit <= 10_000:
        raise ApiError(400, "limit must be between 1 and 10000")
    return since, until, limit


@_errors
async def get_log(request: web.Request) -> web.Response:
    """The duty log: since/until (unix seconds), kind (prefix with a trailing '.'), subject."""
    authorize_read(request, _ctx(request))
    since, until, limit = _period(request, default_limit=200)
    entries = await _ctx(request).storage.log.read(
        since=since,
        until=until,
        kinds=sorted(_query_list(request, "kind")),
        subject=request.query.get("subject"),
        limit=limit,
    )
    return web.json_response({"entries": views.log_view(entries)})


@_errors
async def get_cluster(request: web.Request) -> web.Response:
    """This node's place in the cluster: active or standby, the active node, the members,
    the shard map, the lease's age (`dutyd cluster status` reads it)."""
    authorize_read(request, _ctx(request))
    return web.json_response(_ctx(request).cluster())


@_errors
async def get_topology(request: web.Request) -> web.Response:
    """Every target's parents, those of `depends_on: auto` as learned from LLDP or a bridge
    forwarding table (with the switch port and `how`), for `dutyd topology --live`."""
    authorize_read(request, _ctx(request))
    return web.json_response(_ctx(request).topology())


@_errors
async def get_status(request: web.Request) -> web.Response:
    """The status page's data: alerts, red lines, environment, targets down, on call, log."""
    authorize_read(request, _ctx(request))
    lang = request.query.get("lang")
    if lang is not None and lang not in ("en", "zh"):
        raise ApiError(400, "lang must be en or zh")
    return web.json_response(await statuspage.status_data(_ctx(request), lang))


def _names(data: dict[str, Any], key: str) -> list[str]:
    value = data.get(key) or []
    if isinstance(value, str):
        value = [v for v in (part.strip() for part in value.split(",")) if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, f"{key!r} must be a list of names")
    return value


@_errors
async def post_entry(request: web.Request) -> web.Response:
    """Register people in or out of a machine room (the entry register)."""
    _authorize(request)
    data = await _body(request)
    ctx = _ctx(request)
    direction = data.get("direction")
    if direction not in ("in", "out"):
        raise ApiError(400, "'direction' must be 'in' or 'out'")
    actor = _actor(data)
    room, person = _text(data, "room", limit=64), _text(data, "person", limit=100)
    companions = _names(data, "with")
    purpose = _text(data, "purpose", required=False)
    items = _text(data, "items", required=False)
    if direction == "in":
        approved_by = _text(data, "approved_by", required=False, limit=100)
        lines = await ctx.entries.enter(
            room, person, actor, companions, purpose, items, approved_by
        )
    else:
        lines = await ctx.entries.leave(room, person, actor, companions, purpose, items)
    return web.json_response({"entries": [views.room_entry_view(e) for e in lines]}, status=201)


@_errors
async def get_entries(request: web.Request) -> web.Response:
    authorize_read(request, _ctx(request))
    since, until, limit = _period(request, default_limit=1000)
    lines = await _ctx(request).storage.room_entries.read(
        since, until, request.query.get("room"), limit
    )
    return web.json_response({"entries": [views.room_entry_view(e) for e in lines]})


@_errors
async def post_shift_confirm(request: web.Request) -> web.Response:
    _authorize(request)
    data = await _body(request)
    actor = _actor(data)
    at = await _ctx(request).handover.confirm(actor, _text(data, "note", required=False))
    return web.json_response({"confirmed": actor, "at": at}, status=201)


@_errors
async def post_shift_handover(request: web.Request) -> web.Response:
    _authorize(request)
    data = await _body(request)
    actor = _actor(data)
    at = await _ctx(request).handover.hand_over(actor, _text(data, "note", limit=2000))
    return web.json_response({"handed_over_by": actor, "at": at}, status=201)


@_errors
async def post_register_sign(request: web.Request) -> web.Response:
    _authorize(request)
    data = await _body(request)
    ctx = _ctx(request)
    start, end = _timestamp(data, "from"), _timestamp(data, "to")
    if start is None or end is None:
        raise ApiError(400, "'from' and 'to' (Unix seconds) are required")
    actor = _actor(data)
    register = _text(data, "register", limit=20)
    note = _text(data, "note", required=False)
    entry = await registers.sign(ctx.storage, actor, register, start, end, note, ctx.clock.time())
    return web.json_response({"signed": entry, "register": register, "by": actor}, status=201)


@_errors
async def post_door(request: web.Request) -> web.Response:
    """A room's door, reported by an access-control system with the door's own token."""
    ctx = _ctx(request)
    name = request.match_info["room"]
    room = next((r for r in ctx.rooms() if r.name == name), None)
    token = room.door.secret() if room is not None and room.door is not None else None
    # The same answer for an unknown room and a wrong token: the path tells a prober nothing.
    if not _matches(_presented_token(request), token):
        raise ApiError(401, f"a valid '{TOKEN_HEADER}: <door token>' header is required")
    data = await _body(request)
    is_open = data.get("open")
    if not isinstance(is_open, bool):
        raise ApiError(400, "'open' must be true or false")
    await ctx.entries.door_event(name, is_open, f"door:{name}")
    return web.json_response({"room": name, "open": is_open})


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi.document())


def install_api(ctx: WebContext) -> None:
    """Add the duty routes to the HTTP server's app (before it starts)."""
    app = ctx.server.app
    app[CONTEXT] = ctx
    app.router.add_post("/api/v1/ack", post_ack)
    app.router.add_post("/api/v1/silences", post_silence)
    app.router.add_post("/api/v1/maintenance", post_maintenance)
    app.router.add_post("/api/v1/drills", post_drill)
    app.router.add_get("/api/v1/drills/{id}", get_drill)
    app.router.add_get("/api/v1/oncall", get_oncall)
    app.router.add_get("/api/v1/alerts", get_alerts)
    app.router.add_get("/api/v1/alerts/{fingerprint}", get_alert)
    app.router.add_get("/api/v1/targets", get_targets)
    app.router.add_get("/api/v1/silences", get_silences)
    app.router.add_get("/api/v1/maintenance", get_maintenance)
    app.router.add_get("/api/v1/log", get_log)
    app.router.add_get("/api/v1/openapi.json", get_openapi)
    app.router.add_get("/api/v1/status", get_status)
    app.router.add_get("/api/v1/cluster", get_cluster)
    app.router.add_post("/api/v1/entries", post_entry)
    app.router.add_get("/api/v1/entries", get_entries)
    app.router.add_get("/api/v1/rooms", get_rooms)
    app.router.add_post("/api/v1/doors/{room}", post_door)
    app.router.add_post("/api/v1/registers/sign", post_register_sign)
    app.router.add_get("/api/v1/shift", get_shift)
    app.router.add_post("/api/v1/shift/confirm", post_shift_confirm)
    app.router.add_post("/api/v1/shift/handover", post_shift_handover)
    ctx.server.open_prefixes += ("/api/v1/doors/",)  # the door's own token is the credential
    app.router.add_get("/api/v1/topology", get_topology)
    statuspage.add_routes(app)
    ctx.server.open_prefixes += ("/ack/",)  # the signed token is the credential
    ctx.server.open_paths.add("/status/ack.css")  # its style, for a phone without the password
    app.router.add_get("/ack/{token}", get_ack_link)
    app.router.add_post("/ack/{token}", post_ack_link)
