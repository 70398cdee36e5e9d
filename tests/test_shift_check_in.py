"""Shift check-in on the real daemon (FakeClock, real notification receiver): at the hand-over
the incoming pair gets a signed check-in link; nobody confirmed within 15 minutes pages the
manager (`duty_post_unattended`), a confirmation through the link resolves it; a confirmation
in time stays quiet; the hand-over note and the confirmations are in the duty diary."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.core.clock import FakeClock
from dutyd.duty.report import build_report, to_markdown
from tests.test_notify_delivery import Receiver

TOKEN = "shift-api-token"
PEOPLE = {
    "Zhang Wei": "zhang",
    "Li Na": "li",
    "Liu Yang": "liu",
    "Zhao Min": "zhao",
    "Wang Fang": "wang",
}
# A minute before the 20:30 hand-over from Zhang Wei and Li Na to Liu Yang and Zhao Min.
START = dt.datetime(2026, 3, 2, 20, 29, tzinfo=dt.UTC).timestamp()
HANDOVER = START + 60


def config(
    tmp: Path, receiver: Receiver, check_in: bool = True, handovers: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        "http": {"port": 0},
        "storage": {"path": str(tmp / "d.db")},
        "api": {"token": TOKEN},
        "handover": {"check_in": check_in},
        "oncall": {
            "timezone": "UTC",
            "handovers": list(handovers or ("08:30", "20:30")),
            "start": "2026-03-02",  # the day shift of 2 March is pairs[0]'s
            "pairs": [["Zhang Wei", "Li Na"], ["Liu Yang", "Zhao Min"]],
            "people": [{"name": n, "contacts": [c]} for n, c in PEOPLE.items()],
            "roles": {"manager": ["Wang Fang"]},
        },
        "escalation": {
            "policies": [
                {
                    "name": "duty-post",
                    "match": {"kind": "shift"},
                    "steps": [{"after": 0, "roles": ["manager"]}],
                }
            ]
        },
        "notify": {
            "channels": {c: {"url": receiver.url(c)} for c in PEOPLE.values()},
            "group_wait": 0,
            "ack_secret": "check-in-link-secret",
            "ack_base_url": "http://dutyd.example",
        },
    }


class Site:
    def __init__(self, daemon: Daemon, clock: FakeClock, receiver: Receiver) -> None:
        self.daemon, self.clock, self.receiver = daemon, clock, receiver

    async def until(self, done: Callable[[], bool], within: float = 15.0) -> None:
        deadline = time.monotonic() + within
        while not done():
            assert time.monotonic() < deadline, f"not done in time; got {self.pages()}"
            await self.clock.advance(0.01)
            await asyncio.sleep(0.01)

    async def run_for(self, seconds: float) -> None:
        for _ in range(int(seconds / 0.01)):
            await self.clock.advance(0.01)
            await asyncio.sleep(0.01)

    def pages(self) -> list[tuple[str, str]]:
        return [(r["path"].strip("/"), r["body"]["message"]) for r in self.receiver.received]

    def to(self, who: str) -> list[str]:
        return [m for p, m in self.pages() if p == who]

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                self.daemon.http.url + path, json=body, headers={"X-Dutyd-Token": TOKEN}
            ) as r,
        ):
            return r.status, await r.json()


@pytest.fixture
async def make_site(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[Site] = []

    async def make(check_in: bool = True, handovers: tuple[str, ...] = ()) -> Site:
        receiver = Receiver()
        await receiver.start()
        clock = FakeClock(wall_start=START)
        settings = load_from_dict(config(tmp_path, receiver, check_in, handovers))
        daemon = Daemon(settings, clock=clock)
        site = Site(daemon, clock, receiver)
        started.append(site)
        await daemon.start()
        return site

    yield make
    for site in started:
        await site.daemon.stop()
        await site.receiver.stop()


async def test_nobody_confirms_the_manager_is_paged_and_the_link_resolves_it(make_site) -> None:
    s: Site = await make_site()
    # The day shift, asked at start, confirms from the status page.
    await s.until(lambda: bool(s.to("zhang")) and bool(s.to("li")))
    assert (await s.post("/api/v1/shift/confirm", {"actor": "Zhang Wei"}))[0] == 201
    await s.clock.advance(61)  # the hand-over
    await s.until(lambda: bool(s.to("liu")) and bool(s.to("zhao")))
    (ask,) = s.to("liu")
    assert "Liu Yang, Zhao Min, confirm that you are on duty" in ask
    link = re.search(r"http://dutyd\.example(/ack/\S+)", ask)
    assert link, ask
    assert s.to("wang") == []
    # Fifteen minutes and nobody confirmed: the manager.
    await s.clock.advance(14 * 60)
    await s.run_for(0.3)
    assert s.to("wang") == []
    await s.clock.advance(61)
    await s.until(lambda: bool(s.to("wang")))
    assert "duty post may be unattended" in s.to("wang")[0]
    # Liu Yang opens his link on his phone and confirms: resolved, and the manager is told.
    async with aiohttp.ClientSession() as http:
        url = s.daemon.http.url + link.group(1)
        async with http.get(url) as r:
            assert r.status == 200 and "I am on duty: Liu Yang" in await r.text()
        async with http.post(url, data={"note": "at the console"}) as r:
            assert r.status == 200 and "Liu Yang is on duty" in await r.text()
        async with http.post(url, data={}) as r:
            assert r.status == 403  # a link works once
    await s.until(lambda: len(s.to("wang")) == 2)
    assert "confirmed" in s.to("wang")[1]
    (alert,) = [a for a in s.daemon.operations.list_alerts() if a["rule"] == "duty_post_unattended"]
    assert alert["state"] == "resolved"
    confirms = await s.daemon.storage.log.read(kinds=["shift.confirm"])
    assert [(e.actor, e.data["via"], e.data["note"]) for e in confirms] == [
        ("Zhang Wei", "status page", ""),
        ("Liu Yang", "link", "at the console"),
    ]


async def test_a_confirmation_in_time_stays_quiet(make_site) -> None:
    s: Site = await make_site()
    assert (await s.post("/api/v1/shift/confirm", {"actor": "Li Na"}))[0] == 201
    await s.clock.advance(61)
    await s.until(lambda: bool(s.to("zhao")))
    await s.clock.advance(5 * 60)
    status, body = await s.post("/api/v1/shift/confirm", {"actor": "Zhao Min", "note": "here"})
    assert status == 201, body
    # Only the incoming shift's people may confirm it, once.
    status, body = await s.post("/api/v1/shift/confirm", {"actor": "Li Na"})
    assert status == 400 and "not on duty" in body["error"]
    status, body = await s.post("/api/v1/shift/confirm", {"actor": "Zhao Min"})
    assert status == 400 and "already" in body["error"]
    await s.clock.advance(30 * 60)
    await s.run_for(0.5)
    assert s.to("wang") == []
    assert [
        a for a in s.daemon.operations.list_alerts() if a["rule"] == "duty_post_unattended"
    ] == []


async def test_without_check_in_nothing_is_asked_or_paged(make_site) -> None:
    s: Site = await make_site(check_in=False)
    await s.clock.advance(61)
    await s.clock.advance(60 * 60)
    await s.run_for(0.5)
    assert s.pages() == []
    status, body = await s.post("/api/v1/shift/confirm", {"actor": "Liu Yang"})
    assert status == 400 and "check-in is off" in body["error"]


async def test_hand_over_note_and_confirmations_are_in_both_shifts_diaries(make_site) -> None:
    s: Site = await make_site()
    status, _ = await s.post(
        "/api/v1/shift/handover",
        {"actor": "Zhang Wei", "note": "UPS2 battery test tomorrow 09:00; disk on db1 replaced"},
    )
    assert status == 201
    status, body = await s.post("/api/v1/shift/handover", {"actor": "Wang Fang", "note": "x"})
    assert status == 400 and "not on duty" in body["error"]
    await s.clock.advance(61)
    await s.until(lambda: bool(s.to("liu")))
    assert (await s.post("/api/v1/shift/confirm", {"actor": "Liu Yang", "note": "read it"}))[0]
    rota = s.daemon.notify.rota
    day, night = rota.shift_at(START), rota.shift_at(HANDOVER + 1)
    storage = s.daemon.storage

    async def diary(shift: Any, lang: str) -> str:
        report = await build_report(
            storage, [], shift.start.timestamp(), shift.end.timestamp(), list(shift.people), lang
        )
        return to_markdown(report)

    out = await diary(day, "en")
    assert "## Hand-over" in out
    assert "| 03-02 20:29 | Zhang Wei | hand-over note | UPS2 battery test tomorrow" in out
    out = await diary(night, "zh")
    assert "## 交接班" in out and "| 03-02 20:30 | Liu Yang | 确认到岗 | read it |" in out


# A short evening shift, so that the next hand-over comes 20 minutes after the one it follows
# (the fake clock wakes every sleeper on the way: a 12-hour night would take a minute).
SHORT = ("08:30", "20:30", "20:50")
NEXT_HANDOVER = HANDOVER + 20 * 60


async def _night_unconfirmed_then_next_hand_over(s: Site) -> None:
    """The evening shift never confirms: the manager is paged at 20:45; at the 20:50
    hand-over the evening's alert ends with its shift."""
    assert (await s.post("/api/v1/shift/confirm", {"actor": "Zhang Wei"}))[0] == 201
    await s.clock.advance(61)  # 20:30: the night shift is asked, and nobody answers
    await s.until(lambda: bool(s.to("liu")))
    await s.clock.advance(15 * 60 + 1)
    await s.until(lambda: bool(s.to("wang")))
    assert "duty post may be unattended" in s.to("wang")[0]
    await s.clock.advance(NEXT_HANDOVER + 1 - s.clock.time())
    await s.until(lambda: any("Shift over at the hand-over" in m for m in s.to("wang")))
    await s.until(lambda: len(s.to("zhang")) == 2)  # the day shift is asked in turn


