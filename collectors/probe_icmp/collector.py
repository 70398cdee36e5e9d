"""Reachability: ICMP echo (RTT and loss over a few packets), TCP connect where ICMP is not allowed.

Which ICMP socket is used is decided once per daemon: an unprivileged datagram ICMP socket when
`net.ipv4.ping_group_range` includes the process's group, else a raw socket (root or
CAP_NET_RAW), else none, and targets with a `fallback_port` are probed by TCP connect instead
(a refused connection counts as an answer: the host is up). Every sample carries a `method`
label, `icmp` or `tcp`, so a dashboard never mistakes one for the other. IPv4 only for now.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from dutyd.collectors.base import Collector, CollectorContext, Readings, TargetConfig
from dutyd.collectors.netutil import budget, resolve
from dutyd.core.configtypes import Duration, format_duration
from dutyd.core.errors import CollectError, TargetTimeout, TargetUnreachable
from dutyd.core.redact import redact_address

ECHO_REPLY = 0
DEST_UNREACHABLE = 3
ECHO_REQUEST = 8
TIME_EXCEEDED = 11
_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
_NONCE_LEN = 8
_UNREACHABLE_CODES = {
    0: "network unreachable",
    1: "host unreachable",
    2: "protocol unreachable",
    3: "port unreachable",
    9: "network administratively prohibited",
    10: "host administratively prohibited",
    13: "communication administratively prohibited",
}
SHARED_KEY = "icmp.pinger"


# --- the echo codec (RFC 792) --------------------------------------------------------------


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's complement sum."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def encode_echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    header = _HEADER.pack(ECHO_REQUEST, 0, 0, ident & 0xFFFF, seq & 0xFFFF)
    csum = checksum(header + payload)
    return _HEADER.pack(ECHO_REQUEST, 0, csum, ident & 0xFFFF, seq & 0xFFFF) + payload


@dataclass(frozen=True, slots=True)
class IcmpMessage:
    """A decoded echo reply, or an error about one of our requests (`error` says which)."""

    type: int
    code: int
    ident: int
    seq: int
    payload: bytes
    error: str | None = None


def _strip_ip_header(packet: bytes) -> bytes | None:
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    return packet[ihl:] if len(packet) >= ihl else None


def decode_icmp(data: bytes, with_ip_header: bool) -> IcmpMessage | None:
    """An echo reply, or a destination-unreachable / time-exceeded about an echo request.

    Raw sockets hand over the IP header, datagram ICMP sockets do not. Anything else (other
    types, bad checksum, truncated) is None.
    """
    icmp = _strip_ip_header(data) if with_ip_header else data
    if icmp is None or len(icmp) < _HEADER.size:
        return None
    kind, code, _csum, ident, seq = _HEADER.unpack_from(icmp)
    if kind == ECHO_REPLY:
        if checksum(icmp) != 0:
            return None
        return IcmpMessage(kind, code, ident, seq, icmp[_HEADER.size :])
    if kind in (DEST_UNREACHABLE, TIME_EXCEEDED):
        # The error quotes our request's IP header and its first 8 bytes: the echo header.
        inner = _strip_ip_header(icmp[_HEADER.size :])
        if inner is None or len(inner) < _HEADER.size:
            return None
        inner_kind, _, _, inner_ident, inner_seq = _HEADER.unpack_from(inner)
        if inner_kind != ECHO_REQUEST:
            return None
        if kind == TIME_EXCEEDED:
            reason = "time to live exceeded on the way (routing loop?)"
        else:
            reason = _UNREACHABLE_CODES.get(code, f"destination unreachable (code {code})")
        return IcmpMessage(kind, code, inner_ident, inner_seq, b"", reason)
    return None


# --- one ICMP socket per daemon --------------------------------------------------------------


@dataclass(slots=True)
class _Waiter:
    ip: str
    sent_at: float
    future: asyncio.Future[float]


class Pinger:
    """One ICMP socket shared by every icmp target, replies demultiplexed by sequence number.

    One socket, not one per target: a raw socket receives a copy of every ICMP packet the host
    gets, so a thousand of them would each parse a thousand replies.
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock: socket.socket | None = None
        self.mode = "none"  # "dgram", "raw" or "none"
        self.why_not = ""
        self.ident = 0
        self._nonce = os.urandom(_NONCE_LEN)
        self._seq = int.from_bytes(os.urandom(2), "big")
        self._waiters: dict[int, _Waiter] = {}
        self._open()

    def _open(self) -> None:
        problems = []
        for mode, sock_type in (("dgram", socket.SOCK_DGRAM), ("raw", socket.SOCK_RAW)):
            try:
                sock = socket.socket(socket.AF_INET, sock_type, socket.IPPROTO_ICMP)
            except OSError as exc:
                problems.append(f"{mode}: {exc.strerror}")
                continue
            sock.setblocking(False)
            _grow_receive_buffer(sock)
            if mode == "dgram":
                # The kernel owns the echo identifier of a datagram ICMP socket: it is the
                # socket's "port", and only replies carrying it are delivered here.
                sock.bind(("0.0.0.0", 0))  # noqa: S104 - the ICMP "port", not a listener
                self.ident = sock.getsockname()[1]
            else:
                self.ident = int.from_bytes(os.urandom(2), "big")
            self.sock, self.mode = sock, mode
            self.loop.add_reader(sock.fileno(), self._on_readable)
            return
        self.why_not = (
            f"not allowed to open an ICMP socket ({'; '.join(problems)}): run as root, "
            f"grant CAP_NET_RAW, or include group {os.getgid()} in net.ipv4.ping_group_range"
        )

    @property
    def available(self) -> bool:
        return self.sock is not None

    def _next_seq(self) -> int:
        for _ in range(0x10000):
            self._seq = (self._seq + 1) & 0xFFFF
            if self._seq not in self._waiters:
                return self._seq
        raise CollectError("more than 65535 ICMP echo requests in flight")

    async def echo(self, ip: str, until: float) -> float:
        """RTT of one echo to `ip`, waiting until monotonic time `until`.

        Raises TimeoutError when no reply came, TargetUnreachable on an ICMP error.
        """
        assert self.sock is not None
        seq = self._next_seq()
        future: asyncio.Future[float] = self.loop.create_future()
        packet = encode_echo_request(self.ident, seq, self._nonce + os.urandom(8))
        self._waiters[seq] = _Waiter(ip, time.perf_counter(), future)
        try:
            try:
                self.sock.sendto(packet, (ip, 0))
            except BlockingIOError:
                await self.loop.sock_sendto(self.sock, packet, (ip, 0))
            except OSError as exc:
                reason = exc.strerror or errno.errorcode.get(exc.errno or 0, "error")
                raise TargetUnreachable(f"cannot send ICMP echo to {ip}: {reason}") from exc
            async with asyncio.timeout_at(self.loop.time() + max(0.0, until - time.monotonic())):
                return await future
        finally:
            self._waiters.pop(seq, None)

    def _on_readable(self) -> None:
        assert self.sock is not None
        raw = self.mode == "raw"
        # Bounded: a flood of ICMP must not starve the loop; the rest waits for the next call.
        for _ in range(256):
            try:
                data, (src, _port) = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # an ICMP error queued on the socket; the matching wait times out
            received = time.perf_counter()
            msg = decode_icmp(data, with_ip_header=raw)
            if msg is None or msg.ident != self.ident:
                continue
            waiter = self._waiters.get(msg.seq)
            if waiter is None or waiter.future.done():
                continue
            if msg.error is not None:
                waiter.future.set_exception(TargetUnreachable(f"{msg.error} (reported by {src})"))
            elif src == waiter.ip and msg.payload[:_NONCE_LEN] == self._nonce:
                waiter.future.set_result(received - waiter.sent_at)

    async def close(self) -> None:
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        for waiter in self._waiters.values():
            waiter.future.cancel()
        self._waiters.clear()


