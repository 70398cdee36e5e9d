"""The alert lifecycle driven by a fake clock: every transition and every overlay."""

from __future__ import annotations

from typing import Any

import pytest

from dutyd.core.records import AlertChange, AlertEvent, AlertState, Sample
from dutyd.rules.alerts import Alert
from dutyd.rules.config import FlappingConfig, RuleConfig
from dutyd.rules.engine import RuleEngine, UnknownAlert
from dutyd.rules.matchers import compile_matchers
from dutyd.rules.overlays import MaintenanceWindow, Silence

P, F, R, OFF = AlertState.PENDING, AlertState.FIRING, AlertState.RESOLVED, AlertState.INACTIVE


def rule(**over: Any) -> RuleConfig:
    data: dict[str, Any] = {
        "name": "hot",
        "metric": "room_temperature_celsius",
        "condition": {"above": 26},
        "for": "5m",
        "summary": "{target} {value} {threshold} {duration}",
    }
    data.update(over)
    return RuleConfig.model_validate(data)


def temp(v: float, ts: float, target: str = "room-a") -> Sample:
    return Sample.of("room_temperature_celsius", v, ts, {"target": target, "kind": "modbus"})


class Clock:
    """Feeds one sample per step and ticks, collecting (minute, change, state, notify)."""

    def __init__(self, engine: RuleEngine) -> None:
        self.engine = engine
        self.events: list[AlertEvent] = []

    def run(self, values: list[float | None], start: float = 0.0, step: float = 60.0) -> list:
        out = []
        for i, v in enumerate(values):
            now = start + i * step
            evs = self.engine.ingest([temp(v, now)], now) if v is not None else []
            evs += self.engine.tick(now)
            self.events += evs
            out += [(now / 60, e.change.value, e.state, e.notify) for e in evs]
        return out


def test_every_state_transition():
    c = Clock(RuleEngine([rule()]))
    # 20 ok; 27 from minute 1 (pending); back to 20 at 3 (inactive); 27 from 4, fires at 9;
    # 20 at 11 resolves; 27 at 12 pending again.
    got = c.run([20, 27, 27, 20, 27, 27, 27, 27, 27, 27, 27, 20, 27])
    assert [(m, s) for m, _, s, _ in got] == [(1, P), (3, OFF), (4, P), (9, F), (11, R), (12, P)]
    firing = next(e for e in c.events if e.state is F)
    assert firing.active_since == 240.0 and firing.summary == "room-a 27 above 26 5m"
    assert all(n for *_, n in got if _ != OFF)


def test_hysteresis_holds_until_clear_bound():
    c = Clock(RuleEngine([rule(**{"for": 0, "clear_below": 24})]))
    got = c.run([27, 25.5, 25, 24.5, 23.9, 25])
    # 25.5 .. 24.5 are under the threshold but above clear_below: still firing.
    assert [(m, s) for m, _, s, _ in got] == [(0, F), (4, R)]


def test_hysteresis_on_outside_range():
    r = rule(
        **{"for": 0, "condition": {"outside": [18, 26]}, "clear_above": 18.5, "clear_below": 25.5}
    )
    c = Clock(RuleEngine([r]))
    got = c.run([26.5, 25.8, 25.6, 25.4, 17.8, 18.4, 18.6])
    assert [(m, s) for m, _, s, _ in got] == [(0, F), (3, R), (4, F), (6, R)]


def test_keep_firing_for():
    c = Clock(RuleEngine([rule(**{"for": 0, "keep_firing_for": "3m"})]))
    got = c.run([27, 20, 20, 27, 20, 20, 20, 20])
    # Drops at 1 but comes back at 3 inside keep_firing_for; resolves 3 m after the last 27.
    assert [(m, s) for m, _, s, _ in got] == [(0, F), (6, R)]


def test_keep_firing_for_resolves_on_tick_without_samples():
    engine = RuleEngine([rule(**{"for": 0, "keep_firing_for": "3m"})])
    assert [e.state for e in engine.ingest([temp(30, 0)], 0)] == [F]
    assert engine.ingest([temp(20, 60)], 60) == []
    assert engine.tick(179) == []  # 3 m after the condition last held (at 0)
    assert [e.state for e in engine.tick(180)] == [R]


