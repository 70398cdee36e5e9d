"""The alert state machine, in one place: inactive -> pending -> firing -> resolved.

Evaluation receives `now`, so tests step a clock instead of sleeping. An alert is identified by
its fingerprint (rule name plus label set) and carries the timestamps its state follows from.

    holds,     inactive/resolved -> pending (active_since = now), or firing at once if `for` is 0
    holds,     pending, now - active_since >= for -> firing (fired_at = now)
    not holds, pending           -> inactive (no notification was ever due)
    not holds, firing            -> stays firing while now - last_true < keep_firing_for,
                                    then resolved (resolved_at = now)

A provisional "holds" (an SNMP trap's sample, not yet a poll's) may open an alert and fire it,
but holds it open only until the next evaluation that does not hold: keep_firing_for counts
from the last truth a poll confirmed, so a trap alone never keeps an alert firing past the
poll that contradicts it.

"holds" is the rule's condition, widened by hysteresis once the alert is active: an alert
above 85 % with `clear_below: 80` keeps holding at 83 % (the engine decides that, see
`RuleEngine._holds`). Overlays do not change the state: acknowledged (by, note, expiry),
silenced, in maintenance, parent down and flapping only decide whether an event notifies.

Restart (the cases of Prometheus's `rules/alerting.go` restore, adapted to duty rules):
- `active_since`, `fired_at`, the acknowledgement, what was last notified and the flapping
  history are stored with the alert and come back as they were.
- A restored alert waits for a fresh sample before it moves (`last_holds` is None until then):
  the daemon does not fire or resolve on what it saw before it stopped.
- Pending: once a sample confirms the condition, it fires at active_since + for. A temperature
  pending for 4 of its 5 minutes fires one minute after the restart, not five. The downtime
  counts toward `for`: the room was hot all along as far as anyone knows, and the alternative
  (restart the clock) lets a crash-looping daemon hide an alert forever.
- Firing: stays firing with its start time, so an outage that began before a restart keeps
  counting toward its 2 h red line; it is not announced again (no repeated page).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from dutyd.core.records import AlertState, Labels

ACTIVE = (AlertState.PENDING, AlertState.FIRING)

# Every move the state machine makes (from, to). INACTIVE -> RESOLVED is the held-back resolve
# of a page that went out (`Alert.resolve_announced`); nothing else skips a state.
TRANSITIONS: frozenset[tuple[AlertState, AlertState]] = frozenset(
    {
        (AlertState.INACTIVE, AlertState.PENDING),
        (AlertState.RESOLVED, AlertState.PENDING),
        (AlertState.PENDING, AlertState.FIRING),
        (AlertState.PENDING, AlertState.INACTIVE),
        (AlertState.FIRING, AlertState.RESOLVED),
        (AlertState.INACTIVE, AlertState.RESOLVED),
    }
)


class InvalidTransition(RuntimeError):
    """A state change the state machine does not make (a bug, never bad input)."""


def fingerprint(rule: str, labels: Labels) -> str:
    h = hashlib.sha256(rule.encode())
    for k, v in labels:
        h.update(b"\xff" + k.encode() + b"\xfe" + v.encode())
    return h.hexdigest()[:16]


@dataclass(slots=True)
class Ack:
    by: str
    note: str
    at: float
    expires_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"by": self.by, "note": self.note, "at": self.at, "expires_at": self.expires_at}


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
    # When the (hysteresis-widened) condition last held, for keep_firing_for.
    last_true: float | None = None
    # The last evaluation's result; None until a fresh sample after a restart or while the
    # target is down (the alert then keeps its state instead of acting on old data).
    last_holds: bool | None = None
    ack: Ack | None = None
    # The state last announced with notify=True (FIRING or RESOLVED), so that every page gets
    # its resolve and a muted alert is announced when the mute ends.
    notified: AlertState | None = None
    flapping: bool = False
    transitions: list[float] = field(default_factory=list)
    red_line_sent: bool = False
    muted_reason: str = ""  # as of the last event (for listings; recomputed on every event)
    # The worst value of this outage (furthest past the threshold), for the resolve notice.
    peak: float | None = None
    # Active on provisional samples alone (a trap's), none of them confirmed yet.
    provisional: bool = False
    # When the poll that made it pending ended: a parent's answer from a poll that ended since
    # then tells whether the parent is down in this outage (one that ended earlier may have
    # answered before the fault, while the child's poll was still waiting out its timeout).
    observed_at: float | None = None
    # `fired_at` as it was set: the pages' keys are made from it, so a move of the clock
    # (`shift`) does not make the steps already paged look new (paged again at a restart).
    key_at: float | None = None
    # The parent whose outage explains this paged alert: its escalation is paused meanwhile.
    explained_by: str = ""
    # When it was explained: a restart takes its escalation up paused at that point.
    explained_at: float | None = None

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.rule, self.labels)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def label(self, key: str) -> str:
        for k, v in self.labels:
            if k == key:
                return v
        return ""

    def duration(self, now: float) -> float:
        """How long the condition has held (for a firing alert: since it became active)."""
        if self.active_since is None:
            return 0.0
        end = self.resolved_at if self.state is AlertState.RESOLVED and self.resolved_at else now
        return max(0.0, end - self.active_since)

    def advance(
        self,
        holds: bool,
        now: float,
        for_seconds: float,
        keep_firing_for: float = 0.0,
        provisional: bool = False,
    ) -> AlertState | None:
        """Advance on one evaluation; returns the previous state when the state changed.
        `provisional`: the evaluation is of a trap's sample (see the module doc)."""
        previous = self.state
        self.last_holds = holds
        if holds and provisional:
            if self.provisional or self.state not in ACTIVE:
                # Kept open until contradicted, not for keep_firing_for beyond.
                self.provisional = True
                self.last_true = now - keep_firing_for
            # else: active on a confirmed truth, which a trap neither extends nor shortens.
        elif holds:
            self.provisional = False
            self.last_true = now
        if holds:
            if self.state in (AlertState.INACTIVE, AlertState.RESOLVED):
                self._move(AlertState.PENDING, now)
            since = now if self.active_since is None else self.active_since
            if self.state is AlertState.PENDING and now - since >= for_seconds:
                self._move(AlertState.FIRING, now)
        elif self.state is AlertState.PENDING:
            self._move(AlertState.INACTIVE, now)
        elif self.state is AlertState.FIRING:
            last = self.last_true if self.last_true is not None else now
            if now - last >= keep_firing_for:
                self._move(AlertState.RESOLVED, now)
        if not self.active:
            self.provisional = False
        return previous if self.state is not previous else None

    def resolve_announced(self, now: float) -> AlertState:
        """A page went out for this alert and its resolve was held back (by a mute or
        flapping); the alert is over now, so it reads as resolved (an inactive one too: it went
        pending again and cleared meanwhile). Returns the state it was in."""
        previous = self.state
        if previous is AlertState.INACTIVE:
            self._move(AlertState.RESOLVED, now)
        elif previous is not AlertState.RESOLVED:
            raise InvalidTransition(f"{previous} -> resolved is not an announced resolve")
        self.resolved_at = self.resolved_at or now
        return previous

    def retire(self, now: float) -> AlertState | None:
        """Its target is no longer watched (removed from the configuration): a firing alert
        resolves, a pending one ends unseen. Returns the state it was in, or None when it
        was not active."""
        previous = self.state
        if previous is AlertState.FIRING:
            self._move(AlertState.RESOLVED, now)
        elif previous is AlertState.PENDING:
            self._move(AlertState.INACTIVE, now)
        else:
            return None
        return previous

    def _move(self, to: AlertState, now: float) -> None:
        """The one place `state` changes: checks the move against TRANSITIONS and keeps the
        timestamps the state follows from."""
        if (self.state, to) not in TRANSITIONS:
            raise InvalidTransition(f"{self.state} -> {to}")
        self.state = to
        if to is AlertState.PENDING:
            self.active_since = now
            self.fired_at = None
            self.resolved_at = None
            self.red_line_sent = False
            self.peak = None
        elif to is AlertState.FIRING:
            self.fired_at = self.key_at = now
        elif to is AlertState.INACTIVE:
            self.active_since = None
        elif to is AlertState.RESOLVED:
            self.resolved_at = now
            self.ack = None  # an acknowledgement belongs to one outage

    def due(self, now: float, for_seconds: float, keep_firing_for: float) -> bool:
        """Whether time alone (no new sample) moves this alert at `now`."""
        if self.last_holds is None:
            return False
        if self.state is AlertState.PENDING and self.last_holds:
            return self.active_since is not None and now - self.active_since >= for_seconds
        if self.state is AlertState.FIRING and not self.last_holds:
            last = self.last_true if self.last_true is not None else now
            return now - last >= keep_firing_for
        return False

    def note_transition(self, now: float, within: float) -> None:
        self.transitions.append(now)
        cutoff = now - within
        while self.transitions and self.transitions[0] < cutoff:
            self.transitions.pop(0)

    def shift(self, seconds: float) -> None:
        """Move every moment this alert keeps by `seconds`, the durations between them
        unchanged (restored times that were ahead of the clock, see `duty.clockwatch`)."""

        def moved(t: float | None) -> float | None:
            return None if t is None else t + seconds

        self.active_since = moved(self.active_since)
        self.fired_at = moved(self.fired_at)
        self.resolved_at = moved(self.resolved_at)
        self.last_true = moved(self.last_true)
        self.observed_at = moved(self.observed_at)
        self.transitions = [t + seconds for t in self.transitions]
        self.explained_at = moved(self.explained_at)
        if self.ack is not None:
            self.ack.at += seconds
            self.ack.expires_at = moved(self.ack.expires_at)

    # -- persistence ----------------------------------------------------------------------------

    def extra(self) -> dict[str, Any]:
        """The fields beyond the core alert row, stored as JSON."""
        return {
            "last_true": self.last_true,
            "ack": self.ack.to_dict() if self.ack else None,
            "notified": str(self.notified) if self.notified else None,
            "flapping": self.flapping,
            "transitions": self.transitions,
            "red_line_sent": self.red_line_sent,
            "peak": self.peak,
            "observed_at": self.observed_at,
            "key_at": self.key_at,
            "explained_by": self.explained_by,
            "explained_at": self.explained_at,
        }

    def load_extra(self, data: dict[str, Any]) -> None:
        self.last_true = data.get("last_true")
        ack = data.get("ack")
        self.ack = Ack(ack["by"], ack["note"], ack["at"], ack.get("expires_at")) if ack else None
        notified = data.get("notified")
        self.notified = AlertState(notified) if notified else None
        self.flapping = bool(data.get("flapping"))
        self.transitions = [float(t) for t in data.get("transitions") or []]
        self.red_line_sent = bool(data.get("red_line_sent"))
        peak = data.get("peak")
        self.peak = float(peak) if peak is not None else None
        observed = data.get("observed_at")
        self.observed_at = float(observed) if observed is not None else None
        key_at = data.get("key_at")
        self.key_at = float(key_at) if key_at is not None else None
        self.explained_by = str(data.get("explained_by") or "")
        explained_at = data.get("explained_at")
        self.explained_at = float(explained_at) if explained_at is not None else None
        self.last_holds = None
