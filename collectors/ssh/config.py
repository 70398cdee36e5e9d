"""The SSH target's configuration: the server, how to log in, and what to read there."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from dutyd.collectors.base import TargetConfig
from dutyd.core.configtypes import (
    PositiveDuration,
    SecretEnv,
    SecretFile,
    StrictModel,
    format_duration,
    parse_duration,
    pick_secret,
)

# Kept free at the end of the poll's `timeout` so the collector reports its own, precise reason
# (which command hung) before the scheduler cancels the poll with a generic one.
POLL_MARGIN = 1.0
# Each remote command's limit when the config gives none, cut to what `timeout` leaves.
DEFAULT_COMMAND_TIMEOUT = 5.0
SSH_POLL_TIMEOUT = 30.0

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_UNIT_NAME = re.compile(r"^[A-Za-z0-9@_.:\\-]{1,256}$")


def _label_value(v: str) -> str:
    if not _LABEL_VALUE.match(v):
        raise ValueError("must be 1-64 letters, digits or _ . : -")
    return v


def default_trusted_hosts_file() -> str:
    """Where trust-on-first-use records keys: systemd's StateDirectory if dutyd runs as a
    service, else the user's state directory."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return str(Path(state.split(":")[0]) / "ssh_known_hosts")
    return "~/.local/state/dutyd/ssh_known_hosts"


OFFSITE_RETENTION_DAYS = 15.0


class SshBackup(StrictModel):
    """A backup directory: the newest file matching `pattern` must be recent, and enough files
    must be kept. Read with `find -H <path> -maxdepth 1 -name <pattern> -type f -exec stat` (GNU or
    busybox)."""

    name: str = Field(description="Label `backup`: what is backed up, e.g. `db` or `www`.")
    path: str = Field(
        description="Absolute directory on the server (local disk or off-site mount)."
    )
    pattern: str = Field("*", description="Shell glob matched against file names, e.g. `*.tar.gz`.")
    location: Literal["local", "offsite"] = Field(
        "local", alias="copy", description="Label `copy`: `local` or `offsite` copy."
    )
    max_age: PositiveDuration = Field(
        26 * 3600.0,
        description="The newest file older than this (or no file) sets `backup_stale` 1; "
        "26h suits a daily backup with some slack.",
    )
    retention_days: float | None = Field(
        None,
        gt=0,
        description="Days the copies must cover (default: 15 for an off-site copy, as the duty "
        "rules ask; none for a local one). Emitted in seconds as "
        "`backup_retention_required_seconds`, and how far the kept copies fall short of it "
        "as `backup_retention_shortfall_seconds` (0 when they cover it; all of it when no file "
        "is left).",
    )

    _name = field_validator("name")(_label_value)

    @property
    def required_retention_days(self) -> float | None:
        # The duty rules: one copy off-site, keeping at least half a month of copies.
        if self.retention_days is None and self.location == "offsite":
            return OFFSITE_RETENTION_DAYS
        return self.retention_days

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/") or "\n" in v or "\0" in v:
            raise ValueError("must be an absolute path on the server, e.g. /srv/backup")
        return v

    @field_validator("pattern")
    @classmethod
    def _glob(cls, v: str) -> str:
        if not v or "/" in v or "\n" in v or "\0" in v:
            raise ValueError("must be a file name glob without '/', e.g. db-*.sql.gz")
        return v


class SshCommand(StrictModel):
    """A user-defined check: `argv` runs on the server (each word quoted, never through a
    shell of our making) and must print one number or `name value` lines."""

    name: str = Field(description="Label `command` of its `command_value` samples.")
    argv: list[str] = Field(min_length=1, description="Program and arguments, e.g. [mailq-count].")

    _name = field_validator("name")(_label_value)

    @field_validator("argv")
    @classmethod
    def _words(cls, v: list[str]) -> list[str]:
        if not v[0] or any("\n" in w or "\0" in w for w in v):
            raise ValueError("words may not be empty or hold newlines; put a script on the server")
        return v


