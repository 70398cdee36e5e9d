"""Group (`across`) rules and dependencies across shards: real dutyd agents on a real
PostgreSQL, each pinned to its room's shard, so the split of the targets is known in advance,
and a real HTTP receiver counting pages by message id (tests/test_ha.py's helpers).

A group's member targets are polled by different agents; the lease holder records the group's
alert and judges it on the holds every agent publishes through the database each round. A
child's parent polled by another agent mutes the child's alert through the targets' status
shared the same way."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_fixtures import DaemonProcess
from tests.paging_fixtures import svc_down_rule
from tests.postgres_fixtures import PostgresServer
from tests.test_ha import (
    Port,
    Receiver,
    active,
    duty_log_kinds,
    get_json,
    node_config,
    query,
    start_node,
    wait,
)

pytestmark = pytest.mark.peer

# How long nothing must happen for a test to call it "nothing happens": a few exchange rounds
# (sync_every 1 s) and polls (1 s).
QUIET = 4.0


@pytest.fixture
def site(postgres: PostgresServer, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    db = "sg_" + request.node.name.replace("test_", "")[:40]
    url = postgres.create_database(db)
    ports = {name: Port() for name in ("up", "a", "b")}
    for port in ports.values():
        port.open()
    nodes: list[DaemonProcess] = []
    receiver = Receiver(delay=0.05)
    receiver.start()
    yield {"url": url, "db": db, "ports": ports, "nodes": nodes, "receiver": receiver}
    for d in nodes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(d.peer.pid, signal.SIGCONT)
        d.peer.stop()
    receiver.stop()
    for port in ports.values():
        port.close()


def target(name: str, port: Port, shard: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "tcp",
        "address": f"127.0.0.1:{port.port}",
        "interval": "1s",
        "timeout": "1s",
        "shard": shard,
        **extra,
    }


def agents(
    tmp: Path,
    site: dict[str, Any],
    names: list[str],
    target_list: list[dict[str, Any]],
    rules: list[dict[str, Any]],
    escalation: list[dict[str, Any]] | None = None,
    **cluster: Any,
) -> list[DaemonProcess]:
    """Agents pinned to the shards room-<name>, started in this order; the first holds the
    lease (the others start once it does). `escalation`: policies in place of the default
    (page the on-call person once)."""

    def start(name: str) -> DaemonProcess:
        cfg = node_config(
            name,
            site["url"],
            site["receiver"],
            target_list,
            shards=True,
            shard=f"room-{name}",
            # The pages counted are the rules' only, not the peer watch's for a killed agent.
            deadman={"peer_gone_after": None},
            **cluster,
        )
        cfg["rules"]["custom"] = rules
        if escalation is not None:
            cfg["escalation"] = {"policies": escalation}
        node = start_node(tmp, name, cfg)
        site["nodes"].append(node)
        return node

    first = start(names[0])
    wait(lambda: active(first), 30, f"{names[0]} active", first)
    return [first, *(start(name) for name in names[1:])]


def owners(pg: PostgresServer, db: str) -> dict[str, str]:
    return {r[0]: r[1] for r in query(pg, db, "SELECT target, node FROM target_status")}


def pages(receiver: Receiver, word: str) -> list[dict[str, Any]]:
    return [p for p in receiver.pages if word in f"{p.get('title', '')} {p.get('message', '')}"]


GROUP_RULE = {
    "name": "ups_down_in_hall",
    "metric": "target_up",
    "condition": {"equals": 0},
    "across": {"mode": "at_least", "n": 2, "by": ["hall"]},
    "for": "0s",
    "severity": "critical",
    "summary": "{value} of {total} UPS down in hall {hall}",
}


def test_group_rule_over_three_agents_fires_once_and_resolves_once(
    tmp_path: Path, site: dict[str, Any], postgres: PostgresServer
) -> None:
    ports, receiver, db = site["ports"], site["receiver"], site["db"]
    hall = {"labels": {"hall": "east"}}
    # Two UPSes per room; ups-a1 (agent a) and ups-b1 (agent b) are the ones that fail. The
    # lease holder c polls only a healthy one: it sees both failures through the database.
    targets = [
        target("ups-a1", ports["a"], "room-a", **hall),
        target("ups-a2", ports["up"], "room-a", **hall),
        target("ups-b1", ports["b"], "room-b", **hall),
        target("ups-b2", ports["up"], "room-b", **hall),
        target("ups-c1", ports["up"], "room-c", **hall),
    ]
    c, a, b = agents(tmp_path, site, ["c", "a", "b"], targets, [GROUP_RULE])
    split = {"ups-a1": "a", "ups-a2": "a", "ups-b1": "b", "ups-b2": "b", "ups-c1": "c"}

    def published() -> dict[str, tuple[str, bool]]:
        rows = query(postgres, db, "SELECT series_key, node, holds FROM group_members")
        return {json.loads(r[0])["target"]: (r[1], r[2]) for r in rows}

    wait(lambda: owners(postgres, db) == split, 60, "the targets split by room", c, a, b)
    # Each agent publishes the holds of its own targets' series, and only those.
    wait(
        lambda: published() == {t: (n, False) for t, n in split.items()},
        30,
        "every member's hold published by its agent",
        c,
        a,
        b,
    )
    assert active(c) and not active(a) and not active(b)

    # One UPS down (on a): one of five, below the two the rule asks for.
    ports["a"].close()
    wait(lambda: published()["ups-a1"] == ("a", True), 30, "ups-a1's hold published", a)
    time.sleep(QUIET)
    assert receiver.pages == []
    assert duty_log_kinds(postgres, db, "alert.firing") == []

    # A second one down on another agent (b): the lease holder c fires the group, once.
    ports["b"].close()
    receiver.wait_for(1, within=30, what="the group's page")
    time.sleep(QUIET)
    assert len(receiver.pages) == 1, receiver.pages
    assert "2 of 5 UPS down in hall east" in receiver.pages[0]["message"], receiver.pages
    firing = duty_log_kinds(postgres, db, "alert.firing", rule="ups_down_in_hall")
    assert len(firing) == 1, firing
    alerts = get_json(c, "/api/v1/alerts")["alerts"]
    assert [(x["rule"], x["value"], x["state"]) for x in alerts] == [
        ("ups_down_in_hall", 2.0, "firing")
    ]
    # The alert row is the lease holder's: one, for the group.
    stored = query(postgres, db, "SELECT labels, state, value FROM alerts")
    assert [tuple(r) for r in stored] == [('{"hall": "east"}', "firing", 2.0)]

    # b dies. Its targets move to a and c (no other agent in room-b), and the first reading of
    # ups-b1 by its new owner replaces b's row; until then b's last holds count, so the group
    # neither resolves nor fires again.
    b.peer.kill()
    wait(
        lambda: published().get("ups-b1", ("b", True)) != ("b", True),
        30,
        "ups-b1 published anew",
        c,
        a,
    )
    assert published().get("ups-b1") in (("a", True), ("c", True))
    time.sleep(QUIET)
    assert len(receiver.pages) == 1, receiver.pages
    assert duty_log_kinds(postgres, db, "alert.resolved") == []

    # Both back: the group resolves, once, and says so once.
    ports["a"].open()
    ports["b"].open()
    receiver.wait_for(2, within=30, what="the resolved notice")
    time.sleep(QUIET)
    assert len(receiver.pages) == 2, receiver.pages
    counts = collections.Counter(receiver.ids())
    assert len(counts) == 2 and max(counts.values()) == 1, counts
    assert duty_log_kinds(postgres, db, "alert.firing") == firing
    resolved = duty_log_kinds(postgres, db, "alert.resolved", rule="ups_down_in_hall")
    assert resolved == firing
    assert {t: h for t, (n, h) in published().items() if n in ("a", "c")} == {
        t: False for t in split
    }


def test_a_parent_on_another_agent_mutes_its_child(
    tmp_path: Path, site: dict[str, Any], postgres: PostgresServer
) -> None:
    ports, receiver, db = site["ports"], site["receiver"], site["db"]
    # The switch is polled by b, the application behind it by a; both go down together. The
    # child's alert waits 5 s, time for a to learn from the database that its parent is down.
    targets = [
        target("gw", ports["a"], "room-b", labels={"site": "gw"}),
        target("app", ports["a"], "room-a", labels={"site": "app"}, depends_on=["gw"]),
    ]
    rule = svc_down_rule(**{"for": "5s"})
    a, b = agents(tmp_path, site, ["a", "b"], targets, [rule])
    wait(lambda: owners(postgres, db) == {"gw": "b", "app": "a"}, 60, "the split", a, b)
    ports["a"].close()
    receiver.wait_for(1, within=30, what="the parent's page")
    time.sleep(QUIET)
    assert len(receiver.pages) == 1 and "gw is down" in receiver.pages[0]["message"], receiver.pages
    rows = query(
        postgres,
        db,
        "SELECT data::jsonb->'labels'->>'target', data::jsonb->>'notify', "
        "data::jsonb->>'muted_reason' FROM duty_log WHERE kind='alert.firing'",
    )
    assert sorted(tuple(r) for r in rows) == [
        ("app", "false", "parent gw is down"),
        ("gw", "true", ""),
    ]
