"""One SSH target's connection: logging in, keeping the connection between polls, reconnecting
with backoff, and running the poll script over it with its output capped.

Every asyncssh and socket exception is translated here into a `CollectError` a duty engineer
can act on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import asyncssh

from dutyd.collectors.base import CollectorContext
from dutyd.collectors.ssh import commands as cmd
from dutyd.collectors.ssh.config import POLL_MARGIN, SshTarget
from dutyd.collectors.ssh.hostkeys import (
    HostKeyCheck,
    HostKeyClient,
    append_known_host,
    known_hosts_line,
)
from dutyd.core.configtypes import format_duration
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


class _Stale(Exception):
    """The kept connection could not open a session: reconnect once and retry."""


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


def _abort(proc: asyncssh.SSHClientProcess[str]) -> None:
    """Kill the remote command (sshd delivers the signal to its process group) and close the
    channel; either may fail if the connection is already gone."""
    with contextlib.suppress(OSError, asyncssh.Error):
        proc.kill()
    with contextlib.suppress(OSError, asyncssh.Error):
        proc.close()


class SshSession:
    """The kept connection to one server. After a failed login the next attempt waits (backoff
    doubling from `RECONNECT_BASE` up to `reconnect_max`, with jitter); polls in between fail
    at once with the last reason."""

    def __init__(self, config: SshTarget, context: CollectorContext) -> None:
        self.config = config
        self.context = context
        self._conn: asyncssh.SSHClientConnection | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._last_error: CollectError | None = None
        self._keys: dict[str, tuple[float, asyncssh.SSHKey]] = {}
        self.connects = 0

    @property
    def where(self) -> str:
        return f"{self.config.address}:{self.config.port}"

    # --- running the poll script ------------------------------------------------------------

    def script_budget(self, sections: Sequence[cmd.Section], deadline: float) -> float:
        """The remote script's own limit: what its commands may take, cut to what is left of
        the poll (minus a margin for the output to come back)."""
        left = deadline - time.monotonic() - POLL_MARGIN
        return max(0.5, min(cmd.script_budget(sections, self.config.command_timeout), left))

    async def run_script(
        self, script: str, sections: Sequence[cmd.Section], deadline: float
    ) -> tuple[str, str, int | None]:
        """Run the poll script; (stdout, stderr, exit status or None if killed)."""
        conn = await self.connection()
        try:
            return await self._run(conn, script, sections, deadline)
        except _Stale as exc:
            # The kept connection is dead though it was not noticed: one fresh attempt now,
            # rather than a failed poll.
            log.info("%s: kept SSH connection unusable (%s); reconnecting", self.config.name, exc)
            self.drop()
            conn = await self.connection()
            try:
                return await self._run(conn, script, sections, deadline)
            except _Stale as again:
                self.drop()
                raise TargetUnreachable(f"SSH session on {self.where} failed: {again}") from None

    async def _run(
        self,
        conn: asyncssh.SSHClientConnection,
        script: str,
        sections: Sequence[cmd.Section],
        deadline: float,
    ) -> tuple[str, str, int | None]:
        cfg = self.config
        open_within = max(0.5, min(cfg.connect_timeout, deadline - time.monotonic()))
        budget = self.script_budget(sections, deadline)
        try:
            async with asyncio.timeout(open_within):
                proc = await conn.create_process(
                    cmd.remote_command(budget), input=script, encoding="utf-8", errors="replace"
                )
        except TimeoutError:
            raise _Stale(f"no session opened within {format_duration(open_within)}") from None
        except asyncssh.ChannelOpenError as exc:
            raise BadResponse(f"{self.where} refused to open an SSH session: {exc.reason}") from exc
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
                        f"{self.where} printed more than {MAX_OUTPUT_CHARS // 1048576} MiB "
                        "during one poll (a user command printing too much?)"
                    )
                await proc.wait_closed()
            finished = True
        except TimeoutError:
            raise TargetTimeout(
                f"{self.where} did not finish the poll script within "
                f"{format_duration(cfg.timeout)} (timeout); the remote commands were killed"
            ) from None
        except (asyncssh.DisconnectError, asyncssh.ConnectionLost, ConnectionError) as exc:
            self.drop()
            raise TargetUnreachable(
                f"SSH connection to {self.where} lost during the poll: {exc}"
            ) from None
        finally:
            if not finished:
                _abort(proc)
        if proc.exit_status is None and proc.exit_signal is None and conn.is_closed():
            self.drop()
            raise TargetUnreachable(f"SSH connection to {self.where} lost during the poll")
        return stdout, stderr, proc.exit_status

    # --- connection -------------------------------------------------------------------------

    async def connection(self) -> asyncssh.SSHClientConnection:
        """The kept connection, or a new one (subject to the reconnect backoff)."""
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

    def _host_key_check(self) -> HostKeyCheck:
        files = [Path(self.config.known_hosts).expanduser(), self._trusted_file()]
        return HostKeyCheck(files, self.config.trust_on_first_use)

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
                        lambda: HostKeyClient(check),
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
        self, exc: Exception, check: HostKeyCheck, keys: Sequence[asyncssh.SSHKey]
    ) -> CollectError:
        cfg, where = self.config, self.where
        if isinstance(exc, CollectError):
            return exc
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            return check.error(exc, address=cfg.address, port=cfg.port, known_hosts=cfg.known_hosts)
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

    async def _record_host_key(self, key: asyncssh.SSHKey) -> None:
        cfg = self.config
        path = self._trusted_file()
        line = known_hosts_line(cfg.address, cfg.port, key)
        lock: asyncio.Lock = self.context.shared(_TOFU_LOCK_KEY, asyncio.Lock)
        async with lock:
            try:
                await self.context.run_blocking(append_known_host, path, line)
            except OSError as exc:
                log.error("%s: cannot record host key in %s: %s", cfg.name, path, exc.strerror)
                return
        log.warning(
            "%s: trusted the host key of %s on first use (%s %s), recorded in %s",
            cfg.name,
            self.where,
            key.get_algorithm(),
            key.get_fingerprint(),
            path,
        )

    def drop(self) -> None:
        """Forget the kept connection (closing it); the next poll connects anew."""
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
