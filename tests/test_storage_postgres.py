"""PostgreSQL specifics beyond the repository contract: the `storage:` config (password from
env or file, never in the URL or a message), migrations by nodes starting at once, a read-only
open, and riding out a database restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError

from dutyd.agent.config import load_config
from dutyd.core.errors import ConfigError
from dutyd.storage import (
    NewRoomEntry,
    StorageConfig,
    StorageError,
    open_configured,
    open_storage,
)
from dutyd.storage.postgres import PostgresStorage
from dutyd.storage.postgres.migrations import MIGRATIONS
from dutyd.storage.sqlite import SqliteStorage
from tests.postgres_fixtures import PASSWORD, PostgresServer, postgres_server


def test_config_refuses_a_password_in_the_url_and_redacts_it(tmp_path) -> None:
    path = tmp_path / "dutyd.yaml"
    path.write_text("storage:\n  url: postgresql://dutyd:hunter2@db:5432/dutyd\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = err.value.report()
    assert "hunter2" not in text and "password_env" in text and "postgresql://db" in text
    assert "storage.url" in text
    with pytest.raises(ValidationError, match="postgresql://"):
        StorageConfig.model_validate({"url": "mysql://dutyd@db/dutyd"})
    with pytest.raises(ValidationError, match="needs a host and a database"):
        StorageConfig.model_validate({"url": "postgresql://dutyd@db"})


def test_config_password_from_env_or_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PGPASS_T", "from-env")
    cfg = StorageConfig.model_validate(
        {"url": "postgresql://dutyd@127.0.0.1:5432/dutyd", "password_env": "PGPASS_T"}
    )
    assert cfg.password() == "from-env" and "from-env" not in repr(cfg)
    (tmp_path / "pw").write_text("from-file\n")
    cfg = StorageConfig.model_validate(
        {"url": "postgresql://dutyd@127.0.0.1/dutyd", "password_file": str(tmp_path / "pw")}
    )
    assert cfg.password() == "from-file"
    assert isinstance(open_configured(cfg), PostgresStorage)
    assert isinstance(open_configured(StorageConfig(path=tmp_path / "x.db")), SqliteStorage)


async def test_wrong_password_is_a_clear_error_without_the_password(
    postgres: PostgresServer,
) -> None:
    storage = open_storage(postgres.url, password="wrong-Secret-123")
    with pytest.raises(StorageError) as err:
        await storage.open()
    assert "wrong-Secret-123" not in str(err.value)
    assert "password authentication failed" in str(err.value)
    assert f"127.0.0.1:{postgres.port}" in str(err.value)


async def test_nodes_starting_at_once_migrate_once(postgres: PostgresServer) -> None:
    url = postgres.create_database("race")
    stores = [PostgresStorage(url, PASSWORD) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        versions = postgres.psql("SELECT version FROM dutyd_schema ORDER BY version", "race")
        assert versions.split() == [str(i + 1) for i in range(len(MIGRATIONS))]
        ids = await asyncio.gather(
            *(s.log.append(1.0, "daemon.start", "dutyd", f"n{i}", {}) for i, s in enumerate(stores))
        )
        assert len(set(ids)) == 4
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_read_only_open_needs_the_schema(postgres: PostgresServer) -> None:
    url = postgres.create_database("ro")
    with pytest.raises(StorageError, match="older schema"):
        await PostgresStorage(url, PASSWORD, read_only=True).open()
    async with PostgresStorage(url, PASSWORD) as s:
        await s.log.append(1.0, "daemon.start", "dutyd", "", {})
    async with PostgresStorage(url, PASSWORD, read_only=True) as s:
        assert [e.kind for e in await s.log.read()] == ["daemon.start"]


async def test_calls_wait_for_a_restarted_database() -> None:
    """A call made while PostgreSQL is down waits and completes once it is back; a call that
    must know now (retry=False) fails at once with a clear error."""
    with postgres_server() as server:
        async with PostgresStorage(server.url, PASSWORD, retry_for=60) as s:
            await s.log.append(1.0, "before", "dutyd", "", {})
            await asyncio.to_thread(server.stop)
            pending = asyncio.ensure_future(s.log.append(2.0, "during", "dutyd", "", {}))
            await asyncio.sleep(2.0)
            assert not pending.done()
            await asyncio.to_thread(server.start)
            async with asyncio.timeout(30):
                await pending
            assert [e.kind for e in await s.log.read()] == ["before", "during"]


def test_the_ha_example_config_is_valid(tmp_path, monkeypatch) -> None:
    """integrations/ha/dutyd.yaml (docker-compose.yml's config): each node's name from env."""
    (tmp_path / "pw").write_text("secret\n")
    monkeypatch.setenv("DUTYD_STORAGE__PASSWORD_FILE", str(tmp_path / "pw"))
    monkeypatch.setenv("DUTYD_CLUSTER__NODE", "duty-b")
    root = Path(__file__).resolve().parent.parent
    settings = load_config(root / "integrations" / "ha" / "dutyd.yaml")
    assert settings.cluster.enabled and settings.cluster.node == "duty-b"
    assert settings.storage.password() == "secret"
    assert "dutyd-b" in (root / "docker-compose.yml").read_text()


async def test_the_entry_register_refuses_changes_and_removals(postgres: PostgresServer) -> None:
    url = postgres.create_database("register")
    async with PostgresStorage(url, PASSWORD) as storage:
        await storage.room_entries.append([NewRoomEntry(1.0, "A", "Zhang Wei", "in")])
    for sql in (
        "UPDATE room_entries SET person = 'nobody'",
        "DELETE FROM room_entries",
        "TRUNCATE room_entries",
    ):
        with pytest.raises(AssertionError, match="append-only"):
            postgres.psql(sql, "register")
    assert postgres.psql("SELECT person FROM room_entries", "register").split() == ["Zhang", "Wei"]
