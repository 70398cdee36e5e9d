"""dutyd's own metrics (the `dutyd_` family): how well the daemon itself is doing."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

POLL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Instrumentation:
    """Self metrics registered in the daemon's own registry (never the global default)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.polls = Counter(
            "dutyd_polls", "Polls completed, by target kind", ["kind"], registry=registry
        )
        self.poll_errors = Counter(
            "dutyd_poll_errors",
            "Failed polls by target kind and reason",
            ["kind", "reason"],
            registry=registry,
        )
        self.poll_duration = Histogram(
            "dutyd_poll_duration_seconds",
            "Time one poll took, by target kind",
            ["kind"],
            buckets=POLL_BUCKETS,
            registry=registry,
        )
        self.scheduler_lag = Histogram(
            "dutyd_scheduler_lag_seconds",
            "Delay between a poll's scheduled time and its start",
            buckets=POLL_BUCKETS,
            registry=registry,
        )
        self.samples_ingested = Counter(
            "dutyd_samples_ingested", "Samples received from collectors", registry=registry
        )
        self.rule_evaluation = Histogram(
            "dutyd_rule_evaluation_seconds",
            "Time spent evaluating rules on one poll's samples",
            buckets=POLL_BUCKETS,
            registry=registry,
        )
        self.alert_events = Counter(
            "dutyd_alert_events",
            "Alert state changes, by new state",
            ["state"],
            registry=registry,
        )
        self.config_reloads = Counter(
            "dutyd_config_reloads",
            "Configuration reloads, by result",
            ["result"],
            registry=registry,
        )
        self.targets = Gauge(
            "dutyd_targets", "Configured targets, by kind", ["kind"], registry=registry
        )
