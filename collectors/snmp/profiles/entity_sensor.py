"""The `entity_sensor` profile: room probes through the standard ENTITY-SENSOR-MIB (RFC 3433).

entPhySensorTable (1.3.6.1.2.1.99.1.1.1), one row per physical sensor (indexed by
entPhysicalIndex): entPhySensorType (.1), Scale (.2), Precision (.3), Value (.4) and
OperStatus (.5); each sensor named by ENTITY-MIB's entPhysicalName. Rows of type celsius(8)
become `room_temperature_celsius`, percentRH(9) `room_humidity_percent` (other types, volts
or fans, are not room readings and are left out).

The value is a fixed-point number (RFC 3433, EntitySensorPrecision): Precision 1..9 is the
number of decimal places (235 with precision 1 is 23.5); -8..-1 (accurate digits) and 0 leave
the value as it is; Scale is the SI prefix, units(9) = 10^0, milli(8) = 10^-3, ... Nothing
outside the MIB's ranges is trusted: a type, scale or precision not in its enumeration, a
value beyond +-10^9, or a status other than ok(1) gives no reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from dutyd.collectors.snmp.codec import AnyValue, Oid, parse_oid
from dutyd.collectors.snmp.profiles.base import Column, PollData
from dutyd.collectors.snmp.profiles.room import RoomSensorProfile, integer, plausible, probe_rows
from dutyd.collectors.snmp.profiles.sensor import HUMIDITY, TEMPERATURE

ENTRY = "1.3.6.1.2.1.99.1.1.1"
SENSOR_TYPE = parse_oid(f"{ENTRY}.1")
SENSOR_SCALE = parse_oid(f"{ENTRY}.2")
SENSOR_PRECISION = parse_oid(f"{ENTRY}.3")
SENSOR_VALUE = parse_oid(f"{ENTRY}.4")
SENSOR_STATUS = parse_oid(f"{ENTRY}.5")
PHYSICAL_NAME = parse_oid("1.3.6.1.2.1.47.1.1.1.1.7")  # ENTITY-MIB entPhysicalName

# EntitySensorDataType: celsius(8), percentRH(9).
ROOM_TYPES = {8: TEMPERATURE, 9: HUMIDITY}
# EntitySensorDataScale -> power of ten. RFC 3433 numbers exa(14) before peta(15), each
# commented with its own power (10^18, 10^15): the numbers are the MIB's, the powers too.
SCALE_EXPONENT = {
    1: -24,
    2: -21,
    3: -18,
    4: -15,
    5: -12,
    6: -9,
    7: -6,
    8: -3,
    9: 0,
    10: 3,
    11: 6,
    12: 9,
    13: 12,
    14: 18,
    15: 15,
    16: 21,
    17: 24,
}
STATUS_OK = 1  # EntitySensorStatus: ok(1), unavailable(2), nonoperational(3)
VALUE_LIMIT = 1_000_000_000  # EntitySensorValue: -1000000000..1000000000


def decode_reading(
    kind: AnyValue, scale: AnyValue, precision: AnyValue, value: AnyValue, status: AnyValue
) -> tuple[str, float] | None:
    """(sample name, value) of one entPhySensorTable row, or None: not a room reading, not
    ok, outside the MIB's ranges, or outside what a room probe measures."""
    name = ROOM_TYPES.get(integer(kind))  # type: ignore[arg-type]
    exponent = SCALE_EXPONENT.get(integer(scale))  # type: ignore[arg-type]
    places, raw = integer(precision), integer(value)
    if name is None or exponent is None or places is None or raw is None:
        return None
    if integer(status) != STATUS_OK or not -8 <= places <= 9 or abs(raw) > VALUE_LIMIT:
        return None
    if places > 0:
        exponent -= places
    # Exact for the scales a room probe uses (a power of ten of a bounded integer), and
    # never overflows: at most 10^9 * 10^24.
    reading = raw * 10.0**exponent if exponent >= 0 else raw / 10.0**-exponent
    got = plausible(name, reading)
    return None if got is None else (name, got)


class EntitySensorProfile(RoomSensorProfile):
    name: ClassVar[str] = "entity_sensor"
    mib: ClassVar[str] = "ENTITY-SENSOR-MIB (RFC 3433)"
    generic: ClassVar[bool] = True

    @classmethod
    def detect_columns(cls) -> list[Oid]:
        return [SENSOR_TYPE]

    @classmethod
    def recognises(cls, columns: Mapping[Oid, Column]) -> bool:
        return any(integer(v) in ROOM_TYPES for v in columns.get(SENSOR_TYPE, {}).values())

    def columns(self) -> list[Oid]:
        return [
            SENSOR_TYPE,
            SENSOR_SCALE,
            SENSOR_PRECISION,
            SENSOR_VALUE,
            SENSOR_STATUS,
            PHYSICAL_NAME,
        ]

    def probes(self, data: PollData) -> list[tuple[str, bool, dict[str, float]]]:
        rows = probe_rows(
            data,
            PHYSICAL_NAME,
            SENSOR_TYPE,
            [SENSOR_SCALE, SENSOR_PRECISION, SENSOR_VALUE, SENSOR_STATUS],
        )
        out: list[tuple[str, bool, dict[str, float]]] = []
        for sensor, kind, (scale, places, value, status) in rows:
            if integer(kind) not in ROOM_TYPES:
                continue  # a fan, a voltage: not the room's
            got = decode_reading(kind, scale, places, value, status)
            out.append((sensor, integer(status) == STATUS_OK, dict([got]) if got else {}))
        return out
