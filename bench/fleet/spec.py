"""What a simulated room holds: the fleet spec (JSON) and the device plan derived from it.

A spec names how many devices, their mix of kinds, the poll interval both stacks use, how many
processes serve the room, and a schedule of faults. The plan is deterministic: the same spec
always gives the same names, addresses and ports, so the configs written for dutyd and for the
Prometheus stack and the running fleet agree without talking to each other.

Every device has its own loopback address (the whole 127.0.0.0/8 is loopback on Linux) and the
port of its kind, as in a real room where every box listens on the standard port (with
`subnet: n`, the second octet is raised by 10n so that rooms run side by side):

    switch     sw-0001    127.1.x.y:16100/udp  SNMP v2c, 48 ports (IF-MIB, ifXTable)
    snmp_ups   ups-0001   127.2.x.y:16100/udp  SNMP v2c, UPS-MIB
    nut_ups    nut-0001   127.3.x.y:13493/tcp  NUT (upsd's network protocol), UPS `ups`
    room       room-0001  127.4.x.y:15020/tcp  Modbus TCP room sensor (°C and %RH registers)
    app        app-0001   127.5.x.y:18080/tcp  HTTP application (aiohttp)
    ssh        srv-0001   127.6.x.y:12222/tcp  Linux server over SSH (asyncssh)

Faults (`faults:` in the spec, or POSTed to a shard's control endpoint):

    {"device": "ups-0003", "mode": "break", "at": 120, "until": 300}
    mode: ok | slow (answers after `delay` seconds, default 5) | silent (never answers)
          | garbage (answers bytes that are not the protocol) | break (answers, but breaks a
          duty rule: UPS on battery, room at 30 °C, HTTP 500, root disk 99 %, uplink down)
    at/until: seconds after the spec's `epoch` (a Unix time; default: when the shard started)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("switch", "snmp_ups", "nut_ups", "room", "app", "ssh")
MODES = ("ok", "slow", "silent", "garbage", "break")

# The default room: mostly network and power, as in a department machine room.
DEFAULT_MIX: dict[str, float] = {
    "switch": 0.45,
    "snmp_ups": 0.20,
    "nut_ups": 0.10,
    "room": 0.10,
    "app": 0.10,
    "ssh": 0.05,
}
PREFIX = {
    "switch": "sw",
    "snmp_ups": "ups",
    "nut_ups": "nut",
    "room": "room",
    "app": "app",
    "ssh": "srv",
}
OCTET = {"switch": 1, "snmp_ups": 2, "nut_ups": 3, "room": 4, "app": 5, "ssh": 6}
PORT = {
    "switch": 16100,
    "snmp_ups": 16100,
    "nut_ups": 13493,
    "room": 15020,
    "app": 18080,
    "ssh": 12222,
}
COMMUNITY = "dutyd-fleet"
SWITCH_PORTS = 48
UPLINK_PORT = 48  # the port that goes down when a switch "breaks"


class SpecError(ValueError):
    """The fleet spec is not usable; the message says which key and why."""


@dataclass(frozen=True)
class Device:
    name: str
    kind: str
    host: str
    port: int
    index: int  # position in the plan; shard = index % shards

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Fault:
    device: str
    mode: str
    at: float = 0.0
    until: float | None = None
    delay: float = 5.0

    @classmethod
    def parse(cls, raw: Any, where: str) -> Fault:
        if not isinstance(raw, dict):
            raise SpecError(f"{where}: a fault is a mapping, got {type(raw).__name__}")
        unknown = set(raw) - {"device", "mode", "at", "until", "delay"}
        if unknown:
            raise SpecError(f"{where}: unknown keys {sorted(unknown)}")
        mode = raw.get("mode")
        if mode not in MODES:
            raise SpecError(f"{where}.mode: one of {', '.join(MODES)}, got {mode!r}")
        if not isinstance(raw.get("device"), str):
            raise SpecError(f"{where}.device: a device name is required")
        try:
            at = float(raw.get("at", 0.0))
            until = None if raw.get("until") is None else float(raw["until"])
            delay = float(raw.get("delay", 5.0))
        except (TypeError, ValueError) as exc:
            raise SpecError(f"{where}: at/until/delay must be numbers ({exc})") from None
        if delay < 0 or at < 0 or (until is not None and until <= at):
            raise SpecError(f"{where}: needs 0 <= at < until and delay >= 0")
        return cls(raw["device"], mode, at, until, delay)


@dataclass
class FleetSpec:
    devices: int = 100
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    interval: float = 60.0  # seconds, both stacks
    timeout: float = 10.0  # seconds per poll/scrape, both stacks
    shards: int = 2  # processes serving the room
    control_port: int = 18600  # shard k's control endpoint: 127.0.0.1:control_port + k
    epoch: float | None = None  # Unix time that fault times count from
    # Rooms with different subnets run side by side: kind k's hosts are 127.(k + 10*subnet).x.y
    subnet: int = 0
    faults: list[Fault] = field(default_factory=list)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FleetSpec:
        unknown = set(raw) - {
            "devices",
            "mix",
            "interval",
            "timeout",
            "shards",
            "control_port",
            "epoch",
            "subnet",
            "faults",
        }
        if unknown:
            raise SpecError(f"unknown keys {sorted(unknown)}")
        spec = cls()
        try:
            spec.devices = int(raw.get("devices", spec.devices))
            spec.interval = float(raw.get("interval", spec.interval))
            spec.timeout = float(raw.get("timeout", spec.timeout))
            spec.shards = int(raw.get("shards", spec.shards))
            spec.control_port = int(raw.get("control_port", spec.control_port))
            spec.epoch = None if raw.get("epoch") is None else float(raw["epoch"])
            spec.subnet = int(raw.get("subnet", spec.subnet))
        except (TypeError, ValueError) as exc:
            raise SpecError(f"a number was expected: {exc}") from None
        if not 1 <= spec.devices <= 250 * 250:
            raise SpecError("devices: between 1 and 62500")
        if not 0 <= spec.subnet <= 24:
            raise SpecError("subnet: 0..24")
        if spec.shards < 1 or spec.interval < 1 or spec.timeout <= 0:
            raise SpecError("shards >= 1, interval >= 1 and timeout > 0 are required")
        if "mix" in raw:
            mix = raw["mix"]
            if not isinstance(mix, dict) or set(mix) - set(KINDS):
                raise SpecError(f"mix: a mapping of {', '.join(KINDS)} to shares")
            spec.mix = {k: float(v) for k, v in mix.items()}
            if sum(spec.mix.values()) <= 0 or min(spec.mix.values()) < 0:
                raise SpecError("mix: shares must be >= 0 and not all 0")
        spec.faults = [Fault.parse(f, f"faults[{i}]") for i, f in enumerate(raw.get("faults", []))]
        names = {d.name for d in spec.plan()}
        for i, f in enumerate(spec.faults):
            if f.device not in names:
                raise SpecError(f"faults[{i}].device: no device {f.device!r} in this room")
        return spec

    @classmethod
    def load(cls, path: Path) -> FleetSpec:
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SpecError(f"{path}: {exc}") from None
        if not isinstance(raw, dict):
            raise SpecError(f"{path}: the spec is a JSON object")
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "mix": self.mix,
            "interval": self.interval,
            "timeout": self.timeout,
            "shards": self.shards,
            "control_port": self.control_port,
            "epoch": self.epoch,
            "subnet": self.subnet,
            "faults": [f.__dict__ for f in self.faults],
        }

    def counts(self) -> dict[str, int]:
        """Devices per kind, the shares rounded by largest remainder so they add up."""
        total = sum(self.mix.values())
        exact = {k: self.devices * self.mix.get(k, 0.0) / total for k in KINDS}
        counts = {k: int(v) for k, v in exact.items()}
        short = self.devices - sum(counts.values())
        for k in sorted(KINDS, key=lambda k: exact[k] - counts[k], reverse=True)[:short]:
            counts[k] += 1
        return counts

    def plan(self) -> list[Device]:
        devices: list[Device] = []
        for kind, n in self.counts().items():
            for i in range(n):
                host = f"127.{OCTET[kind] + 10 * self.subnet}.{i // 250}.{i % 250 + 1}"
                name = f"{PREFIX[kind]}-{i + 1:04d}"
                devices.append(Device(name, kind, host, PORT[kind], len(devices)))
        return devices

    def shard_of(self, device: Device) -> int:
        return device.index % self.shards
