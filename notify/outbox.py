"""The durable outbox's policy: every notification is stored before it is sent, removed once
accepted (`storage.outbox`, an `OutboxRepository`).

A message names its id (stable: a hash of what it says and to whom, so a receiver can drop
duplicates), the channel to try now and the fallbacks after it, and when to try next. After a
crash (even SIGKILL between write and send) the messages are still there and go out at restart:
at least once. Delivered ids are remembered for `SENT_RETENTION`, so a page regenerated after a
restart is not sent twice (nor one still queued: `queued_among`); failed sends back off with
`backoff`.
"""

from __future__ import annotations

import random

from dutyd.storage import OutboxMessage

SENT_RETENTION = 7 * 86400.0


def backoff(attempts: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter in [0.5, 1.0] of the step, so retries of many
    messages to one recovering receiver spread out instead of arriving together."""
    step = min(maximum, initial * (2 ** min(attempts - 1, 30)))
    return step * (0.5 + 0.5 * rng.random())


__all__ = ["SENT_RETENTION", "OutboxMessage", "backoff"]
