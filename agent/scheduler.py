"""The scheduler: polls every target at its interval, isolated from every other target.

Each target has its own task. Phases are spread by a stable hash of the target's name, so a
thousand targets sharing an interval do not fire at once and keep their slot across restarts.
Every poll runs under the target's timeout; a global semaphore bounds polls in flight; a
failed poll becomes `target_up = 0` with a reason here, and nowhere else. Out of turn, without
moving a target off its grid: `poll_now` polls it at once and returns the result (a child
failed and its parents must be checked; `poll_apart` for a parent another node schedules);
`request_poll` asks for a poll soon, coalescing a storm of requests (a trap arrived). Time
comes from the injected `Clock`.

A poll never outlives its timeout by more than `POLL_CANCEL_GRACE`, whatever the collector
does: the collector runs in a task of its own, which the scheduler waits for (never inside
it) up to the timeout, then cancels, then waits at most the grace. A collector that swallows
the cancellation or is stuck where cancelling does not reach is abandoned: the poll is a
timeout, the task is kept (not awaited) until it ends, and while it runs the target's next
polls are timeouts at once rather than a pile of stuck tasks. A collector blocked in an
executor thread ends at the cancel (the thread's result is dropped when it comes; the
thread itself stays busy until the blocking call returns, which is why blocking libraries
are given timeouts of their own).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from dutyd.collectors.base import Collector, Readings, TargetConfig
from dutyd.core.clock import SYSTEM_CLOCK, Clock
from dutyd.core.errors import CollectError, TargetTimeout
from dutyd.core.records import Sample

log = logging.getLogger("dutyd.scheduler")


@dataclass(frozen=True, slots=True)
class PollResult:
    target: str
    kind: str
    samples: list[Sample]
    ok: bool
    reason: str
    message: str
    started_at: float
    duration: float
    lag: float


PollSink = Callable[[PollResult], None]

# A poll still running this long after its collector was cancelled at the timeout is
# abandoned and reported as a timeout (see the module docstring).
POLL_CANCEL_GRACE = 0.5
# Seconds over which targets' first polls are spread after a start or a reload.
FIRST_POLL_SPREAD = 10.0
# A requested poll comes at least this long after the target's last one (a trap storm must
# not turn into back-to-back polls of a struggling device).
POLL_NOW_MIN_GAP = 1.0


def phase_of(name: str, interval: float) -> float:
    """A stable offset in [0, interval) derived from the target's name."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * interval


def target_labels(config: TargetConfig) -> dict[str, str]:
    return {**config.labels, "target": config.name, "kind": config.kind}


