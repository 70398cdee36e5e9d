"""The `sensor` profile: SNMP temperature / humidity probes through a short OID map.

    profiles: [sensor]
    sensors:
      - sensor: rack3-top                       # the `sensor` label
        temperature: 1.3.6.1.4.1.99999.1.1.0
        humidity: 1.3.6.1.4.1.99999.1.2.0
        temperature_scale: 0.1                  # the probe reports tenths of a degree
      - temperature_column: 1.3.6.1.4.1.99999.2.1.3   # a table of probes,
        name_column: 1.3.6.1.4.1.99999.2.1.2          # each named by this column
        temperature_scale: 0.1

Emits `room_temperature_celsius` and `room_humidity_percent` (the names the Modbus room
sensors use), each with a `sensor` label, and reads sysUpTime for `device_rebooted`. Built on
the user OID map.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

from pydantic import Field, model_validator

from dutyd.collectors.snmp.profiles.base import Profile
from dutyd.collectors.snmp.profiles.oidmap import OidMapProfile, OidMetric
from dutyd.core.configtypes import StrictModel

TEMPERATURE = "room_temperature_celsius"
HUMIDITY = "room_humidity_percent"


class SensorProbe(StrictModel):
    """One probe (scalar OIDs) or a table of probes (columns)."""

    sensor: str | None = Field(
        default=None, min_length=1, max_length=64, description="The sensor label (scalars)."
    )
    temperature: str | None = Field(default=None, description="Temperature instance OID.")
    humidity: str | None = Field(default=None, description="Relative humidity instance OID.")
    temperature_column: str | None = Field(default=None, description="Temperature column OID.")
    humidity_column: str | None = Field(default=None, description="Humidity column OID.")
    name_column: str | None = Field(
        default=None, description="Column naming each probe of a table (else its index)."
    )
    temperature_scale: float = Field(default=1.0, allow_inf_nan=False)
    humidity_scale: float = Field(default=1.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _shape(self) -> SensorProbe:
        scalar = self.temperature or self.humidity
        table = self.temperature_column or self.humidity_column
        if bool(scalar) == bool(table):
            raise ValueError(
                "give temperature/humidity OIDs (one probe) or temperature_column/"
                "humidity_column (a table of probes), not both or neither"
            )
        if scalar and not self.sensor:
            raise ValueError("a probe given by OIDs needs `sensor` (its label)")
        return self

    def metrics(self) -> list[OidMetric]:
        out: list[OidMetric] = []
        for name, oid, column, scale in (
            (TEMPERATURE, self.temperature, self.temperature_column, self.temperature_scale),
            (HUMIDITY, self.humidity, self.humidity_column, self.humidity_scale),
        ):
            if oid:
                out.append(
                    OidMetric(name=name, oid=oid, scale=scale, labels={"sensor": self.sensor or ""})
                )
            elif column:
                out.append(
                    OidMetric(
                        name=name,
                        column=column,
                        scale=scale,
                        index_label="sensor",
                        label_column=self.name_column,
                    )
                )
        return out


class TargetSensors(Protocol):
    """What the `sensor` profile reads of its target's `SnmpTarget` (see `Profile`)."""

    sensors: list[SensorProbe]


def sensor_metrics(config: TargetSensors) -> list[OidMetric]:
    return [m for probe in config.sensors for m in probe.metrics()]


class SensorProfile(OidMapProfile):
    name: ClassVar[str] = "sensor"

    def __init__(self, config: TargetSensors) -> None:  # type: ignore[override]
        Profile.__init__(self, config)
        self._read(sensor_metrics(config))

    def uses_uptime(self) -> bool:
        # An environment monitor that restarts lost its readings for a while and may come
        # back with defaults: worth `device_rebooted` (unexpected_device_reboot), and it lets
        # the probe's coldStart/warmStart trap become that sample (only names the target's
        # poll emits are mapped from traps).
        return True

    @classmethod
    def help_for(cls, config: TargetSensors) -> dict[str, str]:  # type: ignore[override]
        helps = {
            TEMPERATURE: "Room temperature read from an SNMP probe.",
            HUMIDITY: "Relative humidity read from an SNMP probe.",
        }
        return {m.name: helps[m.name] for m in sensor_metrics(config)}
