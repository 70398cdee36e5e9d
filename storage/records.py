"""The records the repositories take and return: plain values, no database types.

They belong to the storage layer because only storage and its callers (rules wiring,
notifications, duty) exchange them; the kernel's records (samples, alert events) stay in core.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class StoredAlert:
    fingerprint: str
    rule: str
    labels: dict[str, str]
    severity: str
    state: str
    active_since: float | None
    fired_at: float | None
    resolved_at: float | None
    value: float | None
    summary: str
    # The rules layer's own fields (acknowledgement, last notified state, flapping history,
    # red line crossed, when the condition last held), as JSON.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredSilence:
    id: int
    matchers: dict[str, Any]  # label -> value or {op: value}, as in rule `match:`
    until: float
    actor: str
    reason: str
    created: float


@dataclass(frozen=True, slots=True)
class StoredWindow:
    """An ad hoc maintenance window (scheduled ones live in the config)."""

    id: int
    targets: list[str]
    matchers: dict[str, Any]
    start: float
    end: float
    actor: str
    reason: str
    created: float


# A counter increase seen by an `events` rule: (rule, series labels, ts, increment, counter).
RuleEventRow = tuple[str, dict[str, str], float, float, float]


@dataclass(frozen=True, slots=True)
class NewLogEntry:
    """A duty log line to be written (the store assigns the id). `key` is the entry's own,
    drawn when it is made: written again after a write that timed out and landed late (a
    frozen disk), the entry is found by it and not written twice (SQLite)."""

    timestamp: float
    kind: str
    actor: str
    subject: str
    data: dict[str, Any]
    key: int = field(default_factory=lambda: secrets.randbits(63), compare=False)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line of the append-only duty log."""

    id: int
    timestamp: float
    kind: str  # alert.firing, alert.resolved, config.reload, notify.sent, ack, drill, ...
    actor: str  # "dutyd" or the person who acted
    subject: str  # alert fingerprint, target name, channel ...
    data: dict[str, Any]


@dataclass(slots=True)
class OutboxMessage:
    """A notification waiting to be delivered. Mutable: delivery moves it between channels
    and reschedules it, then saves it back with `OutboxRepository.reschedule`."""

    id: str  # stable message id: receivers drop duplicates by it
    recipient: str  # person name, "#channel", or "alertmanager"
    kind: str  # page kind: firing, resolved, ... (for the log)
    channel: str
    payload: dict[str, Any]
    fallbacks: list[str] = field(default_factory=list)
    attempts: int = 0
    channel_failures: int = 0
    created: float = 0.0
    next_at: float = 0.0
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int  # messages queued
    oldest_created: float | None  # creation time of the oldest queued message
    next_retry_at: float | None  # the earliest `next_at` still in the future


@dataclass(frozen=True, slots=True)
class EnvironmentReading:
    """One room sensor reading (temperature, humidity) to fold into its hour."""

    timestamp: float
    name: str  # metric name
    labels: dict[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class EnvironmentRange:
    """The lowest and highest reading of one sensor series over a span of hours."""

    name: str
    labels: dict[str, str]
    min: float
    max: float


# Fencing epochs at or above this are cluster members' (a shard agent's epoch, drawn from
# the store each time the agent joins, or joins again after the others counted it dead);
# below it, the notifier lease's. A write carries one or the other, and the store checks it
# in the write's transaction: a lease epoch against the fence (`outbox_fence`), a member
# epoch against the member's row (still that epoch, and its heartbeat younger than the
# member timeout it wrote, past which the others take its targets).
MEMBER_EPOCH_BASE = 1 << 40


@dataclass(frozen=True, slots=True)
class Member:
    """One node of a cluster as its heartbeat row says (times are the store's clock)."""

    node: str
    address: str  # where its HTTP face answers (for `dutyd cluster status` and the peer watch)
    shard: str | None  # the shard it is pinned to, None for the common pool
    started: float
    last_seen: float
    # The node's member epoch (see `MEMBER_EPOCH_BASE`): new each time it (re)joins.
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class LeaseState:
    """A named lease after an attempt to take or renew it (times are the store's clock)."""

    name: str
    holder: str  # "" when nobody ever held it
    epoch: int  # rises each time the lease changes hands (or is retaken after running out)
    acquired: float
    expires: float
    now: float  # the store's time when this was read

    def held_by(self, node: str) -> bool:
        return self.holder == node and self.expires > self.now


@dataclass(frozen=True, slots=True)
class TargetStatusRow:
    """A target's status as the node that polls it published it."""

    target: str
    node: str
    up: bool
    reason: str
    last_poll: float | None
    updated: float


@dataclass(frozen=True, slots=True)
class GroupHold:
    """Whether one member series of an `across` rule's group meets the rule's condition, as
    the node that polls the series' target sees it (what that node publishes)."""

    rule: str
    group: dict[str, str]  # the group's labels (the rule's `across.by`)
    series: dict[str, str]  # the member series' labels
    holds: bool


@dataclass(frozen=True, slots=True)
class GroupMemberRow:
    """A member series' hold as stored: which node wrote it last and when (the store's clock)."""

    rule: str
    group: dict[str, str]
    series: dict[str, str]
    holds: bool
    node: str
    updated: float


@dataclass(frozen=True, slots=True)
class NewRoomEntry:
    """One line of the machine room's entry register to be written (the store assigns the
    id): a person going in or out of a room, who they were with, why and what they carried."""

    timestamp: float
    room: str
    person: str
    direction: str  # "in" or "out"
    companions: tuple[str, ...] = ()
    purpose: str = ""
    items: str = ""  # what they carried in or out
    approved_by: str = ""  # who let in someone not on the room's approved list
    actor: str = ""  # who wrote the line (the person, or the duty engineer for a visitor)


@dataclass(frozen=True, slots=True)
class RoomEntry:
    """One line of the append-only entry register."""

    id: int
    timestamp: float
    room: str
    person: str
    direction: str
    companions: tuple[str, ...]
    purpose: str
    items: str
    approved_by: str
    actor: str


@dataclass(frozen=True, slots=True)
class EquipmentFacts:
    """What a target is, as read from it (vendor, model, serial, firmware, OS ...): one row of
    the equipment register's history, written when first read and whenever it changes."""

    id: int
    timestamp: float
    target: str
    kind: str
    facts: dict[str, str]
