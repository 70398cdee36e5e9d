"""What the room-sensor profiles share (`entity_sensor`, `apc_probe`, `apc_uio`): the sample
names the duty pack's room rules read, the plausibility bounds, the reading of a probe table's
rows (`probe_rows`, `whole`), and what `dutyd discover` asks of each.

A room-sensor profile reads a table of probes and emits, per probe (label `sensor`: the
probe's name on the device, else its row index), `room_temperature_celsius` and
`room_humidity_percent` (the names the `sensor` profile and the Modbus room sensors use, so
the duty pack's `room_temperature_out_of_range` and `room_humidity_out_of_range` cover them),
and `room_sensor_ok` (1 while the device says the probe reads, 0 when it is unplugged or
failed: its readings then stop, and this says why). A reading outside what a machine-room
probe can measure (-60..150 °C; above 0 and up to 100 %RH: temperature-only probes report 0
or -1 humidity), or outside its MIB's ranges, is refused: no sample rather than a wrong one.

`dutyd discover` recognises a device by each registered room-sensor profile's
`detect_columns` (one walk of all of them) and `recognises`; a `generic` MIB (one switches
and servers serve for their own hardware too, as ENTITY-SENSOR-MIB) only counts on a device
that is not a switch. Adding a room-sensor profile: a module with a subclass, and its line in
`PROFILES` (profiles/__init__.py).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import ClassVar

from dutyd.collectors.base import Readings
from dutyd.collectors.snmp.codec import AnyValue, Oid
from dutyd.collectors.snmp.profiles.base import Column, PollData, Profile, index_text, text
from dutyd.collectors.snmp.profiles.sensor import HUMIDITY, TEMPERATURE
from dutyd.core.errors import ReadingUnavailable

SENSOR_OK = "room_sensor_ok"
# What a machine-room probe can measure; beyond is a fault or a hostile value.
BOUNDS: dict[str, tuple[float, float]] = {TEMPERATURE: (-60.0, 150.0), HUMIDITY: (0.0, 100.0)}
MAX_PROBES = 256  # rows of one poll turned into samples
RAW_LIMIT = 100_000  # a reading in whole degrees or percent: anything larger is no reading


def plausible(name: str, value: float) -> float | None:
    """`value` when it is a finite reading within what a room probe measures, else None."""
    low, high = BOUNDS[name]
    if not math.isfinite(value) or not low <= value <= high:
        return None
    if name == HUMIDITY and value == 0:
        return None  # what a temperature-only probe reports for humidity
    return value


def whole(name: str, raw: int | None) -> float | None:
    """A reading the device gives in whole degrees Celsius or percent, when plausible."""
    if raw is None or abs(raw) > RAW_LIMIT:
        return None
    return plausible(name, float(raw))


def probe_name(names: Column | None, index: bytes) -> str:
    """A probe's `sensor` label: its name on the device, else its row index."""
    return (text(names.get(index)) if names is not None else "") or index_text(index)


def probe_rows(
    data: PollData, names: Oid, key: Oid, others: Sequence[Oid]
) -> Iterator[tuple[str, AnyValue, tuple[AnyValue, ...]]]:
    """Per row of the `key` column, in row order: the probe's `sensor` label (from the `names`
    column), its `key` value and its values of the `others` columns (None where absent)."""
    cols = data.columns
    named = cols.get(names)
    columns = [cols.get(oid) or {} for oid in others]
    for index, value in (cols.get(key) or {}).items():
        yield probe_name(named, index), value, tuple(c.get(index) for c in columns)


class RoomSensorProfile(Profile):
    """A table of room probes. Subclasses give the columns and decode one row."""

    # What `dutyd discover` writes the device was recognised by.
    mib: ClassVar[str]
    # Served by switches and servers for their own hardware: a room sensor only on a device
    # that is not a switch.
    generic: ClassVar[bool] = False

    def uses_uptime(self) -> bool:
        # A probe box that restarts lost its readings for a while: device_rebooted.
        return True

    @classmethod
    def help_for(cls, config: object) -> dict[str, str]:
        return {
            TEMPERATURE: f"Room temperature read from a probe ({cls.mib}).",
            HUMIDITY: f"Relative humidity read from a probe ({cls.mib}).",
            SENSOR_OK: "1 while the device says the probe reads, 0 when unplugged or failed.",
        }

    @classmethod
    @abstractmethod
    def detect_columns(cls) -> list[Oid]:
        """The columns `dutyd discover` walks to recognise the MIB."""

    @classmethod
    @abstractmethod
    def recognises(cls, columns: Mapping[Oid, Column]) -> bool:
        """Whether these walked `detect_columns` show a probe this profile reads."""

    def scalars(self) -> list[Oid]:
        return []

    @abstractmethod
    def probes(self, data: PollData) -> list[tuple[str, bool, dict[str, float]]]:
        """Per probe row: its `sensor` label, whether it reads, and its plausible readings
        (sample name -> value), in row order."""

    def emit(self, data: PollData, readings: Readings) -> None:
        rows = self.probes(data)
        if not rows:
            raise ReadingUnavailable(
                f"the device does not serve {self.mib}: its probe table is empty or absent; "
                "is this the right profile for it?"
            )
        seen: set[str] = set()
        for sensor, ok, values in rows[:MAX_PROBES]:
            if sensor in seen:
                continue  # two rows of one name: the first counts, no duplicate series
            seen.add(sensor)
            readings.add(SENSOR_OK, 1.0 if ok else 0.0, sensor=sensor)
            for name, value in values.items():
                readings.add(name, value, sensor=sensor)


def integer(value: AnyValue) -> int | None:
    """An INTEGER value, or None (an octet string, an exception, nothing)."""
    return value if value.__class__ is int else None  # type: ignore[return-value]
