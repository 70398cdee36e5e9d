"""Network helpers the probe collectors share: a poll's time budget, host:port text, and name
resolution that skips the resolver for IP literals. Shared here (not imported kind-to-kind) so
that collector kinds stay independent of each other."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from dutyd.core.errors import TargetUnreachable

# A collector finishes within this share of its timeout, so that its own message (which says
# what was waiting for what) wins over the scheduler's generic cancellation at the full timeout.
BUDGET_SHARE = 0.9


def budget(timeout: float) -> float:
    """The part of a poll's `timeout` a probe may spend waiting."""
    return timeout * BUDGET_SHARE


def hostport(host: str, port: int) -> str:
    """`host:port`, with an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def resolve_all(
    host: str, port: int, family: int = socket.AF_UNSPEC
) -> list[tuple[int, tuple]]:
    """[(family, sockaddr)] for host, in the resolver's order; IP literals skip the resolver
    (a thread hop per poll)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if ip.version == 4:
            return [(socket.AF_INET, (host, port))]
        return [(socket.AF_INET6, (host, port, 0, 0))]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TargetUnreachable(f"host {host!r} not found: {exc.strerror}") from exc
    if not infos:
        raise TargetUnreachable(f"host {host!r} has no address")
    return [(fam, sockaddr) for fam, _, _, _, sockaddr in infos]


async def resolve(host: str, port: int, family: int = socket.AF_UNSPEC) -> tuple[int, tuple]:
    """The first (family, sockaddr) for host."""
    return (await resolve_all(host, port, family))[0]
