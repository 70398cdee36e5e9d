"""What a channel is: `send(message_id, payload)` answering "accepted, or may we retry?",
and what every channel's config shares (a rate limit)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import Field

from dutyd.core.configtypes import PositiveDuration, StrictModel


class RateLimit(StrictModel):
    count: int = Field(default=30, gt=0)
    per: PositiveDuration = 60.0


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    retry: bool = True  # False: the receiver refused the message itself (4xx); do not repeat it
    error: str = ""  # for the duty log: what failed, never a URL or a secret


class Channel(Protocol):
    name: str
    # "text" channels take {"title", "body"} and can stand in for one another (failover);
    # "alerts" channels take Alertmanager-shaped alerts.
    payload_kind: str
    # What the receiver renders the text as: "text", "html" or "markdown" (`safetext`); the
    # channel escapes device text for it.
    body_format: str

    async def send(self, message_id: str, payload: dict[str, Any]) -> SendResult: ...

    async def close(self) -> None: ...
