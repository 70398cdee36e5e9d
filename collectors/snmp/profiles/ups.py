"""The `ups` profile (UPS-MIB, RFC 1628): power source, battery and load of a UPS.

One GET of nine instance OIDs (input and output line 1 of the tables) and sysUpTime (the
collector's `device_rebooted`). The sample names are those of the NUT collector where they
mean the same thing (`ups_on_battery`, `ups_battery_charge_percent`, ...), so one rule covers
a UPS however it is watched.
"""

from __future__ import annotations

from typing import ClassVar

from dutyd.collectors.base import Readings
from dutyd.collectors.snmp.codec import Oid, parse_oid
from dutyd.collectors.snmp.profiles.base import PollData, Profile, missing, number
from dutyd.core.errors import ReadingUnavailable
from dutyd.core.records import new_sample

BATTERY_STATUS = parse_oid("1.3.6.1.2.1.33.1.2.1.0")
SECONDS_ON_BATTERY = parse_oid("1.3.6.1.2.1.33.1.2.2.0")
MINUTES_REMAINING = parse_oid("1.3.6.1.2.1.33.1.2.3.0")
CHARGE_REMAINING = parse_oid("1.3.6.1.2.1.33.1.2.4.0")
BATTERY_TEMPERATURE = parse_oid("1.3.6.1.2.1.33.1.2.7.0")
INPUT_VOLTAGE_1 = parse_oid("1.3.6.1.2.1.33.1.3.3.1.3.1")
OUTPUT_SOURCE = parse_oid("1.3.6.1.2.1.33.1.4.1.0")
OUTPUT_LOAD_1 = parse_oid("1.3.6.1.2.1.33.1.4.4.1.5.1")
ALARMS_PRESENT = parse_oid("1.3.6.1.2.1.33.1.6.1.0")

OIDS = [
    BATTERY_STATUS,
    SECONDS_ON_BATTERY,
    MINUTES_REMAINING,
    CHARGE_REMAINING,
    BATTERY_TEMPERATURE,
    INPUT_VOLTAGE_1,
    OUTPUT_SOURCE,
    OUTPUT_LOAD_1,
    ALARMS_PRESENT,
]

# upsOutputSource: other(1) none(2) normal(3) bypass(4) battery(5) booster(6) reducer(7).
# Booster and reducer are mains with voltage correction: still on line.
SOURCE_BYPASS = 4
SOURCE_BATTERY = 5
SOURCES_ON_LINE = frozenset({3, 6, 7})
# upsBatteryStatus: unknown(1) batteryNormal(2) batteryLow(3) batteryDepleted(4).
BATTERY_LOW_STATES = frozenset({3, 4})

# Simple scalars: sample name, OID, factor.
NUMERIC: list[tuple[str, Oid, float]] = [
    ("ups_seconds_on_battery", SECONDS_ON_BATTERY, 1.0),
    ("ups_battery_runtime_seconds", MINUTES_REMAINING, 60.0),
    ("ups_battery_charge_percent", CHARGE_REMAINING, 1.0),
    ("ups_battery_temperature_celsius", BATTERY_TEMPERATURE, 1.0),
    ("ups_input_voltage_volts", INPUT_VOLTAGE_1, 1.0),
    ("ups_output_load_percent", OUTPUT_LOAD_1, 1.0),
    ("ups_alarms_present", ALARMS_PRESENT, 1.0),
]


class UpsProfile(Profile):
    name: ClassVar[str] = "ups"

    def uses_uptime(self) -> bool:
        # A UPS that restarts (a firmware crash, a self-test gone wrong) has dropped or may
        # drop its load: `device_rebooted` feeds unexpected_device_reboot, and lets a
        # coldStart/warmStart trap from the UPS become that sample too (the trap mapper only
        # emits names the target's poll emits).
        return True

    @classmethod
    def help_for(cls, config: object) -> dict[str, str]:
        return {
            "ups_on_line": "1 when the UPS feeds the load from mains (upsOutputSource normal).",
            "ups_on_battery": "1 when the UPS runs on battery (upsOutputSource battery).",
            "ups_on_bypass": "1 when the load bypasses the inverter (upsOutputSource bypass).",
            "ups_output_source": (
                "upsOutputSource code: 1 other, 2 none, 3 normal, 4 bypass, 5 battery, "
                "6 booster, 7 reducer."
            ),
            "ups_battery_status": (
                "upsBatteryStatus code: 1 unknown, 2 normal, 3 low, 4 depleted."
            ),
            "ups_battery_low": "1 when the battery is low or depleted (upsBatteryStatus).",
            "ups_seconds_on_battery": "Seconds since the UPS went on battery, 0 on mains.",
            "ups_battery_runtime_seconds": (
                "Estimated runtime on battery (upsEstimatedMinutesRemaining x 60)."
            ),
            "ups_battery_charge_percent": (
                "Battery charge in percent (upsEstimatedChargeRemaining)."
            ),
            "ups_battery_temperature_celsius": "Battery temperature (upsBatteryTemperature).",
            "ups_input_voltage_volts": "Input (mains) voltage of line 1 (upsInputVoltage).",
            "ups_output_load_percent": "Output load of line 1 in percent (upsOutputPercentLoad).",
            "ups_alarms_present": "Number of active alarms (upsAlarmsPresent).",
        }

    def scalars(self) -> list[Oid]:
        return list(OIDS)

    def columns(self) -> list[Oid]:
        return []

    def emit(self, data: PollData, readings: Readings) -> None:
        values = data.scalars
        # No labels of its own: every sample carries the target's label set.
        labels, ts = readings.base_labels, readings.timestamp
        samples = readings.samples
        add = samples.append
        before = len(samples)
        source = values.get(OUTPUT_SOURCE)
        if isinstance(source, int):
            add(new_sample("ups_output_source", labels, float(source), ts))
            add(new_sample("ups_on_battery", labels, float(source == SOURCE_BATTERY), ts))
            add(new_sample("ups_on_bypass", labels, float(source == SOURCE_BYPASS), ts))
            add(new_sample("ups_on_line", labels, float(source in SOURCES_ON_LINE), ts))
        status = values.get(BATTERY_STATUS)
        if isinstance(status, int):
            add(new_sample("ups_battery_status", labels, float(status), ts))
            add(new_sample("ups_battery_low", labels, float(status in BATTERY_LOW_STATES), ts))
        for name, oid, factor in NUMERIC:
            raw = values.get(oid)
            value = float(raw) if raw.__class__ is int else number(raw)
            if value is None or (value < 0 and oid != BATTERY_TEMPERATURE):
                # None of these can be negative; some agents send -1 for "unknown".
                continue
            add(new_sample(name, labels, value * factor, ts))
        if len(samples) == before and all(missing(values.get(o)) for o in OIDS):
            raise ReadingUnavailable(
                "the device does not serve UPS-MIB (RFC 1628, 1.3.6.1.2.1.33): every UPS "
                "value is noSuchObject; is this a UPS, or does it need its own MIB?"
            )
