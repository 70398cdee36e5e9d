"""The equipment register, kept by itself, against a real upsd with dummy-ups: the UPS's
maker, model, serial and battery date are read at start, not on every poll, and again a day
later; a swapped UPS (another serial) is a machine-room log entry; the register exports in
English and Chinese and reads back."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.agent.demo.ssh_server import SimulatedLinux, demo_state
from dutyd.collectors.base import CollectorContext, Readings
from dutyd.collectors.ssh import SshCollector, SshTarget
from dutyd.collectors.ssh.parsers import parse_os_release
from dutyd.core.clock import FakeClock
from dutyd.duty.registers import build_register
from dutyd.duty.report import to_csv, to_markdown
from tests.daemon_fixtures import run_until
from tests.nut_fixtures import OL_VARS, UpsdPeer
from tests.snmp_fixtures import COMMUNITY, SnmpdPeer, switch_values
from tests.ssh_fixtures import SshdServer, simulated_target

UPS = {
    **OL_VARS,
    "ups.mfr": "APC",
    "ups.model": "Smart-UPS 3000",
    "ups.serial": "AS1234",
    "battery.date": "2024-05-01",
}


DAY = 30.0


@pytest.fixture
def upsd(tmp_path: Path) -> Iterator[UpsdPeer]:
    peer = UpsdPeer(tmp_path, {"rack": UPS})
    try:
        peer.start()
        yield peer
    finally:
        peer.stop()


@pytest.mark.peer
async def test_ups_swap_is_read_daily_recorded_and_logged(upsd: UpsdPeer, tmp_path: Path) -> None:
    clock = FakeClock()
    config = {
        "targets": [
            {
                "name": "ups1",
                "kind": "nut",
                "address": f"127.0.0.1:{upsd.port}",
                "ups": "rack",
                "interval": "1s",
                "timeout": "2s",
            }
        ],
        "http": {"port": 0},
        "storage": {"path": str(tmp_path / "d.db")},
    }
    daemon = Daemon(load_from_dict(config), clock=clock)
    # "Daily" at a test's pace: a fake day would be 86,400 polls of this 1 s target.
    daemon.equipment.every = DAY
    await daemon.start()
    try:
        register = daemon.equipment
        await run_until(clock, lambda: "ups1" in register.known)
        first = register.known["ups1"]
        assert first.kind == "nut"
        assert first.facts == {
            "vendor": "APC",
            "model": "Smart-UPS 3000",
            "serial": "AS1234",
            "battery_date": "2024-05-01",
        }
        collector = daemon.scheduler.collector("ups1")
        assert collector is not None and collector.facts_due is False

        # The UPS is swapped. Polls go on (power readings every second), the facts are not
        # read again before the day is over.
        upsd.update("rack", **{"ups.serial": "AS9999", "battery.date": "2026-11-30"})
        seen: set[float | None] = set()

        def polled_four_times() -> bool:
            seen.add(daemon.latest.status["ups1"].last_poll_at)
            return len(seen) > 4

        await run_until(clock, polled_four_times)
        assert [f.facts["serial"] for f in await daemon.storage.equipment.history(0, 2e9)] == [
            "AS1234"
        ]

        # A day later: read again, recorded, and the change is in the machine-room log.
        await clock.advance(DAY)
        await run_until(clock, lambda: register.known["ups1"].facts.get("serial") == "AS9999")
        await run_until(clock, lambda: not register._writes)
        (logged,) = await daemon.storage.log.read(kinds=["equipment.changed"])
        assert logged.subject == "ups1"
        assert logged.data["changes"] == {
            "battery_date": ["2024-05-01", "2026-11-30"],
            "serial": ["AS1234", "AS9999"],
        }
        # Read again the next day, unchanged: nothing new is written.
        await clock.advance(DAY)
        await run_until(clock, lambda: collector.facts_due is False)
        await run_until(clock, lambda: not register._writes)
        assert len(await daemon.storage.equipment.history(0, 2e9)) == 2

        # The register as people read it: the UPS as it is now, and the swap.
        now = clock.time()
        en = await build_register(daemon.storage, "equipment", now - 3 * 86400, now, "en", "UTC")
        md = to_markdown(en)
        assert md.startswith("# Equipment register\n")
        assert "| ups1 | nut | APC | Smart-UPS 3000 | AS9999 |  | battery_date=2026-11-30 |" in md
        assert "## Changes in the period" in md
        assert "| ups1 | battery_date: 2024-05-01 → 2026-11-30; serial: AS1234 → AS9999 |" in md
        zh = await build_register(daemon.storage, "equipment", now - 3 * 86400, now, "zh", "UTC")
        rows = list(csv.reader(io.StringIO(to_csv(zh))))
        assert rows[0] == ["设备登记簿"]
        assert rows[5] == ["设备", "类型", "厂商", "型号", "序列号", "固件版本", "其他", "读取时间"]
        assert rows[6][:5] == ["ups1", "nut", "APC", "Smart-UPS 3000", "AS9999"]
        assert "期间变更" in [r[0] for r in rows if r]
    finally:
        await daemon.stop()


SYSTEM = "1.3.6.1.2.1.1"
ENTITY = "1.3.6.1.2.1.47.1.1.1.1"


def switch_inventory(firmware: str) -> dict[str, list[Any]]:
    """A switch's system group and ENTITY-MIB: a chassis (index 1) with two modules."""
    values = switch_values(ports=2)
    values |= {
        f"{SYSTEM}.1.0": ["string", "Cisco IOS Software, C3850, Version 16.12.4"],
        f"{SYSTEM}.2.0": ["objectid", ".1.3.6.1.4.1.9.1.2066"],
        f"{SYSTEM}.5.0": ["string", "core-sw1"],
        f"{SYSTEM}.6.0": ["string", "机房A 机柜3"],
    }
    for index, cls, serial, model in (
        (1, 3, "FOC1234X0AB", "WS-C3850-24T"),
        (2, 9, "FOC5678", "PWR-C1-350WAC"),
        (3, 10, "", "Gi1/0/1"),
    ):
        values |= {
            f"{ENTITY}.5.{index}": ["integer", cls],
            f"{ENTITY}.9.{index}": ["string", firmware if cls == 3 else ""],
            f"{ENTITY}.11.{index}": ["string", serial],
            f"{ENTITY}.12.{index}": ["string", "Cisco Systems"],
            f"{ENTITY}.13.{index}": ["string", model],
        }
    return values


