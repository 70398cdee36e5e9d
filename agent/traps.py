"""Wiring the SNMP trap listener (collectors/snmp/trap_listener.py) into the daemon.

`DaemonTrapSink` is the listener's view of the daemon: a trap's samples go where a poll's
go (the latest values, without dropping the target's other series, and the rule
engine, as provisional: a trap opens an alert, the poll it asks for confirms or clears it, and
a trap alone never holds an alert past that poll), "poll this target now" goes to the
scheduler, and counts to
dutyd_traps_received_total. The daemon calls `start_traps` / `stop_traps` /
`retarget_traps`; the sink gets the scheduler, the latest values, the rules' entry point and
the metrics, never the daemon.
"""

from __future__ import annotations

from collections.abc import Callable

from dutyd.agent.config import Settings
from dutyd.agent.scheduler import Scheduler, target_labels
from dutyd.collectors.snmp.collector import SnmpTarget
from dutyd.collectors.snmp.trap_listener import TrapListener
from dutyd.core.clock import SYSTEM_CLOCK, Clock
from dutyd.core.latest import LatestSamples
from dutyd.core.records import Sample
from dutyd.exporters.instrumentation import Instrumentation


class DaemonTrapSink:
    def __init__(
        self,
        scheduler: Scheduler,
        latest: LatestSamples,
        evaluate: Callable[[list[Sample], bool], None],
        metrics: Instrumentation,
    ) -> None:
        self._scheduler = scheduler
        self._latest = latest
        self._evaluate = evaluate
        self._metrics = metrics

    def deliver(self, target: str, samples: list[Sample]) -> None:
        if target not in self._scheduler.collectors:
            return  # removed by a reload in the meantime
        self._latest.update_target(target, samples)
        self._metrics.samples_ingested.inc(len(samples))
        self._evaluate(samples, True)  # provisional: the poll it asks for has the last word

    def request_poll(self, target: str) -> None:
        self._scheduler.request_poll(target)

    def collector(self, target: str) -> object | None:
        return self._scheduler.collectors.get(target)

    def count(self, kind: str, result: str) -> None:
        self._metrics.traps_received.labels(kind, result).inc()


def _snmp_targets(settings: Settings) -> list[tuple[SnmpTarget, dict[str, str]]]:
    return [(t, target_labels(t)) for t in settings.targets if isinstance(t, SnmpTarget)]


async def start_traps(
    settings: Settings, sink: DaemonTrapSink, clock: Clock = SYSTEM_CLOCK
) -> TrapListener | None:
    """The listener of `settings.traps`, started; None when traps are off. `clock` is the
    daemon's, so a trap's samples are stamped on the time the rules run on."""
    cfg = settings.traps
    if cfg is None or not cfg.enabled:
        return None
    listener = TrapListener(cfg, _snmp_targets(settings), sink, clock)
    await listener.start()
    return listener


async def retarget_traps(listener: TrapListener | None, settings: Settings) -> None:
    if listener is not None:
        await listener.retarget(_snmp_targets(settings))


async def stop_traps(listener: TrapListener | None) -> None:
    if listener is not None:
        await listener.stop()
