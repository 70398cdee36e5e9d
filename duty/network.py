"""The network status register's data: each watched switch port's outages and its error and
discard counts per day, from the SNMP switch polls (`if_oper_up`, `if_*_errors_total`,
`if_*_discards_total`). The ports are those a target watches (`ports` / `port_pattern`: set
them to the uplinks and the ports that carry one).

Written to the machine-room log (the duty log, on either store) by the active node only:

- `port.down` / `port.up`: a watched port's ifOperStatus left or came back to up (a port first
  seen down is down from then);
- `port.counters`: at the first poll of each day (in the site's zone), the day before's error
  and discard counts per port (the counters' growth from the first poll of that day this
  daemon saw, after a restart from then, to the next day's first poll; a day the daemon was
  down at its end is not written).

`dutyd report --register network` (`duty/registers.py`) reads them back per day and port.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from collections.abc import Callable, Sequence
from typing import Any

from dutyd.core.clock import SYSTEM_CLOCK, Clock
from dutyd.core.records import Sample
from dutyd.duty.recorder import RegisterRecorder
from dutyd.storage import FencedOut, Storage

log = logging.getLogger("dutyd.network")

DOWN = "port.down"
UP = "port.up"
COUNTERS = "port.counters"
KINDS = (DOWN, UP, COUNTERS)

# Sample name -> the count it adds to.
_COUNTED = {
    "if_in_errors_total": "errors",
    "if_out_errors_total": "errors",
    "if_in_discards_total": "discards",
    "if_out_discards_total": "discards",
}


class NetworkRegister(RegisterRecorder):
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
        self.up: dict[tuple[str, str], bool] = {}
        # target -> (its current day, per port the counts at that day's first poll)
        self.day_start: dict[str, tuple[str, dict[str, dict[str, float]]]] = {}

    async def start(self) -> None:
        # The ports' last state, so that a restart does not log them again.
        for e in await self._storage.log.read(kinds=[DOWN, UP], limit=None):
            self.up[(e.subject, str(e.data.get("port", "")))] = e.kind == UP

    def observe(self, target: str, samples: Sequence[Sample], at: float) -> None:
        """A successful poll's samples (called by the daemon after each poll)."""
        if not self._active():
            return
        oper: dict[str, bool] = {}
        counts: dict[str, dict[str, float]] = {}
        for s in samples:
            name = s.name
            if name == "if_oper_up":
                if port := s.label("port"):
                    oper[port] = s.value == 1.0
            elif (what := _COUNTED.get(name)) is not None and (port := s.label("port")):
                per = counts.setdefault(port, {})
                per[what] = per.get(what, 0.0) + s.value
        if not oper and not counts:
            return
        entries: list[tuple[str, str, dict[str, Any]]] = []
        for port, up in oper.items():
            before = self.up.get((target, port))
            self.up[(target, port)] = up
            if (before is None and up) or before == up:
                continue
            kind = UP if up else DOWN
            note = f"{target} {port}: {'up' if up else 'down'}"
            entries.append((kind, target, {"target": target, "port": port, "note": note}))
        day = dt.datetime.fromtimestamp(at, zoneinfo.ZoneInfo(self._tz())).strftime("%Y-%m-%d")
        known = self.day_start.get(target)
        if known is None or known[0] != day:
            if known is not None:
                ports = {
                    port: {
                        what: max(0.0, now.get(what, 0.0) - known[1][port].get(what, 0.0))
                        for what in ("errors", "discards")
                    }
                    for port, now in counts.items()
                    if port in known[1]
                }
                entries.append((COUNTERS, target, {"day": known[0], "ports": ports}))
            self.day_start[target] = (day, counts)
        if entries:
            self._spawn(self._write(entries, at))

    async def _write(self, entries: list[tuple[str, str, dict[str, Any]]], at: float) -> None:
        try:
            async with self._lock:
                for kind, subject, data in entries:
                    await self._storage.log.append(at, kind, "dutyd", subject, data, self._fence())
        except FencedOut:
            log.debug("register lines refused: another node holds the notifier lease")
        except Exception:
            log.exception("recording the network status register failed")
