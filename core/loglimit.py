"""Repeated log lines of one kind for one subject, collapsed: the first few in a minute are
written, the rest counted and summed up in one line when the minute is over
("target down: 37 more in the last minute").

A target flapping every second otherwise writes a hundred lines a minute (down, recovered, its
alert pending, inactive again), burying what matters and filling the disk the log is on. Only
call sites that ask (`allow`) are limited, and none about a page or an alert that fires,
resolves, is acknowledged or crosses its red line asks: those lines are never dropped. The
duty log keeps every event whatever the console shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("dutyd")

# Lines of one kind for one subject written per window before the rest are counted.
BURST = 3
WINDOW = 60.0


@dataclass(slots=True)
class _Window:
    start: float
    written: int = 0
    held: int = 0
    fields: dict[str, Any] = field(default_factory=dict)


class LogLimiter:
    """`allow(kind, subject)` before writing a line; `flush()` every second or so writes the
    summaries of the windows that ended. Times are `monotonic()` seconds."""

    def __init__(
        self,
        monotonic: Callable[[], float],
        on_held: Callable[[str], None] = lambda kind: None,
        burst: int = BURST,
        window: float = WINDOW,
    ) -> None:
        self._monotonic = monotonic
        self._on_held = on_held
        self.burst = burst
        self.window = window
        self._windows: dict[tuple[str, str], _Window] = {}

    def allow(self, kind: str, subject: str, fields: dict[str, Any] | None = None) -> bool:
        """Whether to write this line now; False: it is counted for the summary instead.
        `fields` (the subject's, e.g. target=...) go on the summary line."""
        now = self._monotonic()
        key = (kind, subject)
        w = self._windows.get(key)
        if w is not None and now - w.start >= self.window:
            self._summarise(key, w)
            w = None
        if w is None:
            w = self._windows[key] = _Window(now, fields=dict(fields or {}))
        if w.written < self.burst:
            w.written += 1
            return True
        w.held += 1
        self._on_held(kind)
        return False

    def flush(self) -> None:
        """Write the summary of each window that ended, and forget the quiet ones."""
        now = self._monotonic()
        for key, w in list(self._windows.items()):
            if now - w.start >= self.window:
                self._summarise(key, w)

    def _summarise(self, key: tuple[str, str], w: _Window) -> None:
        del self._windows[key]
        if w.held:
            kind = key[0]
            log.warning(
                "%s: %d more in the last minute",
                kind,
                w.held,
                extra={"fields": {**w.fields, "kind": kind, "held": w.held}},
            )
