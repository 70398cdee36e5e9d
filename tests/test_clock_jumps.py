"""A step of the system clock changes no duration dutyd measures (the in-process daemon on a
FakeClock whose wall clock the test steps alone, as NTP or a restored VM does; a real loopback
receiver for the pages). Each case is one the issue measured on the old code:

- 1 h back: a new alert paged 3,600 s late (queue time and the channel's rate limiter both on
  wall time), a pending alert fired an hour late;
- 2 h forward during a 65 s outage: RED LINE to the director, "back after 2h2m5s";
- a 1 h acknowledgement expired at once after a step forward; `for: 5m` fired after +10 min;
- a restart after the clock went back: a pending alert restored an hour in the future.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.core.clock import FakeClock
from dutyd.core.records import Sample, labels_of
from dutyd.rules.alerts import Alert
from dutyd.rules.overlays import Dependencies
from tests.test_daemon_clock import until
from tests.test_notify_delivery import Receiver


def config(tmp: Path, receiver: Receiver) -> dict[str, Any]:
    return {
        "http": {"port": 0},
        "storage": {"path": str(tmp / "d.db")},
        "rules": {
            "packs": [],
            "custom": [
                {
                    "name": "link_down",
                    "metric": "target_up",
                    "match": {"target": {"=~": "sw.*"}},
                    "condition": {"below": 1},
                    "for": "0s",
                    "severity": "critical",
                    "red_line": "2h",
                    "summary": "{target} link is down",
                },
                {
                    "name": "db_down",
                    "metric": "target_up",
                    "match": {"target": "db1"},
                    "condition": {"below": 1},
                    "for": "5m",
                    "severity": "critical",
                    "summary": "{target} is down",
                },
            ],
        },
        "oncall": {
            "people": [
                {"name": "Zhang Wei", "contacts": ["zhang"]},
                {"name": "Chen Jie", "contacts": ["chen"]},
            ],
            "roles": {"director": ["Chen Jie"]},
        },
        "escalation": {
            "policies": [
                {
                    "name": "all",
                    "steps": [{"people": ["Zhang Wei"]}],
                    "red_line": {"roles": ["director"]},
                }
            ]
        },
        "notify": {
            "channels": {n: {"url": receiver.url(n)} for n in ("zhang", "chen")},
            "group_wait": 0,
        },
    }


# Changes to `config` for one test, given the receiver.
Adjust = Callable[[dict[str, Any], Receiver], None]


class Site:
    """The daemon on a FakeClock, fed samples as polls would."""

    def __init__(
        self, tmp: Path, receiver: Receiver, clock: FakeClock, adjust: Adjust | None = None
    ) -> None:
        self.clock = clock
        self.receiver = receiver
        settings = config(tmp, receiver)
        if adjust is not None:
            adjust(settings, receiver)
        self.daemon = Daemon(load_from_dict(settings, "<test>"), clock=clock)

    def feed(self, metric: str, target: str, value: float) -> None:
        self.daemon.operations.ingest_samples(
            [Sample.of(metric, value, self.daemon.clock.time(), {"target": target})]
        )

    def state(self, rule: str, target: str) -> str:
        for a in self.daemon.operations.list_alerts():
            if a["rule"] == rule and a["labels"]["target"] == target:
                return str(a["state"])
        return "inactive"

    def pages(self, path: str) -> list[str]:
        return [json.dumps(r["body"]) for r in self.receiver.received if r["path"] == path]

    async def run(self, seconds: float, step: float = 1.0) -> None:
        """Let fake time pass, real milliseconds between the steps (the store and the
        receiver answer in real time)."""
        ran = 0.0
        while ran < seconds:
            await self.clock.advance(min(step, seconds - ran))
            await asyncio.sleep(0.005)
            ran += step

    async def log_kinds(self) -> list[str]:
        return [e.kind for e in await self.daemon.storage.log.read(limit=None)]

    async def keep_down(self, target: str, polls: int) -> None:
        """`target` fed down every 10 s, `polls` times."""
        for _ in range(polls):
            self.feed("target_up", target, 0)
            await self.run(10)


async def started(
    tmp: Path, clock: FakeClock | None = None, adjust: Adjust | None = None
) -> tuple[Site, Receiver]:
    """The daemon started on `clock` (a new FakeClock by default), with a new receiver."""
    receiver = Receiver()
    await receiver.start()
    site = Site(tmp, receiver, FakeClock() if clock is None else clock, adjust)
    await site.daemon.start()
    return site, receiver


async def test_an_hour_back_delays_no_page_and_no_pending_alert(tmp_path: Path) -> None:
    site, receiver = await started(tmp_path)
    try:
        # A page before the step: the channel's rate limiter took a token at the old time.
        site.feed("target_up", "sw1", 0)
        await until(site.clock, lambda: len(site.pages("/zhang")) == 1)
        # A database server goes down: pending, due to fire 5 minutes later.
        site.feed("target_up", "db1", 0)
        assert site.state("db_down", "db1") == "pending"
        await site.run(60)

        site.clock.step_wall(-3600)  # NTP corrects a clock an hour fast
        await site.run(2)
        assert "clock.jump" in await site.log_kinds()

        # A new alert pages at once: not an hour late in the queue or the rate limiter.
        site.feed("target_up", "sw2", 0)
        await until(site.clock, lambda: len(site.pages("/zhang")) == 2, within=5)
        assert "sw2" in site.pages("/zhang")[1]

        # The pending alert fires 5 minutes after it began, not 65.
        await site.keep_down("db1", 22)  # 220 s: 282 s after it began
        assert site.state("db_down", "db1") == "pending"
        await site.keep_down("db1", 3)
        assert site.state("db_down", "db1") == "firing"
        await until(site.clock, lambda: len(site.pages("/zhang")) == 3, within=5)
        jumps = site.daemon.registry.get_sample_value(
            "dutyd_clock_jumps_total", {"direction": "back"}
        )
        assert jumps == 1
    finally:
        await site.daemon.stop()
        await receiver.stop()


async def test_two_hours_forward_during_a_short_outage_is_no_red_line(tmp_path: Path) -> None:
    site, receiver = await started(tmp_path)
    try:
        site.feed("target_up", "sw1", 0)
        await until(site.clock, lambda: len(site.pages("/zhang")) == 1)
        await site.run(30)
        site.clock.step_wall(7200)
        await site.run(35)
        site.feed("target_up", "sw1", 1)
        await until(site.clock, lambda: len(site.pages("/zhang")) == 2, within=5)
        await site.run(5)

        resolve = site.pages("/zhang")[1]
        assert "1m5s" in resolve or "1m6s" in resolve, resolve
        assert site.pages("/chen") == [], "the director was paged for a red line"
        kinds = await site.log_kinds()
        assert "alert.red_line" not in kinds
        assert "clock.jump" in kinds
        jumps = site.daemon.registry.get_sample_value(
            "dutyd_clock_jumps_total", {"direction": "forward"}
        )
        assert jumps == 1
        # dutyd's times are the system clock's again (they moved by the step), and the duty
        # log says by how much.
        offset = site.daemon.registry.get_sample_value("dutyd_clock_offset_seconds")
        assert offset == 0.0
        jump = (await site.daemon.storage.log.read(kinds=["clock.jump"]))[-1]
        assert abs(jump.data["seconds"] - 7200) < 1, jump
    finally:
        await site.daemon.stop()
        await receiver.stop()


async def test_an_hour_ack_and_for_five_minutes_outlast_a_step_forward(tmp_path: Path) -> None:
    site, receiver = await started(tmp_path)
    try:
        site.feed("target_up", "sw1", 0)
        await until(site.clock, lambda: len(site.pages("/zhang")) == 1)
        fp = site.daemon.operations.list_alerts(["firing"])[0]["fingerprint"]
        now = site.daemon.clock.time()
        await site.daemon.operations.acknowledge(fp, "Zhang Wei", "on it", now + 3600)
        site.feed("target_up", "db1", 0)
        await site.run(10)

        site.clock.step_wall(600)
        for _ in range(5):
            site.feed("target_up", "db1", 0)
            site.feed("target_up", "sw1", 0)
            await site.run(2)
        assert site.state("db_down", "db1") == "pending", "fired 20 s into a 5 min `for`"
        alert = site.daemon.operations.list_alerts(["firing"])[0]
        assert alert["acknowledged"], "an hour's acknowledgement expired after 20 s"

        site.clock.step_wall(3 * 3600)  # a second step: the ack outlasts that too
        await site.keep_down("db1", 28)
        assert site.state("db_down", "db1") == "firing"
        assert site.daemon.operations.list_alerts(["firing"])[0]["acknowledged"]
        assert "alert.unacknowledged" not in await site.log_kinds()

        # An hour after it was given (by the monotonic clock), it expires.
        await site.run(3600 - 290, step=30)
        alert = next(
            a for a in site.daemon.operations.list_alerts(["firing"]) if a["fingerprint"] == fp
        )
        assert not alert["acknowledged"]
        assert "alert.unacknowledged" in await site.log_kinds()
    finally:
        await site.daemon.stop()
        await receiver.stop()


async def test_a_restart_after_the_clock_went_back_rebuilds_elapsed_time(tmp_path: Path) -> None:
    site, receiver = await started(tmp_path)
    try:
        site.feed("target_up", "db1", 0)
        await site.run(60)
        assert site.state("db_down", "db1") == "pending"
    finally:
        await site.daemon.stop()
        await receiver.stop()

    # Restarted 10 s later, the clock an hour back (it was an hour fast).
    again, receiver = await started(tmp_path, FakeClock(wall_start=site.clock.time() + 10 - 3600))
    try:
        assert "clock.jump" in await again.log_kinds()
        view = next(a for a in again.daemon.operations.list_alerts() if a["rule"] == "db_down")
        assert abs(view["active_since"] - (again.daemon.clock.time() - 60)) < 2
        # It fires at 5 minutes from its start (the downtime counting as nil), not 65.
        await again.keep_down("db1", 22)
        assert again.state("db_down", "db1") == "pending"
        await again.keep_down("db1", 3)
        assert again.state("db_down", "db1") == "firing"
    finally:
        await again.daemon.stop()
        await receiver.stop()


async def test_a_restart_after_a_step_forward_keeps_the_outage_length(tmp_path: Path) -> None:
    """The last run's times were its steady clock's, two hours behind the system clock after a
    step forward: at the restart they are moved onto the system clock, so an outage of two
    minutes is not read as two hours (a red line at once)."""
    site, receiver = await started(tmp_path)
    try:
        site.feed("target_up", "sw1", 0)
        await until(site.clock, lambda: len(site.pages("/zhang")) == 1)
        await site.run(60)
        site.clock.step_wall(7200)
        await site.run(60)
    finally:
        await site.daemon.stop()
        await receiver.stop()

    again, receiver = await started(tmp_path, FakeClock(wall_start=site.clock.time() + 10))
    try:
        view = next(a for a in again.daemon.operations.list_alerts() if a["rule"] == "link_down")
        assert abs(view["active_since"] - (again.daemon.clock.time() - 130)) < 5, view
        for _ in range(5):
            again.feed("target_up", "sw1", 0)
            await again.run(2)
        assert again.state("link_down", "sw1") == "firing"
        assert again.pages("/chen") == [], "the director was paged for a red line"
        assert "alert.red_line" not in await again.log_kinds()
    finally:
        await again.daemon.stop()
        await receiver.stop()


async def test_after_steps_while_running_times_are_the_system_clocks_and_durations_exact(
    tmp_path: Path,
) -> None:
    """A step of D seconds while dutyd runs: its clock takes the system clock's time again and
    every moment it keeps moves by D, so what it shows and stores is right at once (before:
    off by D until a restart) and every duration still ends when it would have: `for`, the
    next escalation step, an acknowledgement's expiry, the red line."""

    def li_na_at_ten_minutes(cfg: dict[str, Any], receiver: Receiver) -> None:
        cfg["oncall"]["people"].append({"name": "Li Na", "contacts": ["li"]})
        cfg["notify"]["channels"]["li"] = {"url": receiver.url("li")}
        cfg["escalation"]["policies"][0]["steps"].append({"after": "10m", "people": ["Li Na"]})

    site, receiver = await started(tmp_path, adjust=li_na_at_ten_minutes)
    clock, daemon = site.clock, site.daemon

    def view(rule: str, target: str) -> dict[str, Any]:
        return next(
            a
            for a in daemon.operations.list_alerts()
            if a["rule"] == rule and a["labels"]["target"] == target
        )

    try:
        t0 = clock.monotonic()
        fired_wall = clock.time()
        site.feed("target_up", "sw1", 0)  # acknowledged for an hour
        site.feed("target_up", "sw2", 0)  # escalates to Li Na at 10 min, red line at 2 h
        await until(clock, lambda: "sw2" in "".join(site.pages("/zhang")))
        await daemon.operations.acknowledge(
            view("link_down", "sw1")["fingerprint"], "Zhang Wei", "on it", clock.time() + 3600
        )
        await site.run(60)
        site.feed("target_up", "db1", 0)  # pending: fires 5 min from now
        pending_at = clock.monotonic()
        await site.run(20)

        for step in (3600.0, -3600.0):
            clock.step_wall(step)
            fired_wall += step
            await site.run(2)
            # Shown on the system clock again: the start, dutyd's now, the log's new entries.
            assert abs(daemon.clock.time() - clock.time()) < 0.01
            assert abs(view("link_down", "sw2")["fired_at"] - fired_wall) < 0.5
            assert abs(view("link_down", "sw2")["active_since"] - fired_wall) < 0.5
            jump = (await daemon.storage.log.read(kinds=["clock.jump"], newest_first=True))[0]
            assert abs(jump.timestamp - clock.time()) < 3, (jump, clock.time())
            assert daemon.registry.get_sample_value("dutyd_clock_offset_seconds") == 0.0

        # `for: 5m` fires 300 s after the alert began, not 300 s +/- an hour.
        while clock.monotonic() < pending_at + 290:
            site.feed("target_up", "db1", 0)
            await site.run(10)
        assert site.state("db_down", "db1") == "pending"
        for _ in range(2):
            site.feed("target_up", "db1", 0)
            await site.run(10)
        assert site.state("db_down", "db1") == "firing"
        fired = (await daemon.storage.log.read(kinds=["alert.firing"], subject=None))[-1]
        assert abs(fired.timestamp - clock.time()) < 25  # stored on the system clock

        # The second step 600 s after the firing.
        await site.run(t0 + 590 - clock.monotonic(), step=10)
        assert site.pages("/li") == []
        await site.run(20)
        await until(clock, lambda: len(site.pages("/li")) == 1, within=5)

        # The hour's acknowledgement ends an hour after it was given.
        await site.run(t0 + 3590 - clock.monotonic(), step=30)
        assert view("link_down", "sw1")["acknowledged"]
        await site.run(20)
        assert not view("link_down", "sw1")["acknowledged"]

        # The red line two hours after the firing: not before.
        await site.run(t0 + 7190 - clock.monotonic(), step=30)
        assert site.pages("/chen") == []
        await site.run(20)
        await until(clock, lambda: len(site.pages("/chen")) >= 1, within=5)
        red = (await daemon.storage.log.read(kinds=["alert.red_line"]))[-1]
        assert abs(red.timestamp - clock.time()) < 25
    finally:
        await daemon.stop()
        await receiver.stop()


