"""The PostgreSQL connection pool (asyncpg): opening (password, migrations under an advisory
lock), running a unit of work with a connection under a deadline, riding out an outage, and
error messages that never show the password.

The deadline. A database that accepts connections but does not answer (its process frozen,
a network that holds packets, a proxy that stopped forwarding) would hold a call for as long
as the kernel keeps the socket. Every unit of work (the connection's acquiry included) runs
under `storage.write_deadline`: past it the call is a storage fault (`DatabaseUnavailable`,
reported to `StorageHealth` as a failed disk is), and its connection is closed, never
returned to the pool in the middle of a transaction (the server rolls back what it had not
committed). The server ends a statement that runs longer (`statement_timeout`), so a
statement waiting for a lock held by a stuck session gives its own locks back too. A call
that timed out is not tried again: the database was there and did not answer, and each try
would wait as long. One that found the database gone (refused, reset: a restart) is, every
second or so, for `storage.retry_for`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from dutyd.core.redact import redact_address
from dutyd.storage.base import DatabaseUnavailable, FencedOut, StorageError
from dutyd.storage.health import StorageHealth
from dutyd.storage.postgres.migrations import MIGRATION_LOCK, MIGRATIONS
from dutyd.storage.records import MEMBER_EPOCH_BASE
from dutyd.storage.rows import member_refusal

T = TypeVar("T")

log = logging.getLogger("dutyd.storage")

# The database is gone or restarting (not: the statement is wrong). A unit of work that fails
# this way did not commit, or committed and lost its answer; it is run again on a new
# connection until `retry_for` is over.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.InternalClientError,
)

Work = Callable[[asyncpg.Connection], Awaitable[T]]

# The server ends a session that sits inside a transaction, waiting for its next statement,
# this long. A node cut off from the database mid-transaction (its packets held by a broken
# network, its process frozen) would otherwise keep that transaction's row locks - the fence
# row's among them - for as long as its TCP connection lives, and no other node could take
# the lease or write. Its unit of work then fails, and is run again (and checked against the
# fence again) once the node reaches the database. Every unit of work here sends its
# statements back to back, so a live node is never near this.
IDLE_IN_TRANSACTION_MS = 2000
# Migrations run without the deadline: a table rewritten on a large database takes its time.
MIGRATION_TIMEOUT = 3600.0


async def check_fence(c: asyncpg.Connection, epoch: int | None) -> None:
    """Inside a write's transaction: refuse it when `epoch` is below the fence. The fence row
    stays share-locked until the write commits, so a takeover (which raises the fence) waits
    for it or the write sees the new fence: no write of an old epoch lands after a takeover.
    Run again on each retry after an outage, so a write that waited is checked again."""
    if epoch is None:
        return
    if epoch >= MEMBER_EPOCH_BASE:
        # A shard agent's: its row, share-locked like the fence row (the heartbeat that
        # gives it a new epoch waits for this write, or this write sees the new epoch).
        row = await c.fetchrow(
            "SELECT node, dutyd_now() - last_seen, stale_after FROM cluster_members "
            "WHERE epoch=$1 FOR SHARE",
            epoch,
        )
        refused = member_refusal(epoch, row)
        if refused:
            raise FencedOut(refused)
        return
    fence = await c.fetchval("SELECT epoch FROM outbox_fence WHERE id=1 FOR SHARE")
    if fence is not None and epoch < fence:
        raise FencedOut(f"write of epoch {epoch} refused: the fence is at epoch {fence}")


class PostgresDatabase:
    """The pool; repositories run their work through `run`."""

    def __init__(
        self,
        url: str,
        password: str | None = None,
        read_only: bool = False,
        pool_size: int = 5,
        retry_for: float = 120.0,
        deadline: float = 5.0,
        health: StorageHealth | None = None,
    ) -> None:
        self.url = url
        self.read_only = read_only
        self.pool_size = pool_size
        self.retry_for = retry_for
        self.deadline = deadline
        self.health = health if health is not None else StorageHealth()
        self._password = password
        self._pool: asyncpg.Pool | None = None
        self._down_since: float | None = None
        # The fault of a call that failed, until a call gets an answer (the probe, or in a
        # cluster the next heartbeat, which is always tried): meanwhile the other calls fail
        # at once (as behind a stuck SQLite write) rather than each waiting out the deadline,
        # so a node alone pages from memory without delay.
        self._failing: str | None = None

    def _message(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        if self._password:
            text = text.replace(self._password, "***")
        return text

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                dsn=self.url,
                password=self._password,
                min_size=1,
                max_size=self.pool_size,
                timeout=10,
                command_timeout=self.deadline,
                server_settings={
                    "application_name": "dutyd",
                    "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS),
                    "statement_timeout": str(max(1, int(self.deadline * 1000))),
                },
            )
        except (*CONNECTION_LOST, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise StorageError(
                f"cannot connect to {redact_address(self.url)}: {self._message(exc)}"
            ) from None
        try:
            async with self._pool.acquire() as conn:
                if self.read_only:
                    await self._check_readable(conn)
                else:
                    await self._migrate(conn)
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise

    async def _applied(self, conn: asyncpg.Connection) -> int:
        exists = await conn.fetchval("SELECT to_regclass('dutyd_schema') IS NOT NULL")
        if not exists:
            return 0
        return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM dutyd_schema"))

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        # Session-level advisory lock: a second node starting now waits here, then finds the
        # migrations applied. Released explicitly (and by PostgreSQL if this node dies).
        wait = MIGRATION_TIMEOUT
        await conn.execute("SET statement_timeout = 0")
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK, timeout=wait)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS dutyd_schema ("
                "version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
            )
            version = await self._applied(conn)
            if version > len(MIGRATIONS):
                raise StorageError(
                    f"the database has schema version {version}, written by a newer dutyd "
                    f"(this one knows {len(MIGRATIONS)})"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                async with conn.transaction():
                    await conn.execute(script, timeout=wait)
                    await conn.execute(
                        "INSERT INTO dutyd_schema (version, applied_at) VALUES ($1, $2)",
                        number,
                        time.time(),
                    )
                log.info("database schema migrated", extra={"fields": {"version": number}})
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
            await conn.execute("RESET statement_timeout")

    async def _check_readable(self, conn: asyncpg.Connection) -> None:
        version = await self._applied(conn)
        if version == len(MIGRATIONS):
            return
        where = redact_address(self.url)
        if version > len(MIGRATIONS):
            raise StorageError(f"{where} was written by a newer dutyd (schema {version})")
        raise StorageError(
            f"{where} has an older schema ({version}; this dutyd reads {len(MIGRATIONS)}): "
            "start the daemon once to upgrade it"
        )

    async def run(self, work: Work[T], retry: bool = True) -> T:
        """Run `work` with a pooled connection, within `deadline` (see the module docstring).
        While the database is unreachable, the work is tried again every second or so for
        `retry_for` seconds (`retry` False: fail at once, for callers that must know now,
        such as the cluster lease). A call that fails is a storage fault: reported to
        `health` and raised as `DatabaseUnavailable`; until a call gets an answer, calls that
        would retry fail at once (those that must know now still ask)."""
        if self._pool is None:
            raise RuntimeError("storage is not open")
        deadline = time.monotonic() + self.retry_for
        delay = 0.2
        while True:
            if retry and self._failing is not None:
                self.health.failed(self._failing)
                raise DatabaseUnavailable(self._failing)
            try:
                result = await self._attempt(self._pool, work)
                self._failing = None  # it answers (the health's episode ends at the probe)
                if self._down_since is not None:
                    log.warning(
                        "database reachable again",
                        extra={
                            "fields": {"after_s": round(time.monotonic() - self._down_since, 1)}
                        },
                    )
                    self._down_since = None
                return result
            except (TimeoutError, asyncpg.exceptions.QueryCanceledError):
                # Ours, or the server's (`statement_timeout`, when it ends the statement
                # first): the same fault.
                raise self._fault(f"no answer within {self.deadline:g}s") from None
            except CONNECTION_LOST as exc:
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.error(
                        "database unreachable, retrying",
                        extra={
                            "fields": {"url": redact_address(self.url), "error": self._message(exc)}
                        },
                    )
                if not retry or time.monotonic() + delay > deadline:
                    raise self._fault(f"unreachable: {self._message(exc)}") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _attempt(self, pool: asyncpg.Pool, work: Work[T]) -> T:
        """One try: a connection and the work, both within the deadline. A connection whose
        work did not end cleanly (the deadline, a cancel from the caller, a lost connection,
        a transaction still open) is closed, not given back to the pool."""
        conn: asyncpg.Connection | None = None
        try:
            async with asyncio.timeout(self.deadline):
                conn = await pool.acquire()
                return await work(conn)
        except BaseException as exc:
            if conn is None:
                raise
            closed = _closed(conn)
            if (
                isinstance(exc, (*CONNECTION_LOST, asyncio.CancelledError))
                or closed
                or conn.is_in_transaction()
            ):
                with contextlib.suppress(asyncpg.InterfaceError):
                    conn.terminate()
            if closed and not isinstance(exc, (*CONNECTION_LOST, asyncio.CancelledError)):
                # The connection went away under the work, which then failed on it otherwise
                # (a transaction's rollback on the closed connection raises InterfaceError):
                # a lost connection, tried again and, past `retry_for`, a storage fault, like
                # any other. Raised as the work's error, it was neither: a caller that waits
                # for the database (the journal) took it for a refused write.
                cause = exc.__context__ if isinstance(exc.__context__, CONNECTION_LOST) else exc
                raise ConnectionResetError(f"connection lost: {self._message(cause)}") from exc
            raise
        finally:
            if conn is not None:
                await pool.release(conn, timeout=self.deadline)

    def _fault(self, what: str) -> DatabaseUnavailable:
        reason = f"database {redact_address(self.url)} {what}"
        self._failing = reason
        self.health.failed(reason)
        return DatabaseUnavailable(reason)

    async def probe(self) -> bool:
        """Whether the database takes writes now: a transaction id drawn (which a read-only
        server refuses), within the deadline, without waiting out `retry_for`."""

        async def draw(c: asyncpg.Connection) -> None:
            await c.fetchval("SELECT txid_current()")

        try:
            await self.run(draw, retry=False)
        except DatabaseUnavailable:
            return False
        self._failing = None
        return True

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), timeout=5)
            except (TimeoutError, *CONNECTION_LOST):
                pool.terminate()


def _closed(conn: asyncpg.Connection) -> bool:
    """Whether the connection is closed. asyncpg detaches a pool's connection as it closes, and
    the detached one answers every call with InterfaceError: closed."""
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        return True


def deleted(status: str) -> int:
    """The row count of a command status ("DELETE 42")."""
    return int(status.rsplit(" ", 1)[-1])
