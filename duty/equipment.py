"""The equipment register, kept by itself: what each target is, read from the device.

Collector kinds that can (NUT: `ups.mfr`, `ups.model`, `ups.serial`, `battery.date`; SNMP:
the system group and ENTITY-MIB where served; SSH: OS, kernel, hardware) read their target's
facts on a poll at start and then once a day (`Collector.facts_due`), not on every poll. Each
reading is compared with the last one recorded (`storage.equipment`, append-only): a new
target is recorded, a change (another serial: the device was swapped; new firmware) is
recorded and written to the machine-room log (duty log `equipment.changed`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from dutyd.collectors.base import Collector
from dutyd.core.clock import SYSTEM_CLOCK, Clock
from dutyd.core.tasks import cancel_and_wait
from dutyd.duty.recorder import RegisterRecorder
from dutyd.storage import EquipmentFacts, Storage

log = logging.getLogger("dutyd.equipment")

READ_EVERY = 86400.0


class EquipmentRegister(RegisterRecorder):
    def __init__(
        self,
        collectors: Callable[[], Mapping[str, Collector]],
        storage: Storage,
        clock: Clock = SYSTEM_CLOCK,
        every: float = READ_EVERY,
        fence: Callable[[], int | None] = lambda: None,
    ) -> None:
        super().__init__(storage, clock, fence=fence)
        self._collectors = collectors
        self.every = every
        self.known: dict[str, EquipmentFacts] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.known = {f.target: f for f in await self._storage.equipment.latest()}
        if self._task is None:
            self._task = asyncio.create_task(self._daily(), name="equipment-daily")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await super().close()

    async def _daily(self) -> None:
        while True:
            await self._clock.sleep(self.every)
            for collector in self._collectors().values():
                collector.facts_due = True

    def observe(self, target: str, kind: str, facts: dict[str, str]) -> None:
        """Facts a poll read (called by the daemon after the poll): recorded when new or
        changed, off the poll's path."""
        self._spawn(self._record(target, kind, facts, self._clock.time()))

    async def _record(self, target: str, kind: str, facts: dict[str, str], now: float) -> None:
        try:
            async with self._lock:
                before = self.known.get(target)
                if before is not None and before.facts == facts:
                    return
                row = await self._storage.equipment.record(now, target, kind, facts)
                self.known[target] = EquipmentFacts(row, now, target, kind, facts)
                if before is None:
                    return
                changes = {
                    key: [before.facts.get(key, ""), facts.get(key, "")]
                    for key in sorted(before.facts.keys() | facts.keys())
                    if before.facts.get(key, "") != facts.get(key, "")
                }
                words = "; ".join(
                    f"{k} {old or '-'} -> {new or '-'}" for k, (old, new) in changes.items()
                )
                await self._storage.log.append(
                    now,
                    "equipment.changed",
                    "dutyd",
                    target,
                    {
                        "target": target,
                        "kind": kind,
                        "changes": changes,
                        "note": f"{target}: {words}",
                    },
                    self._fence(),
                )
                log.warning(
                    "equipment changed", extra={"fields": {"target": target, "changes": words}}
                )
        except Exception:
            # A full disk must not stop the polls; the next daily reading tries again.
            log.exception("recording the equipment register failed")
