"""A PostgreSQL that accepts connections but stops answering: every call through the store has a
deadline (`storage.write_deadline`). Against a real server: its backend frozen with SIGSTOP,
or a loopback proxy the test freezes (a network that holds packets).

Before: calls relied on `storage.retry_for` alone, and a timed-out statement (asyncpg's
`command_timeout`, 30 s) was retried as a lost connection for all of it: a write to a frozen
database hung for 120 s, nothing told the store's health, and the duty log entry of the write
was lost when it finally failed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from dutyd.storage import (
    DatabaseUnavailable,
    StorageError,
    StorageUnavailable,
    StoredAlert,
    open_storage,
)
from dutyd.storage.postgres import PostgresStorage
from tests.daemon_fixtures import DaemonProcess
from tests.postgres_fixtures import PASSWORD, FreezingProxy, PostgresServer
from tests.test_ha import PGPASS_ENV, duty_log_kinds
from tests.test_notify_chaos import Portal, daemon_config
from tests.test_storage_faults import APPS, Gateway, wait

pytestmark = pytest.mark.peer

DEADLINE = 1.0
SLACK = 1.5  # a loaded 2-core machine, and the connection's close


@pytest.fixture
def proxy(postgres: PostgresServer) -> Iterator[FreezingProxy]:
    p = FreezingProxy(postgres.port)
    yield p
    p.heal()
    p.close()


def _alert(fp: str) -> StoredAlert:
    return StoredAlert(fp, "down", {"target": fp}, "critical", "firing", 1.0, 2.0, None, 0.0, "")


async def _refused(call: object) -> None:
    with pytest.raises(StorageUnavailable):
        await call  # type: ignore[misc]


async def _timed(call: object) -> float:
    started = time.monotonic()
    await call  # type: ignore[misc]
    return time.monotonic() - started


async def test_a_frozen_network_fails_each_call_within_the_deadline_and_health_recovers(
    postgres: PostgresServer, proxy: FreezingProxy
) -> None:
    url = postgres.create_database("deadline_proxy")
    url = url.replace(f":{postgres.port}/", f":{proxy.port}/")
    store = open_storage(url, password=PASSWORD, retry_for=30, write_deadline=DEADLINE)
    assert isinstance(store, PostgresStorage)
    await store.open()
    try:
        await store.log.append(1.0, "before", "dutyd", "", {})
        # The server ends a statement past the deadline too (a lock wait behind a stuck session).
        shown = await store._db.run(lambda c: c.fetchval("SHOW statement_timeout"))
        assert shown == "1s"
        proxy.freeze()
        # A read on the notification path: a fault at the deadline, not after retry_for (30 s
        # here). (A write at the deadline: the tests below.)
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as caught:
            await store.outbox.due(10.0, 10)
        assert time.monotonic() - started < DEADLINE + SLACK
        assert isinstance(caught.value, StorageUnavailable | StorageError)
        assert not store.health.writable
        assert "no answer within 1s" in store.health.reason
        assert "s3cret" not in store.health.reason
        # Until a call gets an answer, writes fail at once (a node alone pages from memory
        # without waiting out a deadline per call).
        assert await _timed(_refused(store.alerts.save(_alert("web3")))) < 0.1
        # A lease renewal is asked even now (a node must know), within the same bound.
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            await store.cluster.acquire_lease("notifier", "a", 5.0)
        assert time.monotonic() - started < DEADLINE + SLACK
        # The duty log holds what it could not write, in order, and says so at once.
        assert await _timed(store.log.append(2.0, "held", "dutyd", "", {})) < 0.1
        assert await _timed(store.probe()) < DEADLINE + SLACK
        assert not store.health.writable
        assert store.health.errors >= 3
        proxy.heal()
        for _ in range(50):
            if await store.probe():
                break
            await asyncio.sleep(0.1)
        assert store.health.writable
        await store.alerts.save(_alert("web2"))
        kinds = [e.kind for e in await store.log.read(limit=None)]
        stored = [a.fingerprint for a in await store.alerts.load_all()]
    finally:
        await store.close()
    assert kinds == ["before", "held"], kinds
    # The save refused at once never reached the database; the pool works on after the heal.
    assert stored == ["web2"], stored


async def test_a_frozen_backend_connection_is_closed_and_not_reused(
    postgres: PostgresServer,
) -> None:
    """The server process of the pool's one connection stopped (SIGSTOP): the call fails at
    the deadline and its connection is thrown away, so the next call gets a new one (the
    postmaster answers) instead of waiting behind the frozen backend again."""
    url = postgres.create_database("deadline_backend")
    store = open_storage(url, password=PASSWORD, pool_size=1, write_deadline=DEADLINE)
    assert isinstance(store, PostgresStorage)
    await store.open()
    frozen = 0
    try:
        frozen = await store._db.run(lambda c: c.fetchval("SELECT pg_backend_pid()"))
        os.kill(frozen, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            await store.log.inner.append(1.0, "lost", "dutyd", "", {})  # type: ignore[attr-defined]
        assert time.monotonic() - started < DEADLINE + SLACK
        assert not store.health.writable
        assert await store.probe()  # a new connection: the frozen one is gone
        assert store.health.writable
        pid = await store._db.run(lambda c: c.fetchval("SELECT pg_backend_pid()"))
        assert pid != frozen
        await store.log.append(2.0, "after", "dutyd", "", {})
        kinds = [e.kind for e in await store.log.read(limit=None)]
    finally:
        if frozen:
            os.kill(frozen, signal.SIGCONT)
        await store.close()
    assert kinds == ["after"], kinds


async def test_a_lock_held_by_a_stuck_session_ends_the_statement_at_the_deadline(
    postgres: PostgresServer,
) -> None:
    """Another session holds the fence row (a node frozen mid-transaction): a fenced write
    waits for it at most the deadline, then is a fault; the server ended the statement too,
    so it does not keep waiting (and holding its own locks) after the client gave up."""
    url = postgres.create_database("deadline_lock")
    store = open_storage(url, password=PASSWORD, write_deadline=DEADLINE)
    await store.open()
    other = await asyncpg.connect(url, password=PASSWORD)
    try:
        tx = other.transaction()
        await tx.start()
        await other.execute("SELECT epoch FROM outbox_fence WHERE id=1 FOR UPDATE")
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            await store.alerts.save(_alert("web1"), epoch=1)
        assert time.monotonic() - started < DEADLINE + SLACK
        for _ in range(20):  # without statement_timeout it would wait for the lock for ever
            waiting = await other.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type='Lock' "
                "AND datname=current_database()"
            )
            if waiting == 0:
                break
            await asyncio.sleep(0.05)
        assert waiting == 0
        await tx.rollback()
        assert await store.probe()
        await store.alerts.save(_alert("web1"), epoch=1)
    finally:
        await other.close()
        await store.close()


@pytest.fixture
def portal() -> Iterator[Portal]:
    p = Portal()
    yield p
    p.stop()


async def test_a_dutyd_whose_database_stops_answering_pages_once_from_memory_and_recovers(
    tmp_path: Path, postgres: PostgresServer, proxy: FreezingProxy, portal: Portal
) -> None:
    """A real `dutyd run` alone on PostgreSQL, through a proxy that stops forwarding while
    alerts fire: its storage health goes down (/readyz, the metrics, one log line), the fault
    is paged once to the fallback channel, the pages go out from memory, and when the
    database answers again the held duty log is written (each entry once) and the health is
    back. Before: every write hung behind the frozen connection (30 s a try, retried for
    `retry_for`), nothing was paged, /readyz said ready."""
    url = postgres.create_database("deadline_daemon")
    gateway = Gateway()
    await gateway.start()
    cfg = daemon_config(portal, gateway, APPS, retry_initial="0.2s", retry_max="1s")  # type: ignore[arg-type]
    cfg["notify"]["channels"]["ops"] = {"url": gateway.url("ops")}
    cfg["notify"]["fallback_channel"] = "ops"
    cfg["storage"] = {
        "url": url.replace(f":{postgres.port}/", f":{proxy.port}/"),
        "password_env": PGPASS_ENV,
        "write_deadline": "1s",
    }
    daemon = await asyncio.to_thread(DaemonProcess, tmp_path, cfg, {PGPASS_ENV: PASSWORD})
    try:
        await wait(
            daemon,
            lambda: daemon.metric_value("probe_success", target=f"app{APPS - 1}") == 1.0,
            20,
            "the apps answering",
        )
        proxy.freeze()
        portal.set(500)
        await wait(daemon, lambda: len(gateway.accepted()) == 2 * APPS, 20, "the pages")
        code, ready = daemon.get("/readyz")
        assert code == 503 and "no answer within 1s" in ready, ready
        assert "s3cret" not in ready
        assert daemon.metric_value("dutyd_storage_writable") == 0.0
        assert (daemon.metric_value("dutyd_storage_errors_total") or 0.0) > 0
        proxy.heal()
        await wait(
            daemon, lambda: daemon.metric_value("dutyd_storage_writable") == 1.0, 20, "healed"
        )
        await wait(daemon, lambda: daemon.get("/readyz")[0] == 200, 10, "ready again")
        await asyncio.sleep(2)
        accepted = gateway.accepted()
        assert len(accepted) == 2 * APPS and set(accepted.values()) == {1}, accepted
        fault_pages = [b for p, _, s, b in gateway.requests if p == "/ops" and s == 200]
        assert len(fault_pages) == 1, fault_pages
        code, _ = await asyncio.to_thread(daemon.terminate, 15)
        assert code == 0
    finally:
        proxy.heal()
        daemon.stop()
        await gateway.stop()
    # What happened while the database did not answer is in the duty log, once.
    firing = await asyncio.to_thread(duty_log_kinds, postgres, "deadline_daemon", "alert.firing")
    assert sorted(firing) == sorted(set(firing)) and len(firing) == APPS, firing
    sent = await asyncio.to_thread(duty_log_kinds, postgres, "deadline_daemon", "notify.sent")
    assert sorted(sent) == sorted(accepted), (sent, accepted)
    log = daemon.peer.log()
    assert log.count("storage cannot be written; keeping") == 1, log[-3000:]
    assert log.count("storage writable again") == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


async def test_entries_held_while_the_database_did_not_answer_keep_their_epoch(
    postgres: PostgresServer, proxy: FreezingProxy
) -> None:
    """Node a, cut off (its proxy frozen), holds two duty-log entries: one fenced by its lease
    epoch, one unfenced (what a person did). Node b takes the lease meanwhile. When a reaches
    the database again, its fenced entry is refused (counted, not written without the fence)
    and the other one is written."""
    url = postgres.create_database("deadline_held")
    a = open_storage(
        url.replace(f":{postgres.port}/", f":{proxy.port}/"),
        password=PASSWORD,
        write_deadline=DEADLINE,
    )
    b = open_storage(url, password=PASSWORD)
    await a.open()
    await b.open()
    try:
        lease = await a.cluster.acquire_lease("notifier", "a", 1.0)
        proxy.freeze()
        assert await a.log.append(1.0, "alert.firing", "dutyd", "fp1", {}, lease.epoch) == 0
        assert await a.log.append(2.0, "alert.acknowledged", "Li Na", "fp1", {}) == 0
        assert not a.health.writable
        await asyncio.sleep(1.2)  # a's lease runs out
        taken = await b.cluster.acquire_lease("notifier", "b", 30.0)
        assert taken.held_by("b") and taken.epoch == lease.epoch + 1
        proxy.heal()
        for _ in range(50):
            if await a.probe():
                break
            await asyncio.sleep(0.1)
        assert a.health.writable
        kinds = [e.kind for e in await b.log.read(limit=None)]
        assert a.log.fenced == 1  # type: ignore[attr-defined]
    finally:
        await a.close()
        await b.close()
    assert kinds == ["alert.acknowledged"], kinds
