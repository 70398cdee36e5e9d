"""The latest values and each target's poll status, as a poll's result leaves them
(`LatestSamples.record_poll`, what the daemon calls for every poll)."""

from __future__ import annotations

from dutyd.core.latest import LatestSamples
from dutyd.core.records import Sample

LABELS = {"target": "ups1", "kind": "nut"}


def sample(name: str, value: float, ts: float, **labels: str) -> Sample:
    return Sample.of(name, value, ts, {**LABELS, **labels})


def test_first_poll_reports_never_polled_and_sets_the_status_up() -> None:
    latest = LatestSamples()
    good = [sample("target_up", 1, 10), sample("ups_on_battery", 0, 10)]
    assert latest.record_poll("ups1", "nut", good, 10.0, 0.2) is None
    status = latest.status["ups1"]
    assert (status.up, status.reason, status.message) == (True, "", "")
    assert (status.last_poll_at, status.last_success_at, status.last_duration) == (10.0, 10.0, 0.2)
    assert latest.target_samples("ups1") == good


def test_failed_polls_keep_the_last_good_values_and_count_by_reason() -> None:
    latest = LatestSamples()
    latest.record_poll("ups1", "nut", [sample("target_up", 1, 10), sample("x", 5, 10)], 10.0, 0.1)
    down = [sample("target_up", 0, 20)]
    assert latest.record_poll("ups1", "nut", down, 20.0, 2.0, ("timeout", "no answer")) is True
    assert latest.record_poll("ups1", "nut", down, 30.0, 2.0, ("timeout", "no answer")) is False
    assert latest.record_poll("ups1", "nut", down, 40.0, 0.1, ("refused", "port closed")) is False
    status = latest.status["ups1"]
    assert (status.up, status.reason, status.message) == (False, "refused", "port closed")
    assert status.consecutive_failures == 3
    assert status.error_counts == {"timeout": 2, "refused": 1}
    assert (status.last_poll_at, status.last_success_at) == (40.0, 10.0)
    # `target_up` 0 laid over the last good poll's series, which stay for the rules.
    values = {s.name: s.value for s in latest.target_samples("ups1")}
    assert values == {"target_up": 0, "x": 5}
    # Exported: only `target_up` of a down target.
    assert [s.name for s in latest.samples(only_up=True)] == ["target_up"]


def test_a_good_poll_after_failures_resets_and_replaces_the_series_whole() -> None:
    latest = LatestSamples()
    latest.record_poll("sw1", "snmp", [sample("if_oper_up", 1, 10, port="Gi0/1")], 10.0, 0.1)
    latest.record_poll("sw1", "snmp", [sample("target_up", 0, 20)], 20.0, 1.0, ("timeout", "-"))
    again = [sample("target_up", 1, 30), sample("if_oper_up", 1, 30, port="Gi0/2")]
    assert latest.record_poll("sw1", "snmp", again, 30.0, 0.1) is False
    status = latest.status["sw1"]
    assert (status.up, status.consecutive_failures, status.last_success_at) == (True, 0, 30.0)
    assert status.error_counts == {"timeout": 1}  # the history stays
    # A port gone since the last good poll is gone from the latest values.
    assert latest.target_samples("sw1") == again
