"""Event counts for `events` rules: counter increases (resets handled) kept in a sliding window
per series, and the increases not yet written to storage, so a 365-day count survives restarts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dutyd.core.records import Labels
from dutyd.rules.compiled import CompiledRule, SeriesState

# (rule, series, timestamp, increment, counter value)
CountedRow = tuple[str, Labels, float, float, float]


class EventCounts:
    def __init__(self) -> None:
        self._unsaved: list[CountedRow] = []

    @property
    def unsaved(self) -> list[CountedRow]:
        """Increases (and first-sight baselines) not yet handed to storage, oldest first."""
        return list(self._unsaved)

    def take_unsaved(self) -> list[CountedRow]:
        """Hand the unsaved rows over (to be written) and forget them."""
        rows, self._unsaved = self._unsaved, []
        return rows

    def put_back(self, rows: list[CountedRow]) -> None:
        """Rows taken that could not be written (a full disk): first in line again."""
        self._unsaved = rows + self._unsaved

    def shift(self, seconds: float) -> None:
        """Move the unsaved rows' moments (the clock re-anchored, see `RuleEngine.shift`)."""
        self._unsaved = [(r, s, ts + seconds, inc, v) for r, s, ts, inc, v in self._unsaved]

    def adopt(self, old: EventCounts) -> None:
        self._unsaved = old._unsaved

    def note(
        self,
        rule: CompiledRule,
        series: Labels,
        st: SeriesState,
        prev: float | None,
        raw: float,
        now: float,
    ) -> None:
        """A new reading of an `events` rule's counter."""
        if prev is None:
            # First sight of the counter: its value so far is a baseline, not new events
            # (stored, so the next start compares with it).
            self._unsaved.append((rule.name, series, now, 0.0, raw))
            return
        if raw == prev:
            return
        inc = raw - prev if raw > prev else raw  # below the last value: the counter reset
        if inc > 0:
            st.events.append((now, inc))
        self._unsaved.append((rule.name, series, now, max(inc, 0.0), raw))

    @staticmethod
    def count(rule: CompiledRule, st: SeriesState, now: float) -> float:
        """The increases inside the rule's window, after dropping those that left it."""
        ev = rule.config.events
        assert ev is not None
        cutoff = now - ev.over
        while st.events and st.events[0][0] < cutoff:
            st.events.popleft()
        return sum(inc for _, inc in st.events)

    @staticmethod
    def restore(rules: Mapping[str, CompiledRule], rows: Iterable[CountedRow]) -> None:
        """Take back stored counter increases, oldest first."""
        for name, series, ts, inc, raw in rows:
            rule = rules.get(name)
            if rule is None or rule.config.events is None:
                continue
            st = rule.series_state(series)
            if inc > 0:
                st.events.append((ts, inc))
            st.last_raw = raw
