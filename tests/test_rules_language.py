"""The rule language: selectors, conditions, derived values, aggregation, validation errors."""

from __future__ import annotations

from typing import Any

import pytest

from dutyd.agent.config import load_from_dict, parse_yaml, validate
from dutyd.core.errors import ConfigError
from dutyd.core.records import AlertState, Sample
from dutyd.rules.config import RuleConfig, RulesConfig
from dutyd.rules.engine import RuleEngine
from dutyd.rules.packs import check_overrides, effective_rules

F, R, P = AlertState.FIRING, AlertState.RESOLVED, AlertState.PENDING


def make(**over: Any) -> RuleEngine:
    data: dict[str, Any] = {"name": "r", "metric": "m", "condition": {"above": 1}}
    data.update(over)
    return RuleEngine([RuleConfig.model_validate(data)])


def s(v: float, ts: float, name: str = "m", **labels: str) -> Sample:
    return Sample.of(name, v, ts, {"target": "t1", **labels})


def states(engine: RuleEngine, seq: list[tuple[float, Sample]]) -> list[tuple[float, str]]:
    out = []
    for now, sample in seq:
        out += [(now, str(e.state)) for e in engine.ingest([sample], now) + engine.tick(now)]
    return out


@pytest.mark.parametrize(
    ("match", "selected"),
    [
        ({"port": "Gi0/1"}, ["Gi0/1"]),
        ({"port": {"!=": "Gi0/1"}}, ["Gi0/2", "Te1/1"]),
        ({"port": {"=~": "Gi.*"}}, ["Gi0/1", "Gi0/2"]),
        ({"port": {"!~": "Gi.*"}}, ["Te1/1"]),
        ({"port": {"regex": "Gi0/[2-9]|Te.*"}}, ["Gi0/2", "Te1/1"]),
        ({"role": {"!=": "uplink"}}, ["Gi0/1", "Gi0/2", "Te1/1"]),  # missing label reads ""
    ],
)
def test_label_matchers(match, selected):
    engine = make(match=match, condition={"equals": 0})
    samples = [s(0, 0, port=p) for p in ("Gi0/1", "Gi0/2", "Te1/1")]
    events = engine.ingest(samples, 0)
    assert sorted(dict(e.labels)["port"] for e in events) == selected


def test_regex_is_anchored():
    engine = make(match={"port": {"=~": "Gi"}}, condition={"equals": 0})
    assert engine.ingest([s(0, 0, port="Gi0/1")], 0) == []


@pytest.mark.parametrize(
    ("condition", "values", "fires_at"),
    [
        ({"above": 5}, [5, 6], [1]),
        ({"below": 5}, [5, 4], [1]),
        ({"outside": [1, 3]}, [2, 3, 4], [2]),
        ({"inside": [1, 3]}, [0, 4, 2], [2]),
        ({"equals": 1}, [0, 1], [1]),
        ({"changed": True}, [7, 7, 8, 8], [2]),
    ],
)
def test_conditions(condition, values, fires_at):
    engine = make(condition=condition)
    got = states(engine, [(float(i), s(v, float(i))) for i, v in enumerate(values)])
    assert [t for t, st in got if st == "firing"] == fires_at


def test_absent_fires_when_series_goes_stale_and_resolves_when_it_returns():
    engine = make(condition={"absent": "2m"})
    assert engine.ingest([s(1, 0)], 0) == []
    assert engine.tick(119) == []
    assert [e.state for e in engine.tick(120)] == [F]
    assert [e.state for e in engine.ingest([s(1, 200)], 200)] == [R]


def test_counter_rate_with_reset_in_bits_per_second():
    engine = make(
        metric="if_in_octets_total",
        value="counter_rate",
        scale=8,
        condition={"above": 800_000_000},  # 800 Mbit/s on a 1 Gbit/s uplink
    )
    seq = [
        (0.0, 0.0),
        (10.0, 500_000_000.0),  # 50 MB/s = 400 Mbit/s
        (20.0, 1_700_000_000.0),  # 120 MB/s = 960 Mbit/s -> fires
        (30.0, 100_000_000.0),  # reset (reboot): 100 MB in 10 s = 80 Mbit/s -> resolves
    ]
    got = []
    for ts, v in seq:
        got += [(ts, e.state, e.value) for e in engine.ingest([s(v, ts, "if_in_octets_total")], ts)]
    assert got == [(20.0, F, 960_000_000.0), (30.0, R, 80_000_000.0)]


