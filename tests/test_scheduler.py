"""Scheduler isolation: a hung target and a failing target never slow the others down."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from typing import ClassVar, Literal

import dutyd.agent.scheduler
from dutyd.agent.scheduler import PollResult, Scheduler, phase_of
from dutyd.collectors.base import Collector, CollectorContext, Readings, TargetConfig
from dutyd.core.errors import BadResponse


class FakeTarget(TargetConfig):
    kind: Literal["fake"] = "fake"
    behaviour: Literal["ok", "hang", "fail", "crash"] = "ok"


class BehaviourCollector(Collector[FakeTarget]):
    """Pure scheduler test: the 'device' is the behaviour we need, no protocol involved."""

    kind = "fake"
    config_model = FakeTarget
    metric_help: ClassVar[dict[str, str]] = {"fake_reading": "a reading"}

    async def collect(self, readings: Readings) -> None:
        match self.config.behaviour:
            case "hang":
                await asyncio.Event().wait()
            case "fail":
                raise BadResponse("device answered garbage")
            case "crash":
                raise RuntimeError("bug in a collector")
        readings.add("fake_reading", 1.0)


async def run_for(targets: list[FakeTarget], seconds: float, max_in_flight: int = 256):
    results: dict[str, list[PollResult]] = defaultdict(list)
    scheduler = Scheduler(lambda r: results[r.target].append(r), max_in_flight)
    context = CollectorContext()
    for t in targets:
        scheduler.start(BehaviourCollector(t, context))
    await asyncio.sleep(seconds)
    t0 = time.monotonic()
    await scheduler.stop()
    stop_took = time.monotonic() - t0
    await context.close()
    return results, stop_took


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
        # 3 s at 0.2 s: 15 slots, minus the phase offset (< 1 interval)
        assert len(polls) >= 13, (i, len(polls))
        assert all(p.ok for p in polls)
        gaps = [b.started_at - a.started_at for a, b in itertools.pairwise(polls)]
        assert max(gaps) < interval * 2.5, gaps
        assert [s.name for s in polls[0].samples] == ["fake_reading", "target_up"]

    hung = results["hung"]
    assert hung, "the hung target must still report, as timed out"
    assert all(not p.ok and p.reason == "timeout" for p in hung)
    assert "no answer within 0.5s" in hung[0].message
    assert [(s.name, s.value) for s in hung[0].samples] == [("target_up", 0.0)]

    failing = results["failing"]
    assert len(failing) >= 13
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


async def test_long_interval_target_is_polled_soon_after_start(monkeypatch):
    """An hourly target's first poll comes within the first-poll spread, not up to an hour
    later; its next one waits for its slot on the hourly phase grid."""

    monkeypatch.setattr(dutyd.agent.scheduler, "FIRST_POLL_SPREAD", 0.5)
    hourly = [
        FakeTarget(name=f"hourly-{i}", address="x", interval=3600, timeout=1, behaviour="ok")
        for i in range(5)
    ]
    results, _ = await run_for(hourly, 1.5)
    assert {name: len(polls) for name, polls in results.items()} == {
        f"hourly-{i}": 1 for i in range(5)
    }
