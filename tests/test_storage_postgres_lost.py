"""A PostgreSQL connection that the server ends in the middle of a transaction (an
administrator's `pg_terminate_backend`, a fast shutdown, a restart): the store's call is a lost
connection, tried again on a new one and, past `retry_for`, a storage fault. Against a real
server.

Before: the transaction's exit on the closed connection raised asyncpg's InterfaceError, and
the check of the connection after it raised another (asyncpg detaches a closed connection from
its pool); that error reached the caller as it was, neither retried nor a fault. The journal of
a cluster node took it for a failed write and paged the alert unrecorded: after the database
came back, the node that took over fired it again and paged it under a second id (seen in
`tests/test_ha_failover.py`'s database-outage case).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from dutyd.storage import DatabaseUnavailable, NewLogEntry, StoredAlert, open_storage
from dutyd.storage.postgres import PostgresStorage
from tests.postgres_fixtures import PASSWORD, PostgresServer

pytestmark = pytest.mark.peer


def _alert(fp: str) -> StoredAlert:
    return StoredAlert(fp, "down", {"target": fp}, "critical", "firing", 1.0, 2.0, None, 0.0, "")


class EndsItsOwnSession:
    """Work whose first `times` tries end their own server session inside a transaction (as a
    shutdown does between two statements of a write), then a write that lands."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.tries = 0

    async def __call__(self, c: asyncpg.Connection) -> int:
        self.tries += 1
        async with c.transaction():
            if self.tries <= self.times:
                await c.execute("SELECT pg_terminate_backend(pg_backend_pid())")
            await c.execute(
                "INSERT INTO duty_log (ts, kind, actor, subject, data) "
                "VALUES (1.0, 'landed', 'dutyd', '', '{}')"
            )
            return int(await c.fetchval("SELECT pg_backend_pid()"))


@contextlib.asynccontextmanager
async def opened(postgres: PostgresServer, name: str, retry_for: float) -> AsyncIterator[Any]:
    """A store of one connection on a database of its own."""
    store = open_storage(
        postgres.create_database(name), password=PASSWORD, pool_size=1, retry_for=retry_for
    )
    assert isinstance(store, PostgresStorage)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_a_session_ended_mid_transaction_is_tried_again_on_a_new_connection(
    postgres: PostgresServer,
) -> None:
    async with opened(postgres, "lost_mid_transaction", retry_for=10) as store:
        work = EndsItsOwnSession(times=1)
        pid = await store._db.run(work)
        assert work.tries == 2
        assert pid == await store._db.run(lambda c: c.fetchval("SELECT pg_backend_pid()"))
        # The record of an alert event (row and entry in one transaction) works on after it.
        entry = NewLogEntry(2.0, "alert.firing", "dutyd", "web1", {})
        assert await store.alerts.record("web1", _alert("web1"), entry, epoch=1) == 2.0
        kinds = [e.kind for e in await store.log.read(limit=None)]
    assert kinds == ["landed", "alert.firing"], kinds
    assert store.health.writable


async def test_a_session_ended_on_every_try_is_a_storage_fault(postgres: PostgresServer) -> None:
    """Past `retry_for`: DatabaseUnavailable (what callers wait on, the store's health told),
    not an asyncpg error the caller does not know."""
    async with opened(postgres, "lost_every_try", retry_for=0.5) as store:
        work = EndsItsOwnSession(times=100)
        with pytest.raises(DatabaseUnavailable) as caught:
            await store._db.run(work)
        assert work.tries >= 2
        assert "connection lost" in str(caught.value)
        assert "AdminShutdownError" in str(caught.value) or "terminat" in str(caught.value)
        assert not store.health.writable
        assert await store.probe()  # the server itself answers: the fault ends
        assert store.health.writable
        landed = await store._db.run(
            lambda c: c.fetchval("SELECT count(*) FROM duty_log WHERE kind='landed'")
        )
    assert landed == 0  # every try's transaction ended with its session
