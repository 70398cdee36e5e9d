"""The benchmark's simulated room (bench/fleet): the configs it writes pass the real checkers
(dutyd, promtool, amtool, snmp_exporter, blackbox_exporter), and every kind of device answers
dutyd's real collectors, then goes silent, speaks garbage or breaks its duty rule on command.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bench.fleet.configs import write_all
from bench.fleet.room import Room
from bench.fleet.spec import FleetSpec, SpecError
from dutyd.agent.config import load_config
from dutyd.collectors import COLLECTORS
from dutyd.collectors.base import CollectorContext, Readings
from dutyd.core.errors import CollectError
from tests.peers import free_port, require_binary

# One device of each kind.
MIX = {"switch": 1, "snmp_ups": 1, "nut_ups": 1, "room": 1, "app": 1, "ssh": 1}


def room_spec(**extra: Any) -> FleetSpec:
    return FleetSpec.from_dict(
        {
            "devices": 6,
            "mix": MIX,
            "interval": 60,
            "shards": 1,
            "timeout": 3,
            "subnet": 23,  # beside a benchmark's room (subnet 0)
            **extra,
        }
    )


def check(argv: list[str]) -> None:
    run = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"{argv[0]}: {run.stdout}{run.stderr}"


def test_spec_plan_and_errors() -> None:
    spec = FleetSpec.from_dict({"devices": 1000})
    counts = spec.counts()
    assert sum(counts.values()) == 1000 and counts["switch"] == 450
    plan = spec.plan()
    assert len({d.address for d in plan}) == 1000
    assert plan[0].name == "sw-0001" and plan[0].host == "127.1.0.1"
    with pytest.raises(SpecError, match="mode"):
        FleetSpec.from_dict({"faults": [{"device": "sw-0001", "mode": "melt"}]})
    with pytest.raises(SpecError, match="no device 'sw-9999'"):
        FleetSpec.from_dict({"faults": [{"device": "sw-9999", "mode": "silent"}]})
    with pytest.raises(SpecError, match="unknown keys"):
        FleetSpec.from_dict({"device": 10})


def test_written_configs_pass_the_real_checkers(tmp_path: Path) -> None:
    spec = room_spec()
    written = write_all(spec, tmp_path, dutyd_port=free_port(), receiver="http://127.0.0.1:9")
    settings = load_config(written["dutyd"])
    assert {t.kind for t in settings.targets} == {"snmp", "nut", "modbus", "http", "ssh"}
    promtool = require_binary("/usr/bin/promtool")
    check([promtool, "check", "rules", str(written["rules"])])
    check([promtool, "check", "config", str(written["prometheus-typical"])])
    check([promtool, "check", "config", str(written["prometheus-tuned"])])
    amtool = require_binary("amtool")
    check([amtool, "check-config", str(written["alertmanager-typical"])])
    snmp = require_binary("prometheus-snmp-exporter")
    check([snmp, f"--config.file={written['snmp']}", "--dry-run"])
    blackbox = require_binary("prometheus-blackbox-exporter")
    check([blackbox, f"--config.file={written['blackbox']}", "--config.check"])


async def poll(collector: Any) -> Readings:
    readings = Readings({"target": collector.config.name}, time.time())
    await collector.collect(readings)
    return readings


def value(readings: Readings, name: str, **labels: str) -> float:
    for s in readings.samples:
        if s.name == name and all(dict(s.labels).get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no {name} {labels} in {[s.name for s in readings.samples]}")


BROKEN = {
    "sw-0001": ("if_oper_up", {"port": "Gi1/0/48"}, 1.0, 0.0),
    "ups-0001": ("ups_on_battery", {}, 0.0, 1.0),
    "nut-0001": ("ups_on_battery", {}, 0.0, 1.0),
    "room-0001": ("room_temperature_celsius", {}, None, 30.0),
    "app-0001": ("probe_success", {}, 1.0, 0.0),
    "srv-0001": ("node_filesystem_used_ratio", {"mount": "/"}, None, 0.99),
}


async def test_every_device_answers_then_fails_on_command(tmp_path: Path) -> None:
    spec = room_spec(control_port=free_port())
    written = write_all(spec, tmp_path, dutyd_port=free_port(), receiver="http://127.0.0.1:9")
    settings = load_config(written["dutyd"])
    room = Room(spec, tmp_path, 0)
    await room.start()
    context = CollectorContext()
    collectors = {t.name: COLLECTORS[t.kind](t, context) for t in settings.targets}
    answered: list[str] = []
    try:
        for name, (metric, labels, ok_value, broken_value) in BROKEN.items():
            c = collectors[name]
            readings = await poll(c)
            if ok_value is not None:
                assert value(readings, metric, **labels) == ok_value, name
            room.devices[name].set_mode("break")
            got = value(await poll(c), metric, **labels)
            assert got == pytest.approx(broken_value, abs=0.01), name
            for mode in ("silent", "garbage"):
                room.devices[name].set_mode(mode)
                try:
                    await asyncio.wait_for(poll(c), 30)
                except CollectError:
                    continue
                answered.append(f"{name} {mode}")
            room.devices[name].set_mode("ok")
            # Answers again after the fault; a connection the fault left broken may cost the
            # first poll, as with a real device.
            try:
                await poll(c)
            except CollectError:
                await poll(c)
        assert answered == [], "a silent or garbage-speaking device was read as healthy"
    finally:
        for c in collectors.values():
            await c.close()
        await context.close()
        await room.stop()
