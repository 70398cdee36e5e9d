"""dutyd's own metrics (the `dutyd_` family): how well the daemon itself is doing.

Conventions: base units (seconds), counters end in `_total`, labels from bounded sets only
(kind, reason, state, result). Families read by label are pre-filled for each known value,
so `rate()` and `increase()` see a 0 before the first event rather than no series at all.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from dutyd.core.records import AlertState

# `_created` series double every counter and histogram in the text format and nothing reads
# them (Prometheus 2.x ignores them there); dutyd owns its process, so switch them off.
disable_created_metrics()

# dutyd_traps_received_total's pre-filled series: the results each kind of notification can
# have (collectors/snmp/trap_listener.py KINDS and RESULTS; kept here, as exporters import no
# collector).
_DECODED_RESULTS = ("mapped", "unmapped", "unknown_trap", "unknown_source", "wrong_target")
TRAP_SERIES: tuple[tuple[str, str], ...] = (
    *(
        (k, r)
        for k in ("v1_trap", "v2c_trap", "v2c_inform")
        for r in (*_DECODED_RESULTS, "bad_community")
    ),
    *((k, r) for k in ("v3_trap", "v3_inform") for r in _DECODED_RESULTS),
    *(("v3", r) for r in ("bad_user", "unknown_engine_id", "replayed", "discovery", "malformed")),
    ("unknown", "malformed"),
    ("unknown", "rate_limited"),
)

POLL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Instrumentation:
    """Self metrics registered in the daemon's own registry (never the global default)."""

    def __init__(self, registry: CollectorRegistry, kinds: Iterable[str] = ()) -> None:
        kinds = sorted(kinds)
        self.polls = Counter(
            "dutyd_polls", "Polls completed, by target kind", ["kind"], registry=registry
        )
        self.poll_errors = Counter(
            "dutyd_poll_errors",
            "Failed polls by target kind and reason",
            ["kind", "reason"],
            registry=registry,
        )
        # Polls are pre-filled per kind; errors are not (yet): tests/test_e2e_daemon.py reads
        # the first dutyd_poll_errors_total{kind=...} series and expects it to be a real one.
        for kind in kinds:
            self.polls.labels(kind)
        self.poll_duration = Histogram(
            "dutyd_poll_duration_seconds",
            "Time one poll took, by target kind",
            ["kind"],
            buckets=POLL_BUCKETS,
            registry=registry,
        )
        for kind in kinds:
            self.poll_duration.labels(kind)
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
        for state in AlertState:
            self.alert_events.labels(str(state))
        # The system clock stepped (durations go on on the monotonic clock: duty/clockwatch.py).
        self.clock_jumps = Counter(
            "dutyd_clock_jumps",
            "Steps of the system clock seen, by direction (forward, back)",
            ["direction"],
            registry=registry,
        )
        for direction in ("forward", "back"):
            self.clock_jumps.labels(direction)
        self.clock_offset = Gauge(
            "dutyd_clock_offset_seconds",
            "The system clock minus dutyd's steady clock (the sum of the steps since start)",
            registry=registry,
        )
        # Repeated log lines of one kind for one target collapsed into a summary line.
        self.log_lines_suppressed = Counter(
            "dutyd_log_lines_suppressed",
            "Log lines held back by the per-target rate limit, by kind",
            ["kind"],
            registry=registry,
        )
        for kind in (
            "target down",
            "target recovered",
            "alert pending",
            "alert inactive",
            "reading down",
            "reading back",
        ):
            self.log_lines_suppressed.labels(kind)
        self.config_reloads = Counter(
            "dutyd_config_reloads",
            "Configuration reloads, by result",
            ["result"],
            registry=registry,
        )
        for result in ("applied", "rejected"):
            self.config_reloads.labels(result)
        self.targets = Gauge(
            "dutyd_targets", "Configured targets, by kind", ["kind"], registry=registry
        )
        # Storage faults (storage/health.py): a failed call is counted, the state is a gauge.
        self.storage_errors = Counter(
            "dutyd_storage_errors",
            "Storage calls that failed on a fault of the disk or the database (full, "
            "read-only, I/O error, unreachable)",
            registry=registry,
        )
        self.storage_writable = Gauge(
            "dutyd_storage_writable",
            "1 when the store takes writes, 0 during a fault (what it refused waits in memory)",
            registry=registry,
        )
        self.storage_writable.set(1)
        self.storage_durable = Gauge(
            "dutyd_storage_durable",
            "1 when the state is kept in the database file, 0 when dutyd runs on memory only "
            "(the file could not be written at start: storage.when_unwritable: run)",
            registry=registry,
        )
        self.storage_durable.set(1)
        self.retention_deleted = Counter(
            "dutyd_retention_deleted_rows",
            "Rows deleted by retention, by table",
            ["table"],
            registry=registry,
        )
        # Notifications (notify/): channel labels are configured channel names (bounded).
        self.outbox_depth = Gauge(
            "dutyd_notify_outbox_depth",
            "Notifications written but not yet accepted by their channel",
            registry=registry,
        )
        self.outbox_oldest_age = Gauge(
            "dutyd_notify_outbox_oldest_age_seconds",
            "Age of the oldest notification still waiting in the outbox (0 when empty)",
            registry=registry,
        )
        self.notifications_sent = Counter(
            "dutyd_notifications_sent",
            "Notifications accepted by a channel, by channel name",
            ["channel"],
            registry=registry,
        )
        self.notifications_failed = Counter(
            "dutyd_notifications_failed",
            "Failed delivery attempts (each retried or failed over), by channel name",
            ["channel"],
            registry=registry,
        )
        # SNMP traps and informs (collectors/snmp/trap_listener.py); label values are bounded
        # there (TRAP_KINDS x TRAP_RESULTS), pre-filled here for rate().
        self.traps_received = Counter(
            "dutyd_traps_received",
            "SNMP notifications received, by kind (v1_trap, v2c_inform, ...) and result "
            "(mapped, unknown_trap, bad_community, malformed, rate_limited, ...)",
            ["kind", "result"],
            registry=registry,
        )
        for kind, result in TRAP_SERIES:
            self.traps_received.labels(kind, result)
        self.notify_latency = Histogram(
            "dutyd_notify_delivery_seconds",
            "Time from a page being due to its channel accepting it",
            buckets=POLL_BUCKETS,
            registry=registry,
        )
        # The cluster and the dead man's switch (set as functions by the daemon).
        self.ha_active = Gauge(
            "dutyd_ha_active",
            "1 when this node is the active notifier (always 1 for a node alone), else 0",
            registry=registry,
        )
        self.ha_epoch = Gauge(
            "dutyd_ha_epoch",
            "The fencing epoch of the notifier lease as last seen",
            registry=registry,
        )
        self.ha_takeovers = Counter(
            "dutyd_ha_takeovers", "Times this node became the active notifier", registry=registry
        )
        self.fenced_writes = Counter(
            "dutyd_cluster_fenced_writes",
            "This node's writes the store refused because another node took over (the "
            "notifier lease, or this node's targets after it was counted dead)",
            registry=registry,
        )
        self.cluster_members = Gauge(
            "dutyd_cluster_members_live", "Live members of the cluster", registry=registry
        )
        self.targets_owned = Gauge(
            "dutyd_targets_owned", "Targets this node polls (its shard)", registry=registry
        )
        self.loop_lag = Gauge(
            "dutyd_event_loop_lag_seconds",
            "How late a 0.5 s timer on the event loop fired, last measurement",
            registry=registry,
        )
        self.loop_stalls = Counter(
            "dutyd_event_loop_stalls",
            "Times the event loop was stalled longer than cluster.deadman.stall_after",
            registry=registry,
        )
        self.deadman_pings = Counter(
            "dutyd_deadman_pings",
            "Dead man's switch heartbeats, by result",
            ["result"],
            registry=registry,
        )
        for result in ("ok", "failed"):
            self.deadman_pings.labels(result)
