"""A simulated UPS served over the NUT network protocol (upsd's TCP dialect) that loses mains."""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

from dutyd.agent.demo.base import DemoDevice

UPS_NAME = "rack-ups"

# The power-cut scenario, in scenario seconds (wall seconds × speed).
MAINS_LOST_AT = 40.0
LOW_BATTERY_AT = 70.0
MAINS_BACK_AT = 100.0
FULL_RUNTIME = 1800.0  # seconds at 100 % charge and the rack's load
LOW_CHARGE = 20.0  # battery.charge.low: the UPS raises LB here
END_CHARGE = 5.0  # where the battery would be when mains returns
RECHARGE_RATE = 1.0  # percent per scenario second, once mains is back
# upsd never sends a longer line; a client sending one is not speaking NUT.
MAX_REQUEST = 1024


def quote(value: str) -> str:
    """A value as upsd sends it: in double quotes, with `\\` and `"` escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class UpsState:
    """One UPS as the server lists it: a description and its NUT variables (all strings)."""

    description: str
    variables: dict[str, str] = field(default_factory=dict)


def power_cut(t: float) -> dict[str, str]:
    """Scenario seconds -> the changing NUT variables of rack-ups during the power cut."""
    wobble = math.sin(t * 0.9)
    if t < MAINS_LOST_AT:
        status, charge, voltage = "OL", 100.0, 230.0 + 1.5 * wobble
    elif t < LOW_BATTERY_AT:
        drain = (100.0 - LOW_CHARGE) / (LOW_BATTERY_AT - MAINS_LOST_AT)
        status, charge, voltage = "OB", 100.0 - drain * (t - MAINS_LOST_AT), 0.0
    elif t < MAINS_BACK_AT:
        drain = (LOW_CHARGE - END_CHARGE) / (MAINS_BACK_AT - LOW_BATTERY_AT)
        status, charge, voltage = "OB LB", LOW_CHARGE - drain * (t - LOW_BATTERY_AT), 0.0
    else:
        charge = min(100.0, END_CHARGE + RECHARGE_RATE * (t - MAINS_BACK_AT))
        status = "OL CHRG" if charge < 100.0 else "OL"
        voltage = 229.0 + 1.5 * wobble
    on_battery = status.startswith("OB")
    return {
        "ups.status": status,
        "battery.charge": f"{charge:.0f}",
        "battery.runtime": f"{FULL_RUNTIME * charge / 100.0:.0f}",
        "input.voltage": f"{voltage:.1f}",
        "output.voltage": "230.0",
        # The inverter warms the cabinet while it carries the load.
        "ups.temperature": f"{(31.0 if on_battery else 27.0) + 0.2 * wobble:.1f}",
        "ups.load": f"{35.0 + 2.0 * math.sin(t * 0.37):.0f}",
    }


class NutServer:
    """An asyncio server speaking the read side of the NUT protocol for the given UPSes:
    LIST UPS, LIST VAR, GET VAR, USERNAME, PASSWORD, VER, NETVER, LOGOUT."""

    def __init__(self, upses: dict[str, UpsState]) -> None:
        self.upses = upses
        self.port = 0
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve, host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._clients):
            writer.close()
        await server.wait_closed()
        # Let the handlers see their connections end before the loop goes away.
        for _ in range(100):
            if not self._clients:
                break
            await asyncio.sleep(0.01)

    def answer(self, request: str) -> tuple[str, bool]:
        """The reply to one request line, and whether to hang up after it."""
        words = request.split()
        if not words:
            return "ERR UNKNOWN-COMMAND\n", False
        cmd = words[0].upper()
        if cmd in ("USERNAME", "PASSWORD") and len(words) == 2:
            return "OK\n", False
        if cmd == "LOGOUT":
            return "OK Goodbye\n", True
        if cmd == "VER":
            return "Network UPS Tools upsd 2.8.0 (dutyd demo)\n", False
        if cmd == "NETVER":
            return "1.3\n", False
        if cmd == "LIST" and len(words) == 2 and words[1].upper() == "UPS":
            lines = ["BEGIN LIST UPS"]
            lines += [f"UPS {n} {quote(u.description)}" for n, u in self.upses.items()]
            lines.append("END LIST UPS")
            return "\n".join(lines) + "\n", False
        if cmd == "LIST" and len(words) == 3 and words[1].upper() == "VAR":
            ups = self.upses.get(words[2])
            if ups is None:
                return "ERR UNKNOWN-UPS\n", False
            name = words[2]
            lines = [f"BEGIN LIST VAR {name}"]
            lines += [f"VAR {name} {k} {quote(v)}" for k, v in sorted(ups.variables.items())]
            lines.append(f"END LIST VAR {name}")
            return "\n".join(lines) + "\n", False
        if cmd == "GET" and len(words) == 4 and words[1].upper() == "VAR":
            ups = self.upses.get(words[2])
            if ups is None:
                return "ERR UNKNOWN-UPS\n", False
            value = ups.variables.get(words[3])
            if value is None:
                return "ERR VAR-NOT-SUPPORTED\n", False
            return f"VAR {words[2]} {words[3]} {quote(value)}\n", False
        return "ERR UNKNOWN-COMMAND\n", False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line or not line.endswith(b"\n") or len(line) > MAX_REQUEST:
                    return
                reply, hang_up = self.answer(line.decode("utf-8", "replace").strip())
                writer.write(reply.encode())
                await writer.drain()
                if hang_up:
                    return
        except (ConnectionError, ValueError):
            return  # the client went away, or sent a line past the reader's limit
        finally:
            self._clients.discard(writer)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class NutUpsDevice(DemoDevice):
    """The rack UPS, watched through a NUT server; mains fails, the battery runs low, mains
    returns and the battery recharges."""

    name = "ups-nut"

    def __init__(self, speed: float = 1.0) -> None:
        super().__init__(speed)
        self.ups = UpsState(
            "Rack UPS, room A (demo)",
            {
                "device.mfr": "Demo Power",
                "device.model": "DP-3000 RT",
                "device.type": "ups",
                "ups.mfr": "Demo Power",
                "ups.model": "DP-3000 RT",
                "battery.charge.low": f"{LOW_CHARGE:.0f}",
                "driver.name": "dutyd-demo",
            },
        )
        self.server = NutServer({UPS_NAME: self.ups})

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        self.advance(0.0)
        await self.server.start()

    def targets(self) -> list[dict[str, Any]]:
        return [
            {
                "name": self.name,
                "kind": "nut",
                "address": f"127.0.0.1:{self.port}",
                "ups": UPS_NAME,
                "interval": "2s",
                "timeout": "1s",
                "labels": {"site": "demo", "room": "A", "role": "ups"},
            }
        ]

    def advance(self, elapsed: float) -> None:
        self.ups.variables.update(power_cut(elapsed * self.speed))

    def story(self) -> list[str]:
        def at(t: float) -> str:
            return f"{t / self.speed:.0f}s"

        full_at = MAINS_BACK_AT + (100.0 - END_CHARGE) / RECHARGE_RATE
        return [
            f"{self.name} (NUT 127.0.0.1:{self.port}, UPS {UPS_NAME}): on mains, battery full",
            f"  at {at(MAINS_LOST_AT)} mains fails: the UPS goes on battery (OB), charge and "
            "runtime fall",
            f"  at {at(LOW_BATTERY_AT)} the battery is low (OB LB, {LOW_CHARGE:.0f} %)",
            f"  at {at(MAINS_BACK_AT)} mains returns (OL CHRG); the battery is full again at "
            f"{at(full_at)}",
        ]

    async def stop(self) -> None:
        await self.server.stop()
