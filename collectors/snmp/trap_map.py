"""Which target a notification is about, and the samples it stands for.

A notification belongs to every `kind: snmp` target whose host is its origin: the datagram's
source address, or a v1 trap's agent-addr / snmpTrapAddress.0 when a trusted relay forwarded
it (the listener decides which); one switch watched as two targets (all ports, and the
uplinks with `role: uplink`) gets it on both.
Known traps become the samples the pollers emit, with the same names and labels, and only on
targets whose poll emits that name, so the next poll overwrites (confirms or clears) them:

- UPS-MIB (RFC 1628) upsTrapOnBattery -> `ups_on_battery` 1, `ups_on_line` 0;
  upsTrapAlarmEntryAdded/Removed with upsAlarmOnBattery -> `ups_on_battery` 1/0, with
  upsAlarmLowBattery or upsAlarmDepletedBattery -> `ups_battery_low` 1/0; UPS-MIB scalars
  among the varbinds (minutes remaining, seconds on battery, ...) as the ups profile names them;
- IF-MIB linkDown / linkUp -> `if_oper_up` (and `if_admin_up` when carried) of that port,
  labelled as the switch profile labels it (the port's name from the last poll, or ifName /
  ifDescr when the trap carries them), on targets watching that port;
- coldStart / warmStart -> `device_rebooted` 1 (on targets whose poll reads sysUpTime);
- the user's `traps.maps` (trap OID -> metric, a constant or a varbind's value).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from dutyd.collectors.base import Readings
from dutyd.collectors.snmp.codec import AnyValue, Oid, parse_oid
from dutyd.collectors.snmp.collector import SnmpCollector, SnmpTarget
from dutyd.collectors.snmp.profiles.switch import SwitchProfile
from dutyd.collectors.snmp.profiles.ups import (
    BATTERY_LOW_STATES,
    BATTERY_STATUS,
    OUTPUT_SOURCE,
    SOURCE_BATTERY,
    SOURCE_BYPASS,
    SOURCES_ON_LINE,
)
from dutyd.collectors.snmp.profiles.ups import NUMERIC as UPS_NUMERIC
from dutyd.collectors.snmp.trap_config import TrapMap
from dutyd.collectors.snmp.trap_decode import SNMP_TRAPS, Notification
from dutyd.core.records import Sample

COLD_START = (*SNMP_TRAPS, 1)
WARM_START = (*SNMP_TRAPS, 2)
LINK_DOWN = (*SNMP_TRAPS, 3)
LINK_UP = (*SNMP_TRAPS, 4)
AUTHENTICATION_FAILURE = (*SNMP_TRAPS, 5)

UPS_TRAP_ON_BATTERY = parse_oid("1.3.6.1.2.1.33.2.1")
UPS_TRAP_TEST_COMPLETED = parse_oid("1.3.6.1.2.1.33.2.2")
UPS_TRAP_ALARM_ADDED = parse_oid("1.3.6.1.2.1.33.2.3")
UPS_TRAP_ALARM_REMOVED = parse_oid("1.3.6.1.2.1.33.2.4")
UPS_ALARM_DESCR = parse_oid("1.3.6.1.2.1.33.1.6.2.1.2")
UPS_WELL_KNOWN_ALARMS = parse_oid("1.3.6.1.2.1.33.1.6.3")
ALARM_ON_BATTERY = (*UPS_WELL_KNOWN_ALARMS, 2)
ALARM_LOW_BATTERY = (*UPS_WELL_KNOWN_ALARMS, 3)
ALARM_DEPLETED_BATTERY = (*UPS_WELL_KNOWN_ALARMS, 4)

IF_INDEX = parse_oid("1.3.6.1.2.1.2.2.1.1")
IF_DESCR = parse_oid("1.3.6.1.2.1.2.2.1.2")
IF_ADMIN = parse_oid("1.3.6.1.2.1.2.2.1.7")
IF_OPER = parse_oid("1.3.6.1.2.1.2.2.1.8")
IF_ENTRY = parse_oid("1.3.6.1.2.1.2.2.1")
IF_X_ENTRY = parse_oid("1.3.6.1.2.1.31.1.1.1")
IF_NAME = parse_oid("1.3.6.1.2.1.31.1.1.1.1")

KNOWN_TRAPS = frozenset(
    {
        COLD_START,
        WARM_START,
        LINK_DOWN,
        LINK_UP,
        AUTHENTICATION_FAILURE,
        UPS_TRAP_ON_BATTERY,
        UPS_TRAP_TEST_COMPLETED,
        UPS_TRAP_ALARM_ADDED,
        UPS_TRAP_ALARM_REMOVED,
    }
)
_UPS_SCALARS = {oid: (name, factor) for name, oid, factor in UPS_NUMERIC}

# A collector by target name (the daemon's running one), to read the ports it polled.
CollectorLookup = Callable[[str], object | None]


@dataclass(slots=True)
class TrapTarget:
    """One target as the mapper needs it: its config, its labels, the names its poll emits."""

    config: SnmpTarget
    labels: Mapping[str, str]
    emits: frozenset[str]
    switch: SwitchProfile | None = field(default=None)

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True, slots=True)
class Mapped:
    """What one notification means: the samples per target and whether it was understood."""

    targets: list[str]
    samples: dict[str, list[Sample]]
    known: bool


def host_key(host: str) -> str:
    """A host in the form a datagram's source address takes (IPv4-mapped IPv6 unwrapped)."""
    text = host.strip("[]")
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text.lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class TrapMapper:
    def __init__(
        self,
        targets: Iterable[tuple[SnmpTarget, Mapping[str, str]]],
        maps: Iterable[TrapMap] = (),
    ) -> None:
        self.by_host: dict[str, list[TrapTarget]] = {}
        for config, labels in targets:
            switch = SwitchProfile(config) if "switch" in config.profiles else None
            entry = TrapTarget(
                config, dict(labels), frozenset(SnmpCollector.help_for(config)), switch
            )
            host, _ = config.endpoint()
            self.by_host.setdefault(host_key(host), []).append(entry)
        self.maps: dict[Oid, list[TrapMap]] = {}
        for m in maps:
            self.maps.setdefault(parse_oid(m.trap), []).append(m)

    def hosts(self) -> list[str]:
        return list(self.by_host)

    def alias(self, name: str, address: str) -> None:
        """Also match `address` (a host name of a target, resolved) to that host's targets."""
        key = host_key(address)
        for entry in self.by_host.get(name, []):
            if entry not in self.by_host.setdefault(key, []):
                self.by_host[key].append(entry)

    def targets_at(self, origin: str) -> list[TrapTarget]:
        """The targets of a notification from `origin` (an address; see the module doc)."""
        return self.by_host.get(host_key(origin), [])

    def trap_id(self, notification: Notification) -> Oid:
        """The trap OID, with a v1 trap of an SMIv2 notification in its SNMPv2 form: RFC
        3584 turns enterprise E, specific S into E.0.S, but UPS-MIB's upsTrapOnBattery
        (upsTraps.1) sent as v1 is E = upsTraps, S = 1, so E.0.S is also tried as E.S."""
        oid = notification.trap_oid
        if oid in KNOWN_TRAPS or oid in self.maps:
            return oid
        if notification.version == "1" and len(oid) > 2 and oid[-2] == 0:
            short = (*oid[:-2], oid[-1])
            if short in KNOWN_TRAPS or short in self.maps:
                return short
        return oid

    def known(self, notification: Notification) -> bool:
        oid = self.trap_id(notification)
        return oid in KNOWN_TRAPS or oid in self.maps

    def samples(
        self,
        target: TrapTarget,
        notification: Notification,
        timestamp: float,
        collectors: CollectorLookup,
    ) -> list[Sample]:
        """The samples `notification` stands for on `target` (maybe none)."""
        readings = Readings(target.labels, timestamp)
        trap = self.trap_id(notification)
        emits = target.emits
        varbinds = notification.varbinds

        def add(name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
            if name in emits:
                readings.add_labelled(name, value, labels or {})

        if trap in (COLD_START, WARM_START):
            add("device_rebooted", 1.0)
        elif trap in (LINK_DOWN, LINK_UP) and target.switch is not None:
            self._link(target, notification, trap == LINK_UP, collectors, add)
        elif trap == UPS_TRAP_ON_BATTERY:
            add("ups_on_battery", 1.0)
            add("ups_on_line", 0.0)
        elif trap in (UPS_TRAP_ALARM_ADDED, UPS_TRAP_ALARM_REMOVED):
            active = 1.0 if trap == UPS_TRAP_ALARM_ADDED else 0.0
            for oid, value in varbinds:
                if oid[: len(UPS_ALARM_DESCR)] != UPS_ALARM_DESCR:
                    continue
                if value == ALARM_ON_BATTERY:
                    add("ups_on_battery", active)
                elif value in (ALARM_LOW_BATTERY, ALARM_DEPLETED_BATTERY):
                    add("ups_battery_low", active)
        if trap[: len(UPS_TRAP_ON_BATTERY) - 1] == UPS_TRAP_ON_BATTERY[:-1]:
            _ups_scalars(varbinds, add)
        for m in self.maps.get(trap, ()):
            value = _map_value(m, varbinds)
            if value is not None:
                # A user's metric is theirs to name: not limited to what polls emit.
                readings.add_labelled(m.metric, value, m.labels)
        return readings.samples

    @staticmethod
    def _link(
        target: TrapTarget,
        notification: Notification,
        up: bool,
        collectors: CollectorLookup,
        add: Callable[[str, float, Mapping[str, str] | None], None],
    ) -> None:
        assert target.switch is not None
        index: int | None = None
        admin: AnyValue = None
        oper: AnyValue = None
        name: AnyValue = None
        descr: AnyValue = None
        for oid, value in notification.varbinds:
            if oid[:-1] == IF_INDEX and isinstance(value, int):
                index = value
            elif oid[:-1] in (IF_ADMIN, IF_OPER, IF_DESCR, IF_NAME) and len(oid) > len(IF_ENTRY):
                index = index if index is not None else oid[-1]
                column = oid[:-1]
                if column == IF_ADMIN:
                    admin = value
                elif column == IF_OPER:
                    oper = value
                elif column == IF_DESCR:
                    descr = value
                else:
                    name = value
            elif index is None and len(oid) == len(IF_X_ENTRY) + 2 and oid[:-2] == IF_X_ENTRY:
                index = oid[-1]
        if index is None or index < 0:
            return
        labels: dict[str, str] | bool | None = False
        collector = collectors(target.name)
        if isinstance(collector, SnmpCollector):
            labels = collector.port_labels(index)
        if labels is False and (name is not None or descr is not None):
            labels = target.switch.labels_for_names(index, name, descr)
        if not isinstance(labels, dict):
            # Not watched on this target, or a port no poll has named yet: the immediate
            # poll reads it under its real name.
            return
        add("if_oper_up", float(oper == 1) if isinstance(oper, int) else float(up), labels)
        if isinstance(admin, int):
            add("if_admin_up", float(admin == 1), labels)


def _ups_scalars(
    varbinds: Iterable[tuple[Oid, AnyValue]],
    add: Callable[[str, float, Mapping[str, str] | None], None],
) -> None:
    """UPS-MIB scalars a UPS trap carries, named as the ups profile names them."""
    for oid, value in varbinds:
        if not isinstance(value, int):
            continue
        if oid in _UPS_SCALARS:
            name, factor = _UPS_SCALARS[oid]
            if value >= 0:
                add(name, value * factor, None)
        elif oid == OUTPUT_SOURCE:
            add("ups_output_source", float(value), None)
            add("ups_on_battery", float(value == SOURCE_BATTERY), None)
            add("ups_on_bypass", float(value == SOURCE_BYPASS), None)
            add("ups_on_line", float(value in SOURCES_ON_LINE), None)
        elif oid == BATTERY_STATUS:
            add("ups_battery_status", float(value), None)
            add("ups_battery_low", float(value in BATTERY_LOW_STATES), None)


def _map_value(m: TrapMap, varbinds: Iterable[tuple[Oid, AnyValue]]) -> float | None:
    if m.value is not None:
        return m.value
    assert m.varbind is not None
    prefix = parse_oid(m.varbind)
    for oid, value in varbinds:
        if oid[: len(prefix)] == prefix and isinstance(value, int):
            return value * m.scale
    return None
