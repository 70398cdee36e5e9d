"""The mute policy: which overlay holds an alert's events back, and how much of an outage
counts toward its red line.

The overlays themselves (silences, maintenance windows, target dependencies) are the data types
of `rules.overlays`; this module keeps the live set of them and answers the questions the engine
and the views ask. Changes go through its methods (the engine exposes them), never through its
dicts, so a listing and a mute decision always see the same overlays.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from dutyd.core.records import AlertState
from dutyd.rules.alerts import Alert
from dutyd.rules.overlays import Dependencies, MaintenanceWindow, Silence, excluded_seconds

# Windows from the config file carry this id prefix; a reload replaces them, ad hoc ones stay.
CONFIG_WINDOW_PREFIX = "config:"
# How the mute reasons of a dependency begin (the daemon polls the awaited parents).
PARENT_DOWN = "parent "
WAITING_FOR_PARENT = "waiting for parent "


class MutePolicy:
    def __init__(self, parents: Mapping[str, Iterable[str]] | None = None) -> None:
        self.deps = Dependencies()
        self.set_parents(parents or {})
        self._silences: dict[str, Silence] = {}
        self._windows: dict[str, MaintenanceWindow] = {}

    # -- the overlays ---------------------------------------------------------------------------

    @property
    def silences(self) -> Mapping[str, Silence]:
        return MappingProxyType(self._silences)

    @property
    def windows(self) -> Mapping[str, MaintenanceWindow]:
        return MappingProxyType(self._windows)

    def set_parents(self, parents: Mapping[str, Iterable[str]]) -> None:
        self.deps.parents = {t: tuple(p) for t, p in parents.items() if p}

    def set_answer_within(self, within: Mapping[str, float]) -> None:
        self.deps.answer_within = dict(within)

    def note_target(self, target: str, up: bool, at: float | None = None) -> None:
        self.deps.note(target, up, at)

    def awaited_parents(self, alert: Alert, depends_on: Iterable[str], now: float) -> list[str]:
        """The parents a child's alert that has not paged yet still waits for: those that have
        not answered since its trouble was seen, while the wait for them lasts (from when its
        firing was due; an unanswered parent never holds a page longer than that)."""
        if alert.notified is AlertState.FIRING or alert.observed_at is None:
            return []
        deps = self.deps
        waiting = deps.unanswered(alert.label("target"), depends_on, alert.observed_at)
        due = alert.fired_at if alert.fired_at is not None else now
        return [p for p in waiting if now < due + deps.answer_within.get(p, 0.0)]

    def replace_stored(
        self, silences: Iterable[Silence], windows: Iterable[MaintenanceWindow]
    ) -> None:
        self._silences = {s.id: s for s in silences}
        self._windows = {
            **{k: w for k, w in self._windows.items() if k.startswith(CONFIG_WINDOW_PREFIX)},
            **{w.id: w for w in windows},
        }

    def add_silence(self, silence: Silence) -> None:
        self._silences[silence.id] = silence

    def end_silence(self, silence_id: str) -> Silence | None:
        """Remove a silence; returns it, or None when there was none of this id."""
        return self._silences.pop(silence_id, None)

    def add_window(self, window: MaintenanceWindow) -> None:
        self._windows[window.id] = window

    def end_window(self, window_id: str, now: float) -> MaintenanceWindow | None:
        """Close a window at `now`; it stays known, so the outage time it covered keeps
        being excluded from red lines. Returns it, or None when there was none of this id."""
        window = self._windows.get(window_id)
        if window is not None:
            window.end = min(window.end, now)
        return window

    def forget_expired(self, now: float, windows_before: float) -> int:
        """Silences over at `now` and ad hoc one-off windows that ended before
        `windows_before` (no active alert's outage reaches back to them) leave memory; the
        store keeps them for the retention time. Returns how many left."""
        silences = [k for k, s in self._silences.items() if s.until <= now]
        for k in silences:
            del self._silences[k]
        windows = [
            k
            for k, w in self._windows.items()
            if w.every is None and w.end < windows_before and not k.startswith(CONFIG_WINDOW_PREFIX)
        ]
        for k in windows:
            del self._windows[k]
        return len(silences) + len(windows)

    def adopt(self, old: MutePolicy) -> None:
        """After a config reload: the target states, silences and ad hoc windows carry over;
        windows from the config come from the new config."""
        self.deps.up = old.deps.up
        self.deps.answered = old.deps.answered
        self._silences = old._silences
        self._windows.update(
            (k, w) for k, w in old._windows.items() if not k.startswith(CONFIG_WINDOW_PREFIX)
        )

    # -- the questions --------------------------------------------------------------------------

    def reason(self, alert: Alert, depends_on: Iterable[str], now: float) -> str:
        """Why this alert's events must not page anyone now ("" when they may)."""
        for window in self._windows.values():
            if window.covers(alert.labels) and window.open_at(now):
                return f"maintenance: {window.reason}"
        parent = self.deps.down_ancestor(alert.label("target"), depends_on)
        if parent:
            return f"{PARENT_DOWN}{parent} is down"
        awaited = self.awaited_parents(alert, depends_on, now)
        if awaited:
            return f"{WAITING_FOR_PARENT}{awaited[0]} to answer"
        for silence in self._silences.values():
            if silence.applies(alert.labels, now):
                return f"silenced by {silence.actor}: {silence.reason}"
        if alert.flapping:
            return "flapping"
        return ""

    def silenced_by(self, alert: Alert, now: float) -> list[str]:
        return [s.id for s in self._silences.values() if s.applies(alert.labels, now)]

    def maintenance_of(self, alert: Alert, now: float) -> list[str]:
        return [w.id for w in self._windows.values() if w.covers(alert.labels) and w.open_at(now)]

    def outage(self, alert: Alert, now: float) -> float:
        """How long the alert has been active, minus time inside maintenance windows."""
        if alert.active_since is None:
            return 0.0
        span = max(0.0, now - alert.active_since)
        if not self._windows:
            return span
        return span - excluded_seconds(
            self._windows.values(), alert.labels, alert.active_since, now
        )