class SshTarget(TargetConfig):
    """A Linux server read over SSH. `timeout` bounds the whole poll (as for every target);
    within it `connect_timeout` bounds connecting and logging in, and each remote command is
    killed on the server after `command_timeout`. The remote script as a whole is killed
    before `timeout` runs out, so one slow command costs its reading, not the poll."""

    kind: Literal["ssh"]
    timeout: PositiveDuration = Field(
        SSH_POLL_TIMEOUT, description="The whole poll: login (if needed) and every remote command."
    )
    connect_timeout: PositiveDuration = Field(
        10.0, description="TCP connect, key exchange and login, when a new connection is made."
    )
    port: int = Field(22, ge=1, le=65535)
    username: str = Field(min_length=1, description="Login name on the server.")
    password: SecretStr | None = Field(None, exclude=True)
    password_env: SecretEnv | None = Field(None, exclude=True)
    password_file: SecretFile | None = Field(None, exclude=True)
    client_keys: list[str] = Field(
        default_factory=list, description="Private key files (OpenSSH or PEM format)."
    )
    passphrase: SecretStr | None = Field(None, exclude=True)
    passphrase_env: SecretEnv | None = Field(None, exclude=True)
    passphrase_file: SecretFile | None = Field(None, exclude=True)
    known_hosts: str = Field(
        "~/.ssh/known_hosts",
        description="OpenSSH known_hosts file the server's host key is verified against.",
    )
    trust_on_first_use: bool = Field(
        False,
        description="Accept a server whose key is in no known_hosts file and record its key in "
        "`trusted_hosts_file`. A key that differs from a recorded one is always refused.",
    )
    trusted_hosts_file: str = Field(
        default_factory=default_trusted_hosts_file,
        description="dutyd's own known_hosts file, written by trust_on_first_use and read "
        "together with `known_hosts`.",
    )
    command_timeout: PositiveDuration = Field(
        DEFAULT_COMMAND_TIMEOUT,
        description="Each remote command is killed on the server after this long (default: "
        "5s, or less when `timeout` leaves less: timeout minus 2s).",
    )
    reconnect_max: PositiveDuration = Field(
        120.0, description="Longest wait between reconnect attempts (backoff doubles from 1s)."
    )
    services: list[str] = Field(default_factory=list, description="systemd units to check.")
    backups: list[SshBackup] = Field(default_factory=list)
    commands: list[SshCommand] = Field(default_factory=list)

    @field_validator("username")
    @classmethod
    def _user(cls, v: str) -> str:
        if any(c.isspace() for c in v):
            raise ValueError("may not contain spaces")
        return v

    @field_validator("client_keys")
    @classmethod
    def _key_files(cls, v: list[str]) -> list[str]:
        for path in v:
            if not Path(path).expanduser().is_file():
                raise ValueError(f"client key file {path!r} does not exist")
        return v

    @field_validator("services")
    @classmethod
    def _units(cls, v: list[str]) -> list[str]:
        for unit in v:
            if not _UNIT_NAME.match(unit):
                raise ValueError(f"{unit!r} is not a systemd unit name")
        if len(set(v)) != len(v):
            raise ValueError("lists a unit twice")
        return v

    @model_validator(mode="before")
    @classmethod
    def _derive_command_timeout(cls, data: Any) -> Any:
        # A user who sets only `timeout: 5s` must not be refused over a default they never saw:
        # the default command limit shrinks to what the poll leaves.
        if not isinstance(data, Mapping) or "command_timeout" in data:
            return data
        try:
            timeout = parse_duration(data.get("timeout", SSH_POLL_TIMEOUT))
        except ValueError:
            return data  # reported as a `timeout` field error
        room = timeout - POLL_MARGIN * 2
        if room > 0:
            return {**data, "command_timeout": min(DEFAULT_COMMAND_TIMEOUT, room)}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> SshTarget:
        if self.timeout <= POLL_MARGIN * 2:
            raise ValueError(
                f"timeout ({format_duration(self.timeout)}) must be more than "
                f"{format_duration(POLL_MARGIN * 2)}: the poll keeps that much for connecting "
                "and reporting beside its commands"
            )
        if self.command_timeout + POLL_MARGIN * 2 > self.timeout:
            raise ValueError(
                f"command_timeout ({format_duration(self.command_timeout)}) must leave at least "
                f"{format_duration(POLL_MARGIN * 2)} within timeout "
                f"({format_duration(self.timeout)}, the whole poll)"
            )
        if not self.client_keys and self.password_value() is None:
            raise ValueError("give client_keys or one of password / password_env / password_file")
        pairs = [(b.name, b.location) for b in self.backups]
        if len(set(pairs)) != len(pairs):
            raise ValueError("backups: the same name and copy appear twice")
        names = [c.name for c in self.commands]
        if len(set(names)) != len(names):
            raise ValueError("commands: the same name appears twice")
        return self

    def password_value(self) -> str | None:
        return pick_secret(self.password, self.password_env, self.password_file)

    def passphrase_value(self) -> str | None:
        return pick_secret(self.passphrase, self.passphrase_env, self.passphrase_file)
