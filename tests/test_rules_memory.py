"""Years of running (issue 22, item 4): what the rule engine remembers is bounded. Per-series
state of stateful rules whose label sets stopped coming leaves memory after a few intervals
(its alert's series and `absent` rules keep theirs); expired silences and windows long over
leave memory too (the store keeps them for the retention time)."""

from __future__ import annotations

from dutyd.core.records import AlertState, Sample
from dutyd.rules.config import RuleConfig
from dutyd.rules.engine import RuleEngine
from dutyd.rules.overlays import MaintenanceWindow, Silence

HOUR = 3600.0

RATE = RuleConfig.model_validate(
    {
        "name": "port_errors",
        "metric": "if_in_errors_total",
        "value": "counter_rate",
        "condition": {"above": 1},
        "severity": "warning",
        "summary": "{target} {port} errors",
    }
)
ABSENT = RuleConfig.model_validate(
    {
        "name": "sensor_silent",
        "metric": "room_temperature_celsius",
        "condition": {"absent": "10m"},
        "severity": "warning",
        "summary": "{target} silent",
    }
)


def errors(port: str, value: float, ts: float) -> Sample:
    return Sample.of("if_in_errors_total", value, ts, {"target": "sw1", "port": port})


def test_series_not_seen_for_the_idle_time_leave_memory_unless_alerting() -> None:
    engine = RuleEngine([RATE, ABSENT])
    rule = engine.rules["port_errors"]
    for t in (0.0, 60.0):
        # gone: counts slowly; failing: its rate fires; kept: stays fed
        engine.ingest([errors("gone", t, t), errors("failing", 1000 * t, t)], t)
    engine.ingest([Sample.of("room_temperature_celsius", 21, 60.0, {"target": "s1"})], 60.0)
    failing = [a for a in engine.alerts.values() if a.label("port") == "failing"]
    assert [a.state for a in failing] == [AlertState.FIRING]
    assert len(rule.series) == 2
    for t in range(120, int(3 * HOUR), 60):
        engine.ingest([errors("kept", t, float(t))], float(t))
    assert len(rule.series) == 3
    dropped, _ = engine.forget_stale(3 * HOUR, HOUR)
    assert dropped == 1
    ports = {dict(s)["port"] for s in rule.series}
    assert ports == {"kept", "failing"}  # the firing alert's series stays
    assert len(engine.rules["sensor_silent"].series) == 1  # absent: kept, it is the point


def test_expired_silences_and_windows_long_over_leave_memory() -> None:
    engine = RuleEngine([RATE])
    engine.add_silence(Silence("old", (), 100.0, "li", "done", 0.0))
    engine.add_silence(Silence("live", (), 10 * HOUR, "li", "works", 0.0))
    engine.add_window(MaintenanceWindow("w-old", frozenset({"sw1"}), (), 0.0, 200.0, "old"))
    engine.add_window(MaintenanceWindow("w-out", frozenset({"sw1"}), (), 0.0, 2 * HOUR, "out"))
    # An alert active since 1 h: the window over before it started goes, the one inside
    # its outage stays (red lines exclude its time).
    engine.ingest([errors("p1", 0.0, HOUR - 60)], HOUR - 60)
    engine.ingest([errors("p1", 10_000.0, HOUR)], HOUR)
    assert [a.active_since for a in engine.alerts.values()] == [HOUR]
    _, overlays = engine.forget_stale(3 * HOUR, HOUR)
    assert overlays == 2
    assert set(engine.silences) == {"live"}
    assert set(engine.windows) == {"w-out"}
