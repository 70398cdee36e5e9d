"""The clock: wall time for records, monotonic time and sleeps for schedules.

The scheduler and the daemon take a `Clock` instead of reading `time` and `asyncio.sleep`
directly, so schedules can be tested on a `FakeClock` that jumps an hour in a millisecond,
and a test never sleeps in real time to see a poll grid or an escalation step come round.

The daemon wraps its clock in a `SteadyClock`: its `time()` is the wall time at start carried
forward by the monotonic clock, so every "how long" dutyd measures by subtracting two of its
times (`for`, red lines, escalation steps, ack expiry, retries, rate limits) is monotonic time,
and a step of the system clock (NTP correcting a fast clock, a VM restored) neither fires nor
delays anything. `wall()` is the system clock as it reads now; the daemon compares the two
every second and reports a step (`duty.clockwatch`; a single node then re-anchors it with
`anchor` and moves its moments by the step).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch: what records and people see."""
        ...

    def monotonic(self) -> float:
        """Seconds that never go back: what schedules and durations are measured in."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[Any]:
        """An async context manager that cancels its block after `seconds` of this clock."""
        ...

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Callable[[], None]:
        """Run `callback` (in the running event loop) after `seconds` of this clock; returns a
        canceller."""
        ...


class SteadyClock:
    """`time()` is the wall time at `anchor` advanced by `base`'s monotonic clock: it never
    jumps. `wall()` is `base`'s wall clock, steps and all; `offset()` how far it is from
    `time()` (0 until the system clock is stepped). Sleeps and timeouts are `base`'s."""

    def __init__(self, base: Clock) -> None:
        self.base = base
        self._zero = 0.0
        self.anchor(base.time())

    def anchor(self, wall: float) -> None:
        """Make `time()` read `wall` now (at start; after a step, with every moment kept
        moved by as much in the same event-loop turn: `duty.clockwatch`)."""
        self._zero = wall - self.base.monotonic()

    def time(self) -> float:
        return self._zero + self.base.monotonic()

    def wall(self) -> float:
        return self.base.time()

    def offset(self) -> float:
        """The system clock minus this clock's time: what the system clock was stepped by."""
        return self.base.time() - self.time()

    def monotonic(self) -> float:
        return self.base.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self.base.sleep(seconds)

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[Any]:
        return self.base.timeout(seconds)

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Callable[[], None]:
        return self.base.call_later(seconds, callback)


class SystemClock:
    """The real clock: `time.time`, `time.monotonic`, `asyncio.sleep`, `asyncio.timeout`."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def timeout(self, seconds: float | None) -> asyncio.Timeout:
        return asyncio.timeout(seconds)

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Callable[[], None]:
        return asyncio.get_running_loop().call_later(seconds, callback).cancel


SYSTEM_CLOCK = SystemClock()


class _FakeTimeout:
    """`asyncio.timeout` on a FakeClock: expires when the fake time passes the deadline."""

    def __init__(self, clock: FakeClock, seconds: float | None) -> None:
        self._clock = clock
        self._seconds = seconds

    @asynccontextmanager
    async def _block(self) -> AsyncIterator[asyncio.Timeout]:
        async with asyncio.timeout(None) as real:
            cancel: Callable[[], None] | None = None
            if self._seconds is not None:
                loop = asyncio.get_running_loop()
                cancel = self._clock.call_later(self._seconds, lambda: real.reschedule(loop.time()))
            try:
                yield real
            finally:
                if cancel is not None:
                    cancel()

    async def __aenter__(self) -> asyncio.Timeout:
        self._cm = self._block()
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc: object) -> bool | None:
        return await self._cm.__aexit__(*exc)  # type: ignore[arg-type]


class FakeClock:
    """A clock that moves only when told to: `await clock.advance(3600)`.

    Sleepers wake in deadline order; between wake-ups the event loop runs until it has
    nothing ready, so what a woken task does (a poll, a page) happens at the fake time it
    was due. `step_wall` steps the wall clock alone, as NTP or a restored VM does.
    """

    def __init__(self, wall_start: float = 1_750_000_000.0) -> None:
        self._now = 0.0
        self._wall_start = wall_start
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cancelled: set[int] = set()

    def time(self) -> float:
        return self._wall_start + self._now

    def monotonic(self) -> float:
        return self._now

    def step_wall(self, seconds: float) -> None:
        """Step the wall clock by `seconds` (negative: back); monotonic time and the sleepers
        do not move."""
        self._wall_start += seconds

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Callable[[], None]:
        """Run `callback` once the fake time has advanced by `seconds`; returns a canceller."""
        seq = next(self._seq)
        heapq.heappush(self._timers, (self._now + max(0.0, seconds), seq, callback))
        return lambda: self._cancelled.add(seq)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        woken = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not woken.done():
                woken.set_result(None)

        cancel = self.call_later(seconds, wake)
        try:
            await woken
        finally:
            cancel()

    def timeout(self, seconds: float | None) -> _FakeTimeout:
        return _FakeTimeout(self, seconds)

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking every sleeper due on the way, in order."""
        until = self._now + seconds
        await settle()
        while self._timers and self._timers[0][0] <= until:
            when, seq, callback = heapq.heappop(self._timers)
            if seq in self._cancelled:
                self._cancelled.discard(seq)
                continue
            self._now = max(self._now, when)
            callback()
            await settle()
        self._now = until
        await settle()


async def settle(rounds: int = 20) -> None:
    """Let every task that is ready run (a few loop iterations; no real time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
