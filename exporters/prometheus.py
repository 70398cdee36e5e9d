"""The scrape-time view of the sample store and the alerts, in Prometheus exposition format.

A custom collector in client_python's style: nothing is copied into gauges between scrapes;
at scrape time it walks the latest-value store and the alert table and yields metric families.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample as PromSample

from agent.records import AlertState, Sample

BUILTIN_HELP = {
    "target_up": "1 if the target's last poll succeeded, 0 if it failed "
    "(the reason is counted in dutyd_poll_errors_total)",
}


class AlertView(Protocol):
    """What the exporter needs of an alert."""

    rule: str
    labels: tuple[tuple[str, str], ...]
    severity: str
    state: AlertState


class StoreExporter(Collector):
    def __init__(
        self,
        samples: Callable[[], Iterable[Sample]],
        alerts: Callable[[], Iterable[AlertView]],
        help_for: Mapping[str, str],
    ) -> None:
        self._samples = samples
        self._alerts = alerts
        self._help = {**BUILTIN_HELP, **help_for}

    def describe(self) -> list[Metric]:
        # Dynamic families: tell the registry not to call collect() at registration.
        return []

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for s in self._samples():
            family = families.get(s.name)
            if family is None:
                is_counter = s.name.endswith("_total")
                base = s.name[:-6] if is_counter else s.name
                family = Metric(
                    base,
                    self._help.get(s.name, f"{s.name} as read by dutyd"),
                    "counter" if is_counter else "gauge",
                )
                families[s.name] = family
            family.samples.append(PromSample(s.name, dict(s.labels), s.value, None))
        yield from families.values()
        yield self._alert_family()

    def _alert_family(self) -> Metric:
        family = Metric(
            "dutyd_alert_state",
            "Active alerts (like Prometheus's ALERTS): 1 per pending or firing alert",
            "gauge",
        )
        for alert in self._alerts():
            if alert.state not in (AlertState.PENDING, AlertState.FIRING):
                continue
            labels = dict(alert.labels)
            labels.update(
                alertname=alert.rule, severity=alert.severity, alertstate=str(alert.state)
            )
            family.samples.append(PromSample("dutyd_alert_state", labels, 1.0, None))
        return family
