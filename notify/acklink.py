"""Signed acknowledge links: an HMAC-SHA256 token naming the alert, its episode and the
person, expiring.

The episode is the alert's start (`active_since`): a link made for one firing of an alert
does not acknowledge the next firing of the same fingerprint (`Claim.same_episode`).

Token = base64url(JSON claims) "." base64url(HMAC-SHA256(key, claims)). Verification compares
in constant time, checks the expiry, and `consume` records the token's nonce in storage so a
link works once (replays after a forward or a browser reload are refused).

In a queued message a link is a placeholder (`placeholders`, with the person and the
episodes in the payload: `for_links`), not the link: a signed link is a credential (one POST
acknowledges in this person's name), so it is made when the message is sent
(`with_signed_links`, its expiry counting from the send) and never stored in the outbox or its
WAL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from dutyd.notify.escalation import Page, PageKind
from dutyd.storage import AckLinkRepository

# Pages that ask for an acknowledgement carry an ack link.
ACKABLE = (
    PageKind.FIRING,
    PageKind.REPEAT,
    PageKind.RED_LINE,
    PageKind.ACK_EXPIRED,
    PageKind.SETTLED,
    PageKind.RESUMED,
)


class InvalidToken(ValueError):
    """The link is malformed, tampered with, expired or already used; `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Claim:
    fingerprint: str
    actor: str
    expires: float
    nonce: str
    since: float | None = None  # the episode's start (active_since); None: a link of old

    def same_episode(self, active_since: float | None) -> bool:
        """True when the alert, started at `active_since`, is the episode the link was made
        for (milliseconds apart at most: stored starts may round)."""
        if self.since is None or active_since is None:
            return False
        return abs(self.since - active_since) < 0.001


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AckLinks:
    def __init__(self, key: bytes, ttl: float) -> None:
        if not key:
            raise ValueError("ack links need a secret (notify.ack_secret_env or _file)")
        self._key = key
        self.ttl = ttl
        # The clock's moves while running (`shift`), oldest first. A link names the run and
        # the number of moves when it was made, so one made before a move is read on the
        # moved clock (its episode start and expiry moved as the alert's were); by time alone
        # a link made in the hour before a step back and one made in the hour after it could
        # not be told apart. A link of another run was made before all of this run's moves.
        self._run = secrets.token_hex(4)
        self._moves: list[float] = []

    def adopt_moves(self, old: AckLinks) -> None:
        self._run, self._moves = old._run, old._moves

    def shift(self, seconds: float) -> None:
        """The daemon's clock and every moment it keeps moved by `seconds` (`duty.clockwatch`)."""
        self._moves.append(seconds)

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()

    def make(self, fingerprint: str, actor: str, now: float, since: float | None = None) -> str:
        """A link acknowledging the alert's episode that started at `since`."""
        claims: dict[str, object] = {
            "f": fingerprint,
            "a": actor,
            "e": int(now + self.ttl),
            "n": secrets.token_hex(8),
        }
        if self._moves:
            claims["k"] = f"{self._run}:{len(self._moves)}"
        if since is not None:
            claims["s"] = since
        body = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode()
        return f"{_b64(body)}.{_b64(self._sign(body))}"

    def verify(self, token: str, now: float) -> Claim:
        body_text, sep, sig_text = token.partition(".")
        if not sep or len(token) > 2048:
            raise InvalidToken("malformed link")
        try:
            body, sig = _unb64(body_text), _unb64(sig_text)
        except (ValueError, TypeError):
            raise InvalidToken("malformed link") from None
        if not hmac.compare_digest(sig, self._sign(body)):
            raise InvalidToken("the link's signature does not match (altered or from elsewhere)")
        try:
            claims = json.loads(body)
            since = claims.get("s")
            claim = Claim(
                str(claims["f"]),
                str(claims["a"]),
                float(claims["e"]),
                str(claims["n"]),
                float(since) if since is not None else None,
            )
            run, _, made_after = str(claims.get("k", ":0")).partition(":")
            moved = sum(self._moves[int(made_after) if run == self._run else 0 :])
        except (ValueError, KeyError, TypeError):
            raise InvalidToken("malformed link") from None
        if moved:
            claim = replace(
                claim,
                expires=claim.expires + moved,
                since=None if claim.since is None else claim.since + moved,
            )
        if claim.expires < now:
            raise InvalidToken("the link has expired")
        return claim

    async def consume(self, used: AckLinkRepository, claim: Claim, now: float) -> None:
        """Mark the link used; raises InvalidToken when it was used before."""
        if not await used.use(claim.nonce, now, claim.expires):
            raise InvalidToken("the link has already been used")


def ack_placeholder(fingerprint: str) -> str:
    """Stands in the queued body where the signed ack link of `fingerprint` will go."""
    return f"<<ack-link:{fingerprint}>>"


def placeholders(pages: Sequence[Page]) -> dict[str, str]:
    """For the template: each page's alert and the placeholder of its link."""
    return {p.event.fingerprint: ack_placeholder(p.event.fingerprint) for p in pages}


def for_links(payload: dict[str, Any], actor: str, pages: Sequence[Page]) -> None:
    """Name in a queued message's payload whom its links act for and, for each alert, the
    episode its link may acknowledge (not a later one)."""
    payload["ack_actor"] = actor
    payload["episodes"] = {
        p.event.fingerprint: p.event.active_since for p in pages if p.event.active_since is not None
    }


def with_signed_links(
    payload: dict[str, Any], links: AckLinks | None, base_url: str, now: float
) -> dict[str, Any]:
    """The payload as sent: each placeholder replaced by a link signed `now` under
    `base_url`; the payload itself when it has none."""
    actor = payload.get("ack_actor")
    body = payload.get("body")
    if not actor or not isinstance(body, str) or links is None:
        return payload
    base = base_url.rstrip("/")
    episodes = payload.get("episodes") or {}
    for fp in payload.get("fingerprints", ()):
        mark = ack_placeholder(fp)
        if mark in body:
            link = links.make(fp, actor, now, episodes.get(fp))
            body = body.replace(mark, f"{base}/ack/{link}")
    return {**payload, "body": body}
