"""A simulated 24-port access switch and a rack UPS, both speaking SNMP v2c over UDP.

The UPS acts out the same power cut as the NUT one (agent/demo/nut_ups.py), at the same
moments, in UPS-MIB terms: on battery, battery low, mains back. On the switch, uplink Gi0/24
goes down for a minute (the duty pack's switch_uplink_down fires, then resolves) and traffic
counters run. The switch is watched twice: every port, and its two uplinks (role: uplink).
"""

from __future__ import annotations

import math
from typing import Any

from dutyd.agent.demo.base import DemoDevice
from dutyd.agent.demo.nut_ups import LOW_BATTERY_AT, MAINS_BACK_AT, MAINS_LOST_AT, power_cut
from dutyd.agent.demo.snmp_responder import SnmpResponder
from dutyd.collectors.snmp import codec

COMMUNITY = "dutyd-demo"
PORTS = 24
FLAP_PORT = 24
UPLINKS = (23, 24)
FLAP_DOWN_AT = 20.0  # scenario seconds; down longer than the rule's 30 s `for`
FLAP_UP_AT = 80.0
IF = (1, 3, 6, 1, 2, 1, 2, 2, 1)
IFX = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)
UPS = (1, 3, 6, 1, 2, 1, 33, 1)
SYS_UPTIME = (1, 3, 6, 1, 2, 1, 1, 3, 0)
C64 = 1 << 64


def ups_mib(t: float) -> dict[tuple[int, ...], tuple[int, int]]:
    """Scenario seconds -> UPS-MIB values, from the NUT UPS's variables at the same moment."""
    nut = power_cut(t)
    flags = nut["ups.status"].split()
    on_battery = "OB" in flags
    seconds_on_battery = max(0.0, t - MAINS_LOST_AT) if on_battery else 0.0
    return {
        (*UPS, 2, 1, 0): (codec.T_INTEGER, 3 if "LB" in flags else 2),
        (*UPS, 2, 2, 0): (codec.T_INTEGER, int(seconds_on_battery)),
        (*UPS, 2, 3, 0): (codec.T_INTEGER, int(float(nut["battery.runtime"]) // 60)),
        (*UPS, 2, 4, 0): (codec.T_INTEGER, int(nut["battery.charge"])),
        (*UPS, 2, 7, 0): (codec.T_INTEGER, round(float(nut["ups.temperature"]))),
        (*UPS, 3, 3, 1, 3, 1): (codec.T_INTEGER, round(float(nut["input.voltage"]))),
        (*UPS, 4, 1, 0): (codec.T_INTEGER, 5 if on_battery else 3),
        (*UPS, 4, 4, 1, 5, 1): (codec.T_INTEGER, int(nut["ups.load"])),
        (*UPS, 6, 1, 0): (codec.T_GAUGE32, 1 if on_battery else 0),
    }


class SnmpDevices(DemoDevice):
    """access-sw1 (24 ports, SNMP v2c) and ups-snmp (UPS-MIB, SNMP v2c) on loopback."""

    name = "snmp"

    def __init__(self, speed: float = 1.0) -> None:
        super().__init__(speed)
        self.switch = SnmpResponder(COMMUNITY)
        self.ups = SnmpResponder(COMMUNITY)
        for i in range(1, PORTS + 1):
            sw = self.switch
            sw.set((*IF, 2, i), codec.T_OCTETS, f"GigabitEthernet0/{i}".encode())
            sw.set((*IF, 7, i), codec.T_INTEGER, 1)
            sw.set((*IF, 13, i), codec.T_COUNTER32, 0)
            sw.set((*IF, 14, i), codec.T_COUNTER32, 0)
            sw.set((*IF, 19, i), codec.T_COUNTER32, 0)
            sw.set((*IF, 20, i), codec.T_COUNTER32, 0)
            sw.set((*IFX, 1, i), codec.T_OCTETS, f"Gi0/{i}".encode())
            sw.set((*IFX, 15, i), codec.T_GAUGE32, 10000 if i in UPLINKS else 1000)

    async def start(self) -> None:
        self.advance(0.0)
        await self.switch.start()
        await self.ups.start()

    def targets(self) -> list[dict[str, Any]]:
        common = {"kind": "snmp", "version": "2c", "community": COMMUNITY, "timeout": "1s"}
        return [
            {
                **common,
                "name": "access-sw1",
                "address": f"127.0.0.1:{self.switch.port}",
                "profiles": ["switch"],
                "interval": "2s",
                "labels": {"site": "demo", "room": "A", "role": "switch"},
            },
            {
                **common,
                "name": "sw1-uplinks",
                "address": f"127.0.0.1:{self.switch.port}",
                "profiles": ["switch"],
                "port_pattern": "^Gi0/(" + "|".join(map(str, UPLINKS)) + ")$",
                "interval": "2s",
                "labels": {"site": "demo", "room": "A", "role": "uplink"},
            },
            {
                **common,
                "name": "ups-snmp",
                "address": f"127.0.0.1:{self.ups.port}",
                "profiles": ["ups"],
                "interval": "2s",
                "labels": {"site": "demo", "room": "A", "role": "ups"},
            },
        ]

    def advance(self, elapsed: float) -> None:
        # The same scenario clock as the NUT UPS (NutUpsDevice.advance), so both UPSes cut
        # together.
        t = elapsed * self.speed
        for oid, (tag, value) in ups_mib(t).items():
            self.ups.set(oid, tag, value)
        sw = self.switch
        sw.set(SYS_UPTIME, codec.T_TIMETICKS, int(8_640_000 + t * 100))
        for i in range(1, PORTS + 1):
            down = i == FLAP_PORT and FLAP_DOWN_AT <= t < FLAP_UP_AT
            sw.set((*IF, 8, i), codec.T_INTEGER, 2 if down else 1)
            # A few Mbit/s per port, the uplinks more; a down port carries nothing.
            rate = (2e8 if i in UPLINKS else 1e6 * (1 + i % 5)) * (1.2 + math.sin(t / 7 + i))
            moved = 0 if down else int(rate * t / 8)
            sw.set((*IFX, 6, i), codec.T_COUNTER64, (10**9 * i + moved) % C64)
            sw.set((*IFX, 10, i), codec.T_COUNTER64, (10**9 * i + moved // 3) % C64)

    def story(self) -> list[str]:
        def at(t: float) -> str:
            return f"{t / self.speed:.0f}s"

        return [
            f"access-sw1 (SNMP v2c 127.0.0.1:{self.switch.port}): 24 ports; uplink "
            f"Gi0/{FLAP_PORT} goes down at {at(FLAP_DOWN_AT)} and back up at {at(FLAP_UP_AT)}",
            f"ups-snmp (SNMP v2c 127.0.0.1:{self.ups.port}, UPS-MIB): on battery at "
            f"{at(MAINS_LOST_AT)}, battery low at {at(LOW_BATTERY_AT)}, mains back at "
            f"{at(MAINS_BACK_AT)} (with the NUT UPS)",
        ]

    async def stop(self) -> None:
        await self.switch.stop()
        await self.ups.stop()
