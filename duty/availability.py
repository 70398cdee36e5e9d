"""What the equipment running-status register is made of: each target's outages and reboots,
written to the machine-room log as they happen (`target.down` with the reason, `target.up`,
`target.rebooted`), from every poll's result. `registers.py` turns them into per-day
availability, outages and reboots."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from dutyd.core.records import Sample
from dutyd.storage import FencedOut, NewLogEntry, Storage

log = logging.getLogger("dutyd.availability")

# Samples that say the target restarted since the last poll (SSH uptime, SNMP sysUpTime).
REBOOT_SAMPLES = frozenset({"node_rebooted", "device_rebooted"})


class AvailabilityRecorder:
    def __init__(self, storage: Storage, fence: Callable[[], int | None] = lambda: None) -> None:
        self._storage = storage
        # The epoch of a node of a pair: a node that lost the lease writes no register line.
        self._fence = fence
        self._writes: set[asyncio.Task[None]] = set()

    def observe(
        self,
        target: str,
        kind: str,
        at: float,
        ok: bool,
        was_up: bool | None,
        reason: str,
        message: str,
        samples: Iterable[Sample],
    ) -> None:
        """One poll's result; `was_up` is the target's state before it (None: first poll)."""
        entries: list[NewLogEntry] = []
        data = {"kind": kind}
        if not ok and was_up is not False:
            entries.append(
                NewLogEntry(
                    at, "target.down", "dutyd", target, {**data, "reason": reason, "error": message}
                )
            )
        elif ok and was_up is False:
            entries.append(NewLogEntry(at, "target.up", "dutyd", target, data))
        if ok and any(s.name in REBOOT_SAMPLES and s.value == 1.0 for s in samples):
            entries.append(NewLogEntry(at, "target.rebooted", "dutyd", target, data))
        if entries:
            task = asyncio.create_task(self._write(entries))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _write(self, entries: list[NewLogEntry]) -> None:
        try:
            await self._storage.log.append_many(entries, self._fence())
        except FencedOut:
            log.debug("register lines refused: another node holds the notifier lease")
        except Exception:
            log.exception("recording a target's outage failed")

    async def close(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
