"""The dependency hold covers every alert of a child, not only an unreachable child: a child's
page waits for its parents' answer, and a parent going down explains (and pauses) a child's
paged alert until the parent is back (rules/engine.py, rules/mutes.py, notify/escalation.py).
Pure logic: the engine and the escalator on given times."""

from __future__ import annotations

import dataclasses

from dutyd.core.records import AlertChange, AlertEvent, AlertState, Sample
from dutyd.notify.config import EscalationConfig, OncallConfig
from dutyd.notify.escalation import Escalator, PageKind
from dutyd.notify.oncall import Rota
from dutyd.rules.config import RuleConfig
from dutyd.rules.engine import RuleEngine

APP = {"target": "portal", "kind": "http", "role": "application"}
SWITCH = {"target": "core-sw", "kind": "snmp"}


def engine() -> RuleEngine:
    rules = [
        RuleConfig.model_validate(
            {
                "name": "app_failing",
                "metric": "probe_success",
                "condition": {"below": 1},
                "for": "3s",
                "red_line": "12s",
                "severity": "critical",
            }
        )
    ]
    e = RuleEngine(rules)
    # The switch's answer is awaited 9 s at most (2 x its 4 s timeout + 1, as the daemon sets).
    e.set_parents({"portal": ["core-sw"]}, {"core-sw": 9.0})
    return e


def app(e: RuleEngine, ts: float, ok: float) -> list[AlertEvent]:
    return e.ingest(
        [Sample.of("target_up", 1, ts, APP), Sample.of("probe_success", ok, ts, APP)], ts
    )


def switch(e: RuleEngine, started: float, up: float, now: float) -> list[AlertEvent]:
    return e.ingest([Sample.of("target_up", up, started, SWITCH)], now)


def pages(events: list[AlertEvent]) -> list[tuple[str, str]]:
    return [
        (str(ev.change) if ev.change is not AlertChange.STATE else str(ev.state), ev.note)
        for ev in events
        if ev.notify and ev.state is not AlertState.PENDING
    ]


def run(e: RuleEngine, start: float, end: float, ok: float) -> list[AlertEvent]:
    events: list[AlertEvent] = []
    t = start
    while t < end:
        events += app(e, t, ok) + e.tick(t)
        t += 1.0
    return events


def test_a_failing_childs_page_waits_until_its_parent_answered_and_then_is_the_parents():
    e = engine()
    switch(e, 0.0, 1, 0.1)  # the switch's last scheduled answer, before the fault at 1 s
    run(e, 0.5, 1.0, 1)
    events = run(e, 1.5, 5.0, 0)  # the app answers 500 from 1.5 s: firing due at 4.5 s
    (held,) = [ev for ev in events if ev.state is AlertState.FIRING]
    assert not held.notify and held.muted_reason == "waiting for parent core-sw to answer"
    assert e.awaited_parents(held.fingerprint, 5.0) == ["core-sw"]
    # Polled out of turn at 5 s, the switch times out (4 s): down, as of that poll's start.
    events = switch(e, 5.0, 0, 9.0) + e.recheck_held(9.0) + run(e, 9.0, 20.0, 0)
    assert pages(events) == []  # no page for the app, no red line at 12 s
    view = e.view(e.alerts[held.fingerprint], 20.0)
    assert view["suppressed"] == "parent core-sw is down"
    # The switch is back and the app still fails: it pages now, and its red line follows.
    events = switch(e, 20.0, 1, 20.2) + run(e, 20.5, 22.0, 0)
    assert pages(events) == [("firing", ""), ("red_line", "")]


def test_a_parent_that_answers_up_lets_the_childs_page_go_at_once():
    e = engine()
    switch(e, 0.0, 1, 0.1)
    run(e, 1.5, 5.0, 0)
    assert pages(switch(e, 5.0, 1, 5.05) + e.recheck_held(5.05)) == [("firing", "")]