@pytest.mark.peer
async def test_switch_firmware_upgrade_from_snmpd_is_a_log_entry(tmp_path: Path) -> None:
    snmpd = SnmpdPeer(
        tmp_path,
        switch_inventory("16.12.4"),
        served=(f"{SYSTEM}.1", f"{SYSTEM}.2", f"{SYSTEM}.5", f"{SYSTEM}.6", "1.3.6.1.2.1.47"),
    )
    clock = FakeClock()
    config = {
        "targets": [
            {
                "name": "core-sw1",
                "kind": "snmp",
                "address": snmpd.address,
                "community": COMMUNITY,
                "profiles": ["switch"],
                "interval": "1s",
                "timeout": "2s",
            }
        ],
        "http": {"port": 0},
        "storage": {"path": str(tmp_path / "d.db")},
    }
    daemon = Daemon(load_from_dict(config), clock=clock)
    daemon.equipment.every = DAY
    await daemon.start()
    try:
        register = daemon.equipment
        await run_until(clock, lambda: "core-sw1" in register.known)
        assert register.known["core-sw1"].facts == {
            "description": "Cisco IOS Software, C3850, Version 16.12.4",
            "object_id": "1.3.6.1.4.1.9.1.2066",
            "name": "core-sw1",
            "location": "机房A 机柜3",
            "vendor": "Cisco Systems",
            "model": "WS-C3850-24T",
            "serial": "FOC1234X0AB",
            "firmware": "16.12.4",
        }
        snmpd.set_values(switch_inventory("17.3.1"))
        await clock.advance(DAY)
        await run_until(clock, lambda: register.known["core-sw1"].facts["firmware"] == "17.3.1")
        await run_until(clock, lambda: not register._writes)
        (logged,) = await daemon.storage.log.read(kinds=["equipment.changed"])
        assert logged.data["changes"] == {"firmware": ["16.12.4", "17.3.1"]}
        assert daemon.latest.status["core-sw1"].up
    finally:
        await daemon.stop()
        snmpd.stop()


