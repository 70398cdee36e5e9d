"""Signed ack links: valid, expired, tampered, replayed, and from another key."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from dutyd.notify.acklink import AckLinks, InvalidToken
from dutyd.storage.sqlite import SqliteStorage

NOW = 1_800_000_000.0


def test_valid_link_names_alert_and_person() -> None:
    links = AckLinks(b"k" * 32, ttl=3600)
    claim = links.verify(links.make("fp123", "李娜", NOW), NOW + 10)
    assert (claim.fingerprint, claim.actor) == ("fp123", "李娜")
    assert claim.expires == NOW + 3600


def test_expired_link() -> None:
    links = AckLinks(b"k" * 32, ttl=3600)
    token = links.make("fp", "a", NOW)
    with pytest.raises(InvalidToken, match="expired"):
        links.verify(token, NOW + 3601)


def test_tampered_link() -> None:
    links = AckLinks(b"k" * 32, ttl=3600)
    body, sig = links.make("fp", "Li Na", NOW).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["a"] = "Mallory"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidToken, match="signature"):
        links.verify(f"{forged}.{sig}", NOW)
    with pytest.raises(InvalidToken, match="signature"):
        AckLinks(b"other key", 3600).verify(f"{body}.{sig}", NOW)
    for junk in ("", "abc", "a.b.c", "!!.??", "x" * 5000):
        with pytest.raises(InvalidToken):
            links.verify(junk, NOW)


async def test_replayed_link_is_refused(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "d.db")
    await storage.open()
    try:
        links = AckLinks(b"k" * 32, ttl=3600)
        token = links.make("fp", "Li Na", NOW)
        await links.consume(storage.ack_links, links.verify(token, NOW), NOW)
        with pytest.raises(InvalidToken, match="already been used"):
            await links.consume(storage.ack_links, links.verify(token, NOW + 1), NOW + 1)
        # Another link for the same alert and person is a different token.
        other = links.make("fp", "Li Na", NOW)
        await links.consume(storage.ack_links, links.verify(other, NOW), NOW)
    finally:
        await storage.close()


def test_links_need_a_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        AckLinks(b"", 3600)


async def test_signed_links_are_made_at_sending_and_never_stored(tmp_path) -> None:
    """A signed ack link is a credential: one POST acknowledges in that person's name. Queued
    messages hold a placeholder; the link is signed as the message is sent, so neither the
    outbox, the WAL nor the database file holds one, before or after delivery."""
    import asyncio
    import re

    from tests.test_notify_delivery import Receiver, configs, firing, make_service

    receiver = Receiver()
    await receiver.start()
    db = tmp_path / "d.db"
    cfg = configs(
        {"phone": receiver.url("zhang")},
        ["phone"],
        ack_secret="s" * 32,
        ack_base_url="https://duty.example",
    )
    receiver.status = 500  # the first attempts fail: the message waits in the outbox
    service, storage, _ = await make_service(db, *cfg)
    try:
        await service(firing(1))
        await receiver.wait_for(1, 5)
        raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("d.db"))
        assert b"/ack/" not in raw and b"<<ack-link:fp1>>" in raw
        receiver.status = 200
        receiver.received.clear()
        await receiver.wait_for(1, 10)
        for _ in range(50):  # delivered: the row leaves the outbox
            if (await storage.outbox.stats(time.time())).depth == 0:
                break
            await asyncio.sleep(0.05)
        message = receiver.received[-1]["body"]["message"]
        link = re.search(r"https://duty\.example/ack/(\S+)", message)
        assert link, message
        assert "<<ack-link" not in message
        claim = service.links.verify(link.group(1), time.time())
        assert (claim.fingerprint, claim.actor) == ("fp1", "Zhang Wei")
    finally:
        await service.stop()
        await storage.close()
        await receiver.stop()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("d.db"))
    assert b"/ack/" not in raw, "a signed link reached the database"
    assert link.group(1).encode() not in raw


async def test_a_link_acknowledges_only_the_episode_it_was_made_for(tmp_path: Path) -> None:
    """Finding 6 of issue 24: a link made for one firing of an alert acknowledged the next
    firing of the same fingerprint (the link named only the fingerprint)."""
    import asyncio
    import re

    import aiohttp

    from dutyd.agent.daemon import Daemon
    from dutyd.core.records import Sample
    from dutyd.duty.drill import DRILL_LABELS, DRILL_SAMPLE
    from tests.test_notify_api import settings
    from tests.test_notify_delivery import Receiver

    receiver = Receiver()
    await receiver.start()
    daemon = Daemon(settings(tmp_path, receiver))
    await daemon.start()

    def drill(days_ago: float) -> None:
        now = time.time()
        daemon.operations.ingest_samples(
            [Sample.of(DRILL_SAMPLE, now - days_ago * 86400, now, DRILL_LABELS)]
        )

    async def state() -> str:
        views = daemon.operations.list_alerts()
        return views[0]["state"] if views else ""

    async def new_link(seen: set[str]) -> str:
        """The ack link of Zhang Wei's next page (one not in `seen`)."""
        for _ in range(200):
            for r in receiver.received:
                found = re.search(r"http://dutyd\.example(/ack/\S+)", r["body"]["message"])
                if r["path"] == "/zhang" and found and found.group(1) not in seen:
                    return found.group(1)
            await asyncio.sleep(0.05)
        raise AssertionError(f"no new page: {receiver.received}")

    try:
        drill(40)  # no drill for 40 days: the duty pack's alert fires, paged to the pair
        first = await new_link(set())
        drill(0)  # a drill now: it resolves
        for _ in range(100):
            if await state() != "firing":
                break
            await asyncio.sleep(0.05)
        drill(40)  # and fires again: a new episode, with its own page and link
        second = await new_link({first})
        assert await state() == "firing"
        async with aiohttp.ClientSession() as http:
            async with http.post(daemon.http.url + first, data={"note": "late"}) as r:
                assert r.status == 410, await r.text()
            assert not daemon.operations.list_alerts(["firing"])[0]["acknowledged"]
            async with http.post(daemon.http.url + second, data={"note": "on it"}) as r:
                assert r.status == 200, await r.text()
        assert daemon.operations.list_alerts(["firing"])[0]["acknowledged"]
    finally:
        await daemon.stop()
        await receiver.stop()