# Replies to a thousand probes arrive in bursts (and a raw socket on loopback also sees every
# request it sent): the default ~200 KiB buffer drops them, which would read as packet loss.
RECEIVE_BUFFER = 4 * 1024 * 1024


def _grow_receive_buffer(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    # SO_RCVBUF is capped by net.core.rmem_max; with CAP_NET_ADMIN the cap can be passed.
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if force is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, force, RECEIVE_BUFFER)


async def _close_pinger(pinger: Pinger) -> None:
    await pinger.close()


async def tcp_ping(family: int, sockaddr: tuple, until: float) -> float:
    """RTT of one TCP connect. A refused connection is an answer too: the host replied (RST).

    Raises TimeoutError when nothing came back, TargetUnreachable on a routing error.
    """
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(max(0.0, until - time.monotonic())):
            with contextlib.suppress(ConnectionRefusedError):
                await asyncio.get_running_loop().sock_connect(sock, sockaddr)
        return time.perf_counter() - started
    except OSError as exc:
        if isinstance(exc, TimeoutError):
            raise
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0, "error")
        raise TargetUnreachable(reason) from exc
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


# --- the collector ---------------------------------------------------------------------------


class IcmpTarget(TargetConfig):
    """Reachability of a host (`address`: IPv4 address or name) over `count` echo requests.

    No reply at all marks the target down; partial loss is `probe_packet_loss_ratio`.
    """

    kind: Literal["icmp"]
    count: int = Field(default=3, ge=1, le=20, description="Echo requests per poll.")
    packet_interval: Duration = Field(
        default=0.2, description="Spacing between the requests of one poll."
    )
    method: Literal["auto", "icmp", "tcp"] = Field(
        default="auto",
        description="auto: ICMP when this host may send it, else TCP to fallback_port; "
        "icmp: ICMP only; tcp: always TCP connect to fallback_port.",
    )
    fallback_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="TCP port for connect probes when ICMP cannot be used (e.g. 22).",
    )

    @model_validator(mode="after")
    def _coherent(self) -> IcmpTarget:
        try:
            ip = ipaddress.ip_address(self.address)
        except ValueError:
            if ":" in self.address or "/" in self.address:
                raise ValueError("address: give a host name or IPv4 address, no port") from None
        else:
            if ip.version != 4:
                raise ValueError("address: ICMP probes are IPv4 only for now; use kind tcp")
        if self.method == "tcp" and self.fallback_port is None:
            raise ValueError("method tcp needs fallback_port")
        if (self.count - 1) * self.packet_interval >= budget(self.timeout):
            raise ValueError(
                f"{self.count} packets {self.packet_interval:g}s apart do not fit in the "
                f"timeout {self.timeout:g}s; lower count or packet_interval"
            )
        return self


