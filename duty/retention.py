"""Retention: rows older than their configured keep time are deleted, in small batches, so
the database stays bounded over years (`storage.retention`).

Each table's rows go in batches of `batch` (one short statement each on the database's own
thread, never on the event loop), with a yield between batches so other storage calls are
not held up; then the store gives the freed space back (`Storage.compact`: SQLite's
incremental vacuum and a truncating WAL checkpoint; PostgreSQL's autovacuum does this itself).
Rule events are kept past the longest `events` window of the rules (each series' latest row
always); the duty log for ever unless `duty_log` is set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from dutyd.core.clock import SYSTEM_CLOCK, Clock
from dutyd.rules.engine import RuleEngine
from dutyd.storage import RetentionConfig, Storage, StorageUnavailable

log = logging.getLogger("dutyd.storage")

DAY = 86400.0
# Rule events are kept this long past the longest window, so a reload that lengthens a
# window a little still finds its history.
RULE_EVENTS_MARGIN = DAY


def rule_events_keep(engine: RuleEngine, configured: float | None) -> float | None:
    """How long rule events are kept: as configured, else past the rules' longest window
    (None: no `events` rule, nothing reads them)."""
    if configured is not None:
        return configured
    spans = [r.config.events.over for r in engine.rules.values() if r.config.events]
    return max(spans) + RULE_EVENTS_MARGIN if spans else None


class Retention:
    def __init__(
        self,
        storage: Storage,
        config: Callable[[], RetentionConfig],
        engine: Callable[[], RuleEngine],
        clock: Clock = SYSTEM_CLOCK,
        on_deleted: Callable[[str, int], None] = lambda table, count: None,
        enabled: Callable[[], bool] = lambda: True,
    ) -> None:
        self.storage = storage
        self.config = config
        self.engine = engine
        self.clock = clock
        self.on_deleted = on_deleted
        self.enabled = enabled  # in a cluster: the active node prunes

    async def run(self) -> None:
        while True:
            await self.clock.sleep(self.config().every)
            if not self.enabled() or not self.storage.health.writable:
                continue
            try:
                await self.prune(self.clock.time())
            except StorageUnavailable:
                pass  # counted and logged by the store's health; tried again next round
            except Exception:
                log.exception("retention failed; tried again at the next round")

    async def prune(self, now: float) -> dict[str, int]:
        """One round: every table past its keep time, then the space given back."""
        cfg = self.config()
        tables: list[tuple[str, float | None, Callable[[float, int], Awaitable[int]]]] = [
            ("environment", cfg.environment, self.storage.environment.prune),
            ("duty_log", cfg.duty_log, self.storage.log.prune),
            (
                "rule_events",
                rule_events_keep(self.engine(), cfg.rule_events),
                self.storage.rule_events.prune,
            ),
            ("overlays", cfg.overlays, self.storage.overlays.prune),
        ]
        counts: dict[str, int] = {}
        for table, keep, prune in tables:
            if keep is None:
                continue
            total = 0
            while True:
                n = await prune(now - keep, cfg.batch)
                total += n
                if n < cfg.batch:
                    break
                await asyncio.sleep(0)  # other storage calls between batches
            if total:
                counts[table] = total
                self.on_deleted(table, total)
        await self.storage.compact()
        if counts:
            log.info("retention deleted old rows", extra={"fields": counts})
        return counts
