"""`dutyd discover`'s sweep: which devices answer in the given ranges, and what they are.

Bounded and polite by construction: the addresses probed are the hosts of the given networks
and nothing else (each probe is a socket connected to one of them); a range larger than a /22
is refused unless the caller allows it (and never more than `MAX_ADDRESSES` in all); every
packet or connection waits for the rate limit (`rate` a second) and at most `concurrency`
probes run at once, each bounded by `timeout`.

Per address, in this order: SNMP v2c with each community (sysName, sysLocation, sysDescr; the
UPS-MIB answers: a UPS; IF-MIB with `switch_ports` interfaces or more: a switch, with its
LLDP-MIB neighbours), NUT's `LIST UPS`, an SSH banner, an HTTP status line on each given port.
Device answers are hostile input: read with caps, names cleaned before they become config.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from dutyd.collectors.snmp import codec

MAX_PREFIX_ADDRESSES = 1024  # a /22 (IPv4) without --allow-large
MAX_ADDRESSES = 65536  # with it, in all
READ_CAP = 4096  # bytes read from a TCP service's answer

SYS_DESCR = (1, 3, 6, 1, 2, 1, 1, 1, 0)
SYS_NAME = (1, 3, 6, 1, 2, 1, 1, 5, 0)
SYS_LOCATION = (1, 3, 6, 1, 2, 1, 1, 6, 0)
UPS_MIB = (1, 3, 6, 1, 2, 1, 33, 1)
IF_DESCR = (1, 3, 6, 1, 2, 1, 2, 2, 1, 2)
LLDP_REM_SYS_NAME = (1, 0, 8802, 1, 1, 2, 1, 4, 1, 1, 9)
LLDP_LOC_PORT_DESC = (1, 0, 8802, 1, 1, 2, 1, 3, 7, 1, 4)
MAX_WALK = 256  # rows of one column walked per device


class RangeRefused(ValueError):
    """A range is too large (or not a network); the message says which and what to do."""


def hosts_of(ranges: Sequence[str], allow_large: bool) -> list[str]:
    """The host addresses of the given networks, in order, each once; refuses what is too
    large before anything is sent."""
    out: dict[str, None] = {}
    for text in ranges:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError as exc:
            raise RangeRefused(f"{text}: not a network or address ({exc})") from None
        if net.num_addresses > MAX_PREFIX_ADDRESSES and not allow_large:
            raise RangeRefused(
                f"{text}: {net.num_addresses} addresses, more than a /22 "
                f"({MAX_PREFIX_ADDRESSES}); split it, or give --allow-large"
            )
        if net.num_addresses > MAX_ADDRESSES:
            raise RangeRefused(f"{text}: more than {MAX_ADDRESSES} addresses in one sweep")
        for host in net.hosts() if net.num_addresses > 2 else net:
            out[str(host)] = None
        if len(out) > MAX_ADDRESSES:
            raise RangeRefused(f"more than {MAX_ADDRESSES} addresses in one sweep")
    return list(out)


@dataclass
class Community:
    env: str  # the variable it came from: what the written config names
    value: bytes


@dataclass
class Device:
    address: str
    sys_name: str = ""
    sys_location: str = ""
    sys_descr: str = ""
    community: Community | None = None
    snmp_class: str = ""  # "ups", "switch" or "snmp"
    interfaces: int = 0
    # (local port, neighbour's sysName) from LLDP-MIB.
    neighbours: list[tuple[str, str]] = field(default_factory=list)
    nut_ups: list[str] = field(default_factory=list)
    nut: bool = False
    ssh_banner: str = ""
    ssh_port: int = 0
    http: list[tuple[str, int, int]] = field(default_factory=list)  # (scheme, port, status)

    @property
    def found(self) -> bool:
        return bool(self.snmp_class or self.nut or self.ssh_banner or self.http)


@dataclass
class SweepOptions:
    communities: list[Community]
    snmp_port: int = 161
    nut_port: int | None = 3493
    ssh_ports: list[int] = field(default_factory=lambda: [22])
    http_ports: list[int] = field(default_factory=lambda: [80])
    https_ports: list[int] = field(default_factory=lambda: [443])
    rate: float = 100.0  # packets or connections a second
    concurrency: int = 32
    timeout: float = 1.0
    switch_ports: int = 8


class RateLimit:
    """At most `rate` starts a second, spaced evenly (no burst)."""

    def __init__(self, rate: float) -> None:
        self._gap = 1.0 / rate
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            if self._next > now:
                await asyncio.sleep(self._next - now)
            self._next = max(now, self._next) + self._gap


class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.replies.full():
            self.replies.put_nowait(data)


class Sweep:
    def __init__(self, options: SweepOptions) -> None:
        self.options = options
        self._limit = RateLimit(options.rate)
        self._slots = asyncio.Semaphore(options.concurrency)
        self._request_id = codec.REQUEST_ID_MIN
        self.sent = 0  # packets and connections started (for the report)

    async def run(self, addresses: Sequence[str]) -> list[Device]:
        devices = await asyncio.gather(*(self._probe(a) for a in addresses))
        return [d for d in devices if d.found]

    async def _probe(self, address: str) -> Device:
        async with self._slots:
            device = Device(address)
            await self._snmp(device)
            if self.options.nut_port:
                await self._nut(device)
            for port in self.options.ssh_ports:
                banner = await self._first_line(address, port, b"")
                if banner.startswith("SSH-"):
                    device.ssh_banner, device.ssh_port = banner[:80], port
                    break
            for scheme, ports in (
                ("http", self.options.http_ports),
                ("https", self.options.https_ports),
            ):
                for port in ports:
                    status = await self._http(address, port, scheme == "https")
                    if status:
                        device.http.append((scheme, port, status))
            return device

    # -- SNMP -------------------------------------------------------------------------------------

    async def _request(
        self, address: str, community: bytes, pdu: int, oids: Sequence[tuple[int, ...]]
    ) -> list[tuple[tuple[int, ...], object]] | None:
        await self._limit.wait()
        self._request_id = (
            self._request_id + 1
            if self._request_id < codec.REQUEST_ID_MAX
            else codec.REQUEST_ID_MIN
        )
        request_id = self._request_id
        loop = asyncio.get_running_loop()
        family_host = address
        try:
            transport, proto = await loop.create_datagram_endpoint(
                _Udp, remote_addr=(family_host, self.options.snmp_port)
            )
        except OSError:
            return None
        self.sent += 1
        try:
            transport.sendto(
                codec.encode_request(
                    codec.VERSION_2C,
                    community,
                    pdu,
                    request_id,
                    [codec.encode_oid_content(o) for o in oids],
                )
            )
            deadline = loop.time() + self.options.timeout
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    return None
                try:
                    data = await asyncio.wait_for(proto.replies.get(), left)
                except TimeoutError:
                    return None
                try:
                    _, _, tag, rid, status, _, varbinds = codec.decode_message(data)
                except codec.DecodeError:
                    continue
                if tag != codec.RESPONSE or rid != request_id:
                    continue
                if status != codec.NO_ERROR:
                    return []
                try:
                    return [(codec.decode_oid_content(oid), value) for oid, value in varbinds]
                except codec.DecodeError:
                    return None
        finally:
            transport.close()

    async def _get(self, device: Device, oid: tuple[int, ...]) -> object:
        assert device.community is not None
        got = await self._request(device.address, device.community.value, codec.GET, [oid])
        if not got or _is_exception(got[0][1]):
            return None
        return got[0][1]

    async def _walk(
        self, device: Device, column: tuple[int, ...]
    ) -> list[tuple[tuple[int, ...], object]]:
        assert device.community is not None
        rows: list[tuple[tuple[int, ...], object]] = []
        oid = column
        for _ in range(MAX_WALK):
            got = await self._request(device.address, device.community.value, codec.GETNEXT, [oid])
            if not got:
                break
            oid, value = got[0]
            if oid[: len(column)] != column or _is_exception(value) or len(oid) <= len(column):
                break
            rows.append((oid[len(column) :], value))
        return rows

    async def _snmp(self, device: Device) -> None:
        for community in self.options.communities:
            got = await self._request(
                device.address, community.value, codec.GET, [SYS_NAME, SYS_LOCATION, SYS_DESCR]
            )
            if got:
                device.community = community
                values = [_text(v) for _, v in got]
                device.sys_name, device.sys_location, device.sys_descr = [*values, "", "", ""][:3]
                break
        if device.community is None:
            return
        ups = await self._request(device.address, device.community.value, codec.GETNEXT, [UPS_MIB])
        if ups and ups[0][0][: len(UPS_MIB)] == UPS_MIB and not _is_exception(ups[0][1]):
            device.snmp_class = "ups"
            return
        device.interfaces = len(await self._walk(device, IF_DESCR))
        if device.interfaces >= self.options.switch_ports:
            device.snmp_class = "switch"
            ports = {idx: _text(v) for idx, v in await self._walk(device, LLDP_LOC_PORT_DESC)}
            for idx, value in await self._walk(device, LLDP_REM_SYS_NAME):
                # index: lldpRemTimeMark . lldpRemLocalPortNum . lldpRemIndex
                local = idx[1:2]
                name = _text(value)
                if name and len(device.neighbours) < MAX_WALK:
                    device.neighbours.append(
                        (ports.get(local, str(local[0]) if local else ""), name)
                    )
        else:
            device.snmp_class = "snmp"

    # -- TCP services -----------------------------------------------------------------------------

    async def _connect(
        self, address: str, port: int, tls: bool = False
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        await self._limit.wait()
        self.sent += 1
        context = None
        if tls:
            # Only to tell that an HTTPS server is there: the written target verifies.
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(address, port, ssl=context, limit=READ_CAP),
                self.options.timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError):
            return None

    async def _first_line(self, address: str, port: int, send: bytes, tls: bool = False) -> str:
        conn = await self._connect(address, port, tls)
        if conn is None:
            return ""
        reader, writer = conn
        try:
            if send:
                writer.write(send)
                await writer.drain()
            line = await asyncio.wait_for(reader.readline(), self.options.timeout)
            return line[:256].decode("utf-8", "replace").strip()
        except (OSError, TimeoutError, ValueError, asyncio.LimitOverrunError):
            return ""
        finally:
            writer.close()

    async def _nut(self, device: Device) -> None:
        port = self.options.nut_port
        assert port is not None
        conn = await self._connect(device.address, port)
        if conn is None:
            return
        reader, writer = conn
        try:
            writer.write(b"LIST UPS\n")
            await writer.drain()
            lines: list[str] = []
            while len(lines) < 64:
                raw = await asyncio.wait_for(reader.readline(), self.options.timeout)
                line = raw[:256].decode("utf-8", "replace").strip()
                if not line or line.startswith(("END LIST UPS", "ERR")):
                    break
                lines.append(line)
            if lines and lines[0] == "BEGIN LIST UPS":
                device.nut = True
                device.nut_ups = [
                    ln.split()[1]
                    for ln in lines[1:]
                    if ln.startswith("UPS ") and len(ln.split()) > 1
                ]
        except (OSError, TimeoutError, ValueError, asyncio.LimitOverrunError):
            return
        finally:
            writer.close()

    async def _http(self, address: str, port: int, tls: bool) -> int:
        request = f"HEAD / HTTP/1.0\r\nHost: {address}\r\nUser-Agent: dutyd-discover\r\n\r\n"
        line = await self._first_line(address, port, request.encode(), tls)
        match = re.match(r"HTTP/\d(?:\.\d)? (\d{3})", line)
        return int(match.group(1)) if match else 0


def _is_exception(value: object) -> bool:
    return isinstance(value, codec.Exception_)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value[:255].decode("utf-8", "replace")
    if value is None or _is_exception(value):
        return ""
    return str(value)[:255]