def test_a_link_made_before_the_clock_moved_is_read_on_the_moved_clock() -> None:
    """A step of the clock while running moves the alerts' starts (`duty.clockwatch`): a link
    made before names the episode by its old start and is read on the moved clock, a link
    made after is not moved, even when the step went back (so the two share times)."""
    links = AckLinks(b"k" * 32, ttl=3600)
    before = links.make("fp", "a", NOW, since=NOW - 60)
    links.shift(-3600.0)
    after = links.make("fp", "a", NOW - 3600 + 5, since=NOW - 3600 - 60 + 5)
    claim = links.verify(before, NOW - 3600 + 10)
    assert claim.same_episode(NOW - 60 - 3600)
    assert claim.expires == NOW + 3600 - 3600
    claim = links.verify(after, NOW - 3600 + 10)
    assert claim.same_episode(NOW - 3600 - 60 + 5)
    assert claim.expires == int(NOW - 3600 + 5 + 3600)
    links.shift(1800.0)
    assert links.verify(before, NOW).same_episode(NOW - 60 - 1800)
    assert links.verify(after, NOW).same_episode(NOW - 60 + 5 - 1800)
    # A link of another run (or of none that moved): moved by all of this run's moves.
    other = AckLinks(b"k" * 32, ttl=3600)
    old = other.make("fp", "a", NOW, since=NOW - 60)
    other.shift(600.0)
    assert other.verify(old, NOW + 600).same_episode(NOW - 60 + 600)
