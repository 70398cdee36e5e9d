"""The JSON-ready view of an alert with its overlays, for the API, the status page and the CLI."""

from __future__ import annotations

from typing import Any

from dutyd.rules.alerts import Alert
from dutyd.rules.compiled import CompiledRule
from dutyd.rules.config import LANGUAGES
from dutyd.rules.mutes import MutePolicy
from dutyd.rules.summaries import summaries


def alert_view(
    alert: Alert, rule: CompiledRule | None, mutes: MutePolicy, now: float
) -> dict[str, Any]:
    cfg = rule.config if rule is not None else None
    mute = mutes.reason(alert, cfg.depends_on, now) if cfg is not None else ""
    # Rendered now, so the text's duration is the card's (not the one of the last change).
    texts = dict(summaries(rule, alert, now)) if rule is not None else {}
    return {
        "fingerprint": alert.fingerprint,
        "rule": alert.rule,
        "labels": dict(alert.labels),
        "severity": alert.severity,
        "state": str(alert.state),
        "value": alert.value,
        "summary": texts.get("en", alert.summary),
        "summaries": texts or {lang: alert.summary for lang in LANGUAGES},
        "active_since": alert.active_since,
        "fired_at": alert.fired_at,
        "key_at": alert.key_at if alert.key_at is not None else alert.fired_at,
        "resolved_at": alert.resolved_at,
        "duration": alert.duration(now),
        "outage": mutes.outage(alert, now) if alert.active else None,
        "red_line": cfg.red_line if cfg else None,
        "red_line_crossed": alert.red_line_sent,
        "reference": cfg.reference.en if cfg else "",
        "references": {lang: cfg.reference.get(lang) if cfg else "" for lang in LANGUAGES},
        "acknowledged": alert.ack.to_dict() if alert.ack else None,
        "silenced_by": mutes.silenced_by(alert, now),
        "maintenance": mutes.maintenance_of(alert, now),
        "suppressed": mute,
        "flapping": alert.flapping,
    }
