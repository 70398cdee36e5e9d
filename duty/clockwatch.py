"""Steps of the system clock: seen, counted and written in the duty log, never acted on.

dutyd measures every duration on its `SteadyClock` (the wall time at start carried forward by
the monotonic clock), so a step of the system clock (NTP correcting a fast clock, a VM
restored from a snapshot, someone running `date -s`) changes nothing it decides: no alert
fires early or late, no red line is crossed, no acknowledgement expires, no page waits. What
it does change is how far dutyd's times are from the system clock's, and that is what this
module reports:

- while running, every second: the system clock moved against the monotonic clock by more
  than `JUMP_TOLERANCE` since the last look (a slewing NTP moves it by 0.5 ms a second at
  most, far below);
- at start, against the stored state. The last run's times were its steady clock's, off the
  system clock by the offset it wrote last (`daemon.stop`, or its last `clock.jump` if it
  did not stop cleanly): the restored moments are moved by that offset onto the system
  clock. If the newest stored moment is then still later than the system clock now, the
  clock went back while dutyd was stopped: they are moved back by that much too (reported as
  a step), so the elapsed times rebuilt from them (an alert's `for`, its red line, an ack's
  expiry, a queued page's retry) count the downtime as nil instead of negative. A step
  forward while dutyd was stopped cannot be told from downtime and counts as downtime.

After a step of D seconds while running, a single node (`reanchor`) takes the system clock's
time again (`SteadyClock.anchor`) and, in the same event-loop turn, moves every moment it
keeps by D (`on_step`: the rule engine's alerts, series and counts; the escalation, the
grouped and queued pages, rate limits; drills; the outbox rows' `next_at`, in the store
before the next read of what is due), so what it shows and stores is right at once and every
duration keeps what it had left. Ack links made before read on the moved clock (they name
the moves made before them), and pages keep their keys (made from the firing as it was set,
`Alert.key_at`), so a restart does not page again what was paged. Silences and maintenance
windows are not moved: their ends
are wall-clock times people set. A cluster node keeps its steady clock (its moments are shared
with nodes whose clocks were not stepped): its times stay off the system clock
(`dutyd_clock_offset_seconds`) until it restarts, when it takes the system clock's time again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dutyd.core.clock import SteadyClock
from dutyd.exporters.instrumentation import Instrumentation
from dutyd.storage import DutyLogRepository

log = logging.getLogger("dutyd.clock")

# A step smaller than this is not reported (timer jitter, a loop stalled by a slow call).
JUMP_TOLERANCE = 5.0


class ClockWatch:
    def __init__(
        self, clock: SteadyClock, metrics: Instrumentation, duty_log: DutyLogRepository
    ) -> None:
        self._clock = clock
        self._metrics = metrics
        self._log = duty_log
        self._last = clock.offset()
        # A single node takes the system clock's time again at a step (`check`), and each of
        # these moves its in-memory moments by as much, in the same event-loop turn. A cluster
        # node does not: its moments are shared with nodes whose clocks were not stepped.
        self.reanchor = False
        self.on_step: list[Callable[[float], None]] = []

    async def at_start(self) -> float:
        """Before the state is restored: by how many seconds to move the stored moments
        (see above; 0 when they are on the system clock and not in its future)."""
        newest = await self._log.read(limit=1, newest_first=True)
        if not newest:
            return 0.0
        last_run = await self._log.read(
            kinds=["daemon.start", "daemon.stop", "clock.jump"], limit=1, newest_first=True
        )
        offset = 0.0
        if last_run and last_run[0].kind != "daemon.start":
            data = last_run[0].data
            offset = float(data.get("clock_offset", data.get("offset", 0.0)) or 0.0)
        if abs(offset) > JUMP_TOLERANCE:
            log.info(
                "the last run's times were off the system clock; restored times moved onto it",
                extra={"fields": {"seconds": round(offset, 3)}},
            )
        else:
            offset = 0.0
        ahead = newest[0].timestamp + offset - self._clock.time()
        if ahead <= JUMP_TOLERANCE:
            return offset
        await self._report(-ahead, at_start=True)
        return offset - ahead

    async def check(self) -> float:
        """Look once (the daemon does every second); returns the step seen, or 0."""
        offset = self._clock.offset()
        step, self._last = offset - self._last, offset
        if abs(step) > JUMP_TOLERANCE and self.reanchor:
            # No await from here to the last move: nothing reads a moment on one clock and
            # compares it with the other's.
            self._clock.anchor(self._clock.wall())
            for move in self.on_step:
                move(offset)
            self._last = self._clock.offset()
        self._metrics.clock_offset.set(self._clock.offset())
        if abs(step) <= JUMP_TOLERANCE:
            return 0.0
        await self._report(step, at_start=False)
        return step

    async def _report(self, step: float, at_start: bool) -> None:
        direction = "forward" if step > 0 else "back"
        self._metrics.clock_jumps.labels(direction).inc()
        fields = {
            "direction": direction,
            "seconds": round(step, 3),
            "offset": round(self._clock.offset(), 3),
            "at_start": at_start,
        }
        if at_start:
            message = (
                "the system clock is behind the stored state: it was stepped back while dutyd "
                "was stopped (or dutyd's own clock was ahead of it); stored times are moved "
                "back, elapsed times count the downtime as nil"
            )
        elif self.reanchor:
            message = (
                "the system clock was stepped; durations go on on the monotonic clock "
                "(nothing fires, expires or pages because of it); dutyd's times moved onto "
                "the system clock again"
            )
        else:
            message = (
                "the system clock was stepped; durations go on on the monotonic clock "
                "(nothing fires, expires or pages because of it); the times dutyd shows and "
                "stores stay `offset` seconds off the system clock until it restarts"
            )
        log.warning(message, extra={"fields": fields})
        try:
            await self._log.append(self._clock.time(), "clock.jump", "dutyd", "", fields)
        except Exception:
            log.exception("writing the clock step to the duty log failed")
