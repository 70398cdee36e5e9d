"""The HTTP server's front door: the listening sockets and what may come in through them.

aiohttp's own server accepts every connection and keeps an idle one for an hour (3,630 s
keep-alive, no deadline for the request's headers), so a thousand silent connections used to
take the daemon to its file-descriptor limit: /healthz timed out, the collectors' outbound
sockets failed with "Too many open files" (a false "not answering" page afterwards) and
asyncio logged a traceback per failed accept. The door accepts itself, before any transport
or aiohttp handler exists, and:

- caps open connections, per client address and in total; the last `reserved` of the total
  are kept for the `trusted` addresses (the supervisor asking /healthz, Prometheus scraping
  /metrics); a connection over a cap is closed at once, so it holds a descriptor only for
  that moment;
- closes a connection whose request headers are not complete within `header_timeout`, from
  the moment it is accepted (TLS handshake included) or, between requests, from the end of
  the last one plus `idle_timeout` (aiohttp closes an idle keep-alive connection after
  `idle_timeout` too; this bounds a slow second request as well, on every aiohttp version);
- logs a refusal or a failed accept once per episode (a line when it starts, one when it has
  been quiet for `_QUIET` seconds, with the count), never per connection.

The daemon keeps the total well under its descriptor limit (`fit_to_descriptors`), so the
collectors, the stores and the channels always have descriptors left.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("dutyd.http")

# Seconds without a refusal (or a failed accept) that end an episode.
_QUIET = 10.0
# The kernel's queue of connections not yet accepted. When it is full a new connection's SYN
# is dropped and the client retries only a second later: /healthz through a flood waited
# 1 s with aiohttp's 128. (Linux caps it at net.core.somaxconn, 4096 by default.) Each
# wake-up drains up to this many: a refused one costs an accept and a close.
_BACKLOG = 1024
_ACCEPTS_PER_WAKEUP = 256
# After a failed accept (out of descriptors: EMFILE), the listening socket rests this long.
_ACCEPT_PAUSE = 0.5


@dataclass(frozen=True, slots=True)
class DoorLimits:
    """What the front door lets in (see `HttpConfig` for the documented settings)."""

    header_timeout: float = 10.0
    idle_timeout: float = 15.0
    max_connections: int = 256
    max_per_client: int = 16
    reserved: int = 16
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )


def fit_to_descriptors(limits: DoorLimits, soft_limit: int) -> DoorLimits:
    """The limits with the total cut to a quarter of the process's descriptor limit, so the
    inbound side never takes the descriptors the collectors, stores and channels need."""
    ceiling = max(8, soft_limit // 4)
    if limits.max_connections <= ceiling:
        return limits
    log.warning(
        "http.max_connections lowered to a quarter of the open-file limit",
        extra={
            "fields": {
                "configured": limits.max_connections,
                "used": ceiling,
                "open_file_limit": soft_limit,
            }
        },
    )
    return DoorLimits(
        header_timeout=limits.header_timeout,
        idle_timeout=limits.idle_timeout,
        max_connections=ceiling,
        max_per_client=min(limits.max_per_client, ceiling),
        reserved=min(limits.reserved, ceiling // 2),
        trusted=limits.trusted,
    )


class _Episode:
    """A run of refusals of one kind: logged when it starts and when it has been quiet."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def note(self, loop: asyncio.AbstractEventLoop, detail: str) -> None:
        self._last = loop.time()
        self.count += 1
        if self._timer is None:
            log.warning("%s: %s", self.what, detail)
            self._timer = loop.call_later(_QUIET, self._check, loop)

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        quiet_for = loop.time() - self._last
        if quiet_for < _QUIET:
            self._timer = loop.call_later(_QUIET - quiet_for, self._check, loop)
            return
        self._timer = None
        log.warning("%s: over, %d in the episode", self.what, self.count)
        self.count = 0

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _Slot:
    """One admitted connection's place in the counts, given back exactly once."""

    __slots__ = ("_door", "client", "released")

    def __init__(self, door: FrontDoor, client: str) -> None:
        self._door = door
        self.client = client
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._door._release(self.client)


