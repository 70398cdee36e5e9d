"""The texts of an alert: its rule's summary and description templates filled with the alert's
labels, value, threshold and duration."""

from __future__ import annotations

from dutyd.core.configtypes import format_duration
from dutyd.core.records import AlertState
from dutyd.rules.alerts import Alert
from dutyd.rules.compiled import CompiledRule
from dutyd.rules.template import render


def threshold(rule: CompiledRule, total: int = 0) -> str:
    across = rule.config.across
    text = rule.config.threshold()
    if across is None:
        return text
    mode = {"any": "any", "all": "all", "at_least": f"at least {across.n}"}[across.mode]
    return f"{text} on {mode} of {total} series"


def held_note(rule: CompiledRule, alert: Alert) -> str:
    """Why an active alert's value may read as inside the limits: hysteresis holds it until
    the value is well back (else "40 %RH is outside 40..60" would read as a contradiction)."""
    cfg, c, value = rule.config, rule.config.condition, alert.value
    if (
        alert.state not in (AlertState.PENDING, AlertState.FIRING)
        or c is None
        or value is None
        or c.holds(value)
    ):
        return ""
    low, high = cfg.clear_above, cfg.clear_below
    if low is not None and high is not None:
        return f" (held until back within {low:g}..{high:g})"
    if high is not None:
        return f" (held until below {high:g})"
    if low is not None:
        return f" (held until above {low:g})"
    return ""


def render_text(rule: CompiledRule, template: str, alert: Alert, now: float) -> str:
    values: dict[str, object] = dict(alert.labels)
    total = rule.group_size(alert)
    red_line = rule.config.red_line
    values.update(
        rule=rule.name,
        value=alert.value if alert.value is not None else "n/a",
        threshold=threshold(rule, total) + held_note(rule, alert),
        target=alert.label("target") or "(all targets)",
        severity=rule.config.severity,
        duration=format_duration(alert.duration(now)),
        red_line=format_duration(red_line) if red_line else "",
        reference=rule.config.reference,
        total=total,
        # The value read as people say it: 26h3m for seconds, 87 for a 0..1 ratio.
        value_duration=format_duration(alert.value) if alert.value is not None else "n/a",
        value_percent=f"{alert.value * 100:.0f}" if alert.value is not None else "n/a",
    )
    values["for"] = format_duration(rule.config.for_)
    return render(template, values)
