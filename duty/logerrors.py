"""The weekly log review's figures, kept by themselves: each server's journal entries of priority
err and above per day, read over its SSH connection on the daily polls
(`collectors/ssh/journal.py`).

Kept in the machine-room log (the duty log, on either store), written by the active node only
and fenced by its epoch like the other register lines:

- `journal.errors` with `from`/`to` (the window read, UTC epoch), `capped` (the reading hit
  journalctl's line cap: its counts are lower bounds), `tz` and per day of the window in the
  site's zone the count and the most frequent sources (`top`, `TOP_SOURCES` of them);
- `journal.errors` with `problem` instead (and the window it tried): the journal could not be
  read (journalctl missing, no access to the system journal, killed at its timeout), written
  when the reason changes.

Windows do not overlap: a reading's window starts where the last recorded one ended (read
back from the store before each write), so the collector reading a week again after a
restart, or a node taking over the lease, counts nothing twice.
`dutyd report --register software` (`duty/registers.py`) shows the days of its period.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dutyd.collectors.ssh.journal import JournalReading
from dutyd.core.clock import SYSTEM_CLOCK, Clock
from dutyd.duty.recorder import RegisterRecorder
from dutyd.storage import FencedOut, LogEntry, Storage

log = logging.getLogger("dutyd.logerrors")

KIND = "journal.errors"
TOP_SOURCES = 3


class ServerErrorsRegister(RegisterRecorder):
    def __init__(
        self,
        storage: Storage,
        tz: Callable[[], str] = lambda: "UTC",
        clock: Clock = SYSTEM_CLOCK,
        active: Callable[[], bool] = lambda: True,
        fence: Callable[[], int | None] = lambda: None,
    ) -> None:
        super().__init__(storage, clock, active, fence)
        self._tz = tz
        # target -> the end of the last window recorded; the last problem recorded since.
        self.covered: dict[str, float] = {}
        self.problem: dict[str, str] = {}

    async def start(self) -> None:
        for e in await self._storage.log.read(kinds=[KIND], limit=None):
            self._note(e.subject, e.data)

    async def _refresh(self, target: str) -> None:
        """The target's recorded windows as the store has them now: in a cluster the node
        that held the lease before may have recorded some since this one started (once a day
        per server, a few hundred rows a year)."""
        entries = await self._storage.log.read(kinds=[KIND], subject=target, limit=None)
        self.covered.pop(target, None)
        self.problem.pop(target, None)
        for e in entries:
            self._note(target, e.data)

    def _note(self, target: str, data: dict[str, Any]) -> None:
        if (problem := data.get("problem")) is not None:
            self.problem[target] = str(problem)
        else:
            self.covered[target] = max(self.covered.get(target, 0.0), float(data["to"]))
            self.problem.pop(target, None)

    def observe(self, target: str, reading: JournalReading) -> None:
        """A daily poll's reading (called by the daemon after the poll): recorded off its path."""
        if not self._active():
            return
        self._spawn(self._record(target, reading, self._clock.time()))

    async def _record(self, target: str, reading: JournalReading, now: float) -> None:
        try:
            async with self._lock:
                await self._refresh(target)
                data = self._data(target, reading)
                if data is None:
                    return
                await self._storage.log.append(now, KIND, "dutyd", target, data, self._fence())
                self._note(target, data)
        except FencedOut:
            log.debug("register lines refused: another node holds the notifier lease")
        except Exception:
            # A full disk must not stop the polls; the next daily reading tries again.
            log.exception("recording the servers' journal errors failed")

    def _data(self, target: str, reading: JournalReading) -> dict[str, Any] | None:
        if reading.problem is not None:
            if self.problem.get(target) == reading.problem:
                return None
            log.warning(
                "journal not read",
                extra={"fields": {"target": target, "reason": reading.problem}},
            )
            return {"problem": reading.problem, "from": reading.since, "to": reading.until}
        start = max(reading.since, self.covered.get(target, reading.since))
        if reading.until <= start:
            return None
        zone = zoneinfo.ZoneInfo(self._tz())
        counts: dict[str, Counter[str]] = {}
        for error in reading.errors:
            if start <= error.at < reading.until:
                day = dt.datetime.fromtimestamp(error.at, zone).strftime("%Y-%m-%d")
                counts.setdefault(day, Counter())[error.source] += 1
        days = {
            day: {
                "count": sum(per.values()),
                "top": [[source, n] for source, n in per.most_common(TOP_SOURCES)],
            }
            for day, per in sorted(counts.items())
        }
        return {
            "from": start,
            "to": reading.until,
            "capped": reading.capped,
            "tz": self._tz(),
            "days": days,
        }


@dataclass(slots=True)
class DayErrors:
    """One server's errors on one day of a register: `read` the seconds of the day some
    reading covered (0: not read), `count` and `top` what those readings found."""

    read: float = 0.0
    first: float | None = None
    last: float | None = None
    count: int = 0
    top: Counter[str] | None = None
    capped: bool = False
    problem: str | None = None


def per_day(
    entries: list[LogEntry], days: list[tuple[str, float, float]]
) -> dict[tuple[str, str], DayErrors]:
    """(day, target) -> what the `journal.errors` entries say of that day; `days` are the
    register's (date, start, end) in the site's zone. A day no reading covered carries the
    reason the readings failed meanwhile (`_reason`)."""
    windows: dict[str, list[dict[str, Any]]] = {}
    order: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        order.setdefault(e.subject, []).append(e.data)
        if "problem" not in e.data:
            windows.setdefault(e.subject, []).append(e.data)
    result: dict[tuple[str, str], DayErrors] = {}
    for target in sorted(order):
        for date, lo, hi in days:
            day = DayErrors()
            for w in windows.get(target, []):
                a, b = max(lo, float(w["from"])), min(hi, float(w["to"]))
                if a >= b:
                    continue
                day.read += b - a
                day.first = a if day.first is None else min(day.first, a)
                day.last = b if day.last is None else max(day.last, b)
                day.capped = day.capped or bool(w.get("capped"))
                found = (w.get("days") or {}).get(date)
                if found:
                    day.count += int(found.get("count", 0))
                    day.top = (day.top or Counter()) + Counter(
                        {str(s): int(n) for s, n in found.get("top") or []}
                    )
            if not day.read:
                day.problem = _reason(order.get(target, []), hi)
            result[(date, target)] = day
    return result


def _reason(entries: list[dict[str, Any]], end: float) -> str | None:
    """Why a day ending at `end` was not read: the problem of the last reading that tried from
    before `end` and failed, unless a good reading came after it (then the day was lost some
    other way: dutyd down for longer than a reading reaches back)."""
    reason: str | None = None
    for data in entries:
        if float(data.get("from", 0.0)) < end:
            reason = str(data["problem"]) if "problem" in data else None
    return reason