def test_rate_of_change_of_a_gauge():
    engine = make(value="rate", condition={"above": 0.05})  # rising faster than 3 °C/min
    got = states(engine, [(0.0, s(20, 0)), (60.0, s(21, 60)), (120.0, s(25, 120))])
    assert got == [(120.0, "firing")]


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        # max over 5 m: the 30 read at 60 s keeps it above 10 until it leaves the window.
        ("max", [(60.0, "firing"), (361.0, "resolved")]),
        ("min", []),
        ("avg", [(60.0, "firing"), (361.0, "resolved")]),  # 17.5, 13.3, 11.25, then 5
        ("last", [(60.0, "firing"), (120.0, "resolved")]),
    ],
)
def test_window_aggregation(function, expected):
    engine = make(condition={"above": 10}, window={"function": function, "over": "5m"})
    seq = [(0.0, 5.0), (60.0, 30.0), (120.0, 5.0), (180.0, 5.0), (361.0, 5.0)]
    assert states(engine, [(t, s(v, t)) for t, v in seq]) == expected


@pytest.mark.parametrize(
    ("across", "down", "fires"),
    [
        ({"mode": "any"}, 1, True),
        ({"mode": "all"}, 2, False),
        ({"mode": "all"}, 3, True),
        ({"mode": "at_least", "n": 2}, 1, False),
        ({"mode": "at_least", "n": 2}, 2, True),
    ],
)
def test_across_targets(across, down, fires):
    engine = make(metric="target_up", condition={"equals": 0}, across={**across, "by": ["site"]})
    samples = [
        Sample.of("target_up", 0 if i < down else 1, 0, {"target": f"t{i}", "site": "hq"})
        for i in range(3)
    ]
    events = engine.ingest(samples, 0)
    firing = [e for e in events if e.state is F]
    assert bool(firing) == fires
    if fires:
        assert dict(firing[0].labels) == {"site": "hq"} and firing[0].value == down


def test_events_in_window_counts_counter_increases():
    engine = make(
        metric="security_virus_outbreaks_total",
        condition=None,
        events={"more_than": 3, "over": "365d"},
    )
    day = 86400.0
    values = [2, 3, 3, 4, 1, 2]  # baseline 2; +1, +1, reset to 1 (+1), +1 -> 4 events
    got = []
    for i, v in enumerate(values):
        now = i * 30 * day
        sample = s(v, now, "security_virus_outbreaks_total")
        got += [(i, e.state) for e in engine.ingest([sample], now)]
    assert got == [(5, F)]
    assert engine.alerts and next(iter(engine.alerts.values())).value == 4
    # The first outbreak (day 30) leaves the 365-day window on day 395.
    assert [e.state for e in engine.tick(395 * day + 1)] == [R]
    rows = engine.counted
    assert [r[3] for r in rows] == [0.0, 1.0, 1.0, 1.0, 1.0]


def test_template_fields():
    engine = make(
        condition={"above": 0.85},
        summary="{target} {mount} {value_percent}% {threshold} {duration} {nope}",
        description="{rule}: {reference}",
        reference="duty rule",
        labels={"team": "ops"},
    )
    (e,) = engine.ingest([s(0.9, 0, mount="/var")], 0)
    assert e.summary == "t1 /var 90% above 0.85 0s {nope}"
    assert dict(e.annotations) == {"description": "r: duty rule", "reference": "duty rule"}
    assert dict(e.labels)["team"] == "ops"


# -- validation -----------------------------------------------------------------------------

TARGET = {
    "name": "room-a",
    "kind": "modbus",
    "address": "127.0.0.1:502",
    "registers": [{"name": "room_temperature_celsius", "address": 0, "type": "int16"}],
}


def problems(rules: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_from_dict({"targets": [TARGET], "rules": rules})
    return info.value.problems


def custom(**over: Any) -> dict[str, Any]:
    return {"custom": [{"name": "x", "metric": "room_temperature_celsius", **over}]}


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (custom(condition={"above": 1, "below": 2}), "rules.custom[0].condition: give exactly"),
        (custom(condition={"above": 1}, match={"port": {"=~": "("}}), "rules.custom[0].match.port"),
        (custom(condition={"above": 1}, match={"p": {"~~": "x"}}), "operator must be one of"),
        (
            custom(condition={"above": 1}, window={"function": "median", "over": "1m"}),
            "rules.custom[0].window.function",
        ),
        (custom(condition={"above": 5}, clear_below=6), "clear_below 6 must not exceed above 5"),
        (custom(), "give exactly one of condition or events"),
        (custom(condition={"above": 1}, value="counter_rate"), "needs a counter"),
        (custom(condition={"above": 1}, **{"for": "5 minutes"}), "rules.custom[0].for"),
        ({"overrides": {"disk_ful": {"for": "1m"}}}, "overrides.disk_ful: no rule of that name"),
        ({"overrides": {"disk_full": {"for": "x"}}}, "overrides.disk_full.for:"),
        (
            {
                "maintenance": [
                    {
                        "name": "w",
                        "targets": ["room-a"],
                        "start": "2026-01-01T02:00:00",
                        "end": "2026-01-01T04:00:00+08:00",
                        "reason": "x",
                    }
                ]
            },
            "need a time zone",
        ),
    ],
)
def test_validation_errors_name_the_key(rules, expected):
    found = problems(rules)
    assert any(expected in p for p in found), found


