"""The `storage:` section: a SQLite file (the embedded default) or a PostgreSQL URL.

The PostgreSQL password never sits in the URL (it would end up in process lists, logs and
config dumps): it comes from `password_env` or `password_file`, and a URL holding one is
refused (as is one in its query: `?password=`, `?sslpassword=`) with the password redacted
from the message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, field_validator

from dutyd.core.configtypes import PositiveDuration, SecretEnv, SecretFile, StrictModel, pick_secret
from dutyd.core.redact import redact_address

POSTGRES_SCHEMES = ("postgresql", "postgres")
# Query parameters libpq and asyncpg read a secret from (`?password=` is as much "in the URL"
# as `user:password@`).
_SECRET_PARAMS = frozenset({"password", "sslpassword"})


def is_postgres_url(location: object) -> bool:
    return isinstance(location, str) and location.split("://", 1)[0] in POSTGRES_SCHEMES


DAY = 86400.0


class RetentionConfig(StrictModel):
    """How long each kind of row is kept (a duration, or null: for ever). Rows older than
    this are deleted in small batches once an hour, off the event loop."""

    # Hourly min/max/last of the room sensors; the shift diary reads it.
    environment: PositiveDuration | None = 2 * 365 * DAY
    # The duty log is the regulatory record: kept for ever unless set.
    duty_log: PositiveDuration | None = None
    # Counter increases of `events` rules; null: the longest `over` window of the rules (plus
    # a day), past which no rule reads them. Each series' latest row is always kept.
    rule_events: PositiveDuration | None = None
    # Silences and maintenance windows over or removed this long ago.
    overlays: PositiveDuration | None = 90 * DAY
    # How often to prune, and how many rows one statement deletes at most.
    every: PositiveDuration = 3600.0
    batch: int = Field(default=500, ge=10, le=100_000)


class StorageConfig(StrictModel):
    # SQLite file (WAL). Relative paths are relative to the working directory.
    path: Path = Path("dutyd.db")
    # PostgreSQL instead of SQLite: postgresql://user@host:port/database (no password here).
    url: str | None = None
    password_env: SecretEnv | None = None
    password_file: SecretFile | None = None
    # Connections per node (every repository call borrows one for its unit of work).
    pool_size: int = Field(default=5, ge=1, le=100)
    # How long a call waits for the database to come back before it fails (an outage or a
    # failover of PostgreSQL itself); the calls of a node then resume where they were.
    retry_for: PositiveDuration = 120.0
    # A SQLite file that cannot be written at start (a read-only or full disk): `run` starts
    # anyway on an in-memory copy, pages, and says it runs without durable state (/readyz,
    # /healthz, the log); `refuse` exits with the reason.
    when_unwritable: Literal["run", "refuse"] = "run"
    # A call to the store that has not returned within this is a storage fault like a failed
    # write: dutyd pages from memory (alone) and holds the duty log meanwhile (see
    # `storage/health.py`). SQLite: a frozen file system, a disk that hangs instead of
    # failing. PostgreSQL: a server or network that holds the connection without answering
    # (the call's connection is closed, the server ends a statement running longer).
    write_deadline: PositiveDuration = 5.0
    retention: RetentionConfig = Field(default_factory=RetentionConfig)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"not a valid URL ({redact_address(url)}): {exc}") from None
        if parts.scheme not in POSTGRES_SCHEMES:
            raise ValueError("must be a postgresql://user@host:port/database URL")
        in_query = any(
            key.strip().lower() in _SECRET_PARAMS
            for key, _ in parse_qsl(parts.query, keep_blank_values=True)
        )
        if parts.password is not None or in_query:
            raise ValueError(
                f"must not hold the password ({redact_address(url)}): "
                "give it with password_env or password_file"
            )
        if not parts.hostname or not parts.path.strip("/"):
            raise ValueError("needs a host and a database: postgresql://user@host:port/database")
        del port
        return url

    @property
    def location(self) -> Path | str:
        """What `open_storage` takes: the URL for PostgreSQL, else the SQLite path."""
        return self.url if self.url is not None else self.path

    def password(self) -> str | None:
        return pick_secret(self.password_env, self.password_file)
