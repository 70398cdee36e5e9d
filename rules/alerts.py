"""The alert state machine, in one place: inactive -> pending -> firing -> resolved.

Evaluation receives `now`, so tests step a clock instead of sleeping. An alert is identified by
its fingerprint (rule name plus label set) and carries the timestamps its state follows from.

    condition true,  state inactive/resolved -> pending (active_since = now), or firing at
                                                once when `for` is 0
    condition true,  state pending, now - active_since >= for -> firing (fired_at = now)
    condition false, state pending           -> inactive (no notification was ever due)
    condition false, state firing            -> resolved (resolved_at = now)

`active_since` survives a restart (see `Alert.from_row`), so a pending alert that had 4 of its
5 minutes fires one minute after the daemon comes back, not five.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from agent.records import AlertEvent, AlertState, Labels


def fingerprint(rule: str, labels: Labels) -> str:
    h = hashlib.sha256(rule.encode())
    for k, v in labels:
        h.update(b"\xff" + k.encode() + b"\xfe" + v.encode())
    return h.hexdigest()[:16]


@dataclass(slots=True)
class Alert:
    rule: str
    labels: Labels
    severity: str
    state: AlertState = AlertState.INACTIVE
    active_since: float | None = None
    fired_at: float | None = None
    resolved_at: float | None = None
    value: float | None = None
    summary: str = ""
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.rule, self.labels)

    @property
    def active(self) -> bool:
        return self.state in (AlertState.PENDING, AlertState.FIRING)

    def duration(self, now: float) -> float:
        """How long the condition has held (for a firing alert: since it became active)."""
        if self.active_since is None:
            return 0.0
        end = self.resolved_at if self.state is AlertState.RESOLVED and self.resolved_at else now
        return max(0.0, end - self.active_since)

    def step(
        self, holds: bool, value: float | None, now: float, for_seconds: float, summary: str
    ) -> AlertEvent | None:
        """Advance on one evaluation; returns the event when the state changed."""
        previous = self.state
        if value is not None:
            self.value = value
        if holds:
            if self.state in (AlertState.INACTIVE, AlertState.RESOLVED):
                self.active_since = now
                self.fired_at = None
                self.resolved_at = None
                self.state = AlertState.PENDING
            since = now if self.active_since is None else self.active_since
            if self.state is AlertState.PENDING and now - since >= for_seconds:
                self.state = AlertState.FIRING
                self.fired_at = now
        elif self.state is AlertState.PENDING:
            self.state = AlertState.INACTIVE
            self.active_since = None
        elif self.state is AlertState.FIRING:
            self.state = AlertState.RESOLVED
            self.resolved_at = now
        self.summary = summary
        if self.state is previous:
            return None
        return AlertEvent(
            fingerprint=self.fingerprint,
            rule=self.rule,
            labels=self.labels,
            state=self.state,
            previous=previous,
            severity=self.severity,
            summary=summary,
            value=self.value,
            active_since=self.active_since,
            timestamp=now,
        )