def test_restart_in_the_middle_of_for():
    engine = RuleEngine([rule()])
    engine.ingest([temp(30, 0)], 0)
    engine.ingest([temp(30, 240)], 240)  # 4 of 5 minutes pending
    (saved,) = engine.alerts.values()
    extra = saved.extra()
    # The daemon dies; a new engine gets the alert back from storage.
    restored = Alert(saved.rule, saved.labels, saved.severity, P, active_since=0.0)
    restored.load_extra(extra)
    engine2 = RuleEngine([rule()])
    engine2.restore([restored])
    # No sample yet: a restored alert does not move on old data.
    assert engine2.tick(290) == []
    assert engine2.ingest([temp(30, 295)], 295) == []
    (event,) = engine2.tick(300)  # one minute after "restart", not five
    assert event.state is F and event.active_since == 0.0


def test_restart_firing_keeps_start_and_is_not_paged_again():
    engine = RuleEngine([rule(**{"for": 0})])
    (e,) = engine.ingest([temp(30, 0)], 0)
    assert e.notify
    (saved,) = engine.alerts.values()
    restored = Alert(saved.rule, saved.labels, saved.severity, F, 0.0, 0.0)
    restored.load_extra(saved.extra())
    engine2 = RuleEngine([rule(**{"for": 0})])
    engine2.restore([restored])
    assert engine2.ingest([temp(30, 600)], 600) == []
    assert engine2.tick(601) == []
    (resolved,) = engine2.ingest([temp(20, 700)], 700)
    assert resolved.state is R and resolved.notify and resolved.active_since == 0.0


def test_red_line_crossing_excludes_maintenance():
    engine = RuleEngine([rule(**{"for": "1m", "red_line": "2h"})])
    engine.add_window(MaintenanceWindow("1", frozenset({"room-a"}), (), 1800.0, 3600.0, "UPS swap"))
    engine.ingest([temp(30, 0)], 0)
    engine.ingest([temp(30, 60)], 60)
    changes = []
    for t in range(60, 3 * 3600, 60):
        changes += [e for e in engine.tick(float(t)) if e.change is AlertChange.RED_LINE]
    (red,) = changes
    # 2 h of outage plus the 30 min spent inside the maintenance window.
    assert red.timestamp == 7200 + 1800 and red.red_line == 7200 and red.notify


def test_flapping_holds_notifications_until_settled():
    flap = FlappingConfig(changes=4, within=3600, settle=600)
    engine = RuleEngine([rule(**{"for": 0})], flapping=flap)
    c = Clock(engine)
    got = c.run([30, 20, 30, 20, 30, 20, 30])
    kinds = [(m, k, s, n) for m, k, s, n in got]
    assert kinds[:4] == [
        (0, "state", F, True),
        (1, "state", R, True),
        (2, "state", F, True),
        (3, "state", R, False),
    ]
    assert kinds[4] == (3, "flapping", R, True)
    # While flapping: firing and resolved are recorded but not sent.
    assert all(not n for m, k, s, n in kinds[5:] if k == "state")
    # It fires at minute 6 and stays. The last thing sent was "firing" (minute 2), which is
    # true again, so settling sends nothing more than the SETTLED notice.
    later = c.run([30] * 12, start=7 * 60)
    assert [(k, s, n) for _, k, s, n in later] == [("settled", F, True)]


def test_flapping_that_settles_resolved_sends_the_resolve():
    flap = FlappingConfig(changes=4, within=3600, settle=600)
    c = Clock(RuleEngine([rule(**{"for": 0})], flapping=flap))
    got = c.run([30, 20, 30, 20])
    assert [(k, s, n) for _, k, s, n in got] == [
        ("state", F, True),
        ("state", R, True),
        ("state", F, True),
        ("state", R, False),  # the 4th change: flapping, held back
        ("flapping", R, True),
    ]
    later = c.run([20] * 12, start=4 * 60)
    assert [(k, s, n) for _, k, s, n in later] == [("settled", R, True), ("state", R, True)]


