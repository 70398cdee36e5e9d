"""Who is on duty at a given instant: pairs rotating over shifts, with overrides applied.

Shifts begin at the configured hand-over times (site local wall-clock time, via zoneinfo), so
a daily rota with one hand-over is 24 h shifts and two hand-overs make day/night shifts.
Shift number n counts from the first hand-over of `start`; its pair is `pairs[n % len]`.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass

from dutyd.notify.config import OncallConfig


@dataclass(frozen=True, slots=True)
class Shift:
    index: int
    start: dt.datetime  # aware, site time zone
    end: dt.datetime
    people: tuple[str, ...]  # after overrides
    scheduled: tuple[str, ...]  # before overrides
    notes: tuple[str, ...] = ()  # "Li Na -> Zhao Min (annual leave)"


class Rota:
    def __init__(self, config: OncallConfig) -> None:
        self.config = config
        self.tz = zoneinfo.ZoneInfo(config.timezone)
        self._times = [dt.time.fromisoformat(h) for h in config.handovers]

    def _boundary(self, index: int) -> dt.datetime:
        per_day = len(self._times)
        day, slot = divmod(index, per_day)
        date = self.config.start + dt.timedelta(days=day)
        return dt.datetime.combine(date, self._times[slot], tzinfo=self.tz)

    def _index_at(self, when: dt.datetime) -> int:
        local = when.astimezone(self.tz)
        per_day = len(self._times)
        days = (local.date() - self.config.start).days
        # The candidate a day either side covers wall-clock times before the first hand-over.
        index = (days + 1) * per_day
        while self._boundary(index) > local:
            index -= 1
        return index

    def shift_at(self, when: dt.datetime | float) -> Shift:
        if isinstance(when, int | float):
            when = dt.datetime.fromtimestamp(when, self.tz)
        return self.shift(self._index_at(when))

    def shift(self, index: int) -> Shift:
        start, end = self._boundary(index), self._boundary(index + 1)
        pairs = self.config.pairs
        scheduled = tuple(pairs[index % len(pairs)]) if pairs else ()
        people = list(scheduled)
        notes = []
        for o in self.config.overrides:
            o_start = o.start if o.start.tzinfo else o.start.replace(tzinfo=self.tz)
            o_end = o.end if o.end.tzinfo else o.end.replace(tzinfo=self.tz)
            # An override applies to a shift it overlaps at the shift's start or wholly covers;
            # partial cover is still "who is paged now", which `on_duty` answers per instant.
            if o_start <= start < o_end and o.replace in people:
                people[people.index(o.replace)] = o.by
                notes.append(f"{o.replace} -> {o.by}" + (f" ({o.reason})" if o.reason else ""))
        return Shift(index, start, end, tuple(people), scheduled, tuple(notes))

    def on_duty(self, when: float) -> tuple[str, ...]:
        """The people to page at `when` (overrides that start mid-shift apply from their start)."""
        moment = dt.datetime.fromtimestamp(when, self.tz)
        shift = self.shift_at(moment)
        people = list(shift.scheduled)
        for o in self.config.overrides:
            o_start = o.start if o.start.tzinfo else o.start.replace(tzinfo=self.tz)
            o_end = o.end if o.end.tzinfo else o.end.replace(tzinfo=self.tz)
            if o_start <= moment < o_end and o.replace in people:
                people[people.index(o.replace)] = o.by
        return tuple(people)

    def now_and_next(self, when: float) -> tuple[Shift, Shift]:
        current = self.shift_at(when)
        return current, self.shift(current.index + 1)

    def role(self, name: str) -> tuple[str, ...]:
        return tuple(self.config.roles.get(name, ()))
