"""The `apc_uio` profile: the temperature/humidity sensors on the universal I/O ports of an APC
network management card 3 (AP9641 and later) or a NetBotz rack monitor (PowerNet-MIB).

uioSensorStatusTable (1.3.6.1.4.1.318.1.1.25.1.2.1), one row per sensor, indexed by its port
and sensor ID: uioSensorStatusSensorName (.3), uioSensorStatusTemperatureDegC (.6, whole
degrees Celsius; -1: the sensor has none), uioSensorStatusHumidity (.7, percent; -1: none) and
uioSensorStatusAlarmStatus (.9: uioNormal(1), uioWarning(2), uioCritical(3),
sensorStatusNotApplicable(4)). A sensor whose alarm status is none of the first three (one
unplugged, or a status this MIB does not know) gives no reading; a warning or critical alarm
does (its reading is what the rules judge).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from dutyd.collectors.snmp.codec import AnyValue, Oid, parse_oid
from dutyd.collectors.snmp.profiles.base import Column, PollData
from dutyd.collectors.snmp.profiles.room import RoomSensorProfile, integer, probe_rows, whole
from dutyd.collectors.snmp.profiles.sensor import HUMIDITY, TEMPERATURE

ENTRY = "1.3.6.1.4.1.318.1.1.25.1.2.1"
SENSOR_NAME = parse_oid(f"{ENTRY}.3")
TEMP_C = parse_oid(f"{ENTRY}.6")
HUMIDITY_PERCENT = parse_oid(f"{ENTRY}.7")
ALARM_STATUS = parse_oid(f"{ENTRY}.9")
READING_STATES = frozenset({1, 2, 3})  # uioNormal, uioWarning, uioCritical


def decode_uio(alarm: AnyValue, temp: AnyValue, humidity: AnyValue) -> dict[str, float]:
    """The plausible readings of one uioSensorStatusTable row (sample name -> value)."""
    if integer(alarm) not in READING_STATES:
        return {}
    out: dict[str, float] = {}
    for name, raw in ((TEMPERATURE, integer(temp)), (HUMIDITY, integer(humidity))):
        if raw != -1 and (got := whole(name, raw)) is not None:
            out[name] = got
    return out


class ApcUioProfile(RoomSensorProfile):
    name: ClassVar[str] = "apc_uio"
    mib: ClassVar[str] = "APC PowerNet-MIB uioSensorStatusTable"

    @classmethod
    def detect_columns(cls) -> list[Oid]:
        return [ALARM_STATUS]

    @classmethod
    def recognises(cls, columns: Mapping[Oid, Column]) -> bool:
        values = columns.get(ALARM_STATUS, {}).values()
        return any(integer(v) in READING_STATES for v in values)

    def columns(self) -> list[Oid]:
        return [SENSOR_NAME, TEMP_C, HUMIDITY_PERCENT, ALARM_STATUS]

    def probes(self, data: PollData) -> list[tuple[str, bool, dict[str, float]]]:
        rows = probe_rows(data, SENSOR_NAME, ALARM_STATUS, [TEMP_C, HUMIDITY_PERCENT])
        return [
            (sensor, integer(alarm) in READING_STATES, decode_uio(alarm, *row))
            for sensor, alarm, row in rows
        ]