def test_acknowledge_with_expiry_and_resolve_clears_it():
    engine = RuleEngine([rule(**{"for": 0})])
    (e,) = engine.ingest([temp(30, 0)], 0)
    with pytest.raises(UnknownAlert):
        engine.acknowledge("nope", "li", "", None, 1)
    ack = engine.acknowledge(e.fingerprint, "li.wei", "on my way", 600.0, 10)
    assert (ack.change, ack.actor, ack.note) == (AlertChange.ACKNOWLEDGED, "li.wei", "on my way")
    assert engine.tick(599) == []
    (unack,) = engine.tick(600)
    assert unack.change is AlertChange.UNACKNOWLEDGED and unack.actor == "li.wei"
    engine.acknowledge(e.fingerprint, "li.wei", "", None, 700)
    engine.ingest([temp(20, 800)], 800)
    assert engine.alerts[e.fingerprint].ack is None  # an ack belongs to one outage


def test_silence_mutes_then_firing_is_sent_when_it_ends():
    engine = RuleEngine([rule(**{"for": 0})])
    engine.add_silence(
        Silence(
            "1", compile_matchers({"target": {"=~": "room-.*"}}), 300.0, "li", "sensor swap", 0.0
        )
    )
    (e,) = engine.ingest([temp(30, 0)], 0)
    assert not e.notify and e.muted_reason == "silenced by li: sensor swap"
    assert engine.tick(299) == []
    (late,) = engine.tick(300)
    assert late.state is F and late.notify and late.previous is F


def test_resolve_of_a_muted_firing_is_not_sent():
    engine = RuleEngine([rule(**{"for": 0})])
    engine.add_window(MaintenanceWindow("1", frozenset({"room-a"}), (), 0.0, 1000.0, "works"))
    (e,) = engine.ingest([temp(30, 0)], 0)
    assert not e.notify and e.muted_reason == "maintenance: works"
    (r,) = engine.ingest([temp(20, 60)], 60)
    assert r.state is R and not r.notify


def test_pending_that_clears_leaves_no_alert():
    engine = RuleEngine([rule()])
    engine.ingest([temp(30, 0)], 0)
    engine.ingest([temp(20, 60)], 60)
    assert engine.alerts == {} and engine.rules["hot"].alerts == {}


def test_down_target_freezes_its_alerts():
    engine = RuleEngine([rule()])
    engine.ingest([temp(30, 0)], 0)
    down = Sample.of("target_up", 0, 60, {"target": "room-a", "kind": "modbus"})
    engine.ingest([down], 60)
    # The pending alert does not fire on a reading taken before the sensor went silent.
    assert engine.tick(400) == []
    (e,) = engine.ingest([temp(30, 420)], 420)
    assert e.state is F and e.active_since == 0.0


def test_reload_keeps_ad_hoc_windows_and_takes_the_new_scheduled_ones():
    old = RuleEngine([rule()])
    old.add_window(MaintenanceWindow("config:old", frozenset({"a"}), (), 0.0, 10.0, "old plan"))
    old.add_window(MaintenanceWindow("7", frozenset({"b"}), (), 0.0, 10.0, "ad hoc"))
    new = RuleEngine([rule()])
    new.add_window(MaintenanceWindow("config:new", frozenset({"a"}), (), 0.0, 10.0, "new plan"))
    new.adopt(old)
    assert set(new.windows) == {"config:new", "7"}
    ended = new.end_window("7", 5.0)
    assert ended is not None and new.windows["7"].end == 5.0
    assert new.end_window("nope", 5.0) is None
    with pytest.raises(TypeError):
        new.windows["x"] = ended  # type: ignore[index]  # read-only: change it through methods


