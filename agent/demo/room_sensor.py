"""A simulated Modbus TCP room sensor whose room warms past 26 °C and later cools down."""

from __future__ import annotations

import asyncio
import math
import socket
from typing import Any

from pyModbusTCP.server import DataBank, ModbusServer

from dutyd.agent.demo.base import DemoDevice

# The common real-world layout: holding registers, int16 tenths of °C, uint16 tenths of %RH.
TEMPERATURE_REGISTER = 0
HUMIDITY_REGISTER = 1

BASE_CELSIUS = 22.0
PEAK_CELSIUS = 28.5
BASE_HUMIDITY = 48.0
WARM_FROM = 20.0  # scenario seconds
WARM_RATE = 0.25  # °C per scenario second, up and down
HOLD_UNTIL = 120.0
ALERT_ABOVE = 26.0  # the duty rule's upper bound, for the story only


def room_climate(t: float) -> tuple[float, float]:
    """Scenario seconds -> (temperature °C, relative humidity %) of room A."""
    if t < WARM_FROM:
        temp = BASE_CELSIUS
    elif t < HOLD_UNTIL:
        temp = min(PEAK_CELSIUS, BASE_CELSIUS + WARM_RATE * (t - WARM_FROM))
    else:
        temp = max(BASE_CELSIUS, PEAK_CELSIUS - WARM_RATE * (t - HOLD_UNTIL))
    # A small deterministic wobble so graphs look alive; it never crosses the rule bounds.
    temp += 0.1 * math.sin(t * 0.7) + 0.05 * math.sin(t * 2.3)
    # Warmer air holds more water, so relative humidity drops as the room heats.
    humidity = BASE_HUMIDITY - 1.2 * (temp - BASE_CELSIUS) + 0.3 * math.sin(t * 0.5)
    return temp, humidity


def _loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RoomSensorDevice(DemoDevice):
    """Room A's temperature/humidity sensor, served by pyModbusTCP on a free loopback port."""

    name = "room-a-sensor"

    def __init__(self, speed: float = 1.0) -> None:
        super().__init__(speed)
        # Only the registers a real sensor maps: reading elsewhere gets "illegal data address".
        self.bank = DataBank(coils_size=0, d_inputs_size=0, h_regs_size=2, i_regs_size=0)
        self.server: ModbusServer | None = None
        self.port = 0
        self.temperature = BASE_CELSIUS
        self.humidity = BASE_HUMIDITY

    async def start(self) -> None:
        self.advance(0.0)
        last_error: Exception | None = None
        for _ in range(20):  # another process may grab the port between probe and bind
            port = _loopback_port()
            server = ModbusServer(host="127.0.0.1", port=port, no_block=True, data_bank=self.bank)
            try:
                server.start()
            except ModbusServer.NetworkError as exc:
                last_error = exc
                # start() leaves its listening socket open when bind fails.
                service = getattr(server, "_service", None)
                if service is not None:
                    service.server_close()
                continue
            self.server, self.port = server, port
            return
        raise RuntimeError(f"room sensor: no free loopback port for Modbus: {last_error}")

    def targets(self) -> list[dict[str, Any]]:
        return [
            {
                "name": self.name,
                "kind": "modbus",
                "address": f"127.0.0.1:{self.port}",
                "interval": "2s",
                "timeout": "1s",
                "labels": {"site": "demo", "room": "A"},
                "unit_id": 1,
                "registers": [
                    {
                        "name": "room_temperature_celsius",
                        "address": TEMPERATURE_REGISTER,
                        "type": "int16",
                        "scale": 0.1,
                        "unit": "°C",
                    },
                    {
                        "name": "room_humidity_percent",
                        "address": HUMIDITY_REGISTER,
                        "type": "uint16",
                        "scale": 0.1,
                        "unit": "%RH",
                    },
                ],
            }
        ]

    def advance(self, elapsed: float) -> None:
        self.temperature, self.humidity = room_climate(elapsed * self.speed)
        tenths_c = round(self.temperature * 10) & 0xFFFF  # int16 as the register's bit pattern
        tenths_rh = max(0, min(1000, round(self.humidity * 10)))
        self.bank.set_holding_registers(TEMPERATURE_REGISTER, [tenths_c, tenths_rh])

    def story(self) -> list[str]:
        def at(t: float) -> str:
            return f"{t / self.speed:.0f}s"

        crossing = WARM_FROM + (ALERT_ABOVE - BASE_CELSIUS) / WARM_RATE
        peak = WARM_FROM + (PEAK_CELSIUS - BASE_CELSIUS) / WARM_RATE
        cooled = HOLD_UNTIL + (PEAK_CELSIUS - BASE_CELSIUS) / WARM_RATE
        return [
            f"room-a-sensor (Modbus TCP 127.0.0.1:{self.port}): room A at {BASE_CELSIUS:.1f} °C, "
            f"{BASE_HUMIDITY:.0f} %RH",
            f"  at {at(WARM_FROM)} the cooling fails: room A warms {WARM_RATE} °C/s, "
            f"passes {ALERT_ABOVE:.0f} °C at about {at(crossing)}, reaches "
            f"{PEAK_CELSIUS} °C at {at(peak)}",
            f"  at {at(HOLD_UNTIL)} the cooling is back: {BASE_CELSIUS:.0f} °C again by "
            f"{at(cooled)}, and the alert resolves",
        ]

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            # shutdown() waits for the serve loop's next poll (up to 0.5 s): off the event loop.
            await asyncio.to_thread(server.stop)