class IcmpProbeCollector(Collector[IcmpTarget]):
    kind: ClassVar[str] = "icmp"
    config_model: ClassVar[type[TargetConfig]] = IcmpTarget
    metric_help: ClassVar[Mapping[str, str]] = {
        "probe_success": "1 when at least one echo came back (none marks the target down)",
        "probe_rtt_seconds": "Average round-trip time of the echoes that came back",
        "probe_packet_loss_ratio": "Share of the poll's echo requests left unanswered",
    }

    def __init__(self, config: IcmpTarget, context: CollectorContext) -> None:
        super().__init__(config, context)
        # What the last poll used: "dgram" or "raw" (ICMP sockets) or "tcp".
        self.mode = ""

    async def collect(self, readings: Readings) -> None:
        cfg = self.config
        started = time.monotonic()
        until = started + budget(cfg.timeout)
        use_icmp = False
        if cfg.method != "tcp":
            pinger: Pinger = self.context.shared(SHARED_KEY, Pinger, _close_pinger)
            use_icmp = pinger.available
            if not use_icmp and (cfg.method == "icmp" or cfg.fallback_port is None):
                hint = "" if cfg.method == "icmp" else "; set fallback_port to probe by TCP"
                raise CollectError(
                    f"cannot ping {redact_address(cfg.address)}: {pinger.why_not}{hint}"
                )
        if use_icmp:
            self.mode = pinger.mode
            method, what = "icmp", "ICMP echo"
            _, (ip, _port) = await resolve(cfg.address, 0, socket.AF_INET)

            async def attempt() -> float:
                return await pinger.echo(ip, until)
        else:
            self.mode = method = "tcp"
            port = int(cfg.fallback_port or 0)
            what = f"TCP connect to port {port}"
            family, sockaddr = await resolve(cfg.address, port, socket.AF_INET)

            async def attempt() -> float:
                return await tcp_ping(family, sockaddr, until)

        async def spaced(k: int) -> float | str:
            # Like ping: the k-th request leaves k intervals after the first.
            await asyncio.sleep(max(0.0, started + k * cfg.packet_interval - time.monotonic()))
            try:
                return await attempt()
            except TimeoutError:
                return "timeout"
            except TargetUnreachable as exc:
                return exc.message

        results = await asyncio.gather(*(spaced(k) for k in range(cfg.count)))
        rtts = [r for r in results if isinstance(r, float)]
        if not rtts:
            errors = [r for r in results if isinstance(r, str) and r != "timeout"]
            if errors:
                raise TargetUnreachable(f"{what} to {redact_address(cfg.address)}: {errors[0]}")
            raise TargetTimeout(
                f"no answer to {cfg.count} {what} from {redact_address(cfg.address)} within "
                f"{format_duration(cfg.timeout)}"
            )
        readings.add("probe_success", 1.0, method=method)
        readings.add("probe_rtt_seconds", sum(rtts) / len(rtts), method=method)
        readings.add("probe_packet_loss_ratio", 1.0 - len(rtts) / cfg.count, method=method)


__all__ = [
    "IcmpProbeCollector",
    "IcmpTarget",
    "Pinger",
    "checksum",
    "decode_icmp",
    "encode_echo_request",
]
