"""Escalation timing on a fake clock: steps, ack, repeat, red line, resolve notices."""

from __future__ import annotations

import datetime as dt

from dutyd.core.records import AlertChange, AlertEvent, AlertState, labels_of
from dutyd.notify.config import EscalationConfig, OncallConfig
from dutyd.notify.escalation import Escalator, PageKind, Recipient
from dutyd.notify.oncall import Rota

T0 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC).timestamp()

ONCALL = OncallConfig.model_validate(
    {
        "timezone": "UTC",
        "handovers": ["08:30"],
        "start": "2026-11-01",
        "pairs": [["Zhang Wei", "Li Na"], ["Liu Yang", "Zhao Min"]],
        "people": [
            {"name": n}
            for n in ("Zhang Wei", "Li Na", "Liu Yang", "Zhao Min", "Wang Fang", "Chen Jie")
        ],
        "roles": {"manager": ["Wang Fang"], "director": ["Chen Jie"]},
    }
)
POLICIES = EscalationConfig.model_validate(
    {
        "policies": [
            {
                "name": "critical",
                "match": {"severity": "critical"},
                "steps": [
                    {"after": "0s", "oncall": True},
                    {"after": "15m", "roles": ["manager"]},
                    {"after": "30m", "roles": ["director"]},
                ],
                "repeat": "10m",
                "red_line": {"roles": ["director"]},
            },
            {"name": "rest", "steps": [{"after": "5m", "oncall": True}]},
        ]
    }
)


def event(
    state: AlertState = AlertState.FIRING,
    change: AlertChange = AlertChange.STATE,
    ts: float = T0,
    severity: str = "critical",
    **kw: object,
) -> AlertEvent:
    return AlertEvent(
        fingerprint="fp1",
        rule="core_switch_down",
        labels=labels_of({"target": "core1", "site": "hq"}),
        state=state,
        previous=AlertState.PENDING,
        severity=severity,
        summary="core1 down",
        value=0.0,
        active_since=T0 - 60,
        timestamp=ts,
        change=change,
        **kw,  # type: ignore[arg-type]
    )


def names(pages: list) -> list[tuple[str, list[str]]]:
    return [(str(p.kind), [r.name for r in p.recipients]) for p in pages]


def walk(esc: Escalator, start: float, end: float, step: float = 30.0) -> list:
    """Advance the fake clock, collecting what `due` returns at each tick."""
    out = []
    t = start
    while t <= end:
        out += [(t - T0, p) for p in esc.due(t)]
        t += step
    return out


def test_unacked_alert_walks_its_steps_then_repeats() -> None:
    esc = Escalator(POLICIES, Rota(ONCALL))
    first = esc.handle(event(), T0)
    # Nov 23 is shift 22 (even): the first pair is on duty.
    assert names(first) == [("firing", ["Zhang Wei", "Li Na"])]
    later = walk(esc, T0 + 30, T0 + 3600)
    got = [(at, str(p.kind), [r.name for r in p.recipients]) for at, p in later]
    assert got[0] == (900, "firing", ["Wang Fang"])
    assert got[1] == (1800, "firing", ["Chen Jie"])
    assert got[2] == (2400, "repeat", ["Zhang Wei", "Li Na", "Wang Fang", "Chen Jie"])
    assert [g[0] for g in got] == [900, 1800, 2400, 3000, 3600]
    assert esc.next_deadline() == T0 + 4200


def test_ack_stops_escalation_and_tells_those_paged() -> None:
    esc = Escalator(POLICIES, Rota(ONCALL))
    esc.handle(event(), T0)
    ack = esc.handle(event(change=AlertChange.ACKNOWLEDGED, ts=T0 + 300, actor="Li Na"), T0 + 300)
    assert names(ack) == [("acknowledged", ["Zhang Wei", "Li Na"])]
    assert walk(esc, T0 + 330, T0 + 7200) == []
    assert esc.next_deadline() is None
    # The acknowledgement expires: the walk resumes with the steps now overdue.
    resumed = esc.handle(event(change=AlertChange.UNACKNOWLEDGED, ts=T0 + 2000), T0 + 2000)
    assert names(resumed) == [("firing", ["Wang Fang"]), ("firing", ["Chen Jie"])]


