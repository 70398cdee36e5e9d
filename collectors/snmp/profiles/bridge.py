"""The `bridge` profile: a switch's forwarding table and ARP table, for `depends_on: auto` where
there is no LLDP (the daemon places each device by its MAC address, agent/topology.py).

Walked apart from the rest of the poll, capped at the target's `bridge_max_rows` rows per
column: BRIDGE-MIB dot1dTpFdbPort (MAC -> bridge port) and Q-BRIDGE-MIB dot1qTpFdbPort (VLAN
and MAC -> bridge port; a switch serves one or both), dot1dBasePortIfIndex (bridge port ->
ifIndex) and IF-MIB ifName (the port's name), and the ARP tables of IP-MIB,
ipNetToMediaPhysAddress and ipNetToPhysicalPhysAddress (IP -> MAC, from a router or a core
switch). A table longer than the cap is refused with the reason (the switch is not down for
it: its other profiles' readings stand, and the daemon keeps what it learned before). The
result is a `ForwardingTable` the collector hands over (`SnmpCollector.take_forwarding`),
never samples: a MAC address is no label. The samples are `bridge_fdb_macs` (MACs in the
table) and `bridge_fdb_read` (1 read whole, 0 refused).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from dutyd.collectors.base import Readings
from dutyd.collectors.snmp.codec import AnyValue, Oid, decode_subids, encode_oid_content, parse_oid
from dutyd.collectors.snmp.profiles.base import Column, PollData, Profile, text

FDB_PORT = parse_oid("1.3.6.1.2.1.17.4.3.1.2")  # dot1dTpFdbPort: MAC
Q_FDB_PORT = parse_oid("1.3.6.1.2.1.17.7.1.2.2.1.2")  # dot1qTpFdbPort: FdbId.MAC
BASE_PORT_IF_INDEX = parse_oid("1.3.6.1.2.1.17.1.4.1.2")  # dot1dBasePortIfIndex: port
IF_NAME = parse_oid("1.3.6.1.2.1.31.1.1.1.1")  # ifName: ifIndex
ARP_MEDIA = parse_oid("1.3.6.1.2.1.4.22.1.2")  # ipNetToMediaPhysAddress: ifIndex.a.b.c.d
# ipNetToPhysicalPhysAddress: ifIndex.type.length.address
ARP_PHYSICAL = parse_oid("1.3.6.1.2.1.4.35.1.4")
COLUMNS = [FDB_PORT, Q_FDB_PORT, BASE_PORT_IF_INDEX, IF_NAME, ARP_MEDIA, ARP_PHYSICAL]
DEFAULT_MAX_ROWS = 4096


@dataclass(frozen=True)
class ForwardingTable:
    """What one walk of a switch said: MAC ("02:00:00:00:01:0a") -> the port it was learned
    on (ifName, else "bridge port N"), and IP address -> MAC from its ARP tables."""

    macs: dict[str, str] = field(default_factory=dict)
    arp: dict[str, str] = field(default_factory=dict)


class TargetBridge(Protocol):
    """What the `bridge` profile reads of its target's `SnmpTarget` (see `Profile`)."""

    bridge_max_rows: int


def _subids(index: bytes) -> tuple[int, ...]:
    try:
        return tuple(decode_subids(index))
    except ValueError:
        return ()


def _mac(value: AnyValue) -> str | None:
    if isinstance(value, bytes) and len(value) == 6 and any(value):
        return value.hex(":")
    return None


def _mac_of_index(subids: tuple[int, ...]) -> str | None:
    if len(subids) != 6 or any(not 0 <= b <= 255 for b in subids) or not any(subids):
        return None
    return bytes(subids).hex(":")


def _ip_of_physical_index(subids: tuple[int, ...]) -> str | None:
    """ipNetToPhysicalTable's index after ifIndex: type (1 IPv4, 2 IPv6), length, octets."""
    if len(subids) < 2 or subids[1] != len(subids) - 2 or any(not 0 <= b <= 255 for b in subids):
        return None
    raw = bytes(subids[2:])
    if subids[0] == 1 and len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    if subids[0] == 2 and len(raw) == 16:
        return str(ipaddress.IPv6Address(raw))
    return None


def forwarding_table(columns: dict[Oid, Column]) -> ForwardingTable:
    """The walked columns as a `ForwardingTable` (rows that do not parse are left out)."""
    names = columns.get(IF_NAME) or {}
    if_index: dict[int, int] = {}
    for index, value in (columns.get(BASE_PORT_IF_INDEX) or {}).items():
        port = _subids(index)
        if len(port) == 1 and value.__class__ is int and 0 < value < 2**31:  # type: ignore[operator]
            if_index[port[0]] = value  # type: ignore[assignment]

    port_names: dict[int, str] = {}  # a few ports, thousands of MACs: each named once

    def port_name(port: int) -> str:
        name = port_names.get(port)
        if name is None:
            idx = if_index.get(port)
            name = text(names.get(encode_oid_content((1, 3, idx))[1:])) if idx is not None else ""
            name = port_names[port] = name or f"bridge port {port}"
        return name

    macs: dict[str, str] = {}
    for column, skip in ((FDB_PORT, 0), (Q_FDB_PORT, 1)):
        for index, port in (columns.get(column) or {}).items():
            subids = _subids(index)
            mac = _mac_of_index(subids[skip:]) if len(subids) == 6 + skip else None
            if mac is not None and port.__class__ is int and port > 0:  # type: ignore[operator]
                macs.setdefault(mac, port_name(port))  # type: ignore[arg-type]
    arp: dict[str, str] = {}
    for index, value in (columns.get(ARP_MEDIA) or {}).items():
        subids, mac = _subids(index), _mac(value)
        if mac is not None and len(subids) == 5 and all(0 <= b <= 255 for b in subids[1:]):
            arp.setdefault(".".join(map(str, subids[1:])), mac)
    for index, value in (columns.get(ARP_PHYSICAL) or {}).items():
        subids, mac = _subids(index), _mac(value)
        ip = _ip_of_physical_index(subids[1:]) if mac is not None else None
        if ip is not None and mac is not None:
            arp.setdefault(ip, mac)
    return ForwardingTable(macs, arp)


class BridgeProfile(Profile):
    name: ClassVar[str] = "bridge"

    def __init__(self, config: TargetBridge) -> None:  # type: ignore[override]
        super().__init__(config)
        self.max_rows = config.bridge_max_rows
        self.table: ForwardingTable | None = None  # the last poll's, until taken
        self.refused = ""  # why the last poll's walk was refused, until taken

    @classmethod
    def help_for(cls, config: object) -> dict[str, str]:
        return {
            "bridge_fdb_macs": "MAC addresses in the switch's forwarding table (BRIDGE-MIB).",
            "bridge_fdb_read": (
                "1 when the forwarding table was read whole, 0 when refused (more rows than "
                "bridge_max_rows) or not answered."
            ),
        }

    def scalars(self) -> list[Oid]:
        return []

    def columns(self) -> list[Oid]:
        return []  # walked apart, capped: `capped_walk`

    def capped_walk(self) -> tuple[list[Oid], int] | None:
        return list(COLUMNS), self.max_rows

    def emit(self, data: PollData, readings: Readings) -> None:
        if data.capped is None:
            self.table, self.refused = None, data.capped_refused
            readings.add("bridge_fdb_read", 0.0)
            return
        self.table, self.refused = forwarding_table(dict(data.capped)), ""
        readings.add("bridge_fdb_read", 1.0)
        readings.add("bridge_fdb_macs", float(len(self.table.macs)))
