"""SSH collector: load, memory, disks, uptime, services, backups and user checks of a Linux server.

Nothing is installed on the server. One persistent asyncssh connection per target is reused
across polls; each poll runs one remote script of standard commands (see `commands.py` for the
exact text) and parses their output (`parsers.py`). A section that fails marks only that
reading down (`ssh_reading_ok{reading=...} 0`, the reason logged); connection, host key and
login problems mark the whole target down. Windows servers are not supported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import asyncssh
from pydantic import Field, SecretStr, field_validator, model_validator

from dutyd.collectors.base import Collector, CollectorContext, Readings, TargetConfig
from dutyd.collectors.ssh import commands as cmd
from dutyd.collectors.ssh.parsers import (
    ParseError,
    SectionOutput,
    backup_stats,
    parse_backup_files,
    parse_command_output,
    parse_df,
    parse_epoch,
    parse_is_active,
    parse_loadavg,
    parse_meminfo,
    parse_nproc,
    parse_uptime,
    real_filesystems,
    split_sections,
)
from dutyd.core.configtypes import (
    PositiveDuration,
    SecretEnv,
    SecretFile,
    StrictModel,
    format_duration,
    pick_secret,
)
from dutyd.core.errors import (
    BadCredentials,
    BadResponse,
    CollectError,
    TargetTimeout,
    TargetUnreachable,
)

log = logging.getLogger(__name__)

# Shared by every SSH target of a daemon (through `context.shared`): at most this many
# connections are being opened at once, so a restart with 500 servers does not start 500 key
# exchanges together (CPU spike here, MaxStartups refusals on jump hosts).
CONNECT_SLOTS_KEY = "ssh.connect_slots"
DEFAULT_CONNECT_SLOTS = 16
_TOFU_LOCK_KEY = "ssh.known_hosts_lock"

RECONNECT_BASE = 1.0
# Kept free at the end of the poll's `timeout` so the collector reports its own, precise reason
# (which command hung) before the scheduler cancels the poll with a generic one.
POLL_MARGIN = 1.0
# Detects a connection that died silently (NAT timeout, pulled cable) between polls.
KEEPALIVE_INTERVAL = 30.0
KEEPALIVE_COUNT_MAX = 3
# The same ciphers asyncssh offers by default, AES-GCM first: asyncssh computes chacha20-poly1305
# in Python per packet (several times the CPU of a poll's parsing), while AES-GCM is one
# OpenSSL call; every OpenSSH since 6.2 offers it.
ENCRYPTION_ALGS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)
# A user command printing a log file by mistake must not fill dutyd's memory.
MAX_OUTPUT_CHARS = 4 * 1024 * 1024
# Exit statuses of a command cut off by `timeout -s KILL` (137 = 128 + SIGKILL; 124 when
# timeout itself survives to report it).
_KILLED = frozenset({124, 137})

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
        30.0, description="The whole poll: login (if needed) and every remote command."
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
        5.0, description="Each remote command is killed on the server after this long."
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

    @model_validator(mode="after")
    def _consistent(self) -> SshTarget:
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


# --- host key verification --------------------------------------------------------------------


class _HostKeyCheck:
    """Holds the known_hosts entries for one connection attempt and remembers why a key was
    refused, so the error can tell 'unknown' from 'changed'."""

    def __init__(self, files: Sequence[Path], trust_on_first_use: bool) -> None:
        self.files = list(files)
        self.tofu = trust_on_first_use
        self.known = asyncssh.SSHKnownHosts()
        self.outcome: Literal["unknown", "changed", "tofu"] | None = None
        self.presented: asyncssh.SSHKey | None = None
        for path in self.files:
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise BadCredentials(
                    f"cannot read known_hosts file {path}: {exc.strerror}"
                ) from exc
            try:
                self.known.load(text)
            except (ValueError, asyncssh.KeyImportError) as exc:
                raise BadCredentials(f"known_hosts file {path} is not valid: {exc}") from exc

    def validate(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        """Called by asyncssh only for a key that matches no known_hosts entry."""
        self.presented = key
        matched = self.known.match(host, addr, port if port != 22 else None)
        if matched[0] or matched[1]:
            self.outcome = "changed"
            return False
        self.outcome = "tofu" if self.tofu else "unknown"
        return self.tofu


class _Client(asyncssh.SSHClient):
    def __init__(self, check: _HostKeyCheck) -> None:
        self._check = check

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        return self._check.validate(host, addr, port, key)


def _host_pattern(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def _append_known_host(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileNotFoundError):
        if line in path.read_text(encoding="utf-8").splitlines():
            return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(line + "\n")


# --- polling ------------------------------------------------------------------------------------


class _Down(Exception):
    """One reading could not be taken; `reason` is shown to people."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Stale(Exception):
    """The kept connection could not open a session: reconnect once and retry."""


