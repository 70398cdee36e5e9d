"""Per-channel rate limit: a token bucket. Messages over the limit wait; none is dropped."""

from __future__ import annotations


class TokenBucket:
    def __init__(self, count: int, per: float, now: float) -> None:
        self.capacity = float(count)
        self.rate = count / per  # tokens per second
        self.tokens = float(count)
        self.at = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 when allowed now, else the seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def refund(self) -> None:
        """A failed attempt gives its token back: the limit protects receivers from floods of
        messages, and retries are already spaced by the backoff."""
        self.tokens = min(self.capacity, self.tokens + 1.0)