class _GuardedConnection(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the header deadline."""

    def __init__(
        self, door: FrontDoor, slot: _Slot, inner: asyncio.Protocol, accepted_at: float
    ) -> None:
        self._door = door
        self._slot = slot
        self._inner = inner
        self._accepted_at = accepted_at
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._requests = 0  # requests being handled on this connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._door._guards[self._inner] = self
        # The first request's headers are due header_timeout after the accept, a TLS
        # handshake included.
        spent = asyncio.get_running_loop().time() - self._accepted_at
        self._arm(max(0.0, self._door.limits.header_timeout - spent))
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._door._guards.pop(self._inner, None)
        self._slot.release()
        self._inner.connection_lost(exc)

    def request_started(self) -> None:
        self._requests += 1
        self._disarm()

    def request_finished(self) -> None:
        self._requests -= 1
        if self._requests == 0:
            limits = self._door.limits
            self._arm(limits.idle_timeout + limits.header_timeout)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self._requests == 0 and self._transport is not None:
            self._door.timed_out += 1
            self._transport.abort()


class FrontDoor:
    """Listening sockets with accept control, serving `protocol_factory` (aiohttp's server)."""

    def __init__(
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        limits: DoorLimits,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._factory = protocol_factory
        self.limits = limits
        self._ssl = ssl_context
        self._sockets: list[socket.socket] = []
        self._per_client: dict[str, int] = {}
        self.open = 0  # connections admitted and not yet closed
        self.refused = 0  # connections closed at once: over a cap
        self.timed_out = 0  # connections closed for headers not sent in time
        self.accept_errors = 0  # failed accepts (out of descriptors)
        self._guards: dict[asyncio.Protocol, _GuardedConnection] = {}
        self._handshakes: set[asyncio.Task[Any]] = set()
        self._full = _Episode("http connection limit reached; refusing connections")
        self._failing = _Episode("http accept failing")
        self._resume: dict[int, asyncio.TimerHandle] = {}

    @property
    def port(self) -> int:
        return int(self._sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        seen: set[tuple[Any, ...]] = set()
        try:
            for family, kind, proto, _, address in infos:
                if (family, address) in seen:
                    continue
                seen.add((family, address))
                if port == 0 and self._sockets:  # the other addresses on the port picked
                    address = (address[0], self.port, *address[2:])
                sock = socket.socket(family, kind, proto)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(_BACKLOG)
                sock.setblocking(False)
            for sock in self._sockets:
                loop.add_reader(sock.fileno(), self._accept, sock)
        except OSError:
            await self.stop()
            raise

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for handle in self._resume.values():
            handle.cancel()
        self._resume.clear()
        for sock in self._sockets:
            if sock.fileno() >= 0:
                loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()
        for task in list(self._handshakes):
            task.cancel()
        if self._handshakes:
            await asyncio.gather(*self._handshakes, return_exceptions=True)
        self._full.cancel()
        self._failing.cancel()

    def guard_of(self, protocol: object) -> _GuardedConnection | None:
        """The guard of the connection aiohttp's protocol `protocol` serves."""
        return self._guards.get(protocol)  # type: ignore[call-overload]

    def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                conn, address = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                # Out of descriptors (or buffers): rest the socket for a moment instead of
                # waking up on it again at once; the backlog waits in the kernel.
                self.accept_errors += 1
                self._failing.note(loop, exc.strerror or str(exc))
                self._pause(listener)
                return
            client = _client_address(address)
            if not self._admit(client):
                self.refused += 1
                self._full.note(loop, f"{self.open} open, {client} has {self._count(client)}")
                conn.close()
                continue
            conn.setblocking(False)
            slot = _Slot(self, client)
            task = loop.create_task(self._serve(conn, slot))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    def _pause(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        fd = listener.fileno()
        loop.remove_reader(fd)

        def resume() -> None:
            self._resume.pop(fd, None)
            if listener.fileno() >= 0:
                loop.add_reader(fd, self._accept, listener)

        self._resume[fd] = loop.call_later(_ACCEPT_PAUSE, resume)

    def _count(self, client: str) -> int:
        return self._per_client.get(client, 0)

    def _admit(self, client: str) -> bool:
        limits = self.limits
        if self._count(client) >= limits.max_per_client:
            return False
        room = limits.max_connections - self.open
        if room <= 0:
            return False
        if room <= limits.reserved and not self._trusted(client):
            return False
        self.open += 1
        self._per_client[client] = self._count(client) + 1
        return True

    def _release(self, client: str) -> None:
        self.open -= 1
        left = self._per_client.get(client, 1) - 1
        if left > 0:
            self._per_client[client] = left
        else:
            self._per_client.pop(client, None)

    def _trusted(self, client: str) -> bool:
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return False
        return any(address in network for network in self.limits.trusted)

    async def _serve(self, conn: socket.socket, slot: _Slot) -> None:
        loop = asyncio.get_running_loop()
        accepted_at = loop.time()
        try:
            await loop.connect_accepted_socket(
                lambda: _GuardedConnection(self, slot, self._factory(), accepted_at),
                conn,
                ssl=self._ssl,
                ssl_handshake_timeout=self.limits.header_timeout if self._ssl else None,
            )
        except asyncio.CancelledError:
            conn.close()
            slot.release()
            raise
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError):
            # A TLS handshake that failed or took too long: the client's problem, not one to
            # log per connection.
            conn.close()
            slot.release()


def _client_address(address: Any) -> str:
    host = address[0] if isinstance(address, tuple) else str(address)
    if host.startswith("::ffff:"):  # an IPv4 client on a dual-stack socket
        host = host[7:]
    return host


def trusted_networks(
    entries: Iterable[str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)