def test_a_parent_that_never_answers_holds_the_page_only_as_long_as_its_check_may_take():
    e = engine()
    switch(e, 0.0, 1, 0.1)
    events = run(e, 1.5, 13.0, 0)
    assert pages(events) == []  # firing due at 4.5 s, waited for 9 s
    # Paged at 13.5 s (4.5 + 9), its red line (12 s from 1.5 s) with it.
    assert pages(run(e, 13.0, 14.0, 0) + e.tick(14.0)) == [("firing", ""), ("red_line", "")]


def test_a_parent_down_explains_a_paged_child_pauses_its_red_line_and_resumes_after():
    e = engine()
    switch(e, 0.0, 1, 0.1)
    run(e, 1.5, 5.0, 0)
    assert pages(switch(e, 5.0, 1, 5.05) + e.recheck_held(5.05)) == [("firing", "")]
    # The switch goes down at 7 s: one notice in the app's thread naming it, then nothing
    # (no red line at 13.5 s) while it is down.
    events = switch(e, 7.0, 0, 7.5) + run(e, 8.0, 20.0, 0)
    assert pages(events) == [("explained", "core-sw")]
    # Back at 20 s, the app still fails: told so, and the red line comes (the outage counts).
    events = switch(e, 20.0, 1, 20.1) + run(e, 20.5, 22.0, 0)
    assert pages(events) == [("resumed", "core-sw"), ("red_line", "")]


def test_a_child_that_recovers_while_its_parent_is_down_is_resolved_to_those_paged():
    e = engine()
    switch(e, 0.0, 1, 0.1)
    run(e, 1.5, 5.0, 0)
    switch(e, 5.0, 1, 5.05)
    e.recheck_held(5.05)
    events = switch(e, 7.0, 0, 7.5) + run(e, 8.0, 9.0, 0) + run(e, 9.0, 10.0, 1)
    assert pages(events) == [("explained", "core-sw"), ("resolved", "")]
    # Nothing left to resume when the switch is back.
    assert pages(switch(e, 12.0, 1, 12.1) + e.tick(12.5)) == []


def escalator() -> Escalator:
    oncall = OncallConfig.model_validate(
        {
            "people": [
                {"name": "Li Na", "contacts": ["phone"]},
                {"name": "Wang Fang", "contacts": ["phone"]},
            ],
            "roles": {"manager": ["Wang Fang"]},
        }
    )
    escalation = EscalationConfig.model_validate(
        {
            "policies": [
                {
                    "name": "application",
                    "steps": [
                        {"after": "0s", "people": ["Li Na"]},
                        {"after": "4s", "roles": ["manager"]},
                    ],
                    "red_line": {"roles": ["manager"]},
                }
            ]
        }
    )
    return Escalator(escalation, Rota(oncall))


def test_escalation_pauses_while_explained_and_flapping_then_is_not_announced():
    e, esc = engine(), escalator()
    switch(e, 0.0, 1, 0.1)
    run(e, 1.5, 5.0, 0)
    told = []
    for ev in switch(e, 5.0, 1, 5.05) + e.recheck_held(5.05):
        told += esc.handle(ev, 5.05)
    assert [(p.kind, [r.name for r in p.recipients]) for p in told] == [
        (PageKind.FIRING, ["Li Na"])
    ]
    explained = switch(e, 6.0, 0, 6.5)
    notices = [p for ev in explained for p in esc.handle(ev, 6.5)]
    assert [(p.kind, [r.name for r in p.recipients]) for p in notices] == [
        (PageKind.EXPLAINED, ["Li Na"])
    ]
    # Step 2 (the manager, due at 9.05 s) waits while the parent explains the alert.
    assert esc.due(15.0) == [] and esc.next_deadline() is None
    flapping = next(ev for ev in explained if ev.change is AlertChange.EXPLAINED)
    assert esc.handle(_as(flapping, AlertChange.FLAPPING), 15.0) == []
    resumed = _as(flapping, AlertChange.RESUMED)
    settled = _as(flapping, AlertChange.SETTLED)
    assert esc.handle(settled, 16.0) == []
    back = esc.handle(resumed, 16.0)
    assert sorted((p.kind, tuple(r.name for r in p.recipients)) for p in back) == [
        (PageKind.FIRING, ("Wang Fang",)),
        (PageKind.RESUMED, ("Li Na",)),
    ]


