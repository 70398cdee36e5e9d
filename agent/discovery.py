"""`dutyd discover`'s sweep: which devices answer in the given ranges, and what they are.

Bounded and polite by construction: the addresses probed are the hosts of the given networks
and nothing else (each probe is a socket connected to one of them); a range larger than a /22
is refused unless the caller allows it (and never more than `MAX_ADDRESSES` in all); every
SNMP query (a GET, or one walk of a few columns in GETBULK pages of at most
`max_repetitions` rows) and every connection waits for the rate limit (`rate` a second), and at
most `concurrency` addresses are probed at once, each probe bounded by `timeout`.

Per address, in this order: SNMP with each credential given, v2c communities and v3 users,
through the SNMP collector's own clients (sysName, sysLocation, sysDescr; every device's ARP
table; the UPS-MIB answers: a UPS (with the room-sensor profile of its card's probe, if any); a
room-sensor MIB of a registered room-sensor profile (APC PowerNet-MIB's probe tables; the
standard ENTITY-SENSOR-MIB, on a device that is not a switch) or AKCP SPAGENT-MIB's
temperature and humidity tables (read by the `sensor` profile): a sensor; IF-MIB with
`switch_ports` interfaces or more: a switch, with its LLDP-MIB neighbours and BRIDGE-MIB
forwarding table), NUT's `LIST UPS`, an SSH banner, an HTTP status line on each given port.
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

from pydantic import ValidationError

from dutyd.collectors.base import CollectorContext
from dutyd.collectors.snmp.client import Column, Query
from dutyd.collectors.snmp.codec import (
    AnyValue,
    Exception_,
    Oid,
    decode_subids,
    encode_oid_content,
)
from dutyd.collectors.snmp.collector import SnmpCollector, SnmpTarget
from dutyd.collectors.snmp.profiles import PROFILES
from dutyd.collectors.snmp.profiles.room import RoomSensorProfile
from dutyd.core.errors import CollectError

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
FDB_PORT = (1, 3, 6, 1, 2, 1, 17, 4, 3, 1, 2)  # dot1dTpFdbPort: MAC -> bridge port
BASE_PORT_IF_INDEX = (1, 3, 6, 1, 2, 1, 17, 1, 4, 1, 2)  # dot1dBasePortIfIndex
ARP_PHYS_ADDRESS = (1, 3, 6, 1, 2, 1, 4, 22, 1, 2)  # ipNetToMediaPhysAddress: ifIndex.IP -> MAC
# AKCP sensorProbe room sensors (SPAGENT-MIB): a table of temperature probes (name, degrees,
# unit: 0 Fahrenheit, 1 Celsius) and one of humidity probes (name, percent).
AKCP = (1, 3, 6, 1, 4, 1, 3854, 1, 2, 2, 1)
AKCP_TEMP_NAME, AKCP_TEMP_DEGREE, AKCP_TEMP_UNIT = (
    (*AKCP, 16, 1, 1),
    (*AKCP, 16, 1, 3),
    (*AKCP, 16, 1, 12),
)
AKCP_HUMIDITY_NAME, AKCP_HUMIDITY_PERCENT = (*AKCP, 17, 1, 1), (*AKCP, 17, 1, 3)
MAX_FDB = 8192
MAX_WALK = 256  # rows of one column walked per device
MAX_INTERFACES = 4096


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
class Credential:
    """SNMP credentials as the written config gives them: the `snmp` target settings
    (`community_env: VAR`, or `version: "3"`, `user`, `auth_protocol`, `auth_password_env`,
    ...), secrets always from variables."""

    settings: dict[str, str]

    @property
    def label(self) -> str:
        if self.settings.get("version") == "3":
            return f"v3 user {self.settings.get('user', '')}"
        return f"community from ${self.settings.get('community_env', '')}"


def community(env: str) -> Credential:
    return Credential({"community_env": env})


def v3_user(spec: str) -> Credential:
    """`USER:AUTH_PROTOCOL:AUTH_VAR[:PRIV_PROTOCOL:PRIV_VAR]` (the passwords from variables)."""
    parts = spec.split(":")
    if len(parts) not in (3, 5) or not all(parts):
        raise ValueError(
            f"{spec!r}: give USER:AUTH_PROTOCOL:AUTH_VAR or USER:AUTH_PROTOCOL:AUTH_VAR:"
            "PRIV_PROTOCOL:PRIV_VAR (SHA256:SNMP_AUTH:AES:SNMP_PRIV)"
        )
    settings = {
        "version": "3",
        "user": parts[0],
        "auth_protocol": parts[1],
        "auth_password_env": parts[2],
    }
    if len(parts) == 5:
        settings.update(priv_protocol=parts[3], priv_password_env=parts[4])
    return Credential(settings)


@dataclass
class Device:
    address: str
    sys_name: str = ""
    sys_location: str = ""
    sys_descr: str = ""
    credential: Credential | None = None
    snmp_class: str = ""  # "ups", "sensor", "switch" or "snmp"
    # sensor: the `sensors:` probes of the target to write (SensorProbe settings), and
    # whether a temperature probe reports Fahrenheit (the profile reads Celsius).
    sensor_probes: list[dict[str, str]] = field(default_factory=list)
    fahrenheit: bool = False
    # The room-sensor profiles whose MIB the device answers (`entity_sensor`, `apc_probe`).
    sensor_profiles: list[str] = field(default_factory=list)
    interfaces: int = 0
    # (local port, neighbour's sysName) from LLDP-MIB.
    neighbours: list[tuple[str, str]] = field(default_factory=list)
    # The bridge forwarding table (MAC -> port name) and the ARP table (IP -> MAC).
    fdb: dict[str, str] = field(default_factory=dict)
    arp: dict[str, str] = field(default_factory=dict)
    nut_ups: list[str] = field(default_factory=list)
    nut: bool = False
    ssh_banner: str = ""
    ssh_port: int = 0
    http: list[tuple[str, int, int]] = field(default_factory=list)  # (scheme, port, status)
    untrusted_tls: list[int] = field(default_factory=list)  # HTTPS ports whose cert fails
    # The SNMP tables asked for that got no usable answer within the sweep's timeout: the
    # device may be more than it was classified as (the written config says so).
    unanswered: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.snmp_class or self.nut or self.ssh_banner or self.http)


@dataclass
class SweepOptions:
    credentials: list[Credential]
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


class Sweep:
    def __init__(self, options: SweepOptions) -> None:
        self.options = options
        self._limit = RateLimit(options.rate)
        self._slots = asyncio.Semaphore(options.concurrency)
        self._context = CollectorContext()
        self.sent = 0  # packets and connections started (for the report)

    async def run(self, addresses: Sequence[str]) -> list[Device]:
        try:
            devices = await asyncio.gather(*(self._probe(a) for a in addresses))
        finally:
            await self._context.close()
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
                        if scheme == "https" and not await self._trusted(address, port):
                            device.untrusted_tls.append(port)
            return device

    # -- SNMP (the collector's own clients: v1/v2c and v3 as polls do) ---------------------------

    async def _fetch(
        self, collector: SnmpCollector, scalars: list[Oid], columns: list[Oid], rows: int
    ) -> tuple[list[AnyValue], list[Column]] | None:
        await self._limit.wait()
        self.sent += 1
        try:
            async with asyncio.timeout(self.options.timeout * 2):
                return await collector.client().fetch(Query(scalars, columns), rows)
        except (CollectError, TimeoutError):
            return None

    async def _read(
        self,
        collector: SnmpCollector,
        device: Device,
        what: str,
        columns: list[Oid],
        rows: int,
    ) -> list[Column] | None:
        """The columns of one table of a device that answered its system group; a table that
        gets no answer in time is noted on the device (not taken for "has no such table")."""
        got = await self._fetch(collector, [], columns, rows)
        if got is None:
            device.unanswered.append(what)
            return None
        return got[1]

    def _collector(self, address: str, credential: Credential) -> SnmpCollector | None:
        host = f"[{address}]" if ":" in address else address
        try:
            cfg = SnmpTarget.model_validate(
                {
                    "name": "discover",
                    "kind": "snmp",
                    "address": f"{host}:{self.options.snmp_port}",
                    "timeout": self.options.timeout,
                    "retries": 0,
                    "profiles": ["ups"],  # not polled: only its client is used
                    **credential.settings,
                }
            )
        except ValidationError:
            return None
        return SnmpCollector(cfg, self._context)

    async def _snmp(self, device: Device) -> None:
        collector = None
        for credential in self.options.credentials:
            candidate = self._collector(device.address, credential)
            if candidate is None:
                continue
            got = await self._fetch(candidate, [SYS_NAME, SYS_LOCATION, SYS_DESCR], [], 1)
            if got is not None:
                collector, device.credential = candidate, credential
                device.sys_name, device.sys_location, device.sys_descr = (_text(v) for v in got[0])
                break
            await candidate.close()
        if collector is None:
            return
        try:
            await self._classify(collector, device)
        finally:
            await collector.close()

    async def _classify(self, collector: SnmpCollector, device: Device) -> None:
        arp = await self._read(collector, device, "ARP table", [ARP_PHYS_ADDRESS], MAX_FDB)
        for index, mac in (arp[0] if arp is not None else {}).items():
            subids = _subids(index)
            if len(subids) == 5 and isinstance(mac, bytes) and len(mac) == 6:
                device.arp[".".join(map(str, subids[1:]))] = mac.hex(":")
        ups = await self._read(collector, device, "UPS-MIB", [UPS_MIB], MAX_WALK)
        # A vendor's probe table: a probe box, or the probe on a UPS's card.
        await self._room_sensors(collector, device, generic=False)
        if ups is not None and any(not _is_exception(v) for v in ups[0].values()):
            device.snmp_class = "ups"
            return
        if device.sensor_profiles or await self._sensors(collector, device):
            device.snmp_class = "sensor"
            return
        interfaces = await self._read(collector, device, "IF-MIB", [IF_DESCR], MAX_INTERFACES)
        names = interfaces[0] if interfaces is not None else {}
        device.interfaces = len(names)
        if device.interfaces < self.options.switch_ports:
            # ENTITY-SENSOR-MIB on a switch is its own hardware (inlet, ASIC), not the room.
            generic = await self._room_sensors(collector, device, generic=True)
            device.snmp_class = "sensor" if generic else "snmp"
            return
        device.snmp_class = "switch"
        await self._bridge(collector, device, names)
        lldp = await self._read(
            collector, device, "LLDP-MIB", [LLDP_REM_SYS_NAME, LLDP_LOC_PORT_DESC], MAX_WALK
        )
        if lldp is None:
            return
        remote, ports = lldp
        for index, value in remote.items():
            name = _text(value)
            try:
                subids = decode_subids(index)  # lldpRemTimeMark.lldpRemLocalPortNum.lldpRemIndex
            except ValueError:
                continue
            if name and len(subids) >= 2 and len(device.neighbours) < MAX_WALK:
                port_key = encode_oid_content((1, 3, subids[1]))[1:]
                port = _text(ports.get(port_key)) or str(subids[1])
                device.neighbours.append((port, name))

    async def _room_sensors(self, collector: SnmpCollector, device: Device, generic: bool) -> bool:
        """The registered room-sensor profiles (generic or vendor MIBs) whose probe tables the
        device answers, in one walk; added to `device.sensor_profiles`."""
        kinds = [
            p
            for p in PROFILES.values()
            if issubclass(p, RoomSensorProfile) and p.generic == generic
        ]
        columns = list(dict.fromkeys(c for p in kinds for c in p.detect_columns()))
        if not columns:
            return False
        what = "ENTITY-SENSOR-MIB" if generic else "room sensor tables"
        got = await self._read(collector, device, what, columns, MAX_WALK)
        if got is None:
            return False
        walked = dict(zip(columns, got, strict=True))
        found = [p.name for p in kinds if p.recognises(walked)]
        device.sensor_profiles += found
        return bool(found)

    async def _sensors(self, collector: SnmpCollector, device: Device) -> bool:
        """A known room-sensor MIB (AKCP SPAGENT-MIB): the probes its tables hold."""
        columns = [AKCP_TEMP_DEGREE, AKCP_TEMP_UNIT, AKCP_HUMIDITY_PERCENT]
        got = await self._read(collector, device, "AKCP SPAGENT-MIB", columns, MAX_WALK)
        if got is None:
            return False
        degrees, units, humidity = got
        for values, probe in (
            (degrees, {"temperature_column": AKCP_TEMP_DEGREE, "name_column": AKCP_TEMP_NAME}),
            (
                humidity,
                {"humidity_column": AKCP_HUMIDITY_PERCENT, "name_column": AKCP_HUMIDITY_NAME},
            ),
        ):
            if any(not _is_exception(v) for v in values.values()):
                device.sensor_probes.append({k: ".".join(map(str, v)) for k, v in probe.items()})
        device.fahrenheit = any(v == 0 for v in units.values() if isinstance(v, int))
        return bool(device.sensor_probes)

    async def _bridge(self, collector: SnmpCollector, device: Device, if_names: Column) -> None:
        """The forwarding table: which port each MAC was learned on (for devices LLDP does
        not place: servers, UPS cards)."""
        got = await self._read(
            collector, device, "forwarding table", [FDB_PORT, BASE_PORT_IF_INDEX], MAX_FDB
        )
        if got is None:
            return
        fdb, base = got
        if_index = {_subids(k)[:1]: v for k, v in base.items()}
        for index, port in fdb.items():
            mac = _subids(index)
            if len(mac) != 6 or max(mac) > 255 or not isinstance(port, int):
                continue
            idx = if_index.get((port,))
            name = (
                _text(if_names.get(encode_oid_content((1, 3, idx))[1:]))
                if isinstance(idx, int)
                else ""
            )
            device.fdb[bytes(mac).hex(":")] = name or f"bridge port {port}"

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

    async def _trusted(self, address: str, port: int) -> bool:
        """Whether the HTTPS server's certificate verifies here for this address, as the
        written target's polls will check it."""
        await self._limit.wait()
        self.sent += 1
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(address, port, ssl=ssl.create_default_context()),
                self.options.timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError):
            return False
        writer.close()
        return True

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
    return value is None or isinstance(value, Exception_)


def _subids(index: bytes) -> tuple[int, ...]:
    try:
        return tuple(decode_subids(index))
    except ValueError:
        return ()


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value[:255].decode("utf-8", "replace")
    if _is_exception(value):
        return ""
    return str(value)[:255]
