"""Per-channel rate limit (token bucket) and outbox backoff: pure logic, fake clock."""

from __future__ import annotations

import random

from dutyd.notify.outbox import backoff
from dutyd.notify.ratelimit import TokenBucket


def test_bucket_allows_burst_then_spaces_messages() -> None:
    bucket = TokenBucket(count=3, per=60, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == 20.0  # one token every 20 s
    assert abs(bucket.take(19.0) - 1.0) < 1e-9
    assert bucket.take(20.0) == 0.0
    bucket.refund()  # a failed attempt gives its token back
    assert bucket.take(20.0) == 0.0


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(1)
    for attempt, full in ((1, 1.0), (2, 2.0), (3, 4.0), (10, 300.0), (100, 300.0)):
        for _ in range(20):
            delay = backoff(attempt, 1.0, 300.0, rng)
            assert full * 0.5 <= delay <= full
