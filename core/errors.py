"""dutyd's error tree. Every library's exceptions are translated at its boundary.

    DutydError
    ├── ConfigError              refuse to start (or keep the old config on reload)
    ├── StartupError             a resource the daemon needs is not to be had (port, database)
    └── CollectError             this target is down for this poll; the reason is shown to people
        ├── TargetTimeout        no answer within the target's timeout
        ├── TargetUnreachable    connection refused, no route, host not found
        ├── BadCredentials       community, user, password, key or host key rejected
        ├── BadResponse          the peer answered, but with garbage or an error reply
        └── ReadingUnavailable   the device is reachable but reports this value as unknown/stale

A collector raises one of these (with `raise ... from exc`); the scheduler alone turns it into
`target_up = 0` with the reason, so no pysnmp, asyncssh or socket exception leaks further.
"""

from __future__ import annotations


def shown(text: str, limit: int = 80) -> str:
    """Device text quoted for an error message, cut to about `limit` characters. Quoted with
    repr, so control characters and line breaks cannot forge log lines; cut, because a
    device chooses how long its answer is and the reason is logged and shown on every poll.
    Shared by the collector kinds (which may not import each other)."""
    if len(text) > limit:
        return repr(text[:limit]) + f"... ({len(text)} characters)"
    return repr(text)


class DutydError(Exception):
    """Base of every error dutyd raises on purpose."""


class ConfigError(DutydError):
    """The configuration is invalid; `problems` lists every one, each with key path and line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.report())

    def report(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s)"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


class StartupError(DutydError):
    """The daemon cannot start: an address in use, a database it cannot create. The message
    says which resource and what to change; `dutyd run` prints it and exits 2."""


class CollectError(DutydError):
    """A poll failed. `reason` is a short machine label used in metrics (bounded set)."""

    reason = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TargetTimeout(CollectError):
    reason = "timeout"


class TargetUnreachable(CollectError):
    reason = "unreachable"


class BadCredentials(CollectError):
    reason = "auth"


class BadResponse(CollectError):
    reason = "bad_response"


class ReadingUnavailable(CollectError):
    reason = "unavailable"