async def test_a_queued_retry_keeps_its_wait_across_steps_while_running(tmp_path: Path) -> None:
    """A page whose channel failed waits in the outbox for its retry; the clock is stepped an
    hour forward, then back: the retry comes when it was due, and the row in the store is
    moved with the clock (before: due an hour early after the step forward, and the stored
    moment off by the step)."""
    site, receiver = await started(
        tmp_path, adjust=lambda cfg, _: cfg["notify"].update(retry_initial="10m", retry_max="10m")
    )
    clock, daemon = site.clock, site.daemon
    try:
        receiver.status = 503
        site.feed("target_up", "sw1", 0)
        await until(clock, lambda: len(receiver.received) == 1)
        await site.run(1)
        (row,) = await daemon.storage.outbox.due(1e12, 10)
        retry_at = clock.monotonic() + (row.next_at - daemon.clock.time())
        assert 290 < retry_at - clock.monotonic() <= 600
        receiver.status = 200
        for step in (3600.0, -3600.0):
            clock.step_wall(step)
            await site.run(2)
            (row,) = await daemon.storage.outbox.due(1e12, 10)
            # Stored on the system clock, as far from now as it was.
            assert abs(row.next_at - (clock.time() + retry_at - clock.monotonic())) < 0.01
        await site.run(retry_at - 5 - clock.monotonic())
        assert len(receiver.received) == 1, "the retry came early"
        await site.run(10)
        await until(clock, lambda: len(receiver.received) == 2, within=5)
    finally:
        await daemon.stop()
        await receiver.stop()


