"""The cluster write path without processes: a node is active with its epoch before it loads
the shared state, a stale node's alert events are refused by the store (and handed to
nobody), and events that arrive while a node takes over are recorded after the load.
The same behaviour with two real nodes and PostgreSQL: tests/test_ha_failover.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from dutyd.cluster import ClusterConfig, ClusterNode
from dutyd.core.records import AlertEvent, Sample
from dutyd.duty import rulestate
from dutyd.duty.journal import AlertJournal
from dutyd.exporters.instrumentation import Instrumentation
from dutyd.rules.config import RuleConfig
from dutyd.rules.engine import RuleEngine
from dutyd.storage import Storage
from dutyd.storage.sqlite import SqliteStorage
from tests.paging_fixtures import svc_down_rule

RULE = RuleConfig.model_validate(svc_down_rule())


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    store = SqliteStorage(tmp_path / "dutyd.db")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def down(engine: RuleEngine, target: str, ts: float) -> AlertEvent:
    (event,) = engine.ingest([Sample.of("target_up", 0.0, ts, {"target": target})], ts)
    return event


def journal(engine: RuleEngine, storage: Storage, epoch: int | None) -> AlertJournal:
    return AlertJournal(
        lambda: engine, storage, Instrumentation(CollectorRegistry()), fence=lambda: epoch
    )


async def test_a_node_is_active_with_its_epoch_before_it_loads(storage: Storage) -> None:
    seen: list[tuple[bool, tuple[str, int] | None]] = []
    config = ClusterConfig(enabled=True, node="a", takeover=6.0)

    async def on_active() -> None:
        seen.append((node.is_active(), node.sender()))

    node = ClusterNode(config, storage.cluster, on_active=on_active)
    await node.round()
    assert node._promotion is not None
    await node._promotion
    assert seen == [(True, ("a", 1))]
    assert node.takeovers == 1 and node.epoch == 1


async def test_a_stale_nodes_alert_events_are_refused_and_handed_to_nobody(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    await storage.cluster.acquire_lease("notifier", "a", 30.0)  # epoch 1: node a
    await storage.cluster.release_lease("notifier", "a")
    await storage.cluster.acquire_lease("notifier", "b", 30.0)  # epoch 2: node b
    engine = RuleEngine([RULE])
    stale = journal(engine, storage, epoch=1)
    handed: list[AlertEvent] = []

    async def listener(event: AlertEvent) -> None:
        handed.append(event)

    stale.listeners.append(listener)
    with caplog.at_level(logging.WARNING, logger="dutyd"):
        await stale.record(down(engine, "sw1", 10.0))
        await stale.record(down(engine, "sw2", 11.0))
    assert handed == []
    assert await storage.alerts.load_all() == []
    assert await storage.log.read() == []
    fenced = [r for r in caplog.records if "fenced" in r.getMessage()]
    assert len(fenced) == 1  # logged once, not per write
    # The lease holder's epoch records and hands on.
    holder = journal(engine, storage, epoch=2)
    holder.listeners.append(listener)
    await holder.record(down(engine, "sw3", 12.0))
    assert [e.labels for e in handed] == [(("target", "sw3"),)]
    assert [e.kind for e in await storage.log.read()] == ["alert.firing"]


async def test_the_page_of_an_alert_carries_the_stores_first_firing(storage: Storage) -> None:
    """Another node recorded this outage first: the event handed on (whose time the page
    ids are built from) carries that node's firing time, not this node's."""
    first = RuleEngine([RULE])
    await journal(first, storage, None).record(down(first, "sw1", 10.0))
    engine = RuleEngine([RULE])
    handed: list[AlertEvent] = []

    async def listener(event: AlertEvent) -> None:
        handed.append(event)

    later = journal(engine, storage, None)
    later.listeners.append(listener)
    await later.record(down(engine, "sw1", 14.0))
    assert [e.timestamp for e in handed] == [10.0]
    (row,) = await storage.alerts.load_all()
    assert row.fired_at == 10.0 and engine.alerts[row.fingerprint].fired_at == 10.0
    # The page key a node that loads the row pages under: the first writer's too (the later
    # writer's row carried its own, 14.0; before, it replaced the stored one).
    assert row.extra["key_at"] == 10.0
    assert rulestate.alert_from_row(row).key_at == 10.0


async def test_events_queued_while_taking_over_are_recorded_after_the_load(
    storage: Storage,
) -> None:
    engine = RuleEngine([RULE])
    j = journal(engine, storage, None)
    runner = asyncio.create_task(j.run())
    try:
        j.hold()  # promotion begins
        j.put(raised := down(engine, "raised-here", 10.0))
        j.put(stale := down(engine, "in-store", 10.0))
        assert j.queued_fingerprints() == {raised.fingerprint, stale.fingerprint}
        # The load: the store's copy of "in-store" replaced the state its event came from.
        j.supersede({stale.fingerprint})
        j.put(after := down(engine, "after-load", 11.0))
        await asyncio.sleep(0.2)
        assert await storage.log.read() == []  # nothing recorded while held
        j.release()
        for _ in range(100):
            if not j.queued_fingerprints():
                break
            await asyncio.sleep(0.02)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    logged = [e.subject for e in await storage.log.read()]
    assert sorted(logged) == sorted([raised.fingerprint, after.fingerprint])
