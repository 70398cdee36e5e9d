"""Records as table rows, the same for every store: the column order and JSON encoding that
the SQLite and PostgreSQL repositories both write (their SQL differs, their rows do not)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from dutyd.storage.records import (
    EquipmentFacts,
    GroupHold,
    GroupMemberRow,
    NewLogEntry,
    NewRoomEntry,
    OutboxMessage,
    RoomEntry,
    StoredAlert,
)

# A delivery error kept with a queued message is cut to this many characters.
LAST_ERROR_MAX = 500


def to_json(data: object) -> str:
    return json.dumps(data, ensure_ascii=False, sort_keys=True, default=str)


def alert_row(alert: StoredAlert) -> tuple[object, ...]:
    """fingerprint, rule, labels, severity, state, active_since, fired_at, resolved_at, value,
    summary, extra."""
    return (
        alert.fingerprint,
        alert.rule,
        to_json(alert.labels),
        alert.severity,
        alert.state,
        alert.active_since,
        alert.fired_at,
        alert.resolved_at,
        alert.value,
        alert.summary,
        to_json(alert.extra),
    )


def message_row(m: OutboxMessage) -> tuple[object, ...]:
    """id, recipient, kind, channel, fallbacks, payload, attempts, channel_failures, created,
    next_at, last_error."""
    return (
        m.id,
        m.recipient,
        m.kind,
        m.channel,
        json.dumps(m.fallbacks),
        json.dumps(m.payload, ensure_ascii=False),
        m.attempts,
        m.channel_failures,
        m.created,
        m.next_at,
        m.last_error[:LAST_ERROR_MAX],
    )


def log_row(entry: NewLogEntry) -> tuple[float, str, str, str, str]:
    """ts, kind, actor, subject, data."""
    return (entry.timestamp, entry.kind, entry.actor, entry.subject, to_json(entry.data))


def group_hold_rows(holds: Sequence[GroupHold]) -> list[tuple[str, str, str, bool]]:
    """rule, group_key, series_key, holds; one per key (the last given wins), sorted by key, so
    nodes writing overlapping keys at once take the row locks in the same order (no deadlock)."""
    rows = {(h.rule, to_json(h.group), to_json(h.series)): h.holds for h in holds}
    return [(*key, held) for key, held in sorted(rows.items())]


def group_member(
    rule: str, group_key: str, series_key: str, holds: object, node: str, updated: float
) -> GroupMemberRow:
    return GroupMemberRow(
        rule, json.loads(group_key), json.loads(series_key), bool(holds), node, float(updated)
    )


def room_entry_row(e: NewRoomEntry) -> tuple[object, ...]:
    """ts, room, person, direction, companions, purpose, items, approved_by, actor."""
    if e.direction not in ("in", "out"):
        raise ValueError(f"direction must be in or out, not {e.direction!r}")
    return (
        e.timestamp,
        e.room,
        e.person,
        e.direction,
        to_json(list(e.companions)),
        e.purpose,
        e.items,
        e.approved_by,
        e.actor,
    )


# The columns `room_entry` reads, in its order.
ROOM_ENTRY_COLUMNS = (
    "id, ts, room, person, direction, companions, purpose, items, approved_by, actor"
)


def room_entry(row: Sequence[object]) -> RoomEntry:
    return RoomEntry(
        int(row[0]),  # type: ignore[call-overload]
        float(row[1]),  # type: ignore[arg-type]
        str(row[2]),
        str(row[3]),
        str(row[4]),
        tuple(json.loads(str(row[5]))),
        str(row[6]),
        str(row[7]),
        str(row[8]),
        str(row[9]),
    )


EQUIPMENT_COLUMNS = "id, ts, target, kind, facts"


def equipment_facts(row: Sequence[object]) -> EquipmentFacts:
    return EquipmentFacts(
        int(row[0]),  # type: ignore[call-overload]
        float(row[1]),  # type: ignore[arg-type]
        str(row[2]),
        str(row[3]),
        dict(json.loads(str(row[4]))),
    )


def member_refusal(epoch: int, row: Sequence[object] | None) -> str:
    """Why a write fenced by a member epoch is refused ("" when it is not), given the row of
    that epoch (node, seconds since its heartbeat, stale_after) or None (there is none)."""
    if row is None:
        return (
            f"write of member epoch {epoch} refused: the node has joined again since "
            "(a new epoch) or left"
        )
    node, age, stale_after = str(row[0]), float(row[1]), float(row[2])  # type: ignore[arg-type]
    if stale_after > 0 and age >= stale_after:
        return (
            f"write of member epoch {epoch} refused: node {node} has been silent {age:.1f}s, "
            f"past its member timeout ({stale_after:g}s): its targets are another node's"
        )
    return ""
