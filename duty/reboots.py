"""Reboots that happened while dutyd itself was down.

Collectors see a reboot as uptime going backwards between two of their polls; after a restart
of dutyd there is no previous poll, so a server that rebooted during the gap would never be
noticed. Each target's boot time (poll time minus uptime) is kept in storage; at the first poll
after a start, a boot time later than the stored one by more than a clock correction
(`RESTART_TOLERANCE`) marks the reboot on that poll's `*_rebooted` sample, and the duty pack's
reboot rules fire as for one seen live.
"""

from __future__ import annotations

import dataclasses
import logging

from dutyd.core.records import Sample
from dutyd.storage import BootTimeRepository

log = logging.getLogger("dutyd.reboots")

# The uptime a collector reports, and the 0/1 sample it sets on a reboot it saw itself.
REBOOT_SAMPLES = {
    "node_uptime_seconds": "node_rebooted",  # SSH: /proc/uptime
    "device_uptime_seconds": "device_rebooted",  # SNMP: sysUpTime
}
# Boot times computed from two polls of one run differ by rounding and the poll's own time
# (dutyd's clock does not step: core/clock.py `SteadyClock`); a reboot moves it by at least the
# time the device took to come back, far more than this.
TOLERANCE = 60.0
# Across a restart of dutyd the boot time on record was computed on the clock of the last run:
# a correction of the system clock while dutyd was stopped (NTP stepping a clock that drifted
# minutes, a VM restored) moves every boot time by as much. A reboot moves it by at least the
# device's uptime when it was last polled, so only a device that rebooted twice within these
# minutes (and while dutyd was down) goes unseen here.
RESTART_TOLERANCE = 15 * 60.0


class RebootMemory:
    def __init__(self, boot_times: BootTimeRepository) -> None:
        self._repo = boot_times
        self._known: dict[tuple[str, str], float] = {}
        self._checked: set[tuple[str, str]] = set()
        self._dirty: dict[tuple[str, str], float] = {}

    async def load(self) -> None:
        self._known = await self._repo.load_all()

    def check(self, samples: list[Sample], clock_offset: float = 0.0) -> list[Sample]:
        """The poll's samples, with `*_rebooted` set to 1 when this is the first poll since
        dutyd started and the target booted after the last boot time on record.
        `clock_offset`: the system clock minus the samples' clock (dutyd's steady clock after
        a step): boot times are kept on the system clock, which the next run starts on."""
        rebooted: set[tuple[str, str]] = set()  # (target, rebooted metric)
        for s in samples:
            flag = REBOOT_SAMPLES.get(s.name)
            if flag is None or not s.value >= 0:
                continue
            key = (s.label("target"), s.name)
            boot = s.timestamp + clock_offset - s.value
            previous = self._known.get(key)
            if key not in self._checked:
                self._checked.add(key)
                if previous is not None and boot > previous + RESTART_TOLERANCE:
                    rebooted.add((key[0], flag))
                    log.info(
                        "target rebooted while dutyd was down",
                        extra={"fields": {"target": key[0], "booted": round(boot)}},
                    )
            if previous is None or abs(boot - previous) > TOLERANCE:
                self._known[key] = boot
                self._dirty[key] = boot
        if not rebooted:
            return samples
        return [
            dataclasses.replace(s, value=1.0) if (s.label("target"), s.name) in rebooted else s
            for s in samples
        ]

    async def flush(self) -> None:
        """Write the boot times that changed (a new target, a reboot)."""
        dirty, self._dirty = self._dirty, {}
        try:
            await self._repo.save(dirty)
        except Exception:
            for key, boot in dirty.items():
                self._dirty.setdefault(key, boot)
            raise