def _excerpt(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


async def _read_capped(stream: asyncssh.SSHReader[str]) -> str | None:
    """The whole stream, or None if it exceeds MAX_OUTPUT_CHARS."""
    chunks: list[str] = []
    size = 0
    while True:
        data = await stream.read(65536)
        if not data:
            return "".join(chunks)
        size += len(data)
        if size > MAX_OUTPUT_CHARS:
            return None
        chunks.append(data)


@dataclass(slots=True)
class _Poll:
    """The sections one poll ran and what they printed."""

    specs: dict[str, cmd.Section]
    outputs: dict[str, SectionOutput]
    budget: float
    command_timeout: float

    def output(self, sid: str, *, what: str | None = None, any_status: bool = False) -> str:
        spec = self.specs[sid]
        what = what or f"`{cmd.describe(spec)}`"
        sec = self.outputs.get(sid)
        if sec is None:
            raise _Down(f"{what} did not run: the poll script stopped before reaching it")
        if sec.status is None:
            raise _Down(
                f"{what} was cut off: the poll script was killed at its "
                f"{format_duration(self.budget)} limit or the connection dropped"
            )
        err = _excerpt(sec.stderr)
        if spec.timed and sec.status in _KILLED:
            raise _Down(
                f"{what} did not finish within {format_duration(self.command_timeout)} "
                "(command_timeout) and was killed on the server"
            )
        if sec.status == 127:
            raise _Down(f"{what}: command not found on the server ({err or 'exit status 127'})")
        if sec.status != 0 and not any_status:
            raise _Down(f"{what} exited with status {sec.status}" + (f": {err}" if err else ""))
        return sec.stdout

    def parse(
        self,
        sid: str,
        parser: Callable[[str], Any],
        *,
        what: str | None = None,
        any_status: bool = False,
    ) -> Any:
        text = self.output(sid, what=what, any_status=any_status)
        try:
            return parser(text)
        except ParseError as exc:
            err = _excerpt(self.outputs[sid].stderr)
            raise _Down(str(exc) + (f" (stderr: {err})" if err else "")) from None


class SshCollector(Collector[SshTarget]):
    """Polls one Linux server over a kept SSH connection."""

    kind = "ssh"
    config_model = SshTarget
    metric_help: ClassVar[dict[str, str]] = {
        "node_load1": "1-minute load average (/proc/loadavg).",
        "node_load5": "5-minute load average (/proc/loadavg).",
        "node_load15": "15-minute load average (/proc/loadavg).",
        "node_cpus": "Processing units available (nproc).",
        "node_memory_total_bytes": "Total memory (MemTotal, /proc/meminfo).",
        "node_memory_available_bytes": "Memory available without swapping (MemAvailable).",
        "node_swap_total_bytes": "Total swap (SwapTotal).",
        "node_swap_free_bytes": "Free swap (SwapFree).",
        "node_filesystem_size_bytes": "Filesystem size (df -PTk), by mount and fstype.",
        "node_filesystem_avail_bytes": "Space available to ordinary users (df -PTk).",
        "node_filesystem_used_ratio": "Used / (used + available), 0..1, as df's Capacity.",
        "node_filesystem_inodes_used_ratio": "Inodes used / (used + free), 0..1 (df -PTki).",
        "node_uptime_seconds": "Seconds since boot (/proc/uptime).",
        "node_rebooted": "1 on the poll where uptime went backwards (the server rebooted).",
        "systemd_unit_active": "1 if `systemctl is-active` says active, else 0; by service.",
        "backup_newest_age_seconds": "Age of the newest backup file, on the server's clock.",
        "backup_newest_size_bytes": "Size of the newest backup file.",
        "backup_files": "Backup files matching the pattern (0: none at all).",
        "backup_oldest_age_seconds": "Age of the oldest kept backup file (retention).",
        "backup_retention_seconds": "Time span of backups kept: age of the oldest kept file.",
        "backup_retention_required_seconds": "Configured retention_days the copies must cover, "
        "in seconds.",
        "backup_retention_shortfall_seconds": "How much of the required retention the kept "
        "copies miss (0: covered; the whole of it when no file is left).",
        "backup_max_age_seconds": "Configured age after which the newest backup is stale.",
        "backup_stale": "1 if no backup file is younger than max_age (none at all counts).",
        "command_value": "Value printed by a user-defined command; by command and name.",
        "ssh_reading_ok": "1 if this reading was taken, 0 if it failed (reason in the log).",
    }

    def __init__(self, config: SshTarget, context: CollectorContext) -> None:
        super().__init__(config, context)
        self._conn: asyncssh.SSHClientConnection | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._last_error: CollectError | None = None
        self._prev_uptime: float | None = None
        self._keys: dict[str, tuple[float, asyncssh.SSHKey]] = {}
        # (reading, labels...) -> reason, for readings currently down; read by status pages.
        self.problems: dict[tuple[str, ...], str] = {}
        self.connects = 0

    @property
    def _where(self) -> str:
        return f"{self.config.address}:{self.config.port}"

    # --- connection -----------------------------------------------------------------------

    async def _connection(self) -> asyncssh.SSHClientConnection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        self._conn = None
        if self._last_error is not None and time.monotonic() < self._retry_at:
            raise type(self._last_error)(self._last_error.message)
        try:
            conn = await self._open()
        except CollectError as exc:
            self._failures += 1
            delay = min(self.config.reconnect_max, RECONNECT_BASE * 2 ** (self._failures - 1))
            # Jitter so that servers dropped together (a switch reboot) are not retried together.
            delay *= random.uniform(0.8, 1.0)
            self._retry_at = time.monotonic() + delay
            self._last_error = type(exc)(
                f"{exc.message} (retrying within {format_duration(delay)})"
            )
            raise self._last_error from exc.__cause__
        self._failures = 0
        self._last_error = None
        self._conn = conn
        self.connects += 1
        return conn

    def _trusted_file(self) -> Path:
        return Path(self.config.trusted_hosts_file).expanduser()

    def _host_key_check(self) -> _HostKeyCheck:
        files = [Path(self.config.known_hosts).expanduser(), self._trusted_file()]
        return _HostKeyCheck(files, self.config.trust_on_first_use)

    def _load_keys(self) -> list[asyncssh.SSHKey]:
        """Client keys, re-read when their file changes (decrypting a key is slow, so cached)."""
        keys: list[asyncssh.SSHKey] = []
        for name in self.config.client_keys:
            path = Path(name).expanduser()
            try:
                mtime = path.stat().st_mtime
                cached = self._keys.get(name)
                if cached is None or cached[0] != mtime:
                    key = asyncssh.read_private_key(path, self.config.passphrase_value())
                    self._keys[name] = cached = (mtime, key)
            except OSError as exc:
                raise BadCredentials(f"cannot read client key {path}: {exc.strerror}") from exc
            except (asyncssh.KeyImportError, ValueError) as exc:
                raise BadCredentials(f"cannot load client key {path}: {exc}") from exc
            keys.append(cached[1])
        return keys

    async def _open(self) -> asyncssh.SSHClientConnection:
        cfg = self.config
        connect_timeout = min(cfg.connect_timeout, cfg.timeout - POLL_MARGIN)
        check = await self.context.run_blocking(self._host_key_check)
        keys = await self.context.run_blocking(self._load_keys)
        password = cfg.password_value()
        methods = (["publickey"] if keys else []) + (
            ["keyboard-interactive", "password"] if password is not None else []
        )
        slots: asyncio.Semaphore = self.context.shared(
            CONNECT_SLOTS_KEY, lambda: asyncio.Semaphore(DEFAULT_CONNECT_SLOTS)
        )
        async with slots:
            try:
                # asyncssh's connect_timeout covers TCP, key exchange and login; the outer
                # bound is a guard in case a step slips through it.
                async with asyncio.timeout(connect_timeout + 1.0):
                    conn, _ = await asyncssh.create_connection(
                        lambda: _Client(check),
                        cfg.address,
                        cfg.port,
                        username=cfg.username,
                        known_hosts=check.known,
                        client_keys=keys or None,
                        password=password,
                        preferred_auth=methods,
                        agent_path=None,
                        config=[],
                        x509_trusted_certs=None,
                        gss_auth=False,
                        gss_kex=False,
                        host_based_auth=False,
                        keepalive_interval=KEEPALIVE_INTERVAL,
                        keepalive_count_max=KEEPALIVE_COUNT_MAX,
                        connect_timeout=connect_timeout,
                        encryption_algs=list(ENCRYPTION_ALGS),
                    )
            except Exception as exc:
                raise self._connect_error(exc, check, keys) from exc
        if check.outcome == "tofu" and check.presented is not None:
            await self._record_host_key(check.presented)
        return conn

    def _connect_error(
        self, exc: Exception, check: _HostKeyCheck, keys: Sequence[asyncssh.SSHKey]
    ) -> CollectError:
        cfg, where = self.config, self._where
        if isinstance(exc, CollectError):
            return exc
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            return self._host_key_error(check, exc)
        if isinstance(exc, asyncssh.PermissionDenied):
            given = " and ".join(
                (["key " + ", ".join(cfg.client_keys)] if keys else [])
                + (["password"] if cfg.password_value() is not None else [])
            )
            return BadCredentials(
                f"SSH login as {cfg.username} on {where} refused: the server accepted none of "
                f"the configured credentials ({given})"
            )
        if isinstance(exc, TimeoutError):
            return TargetTimeout(
                f"no SSH login on {where} within {format_duration(cfg.connect_timeout)}"
            )
        if isinstance(exc, ConnectionRefusedError):
            return TargetUnreachable(f"{where} refused the SSH connection (sshd not running?)")
        if isinstance(exc, socket.gaierror):
            return TargetUnreachable(f"cannot resolve host name {cfg.address}: {exc.strerror}")
        if isinstance(exc, asyncssh.ConnectionLost | asyncssh.ServiceNotAvailable):
            return TargetUnreachable(
                f"{where} closed the connection during SSH login ({exc.reason or 'no reason'};"
                " sshd MaxStartups reached or not an SSH server?)"
            )
        if isinstance(exc, asyncssh.DisconnectError):
            return BadResponse(f"SSH handshake with {where} failed: {exc.reason}")
        if isinstance(exc, OSError):
            return TargetUnreachable(f"cannot connect to {where}: {exc.strerror or exc}")
        if isinstance(exc, asyncssh.Error | ValueError):
            return BadResponse(f"SSH connection to {where} failed: {exc}")
        raise exc

    def _host_key_error(self, check: _HostKeyCheck, exc: asyncssh.Error) -> BadCredentials:
        where = self._where
        files = " and ".join(str(f) for f in check.files)
        key = check.presented
        shown = f"{key.get_algorithm()} {key.get_fingerprint()}" if key is not None else "?"
        if check.outcome == "changed":
            return BadCredentials(
                f"host key for {where} does not match known_hosts -- possible "
                f"man-in-the-middle; the server now presents {shown}. If the key was changed "
                f"on purpose, replace its line in {files}"
            )
        if check.outcome == "unknown":
            keyscan = f"ssh-keyscan -p {self.config.port} {self.config.address}"
            return BadCredentials(
                f"host key for {where} is not in known_hosts ({files}); the server presents "
                f"{shown}. Check that fingerprint, then add it ({keyscan} >> "
                f"{self.config.known_hosts}) or set trust_on_first_use: true"
            )
        return BadCredentials(f"host key for {where} refused: {exc.reason}")

    async def _record_host_key(self, key: asyncssh.SSHKey) -> None:
        cfg = self.config
        path = self._trusted_file()
        line = f"{_host_pattern(cfg.address, cfg.port)} {key.export_public_key().decode().strip()}"
        lock: asyncio.Lock = self.context.shared(_TOFU_LOCK_KEY, asyncio.Lock)
        async with lock:
            try:
                await self.context.run_blocking(_append_known_host, path, line)
            except OSError as exc:
                log.error("%s: cannot record host key in %s: %s", cfg.name, path, exc.strerror)
                return
        log.warning(
            "%s: trusted the host key of %s on first use (%s %s), recorded in %s",
            cfg.name,
            self._where,
            key.get_algorithm(),
            key.get_fingerprint(),
            path,
        )

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(TimeoutError, OSError, asyncssh.Error):
                async with asyncio.timeout(2.0):
                    await conn.wait_closed()

    # --- one poll ---------------------------------------------------------------------------

    def _sections(self) -> list[cmd.Section]:
        cfg = self.config
        sections = cmd.standard_sections(with_clock=bool(cfg.backups))
        if cfg.services:
            sections.append(cmd.systemd_section(cfg.services))
        for i, backup in enumerate(cfg.backups):
            sections.append(cmd.backup_section(i, backup.path, backup.pattern))
        for i, command in enumerate(cfg.commands):
            sections.append(cmd.command_section(i, command.argv))
        return sections

    async def collect(self, readings: Readings) -> None:
        cfg = self.config
        deadline = time.monotonic() + cfg.timeout - POLL_MARGIN
        sections = self._sections()
        nonce = secrets.token_hex(8)
        script = cmd.render_script(sections, nonce, cfg.command_timeout)
        conn = await self._connection()
        try:
            stdout, stderr, status = await self._run(conn, script, sections, deadline)
        except _Stale as exc:
            # The kept connection is dead though it was not noticed: one fresh attempt now,
            # rather than a failed poll.
            log.info("%s: kept SSH connection unusable (%s); reconnecting", cfg.name, exc)
            self._drop()
            conn = await self._connection()
            try:
                stdout, stderr, status = await self._run(conn, script, sections, deadline)
            except _Stale as again:
                self._drop()
                raise TargetUnreachable(f"SSH session on {self._where} failed: {again}") from None
        outputs = split_sections(stdout, stderr, cmd.marker_for(nonce))
        if not outputs:
            said = _excerpt(stderr or stdout) or "nothing"
            raise BadResponse(
                f"{self._where}: the poll script ran no command (exit status {status}); "
                f"the server said: {said}"
            )
        budget = self._budget(sections, deadline)
        poll = _Poll({s.id: s for s in sections}, outputs, budget, cfg.command_timeout)
        self._emit(readings, poll)

    def _budget(self, sections: Sequence[cmd.Section], deadline: float) -> float:
        """The remote script's own limit: what its commands may take, cut to what is left of
        the poll (minus a margin for the output to come back)."""
        left = deadline - time.monotonic() - POLL_MARGIN
        return max(0.5, min(cmd.script_budget(sections, self.config.command_timeout), left))

    async def _run(
        self,
        conn: asyncssh.SSHClientConnection,
        script: str,
        sections: Sequence[cmd.Section],
        deadline: float,
    ) -> tuple[str, str, int | None]:
        cfg = self.config
        open_within = max(0.5, min(cfg.connect_timeout, deadline - time.monotonic()))
        budget = self._budget(sections, deadline)
        try:
            async with asyncio.timeout(open_within):
                proc = await conn.create_process(
                    cmd.remote_command(budget), input=script, encoding="utf-8", errors="replace"
                )
        except TimeoutError:
            raise _Stale(f"no session opened within {format_duration(open_within)}") from None
        except asyncssh.ChannelOpenError as exc:
            raise BadResponse(
                f"{self._where} refused to open an SSH session: {exc.reason}"
            ) from exc
        except (asyncssh.Error, OSError) as exc:
            raise _Stale(str(exc) or type(exc).__name__) from None
        finished = False
        try:
            # The remote `timeout` ends the script at `budget`; this client-side bound (the
            # margin later) catches a server that hangs anyway.
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                stdout, stderr = await asyncio.gather(
                    _read_capped(proc.stdout), _read_capped(proc.stderr)
                )
                if stdout is None or stderr is None:
                    raise BadResponse(
                        f"{self._where} printed more than {MAX_OUTPUT_CHARS // 1048576} MiB "
                        "during one poll (a user command printing too much?)"
                    )
                await proc.wait_closed()
            finished = True
        except TimeoutError:
            raise TargetTimeout(
                f"{self._where} did not finish the poll script within "
                f"{format_duration(cfg.timeout)} (timeout); the remote commands were killed"
            ) from None
        except (asyncssh.DisconnectError, asyncssh.ConnectionLost, ConnectionError) as exc:
            self._drop()
            raise TargetUnreachable(
                f"SSH connection to {self._where} lost during the poll: {exc}"
            ) from None
        finally:
            if not finished:
                _abort(proc)
        if proc.exit_status is None and proc.exit_signal is None and conn.is_closed():
            self._drop()
            raise TargetUnreachable(f"SSH connection to {self._where} lost during the poll")
        return stdout, stderr, proc.exit_status

    # --- readings ---------------------------------------------------------------------------

    def _note(self, key: tuple[str, ...], reason: str | None) -> None:
        old = self.problems.get(key)
        if reason is None:
            if old is not None:
                del self.problems[key]
                log.info("%s: %s reading is back", self.config.name, " ".join(key))
        elif reason != old:
            self.problems[key] = reason
            log.warning("%s: %s reading down: %s", self.config.name, " ".join(key), reason)

    def _reading(
        self,
        readings: Readings,
        reading: str,
        labels: dict[str, str],
        take: Callable[[], None],
    ) -> None:
        try:
            take()
        except _Down as down:
            ok = False
            self._note((reading, *labels.values()), down.reason)
        else:
            ok = True
            self._note((reading, *labels.values()), None)
        readings.add("ssh_reading_ok", 1.0 if ok else 0.0, reading=reading, **labels)

    def _emit(self, readings: Readings, poll: _Poll) -> None:
        cfg = self.config

        def load() -> None:
            l1, l5, l15 = poll.parse("loadavg", parse_loadavg)
            readings.add("node_load1", l1)
            readings.add("node_load5", l5)
            readings.add("node_load15", l15)

        def cpu() -> None:
            readings.add("node_cpus", poll.parse("nproc", parse_nproc))

        def memory() -> None:
            mem = poll.parse("meminfo", parse_meminfo)
            readings.add("node_memory_total_bytes", mem.total_bytes)
            readings.add("node_memory_available_bytes", mem.available_bytes)
            readings.add("node_swap_total_bytes", mem.swap_total_bytes)
            readings.add("node_swap_free_bytes", mem.swap_free_bytes)

        def uptime() -> None:
            up = poll.parse("uptime", parse_uptime)
            rebooted = self._prev_uptime is not None and up < self._prev_uptime
            self._prev_uptime = up
            readings.add("node_uptime_seconds", up)
            readings.add("node_rebooted", 1.0 if rebooted else 0.0)

        def df() -> None:
            # df exits 1 when one mount cannot be read (a stale NFS handle) but still lists
            # the others; the rows decide.
            rows = poll.parse("df", lambda t: real_filesystems(parse_df(t)), any_status=True)
            for row in rows:
                labels = {"mount": row.mount, "fstype": row.fstype or ""}
                if row.total is not None:
                    readings.add_labelled("node_filesystem_size_bytes", row.total, labels)
                if row.available is not None:
                    readings.add_labelled("node_filesystem_avail_bytes", row.available, labels)
                if row.used_ratio is not None:
                    readings.add_labelled("node_filesystem_used_ratio", row.used_ratio, labels)

        def inodes() -> None:
            rows = poll.parse(
                "df_inodes",
                lambda t: real_filesystems(parse_df(t, inodes=True)),
                any_status=True,
            )
            for row in rows:
                # Filesystems without a fixed inode table (btrfs, vfat) report 0 inodes.
                if row.total and row.used_ratio is not None:
                    readings.add(
                        "node_filesystem_inodes_used_ratio",
                        row.used_ratio,
                        mount=row.mount,
                        fstype=row.fstype or "",
                    )

        self._reading(readings, "loadavg", {}, load)
        self._reading(readings, "nproc", {}, cpu)
        self._reading(readings, "meminfo", {}, memory)
        self._reading(readings, "uptime", {}, uptime)
        self._reading(readings, "df", {}, df)
        self._reading(readings, "df_inodes", {}, inodes)

        if cfg.services:

            def units() -> None:
                # is-active exits non-zero whenever a unit is not active: the lines decide.
                states = poll.parse(
                    "systemd", lambda t: parse_is_active(t, cfg.services), any_status=True
                )
                for unit, state in states.items():
                    readings.add(
                        "systemd_unit_active", 1.0 if state == "active" else 0.0, service=unit
                    )

            self._reading(readings, "systemd", {}, units)

        for i, backup in enumerate(cfg.backups):
            self._reading(
                readings,
                "backup",
                {"backup": backup.name, "copy": backup.location},
                self._backup_reading(readings, poll, i, backup),
            )

        for i, command in enumerate(cfg.commands):
            self._reading(
                readings,
                "command",
                {"command": command.name},
                self._command_reading(readings, poll, i, command),
            )

    def _backup_reading(
        self, readings: Readings, poll: _Poll, index: int, backup: SshBackup
    ) -> Callable[[], None]:
        def take() -> None:
            try:
                now = poll.parse("clock", parse_epoch)
            except _Down as down:
                raise _Down(f"no server clock to date backups against: {down.reason}") from None
            files = poll.parse(f"backup.{index}", parse_backup_files)
            stats = backup_stats(files, now)
            labels = {"backup": backup.name, "copy": backup.location}
            readings.add_labelled("backup_files", stats.count, labels)
            if stats.newest_age_seconds is not None:
                readings.add_labelled("backup_newest_age_seconds", stats.newest_age_seconds, labels)
            if stats.newest_size_bytes is not None:
                readings.add_labelled("backup_newest_size_bytes", stats.newest_size_bytes, labels)
            if stats.oldest_age_seconds is not None:
                readings.add_labelled("backup_oldest_age_seconds", stats.oldest_age_seconds, labels)
                readings.add_labelled("backup_retention_seconds", stats.oldest_age_seconds, labels)
            if backup.required_retention_days is not None:
                required = backup.required_retention_days * 86400.0
                kept = stats.oldest_age_seconds or 0.0
                readings.add_labelled("backup_retention_required_seconds", required, labels)
                readings.add_labelled(
                    "backup_retention_shortfall_seconds", max(0.0, required - kept), labels
                )
            age = stats.newest_age_seconds
            stale = age is None or age > backup.max_age
            readings.add_labelled("backup_max_age_seconds", backup.max_age, labels)
            readings.add_labelled("backup_stale", 1.0 if stale else 0.0, labels)

        return take

    def _command_reading(
        self, readings: Readings, poll: _Poll, index: int, command: SshCommand
    ) -> Callable[[], None]:
        def take() -> None:
            # Named, never echoed: a user's argv may hold a secret.
            values = poll.parse(
                f"command.{index}", parse_command_output, what=f"command {command.name!r}"
            )
            for name, value in values:
                if name is None:
                    readings.add("command_value", value, command=command.name)
                else:
                    readings.add("command_value", value, command=command.name, name=name)

        return take


def _abort(proc: asyncssh.SSHClientProcess[str]) -> None:
    """Kill the remote command (sshd delivers the signal to its process group) and close the
    channel; either may fail if the connection is already gone."""
    with contextlib.suppress(OSError, asyncssh.Error):
        proc.kill()
    with contextlib.suppress(OSError, asyncssh.Error):
        proc.close()


__all__ = ["DEFAULT_CONNECT_SLOTS", "SshBackup", "SshCollector", "SshCommand", "SshTarget"]
