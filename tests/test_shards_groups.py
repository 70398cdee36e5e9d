"""Dependencies across shards: real dutyd agents on a real PostgreSQL, each pinned to its
room's shard, so the split of the targets is known in advance, and a real HTTP receiver
counting pages by message id (tests/test_ha.py's helpers). A child's parent polled by another
agent mutes the child's alert through the targets' status shared through the database."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_fixtures import DaemonProcess
from tests.postgres_fixtures import PostgresServer
from tests.test_ha import (
    Port,
    Receiver,
    active,
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
) -> list[DaemonProcess]:
    """Agents pinned to the shards room-<name>, started in this order; the first holds the
    lease (the others start once it does)."""

    def start(name: str) -> DaemonProcess:
        cfg = node_config(
            name, site["url"], site["receiver"], target_list, shards=True, shard=f"room-{name}"
        )
        cfg["rules"]["custom"] = rules
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
    rule = {
        "name": "svc_down",
        "metric": "target_up",
        "condition": {"equals": 0},
        "for": "5s",
        "severity": "critical",
        "summary": "{target} is down",
    }
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
