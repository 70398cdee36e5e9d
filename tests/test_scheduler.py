"""Scheduler isolation and timing, on a fake clock: a hung target and a failing target never
slow the others down; polls sit on each target's phase grid; no test sleeps in real time."""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import threading
import time
from collections import defaultdict
from typing import ClassVar, Literal

import pytest

from dutyd.agent.scheduler import (
    FIRST_POLL_SPREAD,
    POLL_CANCEL_GRACE,
    PollResult,
    Scheduler,
    phase_of,
)
from dutyd.collectors.base import Collector, CollectorContext, Readings, TargetConfig
from dutyd.core.clock import FakeClock
from dutyd.core.errors import BadResponse


class FakeTarget(TargetConfig):
    kind: Literal["fake"] = "fake"
    behaviour: Literal["ok", "hang", "fail", "crash", "slow", "stubborn", "blocked"] = "ok"


class BehaviourCollector(Collector[FakeTarget]):
    """Pure scheduler test: the 'device' is the behaviour we need, no protocol involved."""

    kind = "fake"
    config_model = FakeTarget
    metric_help: ClassVar[dict[str, str]] = {"fake_reading": "a reading"}

    clock: ClassVar[FakeClock | None] = None
    # "stubborn" swallows every cancellation until `release` is set; "blocked" waits in an
    # executor thread until `gate` is set.
    release: ClassVar[asyncio.Event | None] = None
    gate: ClassVar[threading.Event] = threading.Event()

    async def collect(self, readings: Readings) -> None:
        match self.config.behaviour:
            case "slow":
                # Takes 2.5 intervals of the test's fake clock, then answers.
                assert self.clock is not None
                await self.clock.sleep(self.config.interval * 2.5)
            case "hang":
                await asyncio.Event().wait()
            case "stubborn":
                assert self.release is not None
                while True:
                    try:
                        await self.release.wait()
                        break
                    except asyncio.CancelledError:
                        continue  # the collector bug under test
            case "blocked":
                await self.context.run_blocking(self.gate.wait, 30.0)
            case "fail":
                raise BadResponse("device answered garbage")
            case "crash":
                raise RuntimeError("bug in a collector")
        readings.add("fake_reading", 1.0)


async def run_for(
    targets: list[FakeTarget], seconds: float, max_in_flight: int = 256, step: float = 0.0
):
    """Run the targets for `seconds` of fake time; returns polls by target and how long (real
    seconds) stopping took."""
    clock = FakeClock()
    BehaviourCollector.clock = clock
    results: dict[str, list[PollResult]] = defaultdict(list)
    scheduler = Scheduler(lambda r: results[r.target].append(r), max_in_flight, clock=clock)
    context = CollectorContext()
    for t in targets:
        scheduler.start(BehaviourCollector(t, context))
    await clock.advance(seconds)
    t0 = time.monotonic()
    await scheduler.stop()
    stop_took = time.monotonic() - t0
    await context.close()
    return results, stop_took


def times(polls: list[PollResult]) -> list[float]:
    return [p.started_at - FakeClock().time() for p in polls]


async def test_hung_and_failing_targets_do_not_delay_others():
    interval = 0.2
    targets = [
        FakeTarget(name=f"ok-{i}", address="x", interval=interval, timeout=0.5) for i in range(20)
    ]
    targets.append(
        FakeTarget(name="hung", address="x", interval=interval, timeout=0.5, behaviour="hang")
    )
    targets.append(
        FakeTarget(name="failing", address="x", interval=interval, timeout=0.5, behaviour="fail")
    )
    targets.append(
        FakeTarget(name="buggy", address="x", interval=interval, timeout=0.5, behaviour="crash")
    )
    # Only 4 polls in flight: the hung target holds one slot at most until its timeout.
    results, stop_took = await run_for(targets, 3.0, max_in_flight=4)

    for i in range(20):
        polls = results[f"ok-{i}"]
        # 3 s at 0.2 s: 15 slots after the phase offset (< 1 interval), none missed
        assert len(polls) in (15, 16), (i, len(polls))
        assert all(p.ok for p in polls)
        gaps = [b.started_at - a.started_at for a, b in itertools.pairwise(polls)]
        assert gaps == pytest.approx([interval] * len(gaps)), gaps
        assert all(p.lag == pytest.approx(0.0) for p in polls)
        assert [s.name for s in polls[0].samples] == ["fake_reading", "target_up"]

    hung = results["hung"]
    assert hung, "the hung target must still report, as timed out"
    assert all(not p.ok and p.reason == "timeout" for p in hung)
    assert "no answer within 0.5s" in hung[0].message
    assert [(s.name, s.value) for s in hung[0].samples] == [("target_up", 0.0)]

    failing = results["failing"]
    assert len(failing) in (15, 16)
    assert all(
        p.reason == "bad_response" and p.message == "device answered garbage" for p in failing
    )
    buggy = results["buggy"]
    assert buggy and all(p.reason == "internal" and "RuntimeError" in p.message for p in buggy)
    assert stop_took < 2.0


