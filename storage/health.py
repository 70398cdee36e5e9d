"""Whether the store takes writes: a failed write is a state, not a traceback per attempt.

The store reports each failed and each successful write here. The first failure opens a
fault episode (one log line, with the reason); failures during the episode are only counted;
the first write that succeeds again closes it (one log line, how long and how many). The
daemon shows the state (`/readyz`, `/healthz`, `dutyd_storage_writable`,
`dutyd_storage_errors_total`) and, while it lasts, probes the store with backoff
(`Storage.probe`) and keeps what it could not write in memory until then.

A write that hangs (a frozen file system) is reported here too, at its deadline
(`storage.write_deadline`, `sqlite/database.py`): the same state as a write that failed.

`durable` is False when dutyd runs without a database file it can write
(`storage.when_unwritable: run`): the state then lives in memory only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from dutyd.core.errors import DutydError

log = logging.getLogger("dutyd.storage")


class StorageUnavailable(DutydError):
    """A write (or read) the store could not do now: a full, read-only or failing disk, a
    database that cannot be reached. Already counted and logged by `StorageHealth`: callers
    keep what they meant to write and retry, without a traceback of their own."""


class StorageHealth:
    def __init__(self) -> None:
        self.writable = True
        self.durable = True
        self.reason = ""
        self.errors = 0  # failed storage calls since start
        self._episode_errors = 0
        self._since: float | None = None  # time.monotonic() at the episode's start
        # Called with (writable, reason) when the state changes, and with no change on every
        # error (the daemon counts them in a metric).
        self.on_change: list[Callable[[bool, str], None]] = []
        self.on_error: list[Callable[[], None]] = []

    def failed(self, reason: str) -> None:
        self.errors += 1
        self._episode_errors += 1
        for count in self.on_error:
            count()
        if not self.writable:
            return
        self.writable = False
        self.reason = reason
        self._since = time.monotonic()
        self._episode_errors = 1
        log.error(
            "storage cannot be written; keeping what it refuses in memory and retrying",
            extra={"fields": {"reason": reason}},
        )
        for notify in self.on_change:
            notify(False, reason)

    def succeeded(self) -> None:
        if self.writable:
            return
        lasted = time.monotonic() - (self._since or time.monotonic())
        log.warning(
            "storage writable again",
            extra={
                "fields": {
                    "after": f"{lasted:.1f}s",
                    "failed_calls": self._episode_errors,
                    "reason_was": self.reason,
                }
            },
        )
        self.writable = True
        self.reason = ""
        self._since = None
        for notify in self.on_change:
            notify(True, "")

    def run_without_durable_state(self, reason: str) -> None:
        """Started on memory (`when_unwritable: run`): nothing survives a restart."""
        self.durable = False
        self.reason = reason
        log.error(
            "running WITHOUT durable state: alerts, the duty log and the outbox live in memory "
            "only and are lost at exit",
            extra={"fields": {"reason": reason}},
        )

    def problem(self) -> str | None:
        """What is wrong, for /readyz and /healthz; None when nothing is."""
        if not self.durable:
            return f"running without durable state: {self.reason}"
        if not self.writable:
            return f"storage cannot be written: {self.reason}"
        return None
