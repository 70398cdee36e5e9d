"""Dependencies: while a parent target is down, its children's alerts are recorded, not sent."""

from __future__ import annotations

from dutyd.core.records import AlertChange, AlertEvent, AlertState, Sample
from dutyd.rules.engine import RuleEngine
from dutyd.rules.packs import load_pack


def up(target: str, value: float, ts: float, **labels: str) -> Sample:
    return Sample.of("target_up", value, ts, {"target": target, "kind": "icmp", **labels})


SERVERS = [f"srv{i:02d}" for i in range(50)]


def engine() -> RuleEngine:
    parents = {s: ["access-sw1"] for s in SERVERS}
    parents["access-sw1"] = ["core-sw1"]
    return RuleEngine(load_pack("duty"), parents=parents)


def poll_all(e: RuleEngine, ts: float, core: float, access: float, servers: float) -> list:
    # The order polls finish in is not the dependency order: children first here.
    samples = [up(s, servers, ts) for s in SERVERS]
    samples += [up("access-sw1", access, ts, role="network"), up("core-sw1", core, ts, role="core")]
    return e.ingest(samples, ts) + e.tick(ts)


def sent(events: list[AlertEvent]) -> list[AlertEvent]:
    return [e for e in events if e.notify and e.state is AlertState.FIRING]


def test_core_switch_fault_with_50_servers_behind_it_pages_once():
    e = engine()
    events = poll_all(e, 0, 1, 1, 1)
    for t in range(30, 600, 30):
        events += poll_all(e, float(t), 0, 0, 0)
    firing = [ev for ev in events if ev.state is AlertState.FIRING]
    assert len(firing) == 52  # every outage is recorded ...
    (page,) = sent(events)  # ... one is sent
    assert page.rule == "core_backbone_outage" and dict(page.labels)["target"] == "core-sw1"
    muted = {ev.muted_reason for ev in firing if not ev.notify}
    # The access switch is muted by its own parent; servers by the nearest down ancestor.
    assert muted == {"parent core-sw1 is down", "parent access-sw1 is down"}


def test_child_still_down_after_parent_recovers_is_then_sent():
    e = engine()
    poll_all(e, 0, 1, 1, 1)
    events = []
    for t in range(30, 300, 30):
        events += poll_all(e, float(t), 0, 0, 0)
    assert len(sent(events)) == 1
    # The core comes back, the access switch too, but srv07 stays down: now it pages.
    later = []
    for t in range(300, 420, 30):
        samples = [up(s, 0 if s == "srv07" else 1, float(t)) for s in SERVERS]
        samples += [up("access-sw1", 1, t, role="network"), up("core-sw1", 1, t, role="core")]
        later += e.ingest(samples, float(t)) + e.tick(float(t))
    pages = sent(later)
    assert [dict(p.labels)["target"] for p in pages] == ["srv07"]
    resolved = [ev for ev in later if ev.state is AlertState.RESOLVED and ev.notify]
    assert [dict(r.labels)["target"] for r in resolved] == ["core-sw1"]  # only what was sent


def test_rule_level_depends_on():
    from dutyd.rules.config import RuleConfig

    rule = RuleConfig.model_validate(
        {
            "name": "wan_probe_failed",
            "metric": "probe_success",
            "condition": {"equals": 0},
            "depends_on": ["edge-router"],
        }
    )
    e = RuleEngine([rule])
    e.ingest([up("edge-router", 0, 0)], 0)
    probe = Sample.of("probe_success", 0, 0, {"target": "bank-link"})
    (ev,) = e.ingest([probe], 0)
    assert not ev.notify and ev.muted_reason == "parent edge-router is down"
    assert ev.change is AlertChange.STATE