def test_override_problems_name_the_override_key_and_line():
    # The check lives in rules.packs (it needs the packs) and is called by the config loader:
    # the key path is the override's own, with the line it is on.
    text = "targets: []\nrules:\n  overrides:\n    disk_full: {for: x}\n    nope: {for: 1m}\n"
    with pytest.raises(ConfigError) as info:
        validate(parse_yaml(text, "<t>"), "<t>", text)
    found = info.value.problems
    assert any(p.startswith("rules.overrides.disk_full.for:") and "(line 4)" in p for p in found)
    assert any(
        p.startswith("rules.overrides.nope: no rule of that name in the packs (line 5)")
        for p in found
    ), found


def test_override_problems_are_reported_with_the_rest_of_the_file():
    found = problems(
        {
            "overrides": {"disk_ful": {"for": "1m"}, "device_down": {"name": "other"}},
            "custom": [{"name": "x", "metric": "room_temperature_celsius"}],
        }
    )
    assert any("rules.custom[0]: give exactly one of condition or events" in p for p in found)
    assert any("rules.overrides.disk_ful: no rule of that name" in p for p in found), found
    assert any(
        "rules.overrides.device_down.name: an override cannot rename the rule" in p for p in found
    ), found


def test_check_overrides_returns_paths_inside_the_rules_section():
    cfg = RulesConfig.model_validate(
        {"overrides": {"disk_full": {"for": "1m"}, "disk_ful": {"for": "1m"}}}
    )
    assert check_overrides(cfg) == [
        (("overrides", "disk_ful"), "no rule of that name in the packs")
    ]
    # Without the duty pack, no pack rule is there to override.
    assert check_overrides(
        RulesConfig.model_validate({"packs": [], "overrides": {"disk_full": {"for": "1m"}}})
    ) == [(("overrides", "disk_full"), "no rule of that name in the packs")]


def test_pack_rules_on_metrics_nobody_emits_do_not_invalidate_the_config():
    settings = load_from_dict({"targets": [TARGET]})
    names = {r.name for r in effective_rules(settings.rules)}
    assert {"emergency_drill_overdue", "switch_uplink_down", "disk_full"} <= names


def test_custom_rule_on_unknown_metric_is_still_refused():
    assert any("unknown metric" in p for p in problems(custom(metric="room_temp")))


def test_overrides_and_disable():
    cfg = RulesConfig.model_validate(
        {
            "disable": ["web_content_changed"],
            "overrides": {"disk_almost_full": {"condition": {"above": 0.8}, "for": "1m"}},
        }
    )
    rules = {r.name: r for r in effective_rules(cfg)}
    assert "web_content_changed" not in rules
    disk = rules["disk_almost_full"]
    assert disk.condition is not None and disk.condition.above == 0.8 and disk.for_ == 60
    assert disk.clear_below is None  # the pack's hysteresis went with its threshold
    assert disk.reference  # everything else is the pack's


def test_unknown_targets_in_depends_on_and_maintenance_are_reported():
    found = problems(
        {
            **custom(condition={"above": 30}, depends_on=["core-sw9"]),
            "maintenance": [
                {
                    "name": "night",
                    "targets": ["room-b"],
                    "start": "2026-01-01T02:00:00+08:00",
                    "end": "2026-01-01T04:00:00+08:00",
                    "every": "7d",
                    "reason": "UPS test",
                }
            ],
        }
    )
    assert "rules.custom[0].depends_on[0]: unknown target 'core-sw9'" in found
    assert "rules.maintenance[0].targets[0]: unknown target 'room-b'" in found


def test_scheduled_weekly_window_mutes_and_is_excluded_from_red_line():
    from dutyd.agent.daemon import _engine_for

    settings = load_from_dict(
        {
            "targets": [TARGET],
            "rules": {
                "maintenance": [
                    {
                        "name": "sunday",
                        "match": {"target": "room-a"},
                        "start": "1970-01-01T01:00:00+00:00",
                        "end": "1970-01-01T02:00:00+00:00",
                        "every": "7d",
                        "reason": "weekly UPS test",
                    }
                ]
            },
        }
    )
    engine = _engine_for(settings)
    week = 7 * 86400.0
    temp = Sample.of("room_temperature_celsius", 30, 0, {"target": "room-a"})
    at = 3 * week + 3600 + 400  # inside the fourth occurrence, past `for`
    engine.ingest([temp], 3 * week + 3600)
    (event,) = engine.ingest([temp], at)
    assert event.state is F and not event.notify
    assert event.muted_reason == "maintenance: weekly UPS test"
    alert = next(iter(engine.alerts.values()))
    assert engine.outage(alert, 3 * week + 3 * 3600) == 3600  # 2 h active, 1 h in the window
