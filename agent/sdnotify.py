"""systemd's service notification protocol (sd_notify(3)), without a library.

Under `Type=notify` systemd sets `NOTIFY_SOCKET` (a unix datagram socket; a leading `@` names
an abstract one) and, with `WatchdogSec=`, `WATCHDOG_USEC` (and `WATCHDOG_PID`, the process
meant). Each notification is one datagram of `KEY=value` lines: `READY=1` once the first polls
are scheduled, `RELOADING=1` (with `MONOTONIC_USEC`, which systemd >= 253 asks for) then
`READY=1` around a SIGHUP reload, `STOPPING=1` on shutdown, and `WATCHDOG=1` at half the
watchdog interval. The pings come from a task on the daemon's event loop, so a loop that is
blocked or a process that is frozen stops them and systemd restarts the service: the dead
man's switch of a single node. Outside systemd (no `NOTIFY_SOCKET`) everything here is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("dutyd.systemd")


class SystemdNotifier:
    """Sends notifications to the socket named by the environment systemd gave the process."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """One datagram of `fields` (`"READY=1"`, ...); False when there is no socket or the
        send failed (said once in the log: systemd then restarts us or times the start out,
        and the log must say why)."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning(
                    "cannot notify systemd",
                    extra={"fields": {"socket": _shown(self.address), "error": str(exc)}},
                )
            return False
        return True

    def ready(self) -> bool:
        return self.send("READY=1")

    def reloading(self) -> bool:
        # CLOCK_MONOTONIC in microseconds: systemd >= 253 matches it against the SIGHUP.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    async def keep_watchdog(self) -> None:
        """Ping the watchdog at half its interval, forever (cancel to stop). Real time on
        purpose, not the daemon's `Clock`: systemd counts real time."""
        interval = self.watchdog_interval
        if interval is None or self.address is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(interval / 2)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def _socket_address(value: str) -> str | bytes | None:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # an abstract socket: a NUL, then the name
    if value.startswith("/"):
        return value
    if value:
        # vsock:... (systemd >= 254 in VMs) and anything else: not spoken here.
        log.warning("NOTIFY_SOCKET %r is not a unix socket path; not notifying systemd", value)
    return None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """The watchdog interval in seconds, when systemd asks this very process for pings."""
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (we were started by the one it names)
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None


def _shown(address: str | bytes) -> str:
    return "@" + address[1:].decode(errors="replace") if isinstance(address, bytes) else address