def test_a_move_of_the_clock_keeps_a_childs_wait_for_its_parents_answer() -> None:
    """A child's alert waits for a poll of its parent started after the child's trouble was
    seen (`observed_at`); both moments move with the clock, so after a step back a parent
    that answered before the step still counts, and one polled after it is compared right."""
    deps = Dependencies(parents={"srv1": ("sw1",)})
    deps.note("sw1", True, 1000.0)
    child = Alert("down", labels_of({"target": "srv1"}), "critical", observed_at=990.0)
    for step in (-3600.0, 3600.0):
        deps.shift(step)
        child.shift(step)
        assert child.observed_at is not None
        assert deps.unanswered("srv1", (), child.observed_at) == []
    child.shift(-3600.0)
    deps.shift(-3600.0)
    deps.note("sw1", True, 1000.0 - 3600 + 5)  # a poll after the move, on the moved clock
    assert deps.unanswered("srv1", (), child.observed_at) == []
    assert deps.unanswered("srv1", (), 1000.0 - 3600 + 6) == ["sw1"]


async def test_a_restart_after_a_step_while_running_pages_no_step_again(tmp_path: Path) -> None:
    """The alert's moments moved with the clock; the keys of its pages did not (made from the
    firing as it was set), so the restart knows the first step was paged (before: the
    on-duty engineer was paged a second time)."""
    site, receiver = await started(tmp_path)
    try:
        site.feed("target_up", "sw1", 0)
        await until(site.clock, lambda: len(site.pages("/zhang")) == 1)
        await site.run(30)
        site.clock.step_wall(3600)
        await site.run(10)
    finally:
        await site.daemon.stop()
    again = Site(tmp_path, receiver, FakeClock(wall_start=site.clock.time() + 10))
    await again.daemon.start()
    try:
        for _ in range(5):
            again.feed("target_up", "sw1", 0)
            await again.run(2)
        assert again.state("link_down", "sw1") == "firing"
        assert len(again.pages("/zhang")) == 1, again.pages("/zhang")
    finally:
        await again.daemon.stop()
        await receiver.stop()