class Scheduler:
    def __init__(
        self, sink: PollSink, max_in_flight: int = 256, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._collectors: dict[str, Collector] = {}
        # One poll of a target at a time: collectors keep a connection between polls.
        self._busy: dict[str, asyncio.Lock] = {}
        self._wake: dict[str, asyncio.Event] = {}
        # Collect tasks that did not end when cancelled, by target (kept so they are not
        # garbage-collected while pending, and so a target has at most one).
        self._stuck: dict[str, asyncio.Task[None]] = {}

    @property
    def collectors(self) -> dict[str, Collector]:
        return dict(self._collectors)

    def collector(self, name: str) -> Collector | None:
        """The running collector of a target (no copy: asked after every poll)."""
        return self._collectors.get(name)

    def start(self, collector: Collector) -> None:
        name = collector.config.name
        if name in self._tasks:
            raise ValueError(f"target {name!r} is already scheduled")
        self._collectors[name] = collector
        self._busy[name] = asyncio.Lock()
        self._wake[name] = asyncio.Event()
        self._tasks[name] = asyncio.create_task(self._run(collector), name=f"poll:{name}")

    def request_poll(self, name: str) -> bool:
        """Poll target `name` as soon as possible, out of its schedule (its regular slots
        stay). Requests made while one is pending are one poll; a request during a poll gets
        one more after it, at least POLL_NOW_MIN_GAP after the last start. False when no
        such target is scheduled."""
        wake = self._wake.get(name)
        if wake is None:
            return False
        wake.set()
        return True

    async def poll_now(self, name: str) -> PollResult | None:
        """Poll `name` at once, out of turn, and hand the result to the sink as usual.

        Returns None for a target that is not scheduled. The target's grid does not move.
        """
        collector = self._collectors.get(name)
        if collector is None:
            return None
        return await self._poll_and_sink(collector, None)

    async def poll_apart(self, collector: Collector) -> PollResult:
        """Poll a target this scheduler does not schedule, once, and close its collector: a
        parent another node of the cluster polls. The result goes to the caller only, not to
        the sink (the target's rules and alerts are its owner's)."""
        try:
            async with self._slots:
                return await self.poll_once(collector)
        finally:
            await _close_quietly(collector)

    async def _poll_and_sink(self, collector: Collector, scheduled_at: float | None) -> PollResult:
        async with self._busy[collector.config.name], self._slots:
            result = await self.poll_once(collector, scheduled_at)
            try:
                self._sink(result)
            except Exception:
                log.exception("handling the poll result of %s failed", collector.config.name)
        return result

    async def remove(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        collector = self._collectors.pop(name, None)
        self._busy.pop(name, None)
        self._wake.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if collector is not None:
            await _close_quietly(collector)

    async def stop(self) -> None:
        """Cancel every poll, then close all collectors at once (shutdown must take < 5 s)."""
        tasks, self._tasks = list(self._tasks.values()), {}
        collectors, self._collectors = list(self._collectors.values()), {}
        self._busy = {}
        self._wake = {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stuck in self._stuck.values():
            stuck.cancel()  # once more; never awaited (it ignored the last one)
        await asyncio.gather(*(_close_quietly(c) for c in collectors))

    async def poll_once(
        self, collector: Collector, scheduled_at: float | None = None
    ) -> PollResult:
        cfg = collector.config
        started_mono = self._clock.monotonic()
        lag = max(0.0, started_mono - scheduled_at) if scheduled_at is not None else 0.0
        readings = Readings(target_labels(cfg), self._clock.time())
        ok, reason, message = True, "", ""
        try:
            await self._collect_bounded(collector, readings)
        except _Abandoned as exc:
            ok, reason, message = False, TargetTimeout.reason, str(exc)
        except TimeoutError:
            ok, reason = False, TargetTimeout.reason
            message = f"no answer within {cfg.timeout:g}s"
        except CollectError as exc:
            ok, reason, message = False, exc.reason, exc.message
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A collector bug must not take the daemon down; it shows as this target's reason.
            log.exception("collector %s crashed on %s", cfg.kind, cfg.name)
            # The exception's text may quote what a library saw (a URL with credentials), so
            # only its type goes to /metrics and the API; the traceback is in the log.
            ok, reason, message = (
                False,
                "internal",
                f"collector error ({type(exc).__name__}); the dutyd log has the details",
            )
        duration = self._clock.monotonic() - started_mono
        base = Readings(target_labels(cfg), readings.timestamp)
        base.add("target_up", 1.0 if ok else 0.0)
        samples = readings.samples + base.samples if ok else base.samples
        return PollResult(
            cfg.name, cfg.kind, samples, ok, reason, message, readings.timestamp, duration, lag
        )

    async def _collect_bounded(self, collector: Collector, readings: Readings) -> None:
        """`collector.collect(readings)` in a task of its own, waited for at most its timeout
        (then cancelled) plus `POLL_CANCEL_GRACE` (then abandoned); raises what the collector
        raised, TimeoutError when it was cancelled, `_Abandoned` when it did not stop."""
        cfg = collector.config
        stuck = self._stuck.get(cfg.name)
        if stuck is not None:
            if not stuck.done():
                stuck.cancel()
                raise _Abandoned(
                    f"no answer within {cfg.timeout:g}s: an earlier poll is still stuck in the "
                    f"{cfg.kind} collector, which did not stop when cancelled"
                )
            del self._stuck[cfg.name]
        task = asyncio.create_task(collector.collect(readings), name=f"collect:{cfg.name}")
        try:
            if not await self._ended(task, cfg.timeout):
                task.cancel()
                if not await self._ended(task, POLL_CANCEL_GRACE):
                    self._abandon(cfg.name, task)
                    raise _Abandoned(
                        f"no answer within {cfg.timeout:g}s, and the {cfg.kind} collector did "
                        f"not stop when cancelled (abandoned; see the dutyd log)"
                    )
                if not task.cancelled():
                    task.exception()  # retrieved: the timeout is what counts
                raise TimeoutError
            if task.cancelled():
                # Cancelled by someone else (the collector's own code): a bug, not a timeout,
                # and it must not end this target's schedule.
                raise RuntimeError("the collect task was cancelled from inside the collector")
        except asyncio.CancelledError:
            # The target is removed or the scheduler stops: cancel, but never wait on it.
            if not task.done():
                task.cancel()
                self._abandon(cfg.name, task, quietly=True)
            elif not task.cancelled():
                # It ended in the same turn: its outcome no longer counts, and asyncio would
                # log it as "Task exception was never retrieved".
                task.exception()
            raise
        task.result()

    async def _ended(self, task: asyncio.Task[None], seconds: float) -> bool:
        """Whether `task` ends within `seconds` of the clock (it is not cancelled here).
        A future woken by either, not `asyncio.wait` under a timeout: a third of the cost,
        paid on every poll."""
        if task.done():
            return True
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake(_: object = None) -> None:
            if not woken.done():
                woken.set_result(None)

        task.add_done_callback(wake)
        cancel_timer = self._clock.call_later(seconds, wake)
        try:
            await woken
        finally:
            cancel_timer()
            task.remove_done_callback(wake)
        return task.done()

    def _abandon(self, name: str, task: asyncio.Task[None], quietly: bool = False) -> None:
        self._stuck[name] = task
        if not quietly:
            log.warning(
                "poll abandoned: the collector did not stop within %gs of being cancelled",
                POLL_CANCEL_GRACE,
                extra={"fields": {"target": name}},
            )

        def ended(done: asyncio.Task[None]) -> None:
            if self._stuck.get(name) is done:
                del self._stuck[name]
            if not done.cancelled() and done.exception() is not None:
                log.debug("abandoned poll of %s ended", name, exc_info=done.exception())

        task.add_done_callback(ended)

    async def _run(self, collector: Collector) -> None:
        cfg = collector.config
        interval = cfg.interval
        start = self._clock.monotonic()
        # The first poll comes within FIRST_POLL_SPREAD (a restarted daemon must not wait an
        # hour for an hourly target's state); later polls sit on the target's phase grid, so
        # a thousand targets sharing an interval stay spread over all of it.
        next_at = start + phase_of(cfg.name, min(interval, FIRST_POLL_SPREAD))
        grid = start + phase_of(cfg.name, interval)
        first = True
        wake = self._wake[cfg.name]
        last_start = -math.inf
        while True:
            delay = next_at - self._clock.monotonic()
            early = False
            if delay > 0:
                early = await self._woken(wake, delay)
                if early:
                    # Out of schedule (request_poll), but not back to back with the last poll.
                    gap = last_start + POLL_NOW_MIN_GAP - self._clock.monotonic()
                    if gap > 0:
                        await self._clock.sleep(gap)
            wake.clear()
            last_start = self._clock.monotonic()
            await self._poll_and_sink(collector, None if early else next_at)
            if early:
                continue
            if first:
                first = False
                # The next slot of the phase grid after the first poll's.
                next_at = grid + math.floor((next_at - grid) / interval + 1) * interval
            else:
                next_at += interval
            now = self._clock.monotonic()
            if next_at <= now:
                # Overran: skip the missed slots instead of polling back to back.
                missed = int((now - next_at) // interval) + 1
                next_at += missed * interval

    async def _woken(self, wake: asyncio.Event, delay: float) -> bool:
        """Sleep `delay` seconds or until `wake` is set; True when woken."""
        if wake.is_set():
            return True
        try:
            async with self._clock.timeout(delay):
                await wake.wait()
        except TimeoutError:
            return False
        return True


class _Abandoned(Exception):
    """The collector did not stop when its poll was cancelled at the timeout."""


async def _close_quietly(collector: Collector) -> None:
    try:
        async with asyncio.timeout(2.0):
            await collector.close()
    except Exception:  # closing is best effort at shutdown
        log.debug("closing %s failed", collector.config.name, exc_info=True)
