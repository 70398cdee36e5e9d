"""The rule engine: evaluates every rule on each new sample and on a clock tick.

Samples arrive per series; a rule selects series by metric name, label matchers and target.
The engine owns the alerts (one per rule and label set) and returns the events their state
changes produce; persistence and notification happen outside, from those events.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from agent.configtypes import format_duration
from agent.records import AlertEvent, AlertState, Labels, Sample
from rules.alerts import Alert, fingerprint
from rules.config import RuleConfig
from rules.template import render


class CompiledRule:
    """A rule with its selector prepared for the hot path."""

    __slots__ = ("config", "extra_labels", "match", "targets")

    def __init__(self, config: RuleConfig) -> None:
        self.config = config
        self.match = tuple(config.match.items())
        self.targets = frozenset(config.targets)
        self.extra_labels = tuple(config.labels.items())

    def selects(self, sample: Sample) -> bool:
        if self.targets and sample.label("target") not in self.targets:
            return False
        return all(sample.label(k) == v for k, v in self.match)

    def alert_labels(self, sample: Sample) -> Labels:
        if not self.extra_labels:
            return sample.labels
        return tuple(sorted({**dict(sample.labels), **dict(self.extra_labels)}.items()))

    def summary(self, sample: Sample, since: float | None, now: float) -> str:
        values: dict[str, object] = dict(sample.labels)
        values.update(
            rule=self.config.name,
            value=sample.value,
            threshold=self.config.condition.describe(),
            target=sample.label("target"),
            severity=self.config.severity,
            duration=format_duration(now - since) if since is not None else "0s",
        )
        values["for"] = format_duration(self.config.for_)
        return render(self.config.summary, values)


class RuleEngine:
    def __init__(self, rules: Iterable[RuleConfig]) -> None:
        self.rules: dict[str, CompiledRule] = {r.name: CompiledRule(r) for r in rules}
        self._by_metric: dict[str, list[CompiledRule]] = defaultdict(list)
        for rule in self.rules.values():
            self._by_metric[rule.config.metric].append(rule)
        self.alerts: dict[str, Alert] = {}
        # The last sample each active alert saw, so `tick` can promote pending alerts
        # between samples and render their summaries.
        self._last_sample: dict[str, Sample] = {}

    @property
    def metrics(self) -> set[str]:
        return set(self._by_metric)

    def ingest(self, samples: Iterable[Sample], now: float) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        by_metric = self._by_metric
        for sample in samples:
            rules = by_metric.get(sample.name)
            if not rules:
                continue
            for rule in rules:
                if rule.selects(sample):
                    event = self._evaluate(rule, sample, now)
                    if event is not None:
                        events.append(event)
        return events

    def tick(self, now: float) -> list[AlertEvent]:
        """Promote pending alerts whose `for` elapsed since the last sample."""
        events: list[AlertEvent] = []
        for fp, alert in list(self.alerts.items()):
            if alert.state is not AlertState.PENDING:
                continue
            rule = self.rules.get(alert.rule)
            sample = self._last_sample.get(fp)
            if rule is None or sample is None:
                continue
            event = alert.step(
                True, None, now, rule.config.for_, rule.summary(sample, alert.active_since, now)
            )
            if event is not None:
                events.append(event)
        return events

    def _evaluate(self, rule: CompiledRule, sample: Sample, now: float) -> AlertEvent | None:
        labels = rule.alert_labels(sample)
        fp = fingerprint(rule.config.name, labels)
        alert = self.alerts.get(fp)
        holds = rule.config.condition.holds(sample.value)
        if alert is None:
            if not holds:
                return None
            alert = Alert(rule.config.name, labels, rule.config.severity, fingerprint=fp)
            self.alerts[fp] = alert
        self._last_sample[fp] = sample
        since = alert.active_since if alert.active else now
        event = alert.step(
            holds, sample.value, now, rule.config.for_, rule.summary(sample, since, now)
        )
        if alert.state is AlertState.INACTIVE:
            del self.alerts[fp]
            self._last_sample.pop(fp, None)
        return event

    def forget_resolved(self, older_than: float) -> None:
        """Drop resolved alerts last changed before `older_than` (they stay in history)."""
        for fp, alert in list(self.alerts.items()):
            if alert.state is AlertState.RESOLVED and (alert.resolved_at or 0) < older_than:
                del self.alerts[fp]
                self._last_sample.pop(fp, None)

    def restore(self, alerts: Iterable[Alert]) -> None:
        """Take back alerts saved before a restart; those of rules that no longer exist are
        dropped."""
        for alert in alerts:
            if alert.rule in self.rules:
                self.alerts[alert.fingerprint] = alert