def _as(event: AlertEvent, change: AlertChange) -> AlertEvent:
    return dataclasses.replace(event, change=change)


def restarted(e: RuleEngine, parents: dict[str, list[str]]) -> RuleEngine:
    """A fresh engine holding `e`'s alerts as stored (as after a restart): no target heard of."""
    again = engine()
    again.set_parents(parents, {"core-sw": 9.0})
    again.restore(
        [dataclasses.replace(a, transitions=list(a.transitions)) for a in e.alerts.values()]
    )
    return again


def test_after_a_restart_an_explained_alert_waits_for_its_parents_answer():
    """Before, the restarted engine took "no parent known down" for "the parent is back":
    its child's first answer resumed the alert while the switch was still down."""
    e = engine()
    switch(e, 0.0, 1, 0.1)
    run(e, 1.5, 5.0, 0)
    switch(e, 5.0, 1, 5.05)
    e.recheck_held(5.05)
    assert pages(switch(e, 7.0, 0, 7.5)) == [("explained", "core-sw")]
    again = restarted(e, {"portal": ["core-sw"]})
    assert pages(run(again, 30.0, 40.0, 0)) == []  # no resume, no red line: not heard of
    assert pages(switch(again, 40.0, 0, 41.0) + run(again, 41.0, 42.0, 0)) == []
    events = switch(again, 42.0, 1, 42.1) + run(again, 42.5, 43.0, 0)
    assert pages(events) == [("resumed", "core-sw"), ("red_line", "")]


def test_after_a_restart_a_parent_no_longer_configured_explains_nothing():
    e = engine()
    switch(e, 0.0, 1, 0.1)
    run(e, 1.5, 5.0, 0)
    switch(e, 5.0, 1, 5.05)
    e.recheck_held(5.05)
    switch(e, 7.0, 0, 7.5)
    again = restarted(e, {})  # the new config has no depends_on for the portal
    assert pages(run(again, 30.0, 31.0, 0)) == [("resumed", "core-sw"), ("red_line", "")]


def test_a_parent_answer_that_ended_before_the_childs_poll_ended_is_no_answer():
    """Parent and child fail together at 0.5 s. The child's poll started at 0 s and waited out
    its timeout to 1 s; the parent's scheduled poll started at 0.2 s and answered at 0.3 s,
    before the fault. Compared by their starts that answer came "after the child's trouble"
    and the child paged as its own fault (seen in a CI run: the UPS paged beside the core
    switch). Compared by their ends it is no answer: the child waits for the parent's next."""
    rules = [
        RuleConfig.model_validate(
            {"name": "ups_unreachable", "metric": "target_up", "condition": {"below": 1}}
        )
    ]
    e = RuleEngine(rules)
    e.set_parents({"ups-a": ["access-sw-1"]}, {"access-sw-1": 3.0})
    ups = {"target": "ups-a", "kind": "snmp"}
    access = {"target": "access-sw-1", "kind": "snmp"}
    e.ingest([Sample.of("target_up", 1, 0.2, access)], 0.3, observed_at=0.3)
    events = e.ingest([Sample.of("target_up", 0, 0.0, ups)], 1.0, observed_at=1.0)
    (held,) = [ev for ev in events if ev.state is AlertState.FIRING]
    assert not held.notify and held.muted_reason == "waiting for parent access-sw-1 to answer"
    # Polled out of turn from 1.0 s, the parent times out at 2.0 s: the parent's outage it is,
    # and its page the one page.
    events = e.ingest([Sample.of("target_up", 0, 1.0, access)], 2.0, observed_at=2.0)
    events += e.recheck_held(2.0)
    paged = [dict(ev.labels)["target"] for ev in events if ev.notify]
    assert paged == ["access-sw-1"]
    assert e.view(e.alerts[held.fingerprint], 2.0)["suppressed"] == "parent access-sw-1 is down"