async def test_samples_carry_target_labels():
    t = FakeTarget(
        name="s1", address="x", interval=0.1, timeout=1, labels={"site": "hq", "room": "A"}
    )
    results, _ = await run_for([t], 0.35)
    sample = results["s1"][0].samples[0]
    assert sample.label_map() == {"site": "hq", "room": "A", "target": "s1", "kind": "fake"}


def test_phases_spread_over_interval():
    phases = sorted(phase_of(f"target-{i}", 60.0) for i in range(1000))
    assert phases[0] >= 0 and phases[-1] < 60.0
    # Spread: no one-second window holds more than 3 % of the targets.
    per_second = defaultdict(int)
    for p in phases:
        per_second[int(p)] += 1
    assert max(per_second.values()) <= 30
    assert len(per_second) == 60
    assert phase_of("same", 60.0) == phase_of("same", 60.0)


async def test_long_interval_target_is_polled_soon_after_start():
    """An hourly target's first poll comes within the first-poll spread, not up to an hour
    later; the next ones sit on its slot of the hourly phase grid."""
    hourly = [
        FakeTarget(name=f"hourly-{i}", address="x", interval=3600, timeout=1, behaviour="ok")
        for i in range(5)
    ]
    results, _ = await run_for(hourly, 3 * 3600 + 1)
    for t in hourly:
        at = times(results[t.name])
        assert at[0] == pytest.approx(phase_of(t.name, FIRST_POLL_SPREAD))
        grid = phase_of(t.name, 3600)
        expected_second = grid if grid > at[0] else grid + 3600
        assert at[1] == pytest.approx(expected_second), (t.name, at)
        assert [b - a for a, b in itertools.pairwise(at[1:])] == pytest.approx(
            [3600] * (len(at) - 2)
        )


async def test_an_overrunning_poll_skips_missed_slots_instead_of_polling_back_to_back():
    slow = FakeTarget(name="slow", address="x", interval=10, timeout=60, behaviour="slow")
    results, _ = await run_for([slow], 100)
    at = times(results["slow"])
    # Each poll takes 25 s: the next starts on the first grid slot after it ended.
    assert [b - a for a, b in itertools.pairwise(at)] == pytest.approx([30] * (len(at) - 1))
    assert all(p.duration == pytest.approx(25) for p in results["slow"])


async def test_poll_now_polls_out_of_turn_and_keeps_the_grid():
    clock = FakeClock()
    BehaviourCollector.clock = clock
    results: list[PollResult] = []
    scheduler = Scheduler(results.append, clock=clock)
    context = CollectorContext()
    target = FakeTarget(name="ups", address="x", interval=600, timeout=1)
    scheduler.start(BehaviourCollector(target, context))
    try:
        await clock.advance(FIRST_POLL_SPREAD)
        assert len(results) == 1
        await clock.advance(5)
        out_of_turn = await scheduler.poll_now("ups")
        assert out_of_turn is not None and out_of_turn.ok and results[-1] is out_of_turn
        assert await scheduler.poll_now("no-such-target") is None
        await clock.advance(1200)
        first, grid = phase_of("ups", FIRST_POLL_SPREAD), phase_of("ups", 600)
        slot = grid + math.floor((first - grid) / 600 + 1) * 600
        assert times(results) == pytest.approx([first, FIRST_POLL_SPREAD + 5, slot, slot + 600])
    finally:
        await scheduler.stop()
        await context.close()


async def test_poll_apart_polls_once_without_the_sink_and_closes_the_collector():
    """A parent another node of the cluster schedules: polled once from here for the
    reachability check, its result to the caller only, its collector closed after."""
    clock = FakeClock()
    results: list[PollResult] = []
    scheduler = Scheduler(results.append, clock=clock)
    context = CollectorContext()
    closed: list[str] = []

    class Closing(BehaviourCollector):
        async def close(self) -> None:
            closed.append(self.config.name)

    try:
        down = await scheduler.poll_apart(
            Closing(FakeTarget(name="sw", address="x", timeout=1, behaviour="fail"), context)
        )
        assert (down.target, down.ok, down.reason) == ("sw", False, "bad_response")
        up = await scheduler.poll_apart(Closing(FakeTarget(name="sw", address="x"), context))
        assert up.ok
        assert results == [] and scheduler.collectors == {} and closed == ["sw", "sw"]
    finally:
        await scheduler.stop()
        await context.close()


