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
