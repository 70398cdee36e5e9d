"""JSON views of the daemon's state, shared by the HTTP API and the on-call status page.

Plain functions from live objects (target status, samples, duty-log entries) to JSON-ready
dicts; an alert's view is the rule engine's (`RuleEngine.view`). Secrets never reach them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dutyd.core.latest import LatestSamples, TargetStatus
from dutyd.core.records import AlertState
from dutyd.storage import LogEntry

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


def log_detail(entry: LogEntry) -> str:
    """What a duty-log entry is about, for people: the alert's summary, the note or reason;
    for a delivery, who was reached through which channel (not only the message id)."""
    data = entry.data
    detail = data.get("summary") or data.get("note") or data.get("reason") or data.get("error")
    if entry.kind.startswith("notify.") and data.get("recipient"):
        reached = f"to {data['recipient']} via {data.get('channel', '?')}"
        return f"{reached} {detail}" if detail else reached
    return str(detail or "")


def log_text(entry: LogEntry) -> str:
    """One line of the duty log for people: what happened, to what, by whom."""
    detail = log_detail(entry) or entry.subject
    who = "" if entry.actor in ("", "dutyd") else f" [{entry.actor}]"
    return f"{entry.kind}{who}: {detail}" if detail else f"{entry.kind}{who}"


def log_view(entries: Iterable[LogEntry]) -> list[dict[str, Any]]:
    return [
        {
            "id": e.id,
            "timestamp": e.timestamp,
            "kind": e.kind,
            "actor": e.actor,
            "subject": e.subject,
            "data": e.data,
            "text": log_text(e),
        }
        for e in entries
    ]
