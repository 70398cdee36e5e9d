"""The first rule path: a threshold with a duration, driven by a stepped clock."""

from __future__ import annotations

from dutyd.core.records import AlertState, Sample
from dutyd.rules.config import Localized, RuleConfig
from dutyd.rules.engine import RuleEngine

TEMP_RULE = RuleConfig.model_validate(
    {
        "name": "room_temperature_out_of_range",
        "metric": "room_temperature_celsius",
        "condition": {"outside": [18, 26]},
        "for": "5m",
        "severity": "critical",
        "summary": "{target}: {value} °C is {threshold} for {duration}",
    }
)


def temp(value: float, ts: float, target: str = "room-a") -> Sample:
    return Sample.of("room_temperature_celsius", value, ts, {"target": target, "kind": "modbus"})


def test_pending_firing_resolved_timeline():
    engine = RuleEngine([TEMP_RULE])
    timeline: list[tuple[float, AlertState]] = []
    values = [22, 25, 27, 27.5, 28, 28, 28, 28, 28, 24, 23]
    for minute, v in enumerate(values):
        now = minute * 60.0
        for e in engine.ingest([temp(v, now)], now) + engine.tick(now):
            timeline.append((now / 60, e.state))
    # Out of range from minute 2; `for` 5 m elapses at minute 7; back in range at minute 9.
    assert timeline == [(2, AlertState.PENDING), (7, AlertState.FIRING), (9, AlertState.RESOLVED)]


def test_tick_fires_between_samples_and_summary_is_rendered():
    engine = RuleEngine([TEMP_RULE])
    assert engine.ingest([temp(30, 0.0)], 0.0)[0].state is AlertState.PENDING
    assert engine.tick(299.0) == []
    (event,) = engine.tick(300.0)
    assert event.state is AlertState.FIRING
    assert event.summary == "room-a: 30 °C is outside 18..26 for 5m"
    assert event.active_since == 0.0


def test_short_excursion_never_fires():
    engine = RuleEngine([TEMP_RULE])
    events = engine.ingest([temp(27, 0.0)], 0.0) + engine.ingest([temp(25, 120.0)], 120.0)
    assert [e.state for e in events] == [AlertState.PENDING, AlertState.INACTIVE]
    assert engine.alerts == {}


def test_one_alert_per_label_set_and_match_narrowing():
    rule = TEMP_RULE.model_copy(update={"for_": 0.0, "match": {"room": "A"}})
    engine = RuleEngine([rule])
    a = Sample.of("room_temperature_celsius", 30, 0.0, {"target": "s1", "room": "A"})
    b = Sample.of("room_temperature_celsius", 30, 0.0, {"target": "s2", "room": "A"})
    c = Sample.of("room_temperature_celsius", 30, 0.0, {"target": "s3", "room": "B"})
    events = engine.ingest([a, b, c], 0.0)
    assert sorted(dict(e.labels)["target"] for e in events) == ["s1", "s2"]
    assert all(e.state is AlertState.FIRING for e in events)
    assert len({e.fingerprint for e in events}) == 2


def test_template_is_data_not_code():
    rule = TEMP_RULE.model_copy(
        update={
            "summary": Localized.model_validate("{value.__class__} {__import__} {target}"),
            "for_": 0.0,
        }
    )
    engine = RuleEngine([rule])
    (event,) = engine.ingest([temp(40, 0.0)], 0.0)
    assert event.summary == "{value.__class__} {__import__} room-a"


def test_summary_says_why_an_alert_held_by_hysteresis_reads_inside_the_limits():
    """Humidity dips to 39.7 and is back at 40.0 when `for` elapses: still active (it must pass
    41 to clear), and the page must not read "40 %RH is outside 40..60" with no explanation."""
    rule = RuleConfig.model_validate(
        {
            "name": "room_humidity_out_of_range",
            "metric": "room_humidity_percent",
            "condition": {"outside": [40, 60]},
            "clear_above": 41,
            "clear_below": 59,
            "for": "10s",
            "summary": "Room humidity {value} %RH is {threshold} for {duration}",
        }
    )
    engine = RuleEngine([rule])

    def rh(value: float, ts: float) -> list:
        sample = Sample.of("room_humidity_percent", value, ts, {"target": "room-a"})
        return engine.ingest([sample], ts) + engine.tick(ts)

    (pending,) = rh(39.7, 0.0)
    assert pending.summary == "Room humidity 39.7 %RH is outside 40..60 for 0s"
    (firing,) = rh(40.0, 10.0)
    assert firing.state is AlertState.FIRING
    # 40 is not outside 40..60: the summary says what the alert waits for instead.
    assert firing.summary == ("Room humidity 40 %RH is still held until back within 41..59 for 10s")
    (resolved,) = rh(41.5, 20.0)
    assert resolved.state is AlertState.RESOLVED
    assert "held" not in resolved.summary
