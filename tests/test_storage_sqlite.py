"""What is particular to the SQLite store: private files (issue 12, Medium 3), secure_delete,
and the read-only open the `dutyd log` and `report` commands use."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from dutyd.storage import NewLogEntry, NewRoomEntry, OutboxMessage, StorageError, open_storage
from dutyd.storage.sqlite import SqliteStorage
from dutyd.storage.sqlite.migrations import MIGRATIONS


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def exists(path: Path) -> bool:
    return path.exists()


def content(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The usual umask 022, under which files come out world-readable unless made private."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


async def test_database_wal_and_shm_are_private_in_a_private_directory(
    tmp_path: Path, open_umask: None
) -> None:
    path = tmp_path / "new" / "deeper" / "dutyd.db"
    storage = SqliteStorage(path)
    await storage.open()
    try:
        await storage.log.append(1.0, "daemon.start", "dutyd", "", {})
        wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
        assert exists(wal) and exists(shm)  # WAL mode, while open
        assert (mode(path), mode(wal), mode(shm)) == (0o600, 0o600, 0o600)
        assert mode(path.parent) == 0o700
        assert mode(path.parent.parent) == 0o700  # every directory it had to create
    finally:
        await storage.close()


async def test_existing_directory_is_left_alone_but_existing_files_made_private(
    tmp_path: Path, open_umask: None
) -> None:
    shared = tmp_path / "var-lib"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    path = shared / "dutyd.db"
    conn = sqlite3.connect(path)  # a database from an older dutyd, world-readable
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    os.chmod(path, 0o644)
    assert mode(path) == 0o644
    storage = SqliteStorage(path)
    await storage.open()
    try:
        await storage.log.append(1.0, "daemon.start", "dutyd", "", {})
        assert mode(path) == 0o600
        assert mode(Path(f"{path}-wal")) == 0o600
        assert mode(Path(f"{path}-shm")) == 0o600
        assert mode(shared) == 0o755  # the operator's directory, not ours to change
    finally:
        await storage.close()


@pytest.mark.parametrize(
    ("dir_mode", "warned"),
    [(0o777, True), (0o1777, True), (0o770, True), (0o755, False), (0o700, False)],
)
async def test_a_directory_others_can_write_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, dir_mode: int, warned: bool
) -> None:
    """Whoever can write the directory can delete or replace the duty log, or plant a -wal
    file before dutyd creates one: the operator's directory is left as is, but said so."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, dir_mode)
    storage = SqliteStorage(shared / "dutyd.db")
    with caplog.at_level("WARNING", logger="dutyd.storage"):
        await storage.open()
    await storage.close()
    found = [r for r in caplog.records if r.name == "dutyd.storage" and "writable" in r.message]
    assert bool(found) is warned, [r.message for r in caplog.records]
    if warned:
        fields = found[0].fields  # type: ignore[attr-defined]
        assert fields["directory"] == str(shared)
        assert fields["mode"] == f"{dir_mode:04o}"
    assert mode(shared) == dir_mode  # still the operator's to change


async def test_secure_delete_overwrites_delivered_messages(tmp_path: Path) -> None:
    """A delivered message's body (ack-link tokens) must not stay readable in free pages."""
    path = tmp_path / "d.db"
    secret = "ACK-TOKEN-" + "q" * 40
    storage = SqliteStorage(path)
    await storage.open()
    try:
        msg = OutboxMessage("m1", "Li Na", "firing", "mail", {"body": secret}, created=1.0)
        await storage.outbox.enqueue([msg])
        await storage.outbox.mark_delivered("m1", 2.0, (), NewLogEntry(2.0, "x", "d", "m1", {}))
    finally:
        await storage.close()  # the last close checkpoints the WAL into the file
    assert secret.encode() not in content(path)
    assert secret.encode() not in content(Path(f"{path}-wal"))


async def test_secure_delete_is_on_for_the_store_connection(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "d.db")
    await storage.open()
    try:
        assert await storage._db.run(lambda c: c.execute("PRAGMA secure_delete").fetchone()[0])
    finally:
        await storage.close()


async def test_read_only_store_reads_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    async with open_storage(path) as storage:
        await storage.log.append(1.0, "alert.firing", "dutyd", "fp", {"summary": "hot"})
    async with open_storage(path, read_only=True) as storage:
        (entry,) = await storage.log.read()
        assert entry.data == {"summary": "hot"}
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await storage.log.append(2.0, "x", "y", "z", {})
    with pytest.raises(StorageError, match="no duty database"):
        await open_storage(tmp_path / "missing.db", read_only=True).open()
    assert not (tmp_path / "missing.db").exists()


