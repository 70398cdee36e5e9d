"""TCP port check: can a connection to host:port be opened, and how long does it take."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct
import time
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from dutyd.collectors.base import Collector, Readings, TargetConfig
from dutyd.collectors.netutil import budget, hostport, resolve_all
from dutyd.core.configtypes import format_duration
from dutyd.core.errors import TargetTimeout, TargetUnreachable


def split_host_port(address: str) -> tuple[str, int | None]:
    """`host:port`, `[v6]:port`, `host`, `v6` -> (host, port or None)."""
    text = address.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{address!r} is not host:port or [ipv6]:port")
        return host, _port(rest[1:], address) if rest else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, _port(port, address)
    return text, None


def _port(text: str, address: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{address!r}: port must be a number from 1 to 65535")
    return int(text)


async def tcp_connect(host: str, port: int, within: float) -> float:
    """Open and close one TCP connection; its connect time in seconds.

    Each address of the host is tried in turn (`localhost` may be ::1 first, the service
    only on 127.0.0.1), all within `within` seconds. Raises TargetTimeout / TargetUnreachable
    with host:port in the message. A plain socket with `sock_connect` instead of
    `open_connection`: no stream objects are built for a probe that sends nothing.
    """
    where = hostport(host, port)
    error: Exception | None = None
    try:
        async with asyncio.timeout(within):
            for family, sockaddr in await resolve_all(host, port):
                try:
                    return await _connect_once(family, sockaddr)
                except ConnectionRefusedError as exc:
                    error = TargetUnreachable(
                        f"TCP connect to {where} refused: nothing listens there"
                    )
                    error.__cause__ = exc
                except OSError as exc:
                    reason = exc.strerror or errno.errorcode.get(exc.errno or 0, type(exc).__name__)
                    error = TargetUnreachable(f"TCP connect to {where} failed: {reason}")
                    error.__cause__ = exc
    except TimeoutError as exc:
        raise TargetTimeout(
            f"TCP connect to {where} got no answer within {format_duration(within)}"
        ) from exc
    assert error is not None
    raise error


async def _connect_once(family: int, sockaddr: tuple) -> float:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        started = time.perf_counter()
        await asyncio.get_running_loop().sock_connect(sock, sockaddr)
        return time.perf_counter() - started
    finally:
        # RST instead of FIN/TIME_WAIT: a probe every few seconds must not pile up TIME_WAIT
        # sockets on the monitoring host.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


class TcpTarget(TargetConfig):
    """A TCP port check. `address` is `host:port` (`[ipv6]:port`), or a host with `port`.

    A refused, unreachable or silent port marks the target down (`target_up 0`) with the reason:
    for a port check, that is the reading.
    """

    kind: Literal["tcp"]
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Port, when `address` holds only the host."
    )

    @model_validator(mode="after")
    def _host_and_port(self) -> TcpTarget:
        host, port = split_host_port(self.address)
        if not host:
            raise ValueError("address: host is missing")
        if port is not None and self.port is not None and port != self.port:
            raise ValueError(f"address names port {port} but port is {self.port}; give one")
        if port is None and self.port is None:
            raise ValueError("address needs a port (host:port), or set port")
        return self

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = split_host_port(self.address)
        return host, port if port is not None else int(self.port or 0)


class TcpProbeCollector(Collector[TcpTarget]):
    kind: ClassVar[str] = "tcp"
    config_model: ClassVar[type[TargetConfig]] = TcpTarget
    metric_help: ClassVar[dict[str, str]] = {
        "probe_success": "1 when the probe succeeded (a failed TCP connect marks the target down)",
        "probe_connect_seconds": "Time to open the TCP connection",
    }

    async def collect(self, readings: Readings) -> None:
        host, port = self.config.host_port
        seconds = await tcp_connect(host, port, budget(self.config.timeout))
        readings.add("probe_success", 1.0)
        readings.add("probe_connect_seconds", seconds)


__all__ = ["TcpProbeCollector", "TcpTarget", "tcp_connect"]
