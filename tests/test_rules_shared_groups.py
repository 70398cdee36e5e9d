"""`across` groups split over shards, at the engine: the holds other nodes publish merged with
the node's own (`merge_group_members`), what a node publishes (`group_holds`), and the series
of targets a node gives up (`release_targets`). The real agents: tests/test_shards_groups.py."""

from __future__ import annotations

from typing import Any

from dutyd.core.records import AlertState, Labels, Sample
from dutyd.rules.config import RuleConfig
from dutyd.rules.engine import RuleEngine

F, R = AlertState.FIRING, AlertState.RESOLVED
RULE = "ups_down"
HQ: Labels = (("site", "hq"),)


def rule(**over: Any) -> RuleConfig:
    data: dict[str, Any] = {
        "name": RULE,
        "metric": "target_up",
        "condition": {"equals": 0},
        "across": {"mode": "at_least", "n": 2, "by": ["site"]},
        "summary": "{value} of {total} down",
    }
    data.update(over)
    return RuleConfig.model_validate(data)


def up(target: str, value: float, now: float = 0.0) -> Sample:
    return Sample.of("target_up", value, now, {"target": target, "site": "hq"})


def series(target: str) -> Labels:
    return tuple(sorted({"target": target, "site": "hq"}.items()))


def published(**holds: bool) -> dict[str, dict[Labels, dict[Labels, bool]]]:
    return {RULE: {HQ: {series(t): h for t, h in holds.items()}}}


def test_group_judged_on_the_holds_other_nodes_publish() -> None:
    engine = RuleEngine([rule()])
    assert engine.ingest([up("t1", 0), up("t3", 1)], 0) == []  # one of two down here
    events = engine.merge_group_members(published(t2=True, t4=False), 1)
    assert [(e.state, e.value, e.summary) for e in events] == [(F, 2.0, "2 of 4 down")]
    assert engine.merge_group_members(published(t2=True, t4=False), 2) == []  # nothing new
    assert engine.ingest([up("t1", 0)], 3) == []  # a local sample judges on all four
    events = engine.merge_group_members(published(t2=False, t4=False), 4)
    assert [(e.state, e.value) for e in events] == [(R, 1.0)]


def test_a_group_only_other_nodes_read_fires_and_resolves() -> None:
    engine = RuleEngine([rule()])
    events = engine.merge_group_members(published(t1=True, t2=True), 0)
    assert [(e.state, dict(e.labels)) for e in events] == [(F, {"site": "hq"})]
    # The rows went (dead writer, target removed): the group has no member that holds.
    events = engine.merge_group_members({}, 1)
    assert [(e.state, e.value) for e in events] == [(R, 0.0)]


def test_the_nodes_own_reading_wins_over_a_published_one() -> None:
    engine = RuleEngine([rule()])
    engine.ingest([up("t1", 1)], 0)
    # A stale row still says t1 is down (written by its former owner before it moved here).
    assert engine.merge_group_members(published(t1=True, t2=True), 1) == []
    assert engine.ingest([up("t1", 0)], 2)[0].state is F


def test_all_mode_counts_the_published_members() -> None:
    engine = RuleEngine([rule(across={"mode": "all", "by": ["site"]})])
    assert engine.ingest([up("t1", 0)], 0)[0].state is F  # all of the one it knows
    events = engine.merge_group_members(published(t2=False), 1)
    assert [(e.state, e.value) for e in events] == [(R, 1.0)]
    events = engine.merge_group_members(published(t2=True), 2)
    assert [(e.state, e.value) for e in events] == [(F, 2.0)]


def test_published_are_the_owned_series_of_groups_that_may_span_targets() -> None:
    per_target = rule(name="psu_down", across={"mode": "any", "by": ["target"]})
    engine = RuleEngine([rule(), per_target, rule(name="plain", across=None)])
    assert engine.shares_groups
    engine.ingest([up("t1", 0), up("t2", 1), up("t3", 0)], 0)
    holds = engine.group_holds(lambda target: target != "t3")
    assert holds == [(RULE, HQ, series("t1"), True), (RULE, HQ, series("t2"), False)]
    # Grouped by target, or no group at all: nothing to share.
    assert not RuleEngine([per_target, rule(name="plain", across=None)]).shares_groups
    assert not RuleEngine([]).shares_groups


def test_a_released_target_keeps_its_last_hold_until_its_new_owner_publishes() -> None:
    engine = RuleEngine([rule()])
    assert engine.ingest([up("t1", 0), up("t2", 0)], 0)[0].state is F
    engine.release_targets(["t2"])  # t2's shard moved to another node
    assert engine.group_holds(lambda target: True) == [(RULE, HQ, series("t1"), True)]
    assert engine.ingest([up("t1", 0)], 1) == []  # still two down: no resolve for nothing
    events = engine.merge_group_members(published(t2=False), 2)  # the new owner reads it up
    assert [(e.state, e.value) for e in events] == [(R, 1.0)]


def test_a_reload_keeps_the_published_holds() -> None:
    old = RuleEngine([rule()])
    old.ingest([up("t1", 0)], 0)
    assert old.merge_group_members(published(t2=True), 1)[0].state is F
    new = RuleEngine([rule()])
    new.adopt(old)
    assert new.ingest([up("t1", 0)], 2) == []  # still two of two, not one
    assert new.merge_group_members(published(t2=True), 3) == []
