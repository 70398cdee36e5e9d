"""One SQLite connection on its own thread: opening (file modes, pragmas, migrations), running
work there, and transactions.

All statements run on a single-thread executor that owns the connection, so the event loop
never blocks on disk and sqlite3's thread rules hold. The file holds rendered notifications
and the duty log: it is created 0600 in a 0700 directory, and deleted content is overwritten
(`secure_delete`), so it cannot be read back from free pages by another local user. An
existing directory that others may write is kept, with a warning at start-up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from dutyd.storage.base import FencedOut, StorageError
from dutyd.storage.health import StorageHealth, StorageUnavailable
from dutyd.storage.records import MEMBER_EPOCH_BASE
from dutyd.storage.rows import member_refusal
from dutyd.storage.sqlite.migrations import LEGACY, MIGRATIONS

T = TypeVar("T")

log = logging.getLogger("dutyd.storage")

FILE_MODE = 0o600
DIR_MODE = 0o700
SIDE_FILES = ("-wal", "-shm", "-journal")
# The WAL is cut back to this after a checkpoint (it grows past it only while a reader holds
# old pages); `checkpoint` truncates it to zero when no reader is in the way.
JOURNAL_SIZE_LIMIT = 1024 * 1024
WAL_AUTOCHECKPOINT = 256  # pages
BUSY_TIMEOUT = 5.0  # seconds a statement waits for another connection's lock
VACUUM_PAGES = 4096  # free pages given back per checkpoint (16 MB): a short hold of the thread
# What SQLite says when the disk or the file fails (full, read-only, I/O error, locked by
# another process past busy_timeout, corrupt), as opposed to a constraint or a bug in a
# statement, which stays an error of its own.
_FAULTS = (
    "disk",  # "database or disk is full", "disk I/O error", "database disk image is malformed"
    "readonly",  # "attempt to write a readonly database"
    "unable to open",
    "locked",  # "database is locked", "database table is locked"
    "not a database",
)


def is_fault(exc: BaseException) -> bool:
    """A failure of the disk or the file, not of the statement."""
    if isinstance(exc, OSError):
        return True
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError):
        return False
    return isinstance(exc, sqlite3.DatabaseError) and any(f in str(exc) for f in _FAULTS)


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (the connection is in autocommit
    mode, so statements outside this run on their own)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def check_fence(conn: sqlite3.Connection, epoch: int | None) -> None:
    """Inside a write's transaction: refuse it when `epoch` is below the fence."""
    if epoch is None:
        return
    if epoch >= MEMBER_EPOCH_BASE:  # a shard agent's (see `MEMBER_EPOCH_BASE`)
        member = conn.execute(
            "SELECT node, ? - last_seen, stale_after FROM cluster_members WHERE epoch=?",
            (time.time(), epoch),
        ).fetchone()
        refused = member_refusal(epoch, member)
        if refused:
            raise FencedOut(refused)
        return
    row = conn.execute("SELECT epoch FROM outbox_fence WHERE id=1").fetchone()
    if row is not None and epoch < row[0]:
        raise FencedOut(f"write of epoch {epoch} refused: the fence is at epoch {row[0]}")


def _make_private_dirs(directory: Path) -> None:
    """Create the missing directories 0700; existing ones are the operator's and kept as is."""
    missing = []
    d = directory
    while not d.exists():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, DIR_MODE)
            os.chmod(d, DIR_MODE)  # the umask may have taken bits away; never adds any


def _warn_if_others_can_write(directory: Path) -> None:
    """Log a warning when the group or others may write the database's directory: they can
    delete or replace the duty log, or plant a -wal file before SQLite makes one (a sticky
    bit stops only the first two). The directory is the operator's, so it is not changed."""
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        log.warning(
            "the database directory is writable by other users: they can replace or delete "
            "the duty log; make it 0700 (or 0750), owned by the user dutyd runs as",
            extra={"fields": {"directory": str(directory), "mode": f"{mode:04o}"}},
        )


