"""Room sensors other than AKCP (issue 26): the standard ENTITY-SENSOR-MIB (RFC 3433) and an
APC card's probe (PowerNet-MIB iemStatusProbesTable), each served by a real snmpd: the
`entity_sensor` and `apc_probe` profiles read them into the duty pack's room samples with the
MIB's scale and precision (or Fahrenheit) decoded, hostile rows refused, and `dutyd discover`
classifies them and writes a config that loads and polls."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from dutyd.agent.config import load_config
from dutyd.agent.discovercli import write_config
from dutyd.agent.discovery import Sweep
from dutyd.collectors.base import CollectorContext, Readings
from dutyd.collectors.snmp.collector import SnmpCollector, SnmpTarget
from dutyd.collectors.snmp.profiles.apc_probe import ApcProbeProfile
from dutyd.collectors.snmp.profiles.apc_uio import ApcUioProfile
from dutyd.collectors.snmp.profiles.entity_sensor import EntitySensorProfile
from dutyd.core.errors import ReadingUnavailable
from dutyd.rules.packs import load_pack
from tests.site_fixtures import snmp_sweep
from tests.snmp_fixtures import COMMUNITY, SnmpdPeer, switch_values, ups_values

ENTITY_SENSOR = "1.3.6.1.2.1.99.1.1.1"
ENT_NAME = "1.3.6.1.2.1.47.1.1.1.1.7"
APC_PROBE = "1.3.6.1.4.1.318.1.1.10.2.3.2.1"
APC_UIO = "1.3.6.1.4.1.318.1.1.25.1.2.1"
SERVED = (".1.3.6.1.2.1.99", ".1.3.6.1.2.1.47", ".1.3.6.1.4.1.318")


def entity_row(index: int, name: str, kind: int, scale: int, places: int, value: int, status: int):
    return {
        f"{ENTITY_SENSOR}.1.{index}": ["integer", kind],
        f"{ENTITY_SENSOR}.2.{index}": ["integer", scale],
        f"{ENTITY_SENSOR}.3.{index}": ["integer", places],
        f"{ENTITY_SENSOR}.4.{index}": ["integer", value],
        f"{ENTITY_SENSOR}.5.{index}": ["integer", status],
        f"{ENT_NAME}.{index}": ["string", name],
    }


def entity_sensors() -> dict[str, list[Any]]:
    """An environment monitor on ENTITY-SENSOR-MIB: a temperature in tenths (precision 1), a
    humidity in milli-percent (scale milli), a fan (rpm, not the room's), a failed probe, and
    rows a broken or hostile agent sends (precision 12, a value beyond 10^9, 900 °C)."""
    v: dict[str, list[Any]] = {"1.3.6.1.2.1.1.3.0": ["timeticks", 360000]}
    v |= entity_row(1, "cold aisle", 8, 9, 1, 235, 1)  # 23.5 °C
    v |= entity_row(2, "room humidity", 9, 8, 0, 41500, 1)  # 41.5 %RH
    v |= entity_row(3, "fan 1", 10, 9, 0, 4200, 1)  # rpm: left out
    v |= entity_row(4, "hot aisle", 8, 9, 1, 310, 3)  # nonoperational
    v |= entity_row(5, "bad precision", 8, 9, 12, 235, 1)
    v |= entity_row(6, "bad value", 8, 9, 0, 2_000_000_000, 1)
    v |= entity_row(7, "too hot", 8, 9, 0, 900, 1)
    v |= entity_row(8, "deci-degrees", 8, 9, -2, 24, 1)  # precision -2: 24 as it is
    return v


def apc_probes() -> dict[str, list[Any]]:
    """An APC Smart-UPS's card: UPS-MIB, and two probes: one in Fahrenheit with humidity, a
    temperature-only one (humidity 0) in Celsius, and an unplugged one."""
    v: dict[str, list[Any]] = {"1.3.6.1.2.1.1.3.0": ["timeticks", 360000], **ups_values()}
    for index, name, status, temp, units, humid in (
        (1, "rack 3 inlet", 2, 77, 2, 45),  # 77 °F = 25 °C
        (2, "rack 7 inlet", 2, 22, 1, 0),
        (3, "spare", 1, -1, 1, -1),
    ):
        v |= {
            f"{APC_PROBE}.1.{index}": ["integer", index],
            f"{APC_PROBE}.2.{index}": ["string", name],
            f"{APC_PROBE}.3.{index}": ["integer", status],
            f"{APC_PROBE}.4.{index}": ["integer", temp],
            f"{APC_PROBE}.5.{index}": ["integer", units],
            f"{APC_PROBE}.6.{index}": ["integer", humid],
        }
    return v


def snmpd(tmp_path: Path, values: dict[str, list[Any]]) -> SnmpdPeer:
    (tmp_path / "snmpd").mkdir()
    return SnmpdPeer(tmp_path / "snmpd", values, served=SERVED)


def netbotz() -> dict[str, list[Any]]:
    """A NetBotz rack monitor (PowerNet-MIB uioSensorStatusTable, indexed port.sensor): a
    temperature/humidity sensor in warning, a temperature-only one (humidity -1), and one
    whose status is sensorStatusNotApplicable (unplugged)."""
    v: dict[str, list[Any]] = {"1.3.6.1.2.1.1.3.0": ["timeticks", 360000]}
    for index, name, temp, humid, alarm in (
        ("1.1", "row B cold aisle", 27, 38, 2),
        ("2.1", "row B hot aisle", 34, -1, 1),
        ("3.1", "spare port", -1, -1, 4),
    ):
        v |= {
            f"{APC_UIO}.3.{index}": ["string", name],
            f"{APC_UIO}.6.{index}": ["integer", temp],
            f"{APC_UIO}.7.{index}": ["integer", humid],
            f"{APC_UIO}.9.{index}": ["integer", alarm],
        }
    return v


def target(peer: SnmpdPeer, profiles: list[str]) -> SnmpTarget:
    return SnmpTarget.model_validate(
        {
            "name": "probe",
            "kind": "snmp",
            "address": peer.address,
            "community": COMMUNITY,
            "profiles": profiles,
        }
    )


async def poll(config: SnmpTarget) -> dict[tuple[str, str | None], float]:
    context = CollectorContext()
    collector = SnmpCollector(config, context)
    try:
        readings = Readings({"target": config.name}, 0.0)
        await collector.collect(readings)
    finally:
        await collector.close()
        await context.close()
    return {(s.name, dict(s.labels).get("sensor")): s.value for s in readings.samples}


async def sweep(peer: SnmpdPeer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("SENSOR_COMMUNITY", COMMUNITY)
    # 2 s (a walk may take twice that): a loaded CI machine's pass_persist script once
    # missed 1 s, and the APC probe was written as no probe.
    options = snmp_sweep("SENSOR_COMMUNITY", peer.port, timeout=2.0)
    devices = await Sweep(options).run(["127.0.0.1"])
    text, _ = write_config(devices, options, ["127.0.0.1/32"], {}, [], dt.datetime.now(dt.UTC))
    written = tmp_path / "discovered.yaml"
    written.write_text(text)
    return devices, text, load_config(written).targets


async def test_entity_sensor_mib_is_read_with_scale_and_precision(tmp_path: Path) -> None:
    peer = SnmpdPeer(tmp_path, entity_sensors(), served=SERVED)
    try:
        got = await poll(target(peer, ["entity_sensor"]))
    finally:
        peer.stop()
    room = {k: v for k, v in got.items() if k[0].startswith("room_")}
    assert room == {
        ("room_temperature_celsius", "cold aisle"): 23.5,
        ("room_humidity_percent", "room humidity"): 41.5,
        ("room_temperature_celsius", "deci-degrees"): 24.0,
        # Each room probe says whether it reads; the failed one gives no temperature.
        ("room_sensor_ok", "cold aisle"): 1.0,
        ("room_sensor_ok", "room humidity"): 1.0,
        ("room_sensor_ok", "hot aisle"): 0.0,
        ("room_sensor_ok", "bad precision"): 1.0,
        ("room_sensor_ok", "bad value"): 1.0,
        ("room_sensor_ok", "too hot"): 1.0,
        ("room_sensor_ok", "deci-degrees"): 1.0,
    }, got
    assert got[("device_rebooted", None)] == 0.0


async def test_apc_probe_on_a_ups_reads_fahrenheit_as_celsius(tmp_path: Path) -> None:
    peer = SnmpdPeer(tmp_path, apc_probes(), served=SERVED)
    try:
        got = await poll(target(peer, ["ups", "apc_probe"]))
    finally:
        peer.stop()
    assert got[("room_temperature_celsius", "rack 3 inlet")] == 25.0
    assert got[("room_humidity_percent", "rack 3 inlet")] == 45.0
    assert got[("room_temperature_celsius", "rack 7 inlet")] == 22.0
    # A temperature-only probe's humidity 0 is no reading (it would page as a dry room).
    assert ("room_humidity_percent", "rack 7 inlet") not in got
    assert got[("room_sensor_ok", "spare")] == 0.0
    assert ("room_temperature_celsius", "spare") not in got
    assert got[("ups_on_battery", None)] == 0.0  # the UPS profile beside it


async def test_a_device_without_the_mib_is_down_with_the_reason(tmp_path: Path) -> None:
    peer = SnmpdPeer(tmp_path, {"1.3.6.1.2.1.1.3.0": ["timeticks", 1]}, served=SERVED)
    try:
        with pytest.raises(ReadingUnavailable, match="does not serve ENTITY-SENSOR-MIB"):
            await poll(target(peer, ["entity_sensor"]))
    finally:
        peer.stop()


def test_the_room_rules_read_what_the_profiles_emit() -> None:
    metrics = {r.metric for r in load_pack("duty")}
    for profile in (EntitySensorProfile, ApcProbeProfile, ApcUioProfile):
        assert set(profile.help_for(None)) - {"room_sensor_ok"} <= metrics


def test_an_unknown_profile_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown profile 'netbotz'; known: .*entity_sensor"):
        SnmpTarget.model_validate(
            {
                "name": "p",
                "kind": "snmp",
                "address": "127.0.0.1",
                "community": "x",
                "profiles": ["netbotz"],
            }
        )


async def test_discover_classifies_an_entity_sensor_monitor_and_its_target_polls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer = snmpd(tmp_path, entity_sensors())
    try:
        devices, text, targets = await sweep(peer, monkeypatch, tmp_path)
        assert [(d.snmp_class, d.sensor_profiles) for d in devices] == [
            ("sensor", ["entity_sensor"])
        ], text
        assert "answers ENTITY-SENSOR-MIB (RFC 3433)" in text, text
        assert "# guessed: its ENTITY-SENSOR-MIB temperatures are the room's" in text, text
        (written,) = targets
        assert written.profiles == ["entity_sensor"]
        got = await poll(written)
        assert got[("room_temperature_celsius", "cold aisle")] == 23.5
    finally:
        peer.stop()


async def test_discover_adds_the_probe_of_an_apc_ups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer = snmpd(tmp_path, apc_probes())
    try:
        devices, text, targets = await sweep(peer, monkeypatch, tmp_path)
        assert [(d.snmp_class, d.sensor_profiles) for d in devices] == [("ups", ["apc_probe"])]
        assert "its card's probe APC PowerNet-MIB iemStatusProbesTable" in text, text
        (written,) = targets
        assert written.profiles == ["ups", "apc_probe"]
        assert (await poll(written))[("room_temperature_celsius", "rack 3 inlet")] == 25.0
    finally:
        peer.stop()


async def test_discover_leaves_a_switchs_own_entity_sensors_out_of_the_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A switch serves ENTITY-SENSOR-MIB for its inlet and ASIC: still a switch, and not a
    room sensor (its 50 °C ASIC would page as a hot room)."""
    values = {**switch_values(12), **entity_row(1, "ASIC", 8, 9, 0, 50, 1)}
    peer = snmpd(tmp_path, values)
    try:
        devices, text, targets = await sweep(peer, monkeypatch, tmp_path)
        assert [(d.snmp_class, d.sensor_profiles) for d in devices] == [("switch", [])], text
        assert [t.profiles for t in targets] == [["switch"]]
    finally:
        peer.stop()


async def test_a_netbotz_is_read_and_discovered_by_its_universal_io_sensors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer = snmpd(tmp_path, netbotz())
    try:
        devices, text, targets = await sweep(peer, monkeypatch, tmp_path)
        assert [(d.snmp_class, d.sensor_profiles) for d in devices] == [("sensor", ["apc_uio"])]
        assert "answers APC PowerNet-MIB uioSensorStatusTable" in text, text
        (written,) = targets
        got = await poll(written)
    finally:
        peer.stop()
    room = {k: v for k, v in got.items() if k[0].startswith("room_")}
    assert room == {
        ("room_temperature_celsius", "row B cold aisle"): 27.0,
        ("room_humidity_percent", "row B cold aisle"): 38.0,  # a warning still reads
        ("room_temperature_celsius", "row B hot aisle"): 34.0,
        ("room_sensor_ok", "row B cold aisle"): 1.0,
        ("room_sensor_ok", "row B hot aisle"): 1.0,
        ("room_sensor_ok", "spare port"): 0.0,
    }, got
