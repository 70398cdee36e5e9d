"""Durable state behind one small async interface; SQLite (WAL) is the embedded default.

Everything the daemon must not lose lives here: alert states, the duty log, and what later
layers add (acknowledgements, silences, maintenance windows, the notification outbox). A server
database replaces SQLite by implementing `Storage` and registering a URL scheme in `open_storage`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class StoredAlert:
    fingerprint: str
    rule: str
    labels: dict[str, str]
    severity: str
    state: str
    active_since: float | None
    fired_at: float | None
    resolved_at: float | None
    value: float | None
    summary: str
    # The rules layer's own fields (acknowledgement, last notified state, flapping history,
    # red line crossed, when the condition last held), as JSON.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredSilence:
    id: int
    matchers: dict[str, Any]  # label -> value or {op: value}, as in rule `match:`
    until: float
    actor: str
    reason: str
    created: float


@dataclass(frozen=True, slots=True)
class StoredWindow:
    """An ad hoc maintenance window (scheduled ones live in the config)."""

    id: int
    targets: list[str]
    matchers: dict[str, Any]
    start: float
    end: float
    actor: str
    reason: str
    created: float


# A counter increase seen by an `events` rule: (rule, series labels, ts, increment, counter).
RuleEventRow = tuple[str, dict[str, str], float, float, float]


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line of the append-only duty log."""

    id: int
    timestamp: float
    kind: str  # alert.firing, alert.resolved, config.reload, notify.sent, ack, drill, ...
    actor: str  # "dutyd" or the person who acted
    subject: str  # alert fingerprint, target name, channel ...
    data: dict[str, Any]


class Storage(ABC):
    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def save_alert(self, alert: StoredAlert) -> None: ...

    @abstractmethod
    async def delete_alert(self, fingerprint: str) -> None: ...

    @abstractmethod
    async def load_alerts(self) -> list[StoredAlert]: ...

    # -- silences, maintenance windows, event counts (the rules layer) ---------------------------

    @abstractmethod
    async def add_silence(
        self, matchers: dict[str, Any], until: float, actor: str, reason: str, created: float
    ) -> int: ...

    @abstractmethod
    async def end_silence(self, id: int, at: float, actor: str) -> bool:
        """Mark a silence removed; False when there is no such live silence."""

    @abstractmethod
    async def load_silences(self, now: float) -> list[StoredSilence]:
        """Silences not removed and not yet over at `now`."""

    @abstractmethod
    async def add_window(
        self,
        targets: list[str],
        matchers: dict[str, Any],
        start: float,
        end: float,
        actor: str,
        reason: str,
        created: float,
    ) -> int: ...

    @abstractmethod
    async def end_window(self, id: int, at: float, actor: str) -> bool: ...

    @abstractmethod
    async def load_windows(self, since: float) -> list[StoredWindow]:
        """Windows not removed that end after `since` (kept for red-line exclusion)."""

    @abstractmethod
    async def append_rule_events(self, rows: Sequence[RuleEventRow]) -> None: ...

    @abstractmethod
    async def load_rule_events(self, since: float) -> list[RuleEventRow]:
        """Counter increases from `since` on, plus each series' latest row (its last value)."""

    @abstractmethod
    async def append_log(
        self, timestamp: float, kind: str, actor: str, subject: str, data: dict[str, Any]
    ) -> int: ...

    @abstractmethod
    async def read_log(
        self,
        since: float | None = None,
        until: float | None = None,
        kinds: Sequence[str] = (),
        subject: str | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[LogEntry]:
        """Entries in the order they were written; `newest_first` for a tail (the newest
        `limit` entries, newest first)."""


def open_storage(path: Path) -> Storage:
    """The storage for a configured location (a file path means SQLite)."""
    from dutyd.storage.sqlite import SqliteStorage

    return SqliteStorage(path)