def _make_private_file(path: Path) -> None:
    """The database and its side files 0600. SQLite creates -wal and -shm with the mode of the
    database file, so an empty database file created 0600 here keeps them private too."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
        os.close(fd)
    for p in (path, *(Path(f"{path}{s}") for s in SIDE_FILES)):
        if p.exists():
            os.chmod(p, FILE_MODE)


def _migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StorageError(
            f"the database has schema version {version}, written by a newer dutyd "
            f"(this one knows {len(MIGRATIONS)})"
        )
    if version == 0 and _legacy_versions(conn) is not None:
        version = _adopt_legacy(conn)
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        # executescript commits whatever is open first, so BEGIN goes inside the script; the
        # version bump is part of the same transaction.
        try:
            conn.executescript(f"BEGIN;\n{script};\nPRAGMA user_version = {number};")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _use_incremental_vacuum(conn: sqlite3.Connection) -> None:
    """Free pages go back to the file system after retention deletes (`checkpoint`). A new
    file takes the setting at once; an existing one needs one VACUUM to switch, done at the
    first start of a dutyd that sets it (it rewrites the file: a while for a large one)."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
        return
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    if conn.execute("PRAGMA page_count").fetchone()[0] > 0:
        log.info("switching the database to incremental vacuum (once; rewrites the file)")
        conn.execute("VACUUM")


def _legacy_versions(conn: sqlite3.Connection) -> dict[str, int] | None:
    table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"
    ).fetchone()
    if table is None:
        return None
    rows = conn.execute("SELECT component, version FROM schema_version").fetchall()
    return {str(c): int(v) for c, v in rows}


def _adopt_legacy(conn: sqlite3.Connection) -> int:
    """Run the legacy migrations a layer had not run yet, then switch to the single version."""
    done = _legacy_versions(conn) or {}
    scripts = [
        script
        for script, (layer, number) in zip(MIGRATIONS, LEGACY, strict=False)
        if done.get(layer, 0) < number
    ]
    try:
        conn.executescript(
            "BEGIN;\n"
            + ";\n".join(scripts)
            + f";\nDROP TABLE schema_version;\nPRAGMA user_version = {len(LEGACY)};"
        )
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return len(LEGACY)