def test_red_line_reaches_the_director_even_when_acked() -> None:
    esc = Escalator(POLICIES, Rota(ONCALL))
    esc.handle(event(), T0)
    esc.handle(event(change=AlertChange.ACKNOWLEDGED, ts=T0 + 60, actor="Li Na"), T0 + 60)
    red = esc.handle(event(change=AlertChange.RED_LINE, ts=T0 + 7200, red_line=7200.0), T0 + 7200)
    assert names(red) == [("red_line", ["Chen Jie"])]
    assert red[0].kind is PageKind.RED_LINE


def test_resolve_notice_goes_to_everyone_paged() -> None:
    esc = Escalator(POLICIES, Rota(ONCALL))
    esc.handle(event(), T0)
    walk(esc, T0, T0 + 1000)
    resolved = esc.handle(event(state=AlertState.RESOLVED, ts=T0 + 1200), T0 + 1200)
    assert names(resolved) == [("resolved", ["Zhang Wei", "Li Na", "Wang Fang"])]
    assert esc.tracked == {}


def test_policy_by_severity_and_mute() -> None:
    esc = Escalator(POLICIES, Rota(ONCALL))
    assert esc.handle(event(severity="warning"), T0) == []  # first step after 5 minutes
    assert names(esc.due(T0 + 300)) == [("firing", ["Zhang Wei", "Li Na"])]
    # A resolve before anyone was paged tells no one.
    esc2 = Escalator(POLICIES, Rota(ONCALL))
    esc2.handle(event(severity="warning"), T0)
    assert esc2.handle(event(state=AlertState.RESOLVED, ts=T0 + 10), T0 + 10) == []
    # Muted (silence, maintenance) alerts never start an escalation.
    esc3 = Escalator(POLICIES, Rota(ONCALL))
    assert esc3.handle(event(notify=False, muted_reason="silenced"), T0) == []
    assert esc3.tracked == {}


def test_flapping_holds_then_settles() -> None:
    esc = Escalator(POLICIES, Rota(ONCALL))
    esc.handle(event(), T0)
    flapping = esc.handle(event(change=AlertChange.FLAPPING, ts=T0 + 10), T0 + 10)
    # Those paged are told its notifications are held (issue 13, defect 4).
    assert names(flapping) == [("flapping", ["Zhang Wei", "Li Na"])]
    assert esc.due(T0 + 1000) == []
    settled = esc.handle(event(change=AlertChange.SETTLED, ts=T0 + 1000), T0 + 1000)
    # ... and when it settles; the step held meanwhile reaches the manager.
    assert names(settled) == [("settled", ["Zhang Wei", "Li Na"]), ("firing", ["Wang Fang"])]
    assert Recipient("person", "Wang Fang") in esc.paged("fp1")


def test_catch_up_is_one_page_per_person() -> None:
    """An ack that expires (or a restart) after several steps came due: each person gets one
    page, the notice or the latest step, not "step 2" and "STILL UNACKNOWLEDGED" together."""
    esc = Escalator(POLICIES, Rota(ONCALL))
    esc.handle(event(), T0)
    esc.handle(event(change=AlertChange.ACKNOWLEDGED, ts=T0 + 60), T0 + 60)
    at = T0 + 45 * 60  # steps 2 (15m) and 3 (30m) and the first reminder (40m) are due
    expired = esc.handle(
        event(change=AlertChange.UNACKNOWLEDGED, ts=at, note="acknowledgement expired"), at
    )
    assert names(expired) == [
        ("ack_expired", ["Zhang Wei", "Li Na"]),
        ("firing", ["Wang Fang"]),
        ("firing", ["Chen Jie"]),
    ]  # the reminder due at 40m, to all of them, merged away
    assert [p.step for p in expired] == [0, 2, 3]
    # A withdrawn ack (not expired) resumes paging without the notice.
    esc.handle(event(change=AlertChange.ACKNOWLEDGED, ts=at + 1), at + 1)
    withdrawn = esc.handle(
        event(change=AlertChange.UNACKNOWLEDGED, ts=at + 2, note="wrong alert"), at + 2
    )
    assert all(p.kind is not PageKind.ACK_EXPIRED for p in withdrawn)