def _post_alerts(s: Site) -> list[tuple[str, str]]:
    return sorted(
        (a["labels"]["shift"], a["state"])
        for a in s.daemon.operations.list_alerts()
        if a["rule"] == "duty_post_unattended"
    )


async def test_an_unconfirmed_shift_ends_at_the_hand_over_and_the_next_starts_over(
    make_site,
) -> None:
    s: Site = await make_site(handovers=SHORT)
    await _night_unconfirmed_then_next_hand_over(s)
    rota = s.daemon.notify.rota
    night = rota.shift_at(HANDOVER + 1).index
    day = rota.shift_at(NEXT_HANDOVER + 1).index
    assert _post_alerts(s) == [(str(night), "resolved"), (str(day), "pending")]
    paged = len(s.to("wang"))
    # The day shift has its own fifteen minutes before the manager is paged again.
    await s.clock.advance(14 * 60)
    await s.run_for(0.3)
    assert len(s.to("wang")) == paged
    await s.clock.advance(61)
    await s.until(lambda: len(s.to("wang")) == paged + 1)
    assert "duty post may be unattended" in s.to("wang")[-1]
    assert (str(day), "firing") in _post_alerts(s)


async def test_after_an_unconfirmed_shift_a_confirmed_one_stays_quiet(make_site) -> None:
    s: Site = await make_site(handovers=SHORT)
    await _night_unconfirmed_then_next_hand_over(s)
    await s.clock.advance(5 * 60)
    assert (await s.post("/api/v1/shift/confirm", {"actor": "Li Na"}))[0] == 201
    paged = len(s.to("wang"))
    await s.clock.advance(30 * 60)
    await s.run_for(0.5)
    assert len(s.to("wang")) == paged
    assert all(state == "resolved" for _, state in _post_alerts(s))
