"""The duty state of sharded agents: real dutyd agents on a real PostgreSQL, each pinned to its
room's shard (tests/test_shards_groups.py's helpers), and a real HTTP receiver counting pages.

Each agent records and escalates the alerts of the targets it polls; the lease holder sends
what they queue. An acknowledgement made through any agent's API stops the escalation on the
agent that owns the alert, and an agent keeps its own alerts as it evaluates them (the store's
copy of them, read every `sync_every`, does not reset a pending alert's `for`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_fixtures import DaemonProcess
from tests.paging_fixtures import svc_down_rule
from tests.postgres_fixtures import PostgresServer
from tests.test_ha import SCHEDULING_SLACK, get_json, post_json, query, wait
from tests.test_shards_groups import QUIET, agents, owners, site, target

__all__ = ["site"]  # the fixture, used by name

pytestmark = pytest.mark.peer

# The second escalation step: long enough for an ack made a few seconds after the first page
# to reach the owning agent before it, short enough that a missed ack shows as a page.
STEP_2_AFTER = 12.0

DOWN = svc_down_rule()


def escalation_log(pg: PostgresServer, db: str, target_name: str) -> list[tuple[str, int]]:
    """(kind, step) of the escalation entries of a target's alert, in order."""
    rows = query(
        pg,
        db,
        "SELECT kind, (data::jsonb->>'step')::int FROM duty_log WHERE kind LIKE 'escalation.%' "
        f"AND data::jsonb->>'target' = '{target_name}' ORDER BY id",
    )
    return [(r[0], r[1]) for r in rows]


def alert_of(node: DaemonProcess, target_name: str) -> dict[str, Any]:
    alerts = get_json(node, f"/api/v1/alerts?target={target_name}")["alerts"]
    assert len(alerts) == 1, alerts
    return alerts[0]


def test_an_ack_made_on_another_agent_stops_the_owners_escalation(
    tmp_path: Path, site: dict[str, Any], postgres: PostgresServer
) -> None:
    ports, receiver, db = site["ports"], site["receiver"], site["db"]
    # Both failing targets are y's; l holds the lease, x is a third agent. One alert is
    # acknowledged through x, the other through l: neither is the agent that escalates them.
    targets = [
        target("svc-l", ports["up"], "room-l", labels={"site": "l"}),
        target("svc-x", ports["up"], "room-x", labels={"site": "x"}),
        target("svc-y1", ports["a"], "room-y", labels={"site": "y1"}),
        target("svc-y2", ports["a"], "room-y", labels={"site": "y2"}),
    ]
    split = {"svc-l": "l", "svc-x": "x", "svc-y1": "y", "svc-y2": "y"}
    policy = {
        "name": "two-steps",
        "steps": [{"after": "0s", "oncall": True}, {"after": f"{STEP_2_AFTER:g}s", "oncall": True}],
    }
    nodes = agents(tmp_path, site, ["l", "x", "y"], targets, [DOWN], escalation=[policy])
    lease, x, y = nodes
    wait(lambda: owners(postgres, db) == split, 60, "the targets split by room", *nodes)

    ports["a"].close()
    receiver.wait_for(2, within=30, what="the first step of both alerts")
    fired = time.monotonic()
    fps = {name: alert_of(y, name)["fingerprint"] for name in ("svc-y1", "svc-y2")}
    for via, name in ((x, "svc-y1"), (lease, "svc-y2")):
        wait(
            lambda via=via, name=name: alert_of(via, name)["state"] == "firing",
            15,
            f"{name}'s alert shown on {via.tmp.name}",
            *nodes,
        )
        post_json(via, "/api/v1/ack", {"alert": fps[name], "actor": "Li Na", "note": "on it"})
    acked = time.monotonic() - fired
    assert acked < STEP_2_AFTER - 4, f"the acks took {acked:.1f}s, too late to tell"
    for name in fps:
        wait(
            lambda name=name: alert_of(y, name)["acknowledged"] is not None,
            15,
            f"{name}'s ack on y",
            *nodes,
        )
    # Past the second step (and a little more): nothing but the ack notices came.
    time.sleep(max(0.0, fired + STEP_2_AFTER + QUIET - time.monotonic()))
    for name in fps:
        assert escalation_log(postgres, db, name) == [
            ("escalation.firing", 1),
            ("escalation.acknowledged", 0),
        ], name
    assert len(receiver.pages) == 4, [p.get("title") for p in receiver.pages]
    for name in fps:
        assert alert_of(y, name)["acknowledged"]["by"] == "Li Na"
        assert alert_of(lease, name)["acknowledged"]["by"] == "Li Na"


def test_the_owners_pending_alert_fires_after_its_for_not_at_the_next_poll(
    tmp_path: Path, site: dict[str, Any], postgres: PostgresServer
) -> None:
    """y polls its target every 10 s, the rule waits 2 s: the alert fires on time, 2 s after
    it went pending (by the engine's own clock, not at the next sample), with one pending
    and one firing entry: the store's copy read back every second does not restart it."""
    ports, db = site["ports"], site["db"]
    targets = [
        target("svc-l", ports["up"], "room-l", labels={"site": "l"}),
        {**target("svc-y", ports["a"], "room-y", labels={"site": "y"}), "interval": "10s"},
    ]
    rule = {**DOWN, "for": "2s"}
    nodes = agents(tmp_path, site, ["l", "y"], targets, [rule])
    _, y = nodes
    wait(lambda: owners(postgres, db) == {"svc-l": "l", "svc-y": "y"}, 60, "the split", *nodes)
    ports["a"].close()
    seen: set[float] = set()

    def fired() -> bool:
        alert = alert_of(y, "svc-y")
        seen.add(alert["active_since"])
        return alert["state"] == "firing"

    wait(fired, 40, "svc-y's alert firing on y", *nodes)
    alert = alert_of(y, "svc-y")
    assert seen == {alert["active_since"]}, seen
    late = alert["fired_at"] - alert["active_since"]
    assert 2.0 <= late <= 2.0 + SCHEDULING_SLACK, f"fired {late:.1f}s after it went pending"
    kinds = query(postgres, db, "SELECT kind FROM duty_log WHERE kind LIKE 'alert.%' ORDER BY id")
    assert [r[0] for r in kinds] == ["alert.pending", "alert.firing"], kinds