def test_replace_alerts_of_keeps_the_nodes_own_alerts_as_they_are():
    """A sharded node takes the store's copy of the other nodes' alerts and keeps its own:
    its pending alert still fires on its own clock, without waiting for a fresh sample."""
    engine = RuleEngine([rule()])
    engine.ingest([temp(30, 0, "room-a"), temp(30, 0, "room-b")], 0)
    mine = next(a for a in engine.alerts.values() if a.label("target") == "room-a")
    theirs = next(a for a in engine.alerts.values() if a.label("target") == "room-b")
    stored_mine = Alert(mine.rule, mine.labels, mine.severity, P, active_since=100.0)
    stored_theirs = Alert(theirs.rule, theirs.labels, theirs.severity, F, active_since=-60.0)
    stored_theirs.fired_at = 240.0

    def other_node(alert: Alert) -> bool:
        return alert.label("target") != "room-a"

    engine.replace_alerts_of(other_node, [stored_mine, stored_theirs])
    assert engine.alerts[mine.fingerprint] is mine  # the store's copy of it left out
    assert engine.alerts[theirs.fingerprint] is stored_theirs
    # Mine fires at 5 minutes, on no new sample; the copy does not move on old data.
    fired = [e for e in engine.tick(300) if e.previous is P]
    assert [(e.fingerprint, e.state) for e in fired] == [(mine.fingerprint, F)]


async def test_a_clean_stop_writes_only_the_alerts_this_node_records(tmp_path: Any) -> None:
    """A sharded node holds copies of the alerts other nodes record; at its stop it writes its
    own only: a copy one sync old must not overwrite the owner's newer row."""
    from dutyd.duty import rulestate
    from dutyd.storage import open_storage

    engine = RuleEngine([rule()])
    engine.ingest([temp(30, 0, "room-a"), temp(30, 0, "room-b")], 0)
    async with open_storage(tmp_path / "dutyd.db") as storage:
        await rulestate.save_all(engine, storage, lambda labels: dict(labels)["target"] == "room-a")
        saved = {row.labels["target"] for row in await storage.alerts.load_all()}
        assert saved == {"room-a"}
        await rulestate.save_all(engine, storage)  # alone or in a pair: every alert
        saved = {row.labels["target"] for row in await storage.alerts.load_all()}
        assert saved == {"room-a", "room-b"}


@pytest.mark.parametrize(
    ("change", "how"),
    [
        ({"condition": {"above": 28}}, ""),  # a new threshold: still watched, stays firing
        ({"summary": "{target} too warm"}, ""),
        ({"match": {"target": "room-a"}}, ""),
        ({"match": {"target": "room-b"}}, "changed"),  # no longer selects room-a
        ({"targets": ["room-b"]}, "changed"),
        ({"metric": "room_humidity_percent"}, "changed"),
        ({"labels": {"team": "facilities"}}, "changed"),  # its alerts have other labels now
        ({"name": "warm"}, "removed"),  # the rule "hot" is gone
    ],
)
def test_a_reload_ends_the_alerts_its_new_rules_no_longer_watch(
    change: dict[str, Any], how: str
) -> None:
    old = RuleEngine([rule(**{"for": 0})])
    old.ingest([temp(30, 0), temp(20, 0, "room-b")], 0)
    assert [a.state for a in old.alerts.values()] == [F]
    new = RuleEngine([rule(**{"for": 0, **change})])
    events = old.retire_unwatched(new, 60)
    if not how:
        assert events == []
        new.adopt(old)
        assert [a.state for a in new.alerts.values()] == [F]
        return
    [event] = events
    assert (event.state, event.previous, event.notify) == (R, F, True)
    assert event.note == f"no longer watched: rule {how} by reload"
    assert f"rule hot {how} by reload" in event.summary
    assert event.summary_in("zh") != event.summary


def test_a_reload_drops_a_pending_alert_it_no_longer_watches_without_an_event() -> None:
    old = RuleEngine([rule()])
    old.ingest([temp(30, 0)], 0)
    assert [a.state for a in old.alerts.values()] == [P]
    assert old.retire_unwatched(RuleEngine([rule(name="warm")]), 60) == []
    assert old.alerts == {}
