"""The daemon's clock reaches the notification service and the web face: on a FakeClock a
10-minute escalation step goes out when the fake clock passes it, not 10 real minutes later,
and the API's and status page's "now" is the injected clock's.

The clock's wall time starts in June 2025 (FakeClock's default), so a time taken from the
system clock instead would show at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.core.clock import FakeClock
from dutyd.core.records import Sample
from dutyd.duty.drill import DRILL_LABELS, DRILL_SAMPLE
from tests.test_notify_delivery import Receiver

TOKEN = "s3cret-token"
STEP = 600.0  # the second escalation step: 10 minutes


def settings(tmp: Path, receiver: Receiver) -> Any:
    return load_from_dict(config(tmp, receiver))


def config(tmp: Path, receiver: Receiver) -> dict[str, Any]:
    return {
        "http": {"port": 0},
        "storage": {"path": str(tmp / "d.db")},
        "api": {"token": TOKEN},
        "oncall": {
            "pairs": [["Zhang Wei"]],
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
                    "steps": [
                        {"after": 0, "oncall": True},
                        {"after": "10m", "roles": ["director"]},
                    ],
                }
            ]
        },
        "notify": {
            "channels": {n: {"url": receiver.url(n)} for n in ("zhang", "chen")},
            "group_wait": 0,
            "ack_secret": "link-secret",
            "ack_base_url": "http://dutyd.example",
        },
    }


async def until(clock: FakeClock, done: Callable[[], bool], within: float = 10.0) -> None:
    """Run the daemon until `done()`, the fake clock moving as fast as the real one: the
    store's thread and the HTTP receiver need real milliseconds to answer, and a message
    queued at fake time t is due at t + 1 µs (creation times are strictly increasing)."""
    deadline = time.monotonic() + within
    while not done():
        assert time.monotonic() < deadline, "not done in time"
        await clock.advance(0.01)
        await asyncio.sleep(0.01)


async def test_escalation_steps_come_by_the_daemons_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    receiver = Receiver()
    await receiver.start()
    daemon = Daemon(settings(tmp_path, receiver), clock=clock)
    await daemon.start()
    started = time.monotonic()
    try:
        # The daemon's steady clock over the injected one (durations on its monotonic time).
        assert daemon.notify.clock is daemon.clock and daemon.clock.base is clock
        fired_at = clock.time()
        # A real alert through the daemon's wiring: rules -> journal -> notify -> outbox.
        daemon.operations.ingest_samples(
            [Sample.of(DRILL_SAMPLE, fired_at - 40 * 86400, fired_at, DRILL_LABELS)]
        )
        await until(clock, lambda: len(receiver.received) >= 1)
        assert [r["path"] for r in receiver.received] == ["/zhang"]

        # Nine fake minutes: the director's step is not due yet.
        await clock.advance(STEP - 60)
        for _ in range(30):  # what was due by then has had time to go out
            await clock.advance(0.01)
            await asyncio.sleep(0.01)
        assert [r["path"] for r in receiver.received] == ["/zhang"]

        # Past ten fake minutes: it goes out.
        await clock.advance(61)
        await until(clock, lambda: len(receiver.received) >= 2)
        assert [r["path"] for r in receiver.received] == ["/zhang", "/chen"]
        assert "escalation step 2" in receiver.received[1]["body"]["message"]
        sent = await daemon.storage.log.read(kinds=["notify.sent"])
        assert len(sent) == 2
        # The duty log says when, by the fake clock: ten minutes apart, at the fake date.
        assert abs(sent[0].timestamp - fired_at) < 5
        assert STEP <= sent[1].timestamp - fired_at < STEP + 5
        # ... and the test waited seconds, not ten minutes.
        assert time.monotonic() - started < 60
    finally:
        await daemon.stop()
        await receiver.stop()


async def test_web_api_times_come_from_the_injected_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    receiver = Receiver()
    await receiver.start()
    cfg = config(tmp_path, receiver)
    cfg["notify"]["ack_link_ttl"] = "15m"  # the fake clock walks it second by second
    daemon = Daemon(load_from_dict(cfg), clock=clock)
    await daemon.start()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        assert daemon.web.clock is daemon.clock and daemon.clock.base is clock
        async with aiohttp.ClientSession(daemon.http.url) as http:
            async with http.post(
                "/api/v1/silences",
                json={
                    "matchers": {"target": "db1"},
                    "duration": "1h",
                    "actor": "me",
                    "reason": "x",
                },
                headers=auth,
            ) as r:
                assert r.status == 201
                assert (await r.json())["until"] == clock.time() + 3600
            async with http.post(
                "/api/v1/maintenance",
                json={"targets": ["db1"], "duration": "2h", "actor": "me", "reason": "UPS"},
                headers=auth,
            ) as r:
                assert r.status == 201
                window = await r.json()
                assert (window["start"], window["end"]) == (clock.time(), clock.time() + 7200)
            async with http.get("/api/v1/status", headers=auth) as r:
                assert (await r.json())["generated_at"] == clock.time()

            # An ack link signed now expires by the fake clock: once its 15 minutes have passed
            # on that clock it is refused, although no real time passed.
            assert daemon.notify.links is not None
            fired_at = clock.time()
            daemon.operations.ingest_samples(
                [Sample.of(DRILL_SAMPLE, fired_at - 40 * 86400, fired_at, DRILL_LABELS)]
            )
            await until(clock, lambda: bool(daemon.operations.list_alerts(["firing"])))
            fp = daemon.operations.list_alerts(["firing"])[0]["fingerprint"]
            token = daemon.notify.links.make(fp, "Zhang Wei", clock.time())
            async with http.get(f"/ack/{token}") as r:
                assert r.status == 200
            await clock.advance(daemon.notify.links.ttl + 1)
            async with http.get(f"/ack/{token}") as r:
                assert r.status == 403

            # An acknowledgement's expiry counts from the same clock as the engine's (from the
            # system clock it would be a year away from the engine's now, and refused).
            async with http.post(
                "/api/v1/ack",
                json={"alert": fp, "actor": "Zhang Wei", "expires_in": "1h"},
                headers=auth,
            ) as r:
                assert r.status == 200, await r.text()
            view = daemon.operations.list_alerts(["firing"])[0]
            assert view["acknowledged"]["expires_at"] == clock.time() + 3600
    finally:
        await daemon.stop()
        await receiver.stop()
