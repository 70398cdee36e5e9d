"""Durable state behind one small async interface; SQLite (WAL) is the embedded default.

Everything the daemon must not lose lives here: alert states, the duty log, and what later
layers add (acknowledgements, silences, maintenance windows, the notification outbox). A server
database replaces SQLite by implementing `Storage` and registering a URL scheme in `open_storage`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
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
    ) -> list[LogEntry]: ...


def open_storage(path: Path) -> Storage:
    """The storage for a configured location (a file path means SQLite)."""
    from agent.storage.sqlite import SqliteStorage

    return SqliteStorage(path)