async def test_a_collector_that_ignores_cancellation_is_abandoned_and_polls_keep_their_slots():
    """A collector that swallows the cancellation at its timeout: the poll is a timeout after
    timeout + grace, the scheduler does not wait on it, the next polls come on the grid (as
    timeouts at once while the old one is stuck) and the target recovers when it ends."""
    clock = FakeClock()
    BehaviourCollector.clock = clock
    BehaviourCollector.release = asyncio.Event()
    results: dict[str, list[PollResult]] = defaultdict(list)
    scheduler = Scheduler(lambda r: results[r.target].append(r), clock=clock)
    context = CollectorContext()
    stubborn = FakeTarget(name="stubborn", address="x", interval=5, timeout=1, behaviour="stubborn")
    healthy = FakeTarget(name="healthy", address="x", interval=5, timeout=1)
    for t in (stubborn, healthy):
        scheduler.start(BehaviourCollector(t, context))
    try:
        await clock.advance(FIRST_POLL_SPREAD + 2 * 5)
        polls = results["stubborn"]
        assert len(polls) >= 3, polls
        assert all(not p.ok and p.reason == "timeout" for p in polls)
        assert polls[0].duration == pytest.approx(1 + POLL_CANCEL_GRACE)
        assert "did not stop when cancelled (abandoned" in polls[0].message
        for later in polls[1:]:
            assert "an earlier poll is still stuck" in later.message
            assert later.duration == 0.0
        at = times(polls)
        gaps = [b - a for a, b in itertools.pairwise(at[1:])]
        assert gaps == pytest.approx([5] * len(gaps))
        assert len(results["healthy"]) >= 3 and all(p.ok for p in results["healthy"])

        BehaviourCollector.release.set()  # the stuck poll ends at last
        await clock.advance(5)
        assert results["stubborn"][-1].ok
        assert times(results["stubborn"])[-1] == pytest.approx(at[-1] + 5)
    finally:
        BehaviourCollector.release.set()  # whatever failed: no task left that ignores cancel
        await scheduler.stop()
        await context.close()


async def test_a_collector_blocked_in_an_executor_thread_times_out_on_time():
    """The poll awaits the thread's future; cancelling drops that future at once (the thread
    runs on until its call returns), so the poll ends at its timeout, not the thread's."""
    gate = BehaviourCollector.gate
    gate.clear()
    try:
        blocked = FakeTarget(
            name="blocked", address="x", interval=5, timeout=1, behaviour="blocked"
        )
        results, stop_took = await run_for([blocked], FIRST_POLL_SPREAD + 2 * 5)
        polls = results["blocked"]
        assert len(polls) >= 3
        assert all(p.reason == "timeout" and p.duration == pytest.approx(1.0) for p in polls)
        gaps = [b - a for a, b in itertools.pairwise(times(polls)[1:])]
        assert gaps == pytest.approx([5] * len(gaps))
        assert stop_took < 2.0
    finally:
        gate.set()  # free the pool's threads


async def test_a_poll_cancelled_as_its_collector_fails_leaves_no_unretrieved_exception():
    """The target is removed (or the scheduler stops) in the same loop turn as its collector
    raises: the poll's cancellation wins, and the collector's error is retrieved, not left to
    asyncio's "Task exception was never retrieved" in the log (seen once in a CI run)."""
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    context = CollectorContext()
    scheduler = Scheduler(lambda _r: None, clock=FakeClock())
    failing = FakeTarget(name="failing", address="x", interval=5, timeout=1, behaviour="fail")
    polls: list[asyncio.Task[PollResult]] = []

    class CancelledAsItFails(BehaviourCollector):
        async def collect(self, readings: Readings) -> None:
            polls[0].cancel()  # the poll waits on this task; both end in this turn
            await super().collect(readings)

    collector = CancelledAsItFails(failing, context)
    try:
        polls.append(asyncio.create_task(scheduler.poll_once(collector)))
        with pytest.raises(asyncio.CancelledError):
            await polls[0]
        polls.clear()
        gc.collect()  # the collect task goes, and asyncio reports it if nobody retrieved it
        await asyncio.sleep(0)
        assert [c for c in reported if "never retrieved" in str(c.get("message"))] == []
    finally:
        loop.set_exception_handler(previous)
        await scheduler.stop()
        await context.close()