async def test_read_only_refuses_a_schema_it_cannot_read(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
    conn.close()
    with pytest.raises(StorageError, match="start the daemon once"):
        await open_storage(old, read_only=True).open()
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StorageError, match="newer dutyd"):
        await open_storage(newer, read_only=True).open()
    with pytest.raises(StorageError, match="newer dutyd"):
        await open_storage(newer).open()


async def test_deliveries_ending_together_are_committed_together(tmp_path: Path) -> None:
    """Group commit (the burst's bottleneck was one transaction per delivery): a hundred
    deliveries that end together take a few transactions, each call returns once its own row
    is gone."""
    storage = SqliteStorage(tmp_path / "d.db")
    await storage.open()
    transactions = 0
    run = storage._db.run

    async def counting(func):  # type: ignore[no-untyped-def]
        nonlocal transactions
        transactions += 1
        return await run(func)

    try:
        msgs = [
            OutboxMessage(f"m{i}", "Li Na", "firing", "mail", {}, created=i) for i in range(100)
        ]
        await storage.outbox.enqueue(msgs)
        storage._db.run = counting  # type: ignore[method-assign]
        entries = [NewLogEntry(5.0, "notify.sent", "dutyd", m.id, {}) for m in msgs]
        calls = [
            storage.outbox.mark_delivered(m.id, 5.0, [f"{m.id}-p"], e)
            for m, e in zip(msgs, entries, strict=True)
        ]
        results = await asyncio.gather(*calls)
        assert results == [None] * 100
        assert transactions <= 10, transactions
        assert await storage.outbox.due(10.0, 200) == []
        sent = await storage.outbox.sent_among([f"m{i}-p" for i in range(100)])
        assert len(sent) == 100
        logged = await storage.log.read(kinds=["notify.sent"], limit=1000)
        assert sorted(e.subject for e in logged) == sorted(m.id for m in msgs)
    finally:
        storage._db.run = run  # type: ignore[method-assign]
        await storage.close()


async def test_a_failing_delivery_write_fails_its_own_caller_only(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "d.db")
    await storage.open()
    try:
        msgs = [OutboxMessage(f"m{i}", "Li Na", "firing", "mail", {}, created=i) for i in range(5)]
        await storage.outbox.enqueue(msgs)
        # A log entry SQLite refuses (the duty log's subject is NOT NULL) spoils its group.
        broken = NewLogEntry(5.0, "notify.sent", "dutyd", None, {})  # type: ignore[arg-type]
        calls = [
            storage.outbox.mark_delivered(
                m.id, 5.0, (), broken if i == 2 else NewLogEntry(5.0, "notify.sent", "d", m.id, {})
            )
            for i, m in enumerate(msgs)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert [isinstance(r, sqlite3.Error) for r in results] == [False, False, True, False, False]
        assert [m.id for m in await storage.outbox.due(10.0, 10)] == ["m2"]
    finally:
        await storage.close()


async def test_close_writes_the_deliveries_still_in_flight(tmp_path: Path) -> None:
    """A delivery accepted but not yet recorded would be sent again after a restart."""
    path = tmp_path / "d.db"
    storage = SqliteStorage(path)
    await storage.open()
    msgs = [OutboxMessage(f"m{i}", "Li Na", "firing", "mail", {}, created=i) for i in range(20)]
    await storage.outbox.enqueue(msgs)
    tasks = [asyncio.ensure_future(storage.outbox.mark_delivered(m.id, 5.0)) for m in msgs]
    await asyncio.sleep(0)  # they are queued for the writer, not yet written
    await storage.close()
    await asyncio.gather(*tasks)
    storage = SqliteStorage(path)
    await storage.open()
    try:
        assert await storage.outbox.due(10.0, 100) == []
    finally:
        await storage.close()


async def test_the_entry_register_refuses_changes_and_removals(tmp_path: Path) -> None:
    """Append-only in the file itself: not even a process with the file open can rewrite
    who went into the room."""
    path = tmp_path / "reg.db"
    storage = open_storage(path)
    async with storage:
        await storage.room_entries.append([NewRoomEntry(1.0, "A", "Zhang Wei", "in")])
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE room_entries SET person = 'nobody'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM room_entries")
        assert conn.execute("SELECT person FROM room_entries").fetchall() == [("Zhang Wei",)]
    finally:
        conn.close()
