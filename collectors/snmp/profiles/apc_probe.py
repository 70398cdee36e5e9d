"""The `apc_probe` profile: the temperature/humidity probe of an APC network management card
(PowerNet-MIB's integrated environmental monitor, as on a Smart-UPS with an AP9335T/TH probe).

iemStatusProbesTable (1.3.6.1.4.1.318.1.1.10.2.3.2.1), one row per probe:
iemStatusProbeName (.2), iemStatusProbeStatus (.3: disconnected(1), connected(2)),
iemStatusProbeCurrentTemp (.4, whole degrees in the probe's units),
iemStatusProbeTempUnits (.5: celsius(1), fahrenheit(2); Fahrenheit is converted) and
iemStatusProbeCurrentHumid (.6, percent; a temperature-only probe reports 0 or -1, which is
no reading). A disconnected probe, units other than those two, or a reading outside what a room
probe measures give no reading. On a UPS it goes beside the `ups` profile (`profiles: [ups,
apc_probe]`), as `dutyd discover` writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from dutyd.collectors.snmp.codec import AnyValue, Oid, parse_oid
from dutyd.collectors.snmp.profiles.base import Column, PollData
from dutyd.collectors.snmp.profiles.room import (
    RAW_LIMIT,
    RoomSensorProfile,
    integer,
    plausible,
    probe_rows,
    whole,
)
from dutyd.collectors.snmp.profiles.sensor import HUMIDITY, TEMPERATURE

ENTRY = "1.3.6.1.4.1.318.1.1.10.2.3.2.1"
PROBE_NAME = parse_oid(f"{ENTRY}.2")
PROBE_STATUS = parse_oid(f"{ENTRY}.3")
PROBE_TEMP = parse_oid(f"{ENTRY}.4")
PROBE_TEMP_UNITS = parse_oid(f"{ENTRY}.5")
PROBE_HUMIDITY = parse_oid(f"{ENTRY}.6")
CONNECTED = 2
CELSIUS, FAHRENHEIT = 1, 2


def decode_probe(
    status: AnyValue, temp: AnyValue, units: AnyValue, humidity: AnyValue
) -> dict[str, float]:
    """The plausible readings of one iemStatusProbesTable row (sample name -> value)."""
    if integer(status) != CONNECTED:
        return {}
    out: dict[str, float] = {}
    degrees, unit = integer(temp), integer(units)
    if degrees is not None and abs(degrees) <= RAW_LIMIT and unit in (CELSIUS, FAHRENHEIT):
        celsius = float(degrees) if unit == CELSIUS else (degrees - 32) * 5.0 / 9.0
        got = plausible(TEMPERATURE, round(celsius, 2))
        if got is not None:
            out[TEMPERATURE] = got
    if (percent := whole(HUMIDITY, integer(humidity))) is not None:
        out[HUMIDITY] = percent
    return out


class ApcProbeProfile(RoomSensorProfile):
    name: ClassVar[str] = "apc_probe"
    mib: ClassVar[str] = "APC PowerNet-MIB iemStatusProbesTable"

    @classmethod
    def detect_columns(cls) -> list[Oid]:
        return [PROBE_STATUS]

    @classmethod
    def recognises(cls, columns: Mapping[Oid, Column]) -> bool:
        return any(integer(v) == CONNECTED for v in columns.get(PROBE_STATUS, {}).values())

    def columns(self) -> list[Oid]:
        return [PROBE_NAME, PROBE_STATUS, PROBE_TEMP, PROBE_TEMP_UNITS, PROBE_HUMIDITY]

    def probes(self, data: PollData) -> list[tuple[str, bool, dict[str, float]]]:
        rows = probe_rows(
            data, PROBE_NAME, PROBE_STATUS, [PROBE_TEMP, PROBE_TEMP_UNITS, PROBE_HUMIDITY]
        )
        return [
            (sensor, integer(state) == CONNECTED, decode_probe(state, *row))
            for sensor, state, row in rows
        ]
