"""What decides whether an alert event pages someone: silences, maintenance windows and
target dependencies. None of them changes an alert's state; they only mute its events.

- A silence (matchers, until, actor, reason) mutes matching alerts until it ends or is removed.
- A maintenance window (targets and/or matchers, start, end, optional `every` repeat, reason)
  mutes matching alerts while it is open, and the outage time inside it does not count toward
  a red line (the duty documents exclude force majeure and planned work).
- A dependency (a target's `depends_on`, or a rule's) mutes an alert while a parent target, or
  any ancestor, is down: one core switch outage gives one page, not one per server behind it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from dutyd.core.records import Labels
from dutyd.rules.matchers import Compiled, compile_matchers, describe, label_of, matches

# A repeating window is walked occurrence by occurrence; this bounds the walk.
MAX_OCCURRENCES = 100_000


@dataclass(slots=True)
class Silence:
    id: str
    matchers: Compiled
    until: float
    actor: str
    reason: str
    created: float

    def applies(self, labels: Labels, now: float) -> bool:
        return now < self.until and matches(self.matchers, labels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": {k: m.to_data() for k, m in self.matchers},
            "selector": describe(self.matchers),
            "until": self.until,
            "actor": self.actor,
            "reason": self.reason,
            "created": self.created,
        }


@dataclass(slots=True)
class MaintenanceWindow:
    id: str  # a number for ad hoc windows, "config:<name>" for scheduled ones
    targets: frozenset[str]
    matchers: Compiled
    start: float
    end: float
    reason: str
    actor: str = ""
    every: float | None = None
    name: str = ""

    def covers(self, labels: Labels) -> bool:
        if self.targets and label_of(labels, "target") not in self.targets:
            return False
        return matches(self.matchers, labels)

    def occurrences(self, a: float, b: float) -> Iterable[tuple[float, float]]:
        """The window's open spans that overlap [a, b)."""
        if self.every is None:
            if self.start < b and self.end > a:
                yield self.start, self.end
            return
        length = self.end - self.start
        k = max(0, int((a - self.end) // self.every))
        for _ in range(MAX_OCCURRENCES):
            s = self.start + k * self.every
            if s >= b:
                return
            if s + length > a:
                yield s, s + length
            k += 1

    def open_at(self, now: float) -> bool:
        return any(True for _ in self.occurrences(now, now + 1e-9))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "targets": sorted(self.targets),
            "matchers": {k: m.to_data() for k, m in self.matchers},
            "start": self.start,
            "end": self.end,
            "every": self.every,
            "reason": self.reason,
            "actor": self.actor,
        }


def maintenance_window_from_data(id: str, data: Mapping[str, Any]) -> MaintenanceWindow:
    return MaintenanceWindow(
        id=id,
        targets=frozenset(data.get("targets") or ()),
        matchers=compile_matchers(data.get("matchers") or {}),
        start=float(data["start"]),
        end=float(data["end"]),
        reason=str(data.get("reason", "")),
        actor=str(data.get("actor", "")),
        every=data.get("every"),
        name=str(data.get("name", "")),
    )


def excluded_seconds(
    windows: Iterable[MaintenanceWindow], labels: Labels, a: float, b: float
) -> float:
    """Seconds of [a, b) inside any window covering `labels` (overlapping windows once)."""
    spans = sorted(
        (max(s, a), min(e, b)) for w in windows if w.covers(labels) for s, e in w.occurrences(a, b)
    )
    total, cur_s, cur_e = 0.0, None, None
    for s, e in spans:
        if cur_e is None or s > cur_e:
            if cur_e is not None and cur_s is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None and cur_s is not None:
        total += cur_e - cur_s
    return total


@dataclass(slots=True)
class Dependencies:
    """Target parents (from `depends_on`) and the latest `target_up` of every target: whether
    it answered, and when the poll that said so ended (`answered`; its start where the end
    is not known)."""

    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    up: dict[str, bool] = field(default_factory=dict)
    answered: dict[str, float] = field(default_factory=dict)
    # Per parent: how long a child's alert waits for that parent's answer (its poll out of
    # turn, bounded by its timeout) before it pages anyway.
    answer_within: dict[str, float] = field(default_factory=dict)

    def note(self, target: str, up: bool, at: float | None) -> None:
        self.up[target] = up
        if at is not None and at >= self.answered.get(target, at):
            self.answered[target] = at

    def shift(self, seconds: float) -> None:
        """Move the answers by `seconds` (the clock re-anchored, see `RuleEngine.shift`):
        compared with the alerts' `observed_at`, moved as much."""
        self.answered = {t: at + seconds for t, at in self.answered.items()}

    def unanswered(self, target: str, extra: Iterable[str], since: float) -> list[str]:
        """The parents of `target` (and the rule's own `extra` parents) that have not
        answered a poll that ended at or after `since` (when the poll that saw the child's trouble
        ended)."""
        parents = dict.fromkeys([*self.parents.get(target, ()), *extra])
        return [p for p in parents if p != target and self.answered.get(p, -1.0) < since]

    def down_ancestor(self, target: str, extra: Iterable[str] = ()) -> str:
        """The nearest parent (or ancestor) of `target`, or of the rule's own `extra` parents,
        that is down; "" when none is."""
        return next((p for p in self.ancestors(target, extra) if self.up.get(p) is False), "")

    def ancestors(self, target: str, extra: Iterable[str] = ()) -> Iterator[str]:
        """The parents of `target` (and `extra`), then theirs, nearest first, each once."""
        queue = [*self.parents.get(target, ()), *extra]
        seen = {target}
        i = 0
        while i < len(queue):
            parent = queue[i]
            i += 1
            if parent in seen:
                continue
            seen.add(parent)
            yield parent
            queue.extend(self.parents.get(parent, ()))
