"""Fencing a shard agent's writes: real agents on a real PostgreSQL (tests/test_shards_groups.py's
helpers), a real HTTP receiver counting pages.

An agent records its own targets' alerts, which no lease covers. Each agent's writes carry its
member epoch (`MEMBER_EPOCH_BASE`): the store refuses them once its heartbeat is older than its
member timeout (the others count it dead and take its targets), and its next heartbeat gives it
a new epoch, which it uses only once it has applied the new shard map. Before: an agent frozen
(SIGSTOP) while another took its targets wrote its stale view when it continued: the outage's
firing recorded twice in the duty log, its alert row and its targets' status overwritten.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_fixtures import DaemonProcess
from tests.paging_fixtures import svc_down_rule
from tests.postgres_fixtures import PostgresServer
from tests.test_ha import duty_log_kinds, get_json, query, wait
from tests.test_shards_groups import agents, owners, pages, site, target

__all__ = ["site"]  # the fixture, used by name

pytestmark = pytest.mark.peer

DOWN = svc_down_rule(resolved="{target} is back")


def fenced(node: DaemonProcess) -> float:
    return node.metric_value("dutyd_cluster_fenced_writes_total") or 0.0


def polled_by(pg: PostgresServer, db: str, name: str) -> str:
    """The agent that published the target's status in the last 3 s ("" if none did)."""
    rows = query(
        pg,
        db,
        f"SELECT node FROM target_status WHERE target='{name}' "
        "AND updated > extract(epoch from now()) - 3",
    )
    return rows[0][0] if rows else ""


def test_a_frozen_agent_whose_targets_moved_is_fenced_when_it_continues_and_rejoins(
    tmp_path: Path, site: dict[str, Any], postgres: PostgresServer
) -> None:
    ports, receiver, db = site["ports"], site["receiver"], site["db"]
    targets = [
        target("svc-l", ports["up"], "room-l"),
        target("svc-y", ports["a"], "room-y"),
    ]
    lease, y = agents(tmp_path, site, ["l", "y"], targets, [DOWN], member_timeout="3s")
    wait(lambda: owners(postgres, db) == {"svc-l": "l", "svc-y": "y"}, 40, "the split", lease, y)
    assert fenced(y) == 0.0
    # y freezes; past its member timeout, l takes its room's target (the pool fallback).
    os.killpg(y.peer.pid, signal.SIGSTOP)
    try:
        wait(lambda: polled_by(postgres, db, "svc-y") == "l", 30, "l polling svc-y", lease)
        ports["a"].close()  # svc-y goes down while it is l's: l records and pages it
        receiver.wait_for(1, within=20, what="l's page of svc-y")
    finally:
        os.killpg(y.peer.pid, signal.SIGCONT)
    # y continues with its old view (svc-y up, no alert): its first poll fires the alert
    # again; that write, and its targets' status, carry its old epoch and are refused.
    wait(lambda: fenced(y) >= 1, 20, "y's stale writes refused", y)
    wait(lambda: "counted dead by the others and joins again" in y.peer.log(), 10, "rejoin", y)
    # It rejoins cleanly: svc-y is its again, with the alert as the store has it (l's).
    wait(lambda: polled_by(postgres, db, "svc-y") == "y", 30, "y polling svc-y again", y)
    fp = get_json(y, "/api/v1/alerts?target=svc-y")["alerts"]
    assert [a["state"] for a in fp] == ["firing"], fp
    refused = fenced(y)
    ports["a"].open()
    wait(lambda: len(pages(receiver, "svc-y is back")) >= 1, 20, "the resolve", lease, y)
    time.sleep(2)  # anything recorded or paged twice would arrive now
    assert duty_log_kinds(postgres, db, "alert.firing", rule="svc_down") == [fp[0]["fingerprint"]]
    assert len(duty_log_kinds(postgres, db, "alert.resolved", rule="svc_down")) == 1
    assert len(pages(receiver, "svc-y is down")) == 1, [p.get("title") for p in receiver.pages]
    assert len(pages(receiver, "svc-y is back")) == 1, [p.get("title") for p in receiver.pages]
    assert fenced(y) == refused  # after the rejoin, its writes go through
    assert fenced(lease) == 0.0
    log = y.peer.log()
    assert "refused" in log and "Traceback" not in log, log[-3000:]