def local_facts() -> dict[str, str]:
    """This host's facts, read here the way a person would."""
    uname = subprocess.run(["uname", "-srm"], capture_output=True, text=True, check=True)
    facts = {"kernel": uname.stdout.strip()}
    release = Path("/etc/os-release").read_text()
    facts["os"] = next(
        line.split("=", 1)[1].strip('"')
        for line in release.splitlines()
        if line.startswith("PRETTY_NAME=")
    )
    for fact, name in (("vendor", "sys_vendor"), ("model", "product_name")):
        with contextlib.suppress(OSError):
            if text := (Path("/sys/class/dmi/id") / name).read_text().strip():
                facts[fact] = text
    return facts


@pytest.mark.peer
async def test_ssh_server_facts_from_real_openssh_by_the_real_commands(tmp_path: Path) -> None:
    """OpenSSH on loopback runs the same commands a server answers: the facts are this
    host's os-release, kernel and DMI vendor/product, read on the first poll only."""
    sshd = SshdServer(tmp_path)
    sshd.start()
    context = CollectorContext()
    try:
        sshd.write_known_hosts()
        cfg = SshTarget.model_validate(sshd.target(timeout=8))
        collector = SshCollector(cfg, context)
        try:
            await collector.collect(Readings({"target": "srv"}, time.time()))
            facts = collector.take_facts()
            assert facts is not None
            expected = await asyncio.to_thread(local_facts)
            assert facts == expected
            # Not every poll: the next one runs no fact command and hands nothing over.
            assert not any(s.id == "os" for s in collector._sections())
            await collector.collect(Readings({"target": "srv"}, time.time()))
            assert collector.take_facts() is None
            # The next day's poll reads them again.
            collector.facts_due = True
            await collector.collect(Readings({"target": "srv"}, time.time()))
            assert collector.take_facts() == expected
        finally:
            await collector.close()
    finally:
        await context.close()
        sshd.kill_all()


def test_os_release_parser_takes_pretty_name_and_survives_garbage() -> None:
    assert parse_os_release('NAME="Debian GNU/Linux"\nPRETTY_NAME="Debian 12 (bookworm)"') == (
        "Debian 12 (bookworm)"
    )
    assert parse_os_release("NAME=Alpine\nVERSION='3.19'\n") == "Alpine 3.19"
    assert parse_os_release("\x00\x01=\n=\n" + "x" * 10_000) == ""


@pytest.mark.peer
async def test_a_replaced_server_behind_the_same_address_changes_its_facts(
    tmp_path: Path,
) -> None:
    """The asyncssh Linux simulation serves os-release, uname and DMI text the test controls:
    a server swapped for another model is seen at the next daily reading."""
    state = demo_state(time.time())
    state.outputs |= {
        "cat /etc/os-release": (
            'PRETTY_NAME="CentOS Linux 7 (Core)"\nNAME="CentOS Linux"\n',
            "",
            0,
        ),
        "uname -srm": ("Linux 3.10.0-1160.el7.x86_64 x86_64\n", "", 0),
        "cat /sys/class/dmi/id/sys_vendor": ("Dell Inc.\n", "", 0),
        "cat /sys/class/dmi/id/product_name": ("PowerEdge R730\n", "", 0),
    }
    server = SimulatedLinux(state)
    await server.start()
    key, known = server.write_files(tmp_path)
    context = CollectorContext()
    cfg = SshTarget.model_validate(
        simulated_target(server, key, known, tmp_path / "trusted", timeout=8)
    )
    collector = SshCollector(cfg, context)
    try:
        await collector.collect(Readings({"target": "db1"}, time.time()))
        assert collector.take_facts() == {
            "os": "CentOS Linux 7 (Core)",
            "kernel": "Linux 3.10.0-1160.el7.x86_64 x86_64",
            "vendor": "Dell Inc.",
            "model": "PowerEdge R730",
        }
        state.outputs["cat /sys/class/dmi/id/product_name"] = ("PowerEdge R750\n", "", 0)
        # DMI not readable (a container, a hardened host): that fact is left out, no error.
        state.outputs["cat /sys/class/dmi/id/sys_vendor"] = ("", "cat: Permission denied\n", 1)
        collector.facts_due = True
        await collector.collect(Readings({"target": "db1"}, time.time()))
        facts = collector.take_facts()
        assert facts is not None and facts["model"] == "PowerEdge R750" and "vendor" not in facts
    finally:
        await collector.close()
        await context.close()
        await server.stop()
