"""Signed ack links: valid, expired, tampered, replayed, and from another key."""

from __future__ import annotations

import base64
import json
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
