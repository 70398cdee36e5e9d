"""Wiring the SNMP trap listener (collectors/snmp/trap_listener.py) into the daemon.

`DaemonTrapSink` is the listener's view of the daemon: a trap's samples go where a poll's
go (the latest-value store, without dropping the target's other series, and the rule
engine), "poll this target now" goes to the scheduler, and counts to
dutyd_traps_received_total. The daemon calls `start_traps` / `stop_traps` / `retarget_traps`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dutyd.agent.scheduler import target_labels
from dutyd.collectors.snmp.collector import SnmpTarget
from dutyd.collectors.snmp.trap_listener import TrapListener
from dutyd.core.records import Sample

if TYPE_CHECKING:
    from dutyd.agent.config import Settings
    from dutyd.agent.daemon import Daemon


class DaemonTrapSink:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def deliver(self, target: str, samples: list[Sample]) -> None:
        d = self.daemon
        if target not in d.scheduler.collectors:
            return  # removed by a reload in the meantime
        d.store.update_target(target, samples)
        d.metrics.samples_ingested.inc(len(samples))
        for event in d.engine.ingest(samples, time.time()):
            d._events.put_nowait(event)

    def poll_now(self, target: str) -> None:
        self.daemon.scheduler.poll_now(target)

    def collector(self, target: str) -> object | None:
        return self.daemon.scheduler.collectors.get(target)

    def count(self, kind: str, result: str) -> None:
        self.daemon.metrics.traps_received.labels(kind, result).inc()


def _snmp_targets(settings: Settings) -> list[tuple[SnmpTarget, dict[str, str]]]:
    return [(t, target_labels(t)) for t in settings.targets if isinstance(t, SnmpTarget)]


async def start_traps(daemon: Daemon) -> TrapListener | None:
    """The listener of `settings.traps`, started; None when traps are off."""
    cfg = daemon.settings.traps
    if cfg is None or not cfg.enabled:
        return None
    listener = TrapListener(cfg, _snmp_targets(daemon.settings), DaemonTrapSink(daemon))
    await listener.start()
    return listener


async def retarget_traps(listener: TrapListener | None, settings: Settings) -> None:
    if listener is not None:
        await listener.retarget(_snmp_targets(settings))


async def stop_traps(listener: TrapListener | None) -> None:
    if listener is not None:
        await listener.stop()