def _check_readable(conn: sqlite3.Connection, path: Path) -> None:
    """A read-only open cannot migrate: the schema must be the one this dutyd reads."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == len(MIGRATIONS):
        return
    if version == 0:
        legacy = _legacy_versions(conn)
        if legacy is not None and all(legacy.get(k, 0) >= n for k, n in LEGACY):
            return  # written before the single version; every table this dutyd reads is there
    if version > len(MIGRATIONS):
        raise StorageError(f"{path} was written by a newer dutyd (schema {version})")
    raise StorageError(
        f"{path} has an older schema ({version}; this dutyd reads {len(MIGRATIONS)}): "
        "start the daemon once to upgrade it"
    )


class SqliteDatabase:
    """The connection and its thread; repositories run their work through `run`."""

    def __init__(
        self,
        path: Path,
        read_only: bool = False,
        health: StorageHealth | None = None,
        deadline: float = 5.0,
    ) -> None:
        self.path = path
        self.read_only = read_only
        self.health = health if health is not None else StorageHealth()
        self.deadline = deadline
        self.in_memory = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        # A call past its deadline still running on the thread (a frozen disk): calls fail at
        # once until it returns, rather than each waiting out its deadline behind it.
        self._stuck: concurrent.futures.Future[object] | None = None

    async def run(self, func: Callable[[sqlite3.Connection], T], slack: float = 0.0) -> T:
        """Run `func` on the connection's thread. A fault of the disk (full, read-only, I/O)
        is reported to `health` and raised as `StorageUnavailable`. The end of a fault is
        the daemon's probe (`SqliteStorage.probe`): one write that happens to fit on a
        nearly full disk does not end it, so an episode is not logged again and again.
        A call not back within `deadline` (plus `slack`: a call allowed to wait for others)
        is the same fault; it goes on on the thread, and calls fail at once until it ends."""

        def call() -> T:
            if self._conn is None:
                raise RuntimeError("storage is not open")
            return func(self._conn)

        if self._stuck is not None:
            if not self._stuck.done():
                self.health.failed(self._stuck_reason())
                raise StorageUnavailable(f"the database cannot be written: {self._stuck_reason()}")
            self._stuck = None
        job = self._executor.submit(call)
        try:
            # Cancelling the wrapper at the deadline cancels a call still queued (it never
            # runs); one already running on the thread cannot be stopped and lands when the
            # disk lets it, which is why what callers retry is written idempotently (the
            # duty log by entry key, the outbox by message id).
            async with asyncio.timeout(self.deadline + slack):
                return await asyncio.wrap_future(job)
        except TimeoutError:
            if not job.cancel():
                self._stuck = job  # type: ignore[assignment]
            self.health.failed(self._stuck_reason())
            raise StorageUnavailable(
                f"the database cannot be written: {self._stuck_reason()}"
            ) from None
        except (sqlite3.Error, OSError) as exc:
            if self.read_only or not is_fault(exc):
                raise  # a tool's read-only open refuses writes: not a fault of the disk
            self.health.failed(str(exc) or type(exc).__name__)
            raise StorageUnavailable(f"the database cannot be written: {exc}") from exc

    def _stuck_reason(self) -> str:
        return (
            f"a write has not returned within {self.deadline:g}s "
            "(the file system frozen or the disk hanging)"
        )

    async def open(self) -> None:
        """Open (and migrate); a file the disk will not let us write (read-only, full, I/O
        errors) raises `StorageUnavailable`, any other refusal `StorageError`."""
        connect = self._connect_read_only if self.read_only else self._connect
        try:
            self._conn = await asyncio.get_running_loop().run_in_executor(self._executor, connect)
        except sqlite3.Error as exc:
            if not self.read_only and is_fault(exc):
                raise StorageUnavailable(str(exc)) from None
            raise StorageError(f"cannot open {self.path}: {exc}") from None
        except OSError as exc:
            if not self.read_only and exc.errno in (errno.EROFS, errno.ENOSPC, errno.EIO):
                raise StorageUnavailable(exc.strerror or str(exc)) from None
            raise

    async def open_in_memory(self, reason: str) -> None:
        """Run on an in-memory copy: the file's content when it can still be read (a disk
        remounted read-only, a full one), else an empty schema. Nothing written survives."""

        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(":memory:", isolation_level=None)
            with contextlib.suppress(sqlite3.Error, OSError):
                if self.path.is_file() and self.path.stat().st_size > 0:
                    uri = self.path.resolve().as_uri() + "?mode=ro"
                    src = sqlite3.connect(uri, uri=True, isolation_level=None)
                    try:
                        src.backup(conn)
                    finally:
                        src.close()
            _migrate(conn)
            return conn

        self._conn = await asyncio.get_running_loop().run_in_executor(self._executor, connect)
        self.in_memory = True
        self.health.run_without_durable_state(reason)

    async def probe(self) -> bool:
        """Write one row: whether the store takes writes now (reported to `health`)."""
        if self.in_memory:
            return True
        try:
            await self.run(
                lambda c: c.execute(
                    "INSERT OR REPLACE INTO storage_probe (id, at) VALUES (1, julianday('now'))"
                )
            )
        except StorageUnavailable:
            return False
        return True

    async def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it (a no-op while a reader holds it:
        `journal_size_limit` then bounds what is kept), and give free pages back to the file
        system a batch at a time (`auto_vacuum=incremental`)."""
        if self.in_memory:
            return

        def work(c: sqlite3.Connection) -> None:
            # The vacuum first: the file is cut short when its pages reach it, at the checkpoint.
            # executescript steps the pragma to its end (execute frees one page per step).
            c.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES});")
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

        # A truncating checkpoint waits up to busy_timeout for readers before it gives up.
        await self.run(work, slack=BUSY_TIMEOUT)

    def _connect(self) -> sqlite3.Connection:
        _make_private_dirs(self.path.parent)
        _warn_if_others_can_write(self.path.parent)
        _make_private_file(self.path)
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode is durable against process crashes (SIGKILL); only an OS
            # crash may lose the last transactions.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
            conn.execute("PRAGMA secure_delete=ON")
            conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            # A checkpoint every 256 pages (1 MB), not SQLite's 1,000: the WAL restarts
            # within the size it is cut back to, so it stays about 1 MB on a small volume.
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")
            _use_incremental_vacuum(conn)
            _migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_read_only(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise StorageError(f"no duty database at {self.path}")
        uri = self.path.resolve().as_uri() + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open {self.path}: {exc}") from None
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            _check_readable(conn, self.path)
        except sqlite3.Error as exc:
            conn.close()
            raise StorageError(f"cannot read {self.path}: {exc}") from None
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        if self._stuck is not None and not self._stuck.done():
            # Said, not waited for: a stop must not hang on a frozen disk.
            log.error(
                "closing the database while a write has not returned (the disk hangs)",
                extra={"fields": {"path": str(self.path)}},
            )
            self._executor.shutdown(wait=False, cancel_futures=True)
            return
        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)
