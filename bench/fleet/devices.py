"""The simulated devices of a fleet: one real protocol server per device, all asyncio.

Each device listens on its own loopback address (see spec.py) and has a `mode`:
ok, slow (answers after `delay` s), silent (never answers), garbage (answers bytes that are not
the protocol) or break (answers correctly, but with a reading that breaks a duty rule).
Reused from the demo and the SNMP bench: the SNMP responder and its table fill
(bench/bench_snmp.py `fill`), the NUT protocol server, the asyncssh Linux server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from pathlib import Path
from typing import Any

import asyncssh
from aiohttp import web

from bench.bench_snmp import fill  # the SNMP bench's 48-port switch + UPS table
from bench.fleet.spec import COMMUNITY, UPLINK_PORT, Device
from dutyd.agent.demo.nut_ups import NutServer, UpsState, power_cut
from dutyd.agent.demo.snmp_responder import SnmpResponder
from dutyd.agent.demo.ssh_server import SimulatedLinux, demo_state
from dutyd.collectors.snmp import codec

GARBAGE = b"\x17\x03\x03\x00\x1a<html>garbage \xff\xfe\x00 not this protocol</html>\r\n"
IF_OPER = (1, 3, 6, 1, 2, 1, 2, 2, 1, 8)
UPS = (1, 3, 6, 1, 2, 1, 33, 1)


class FleetDevice:
    """State every simulated device has; subclasses serve one protocol."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.mode = "ok"
        self.delay = 5.0

    def set_mode(self, mode: str, delay: float = 5.0) -> None:
        was_broken = self.mode == "break"
        self.mode, self.delay = mode, delay
        if (mode == "break") != was_broken:
            self.apply_break(mode == "break")

    def apply_break(self, broken: bool) -> None:
        """Change the readings so that a duty rule fires (or clears)."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError


# ----- SNMP: switches and UPS units --------------------------------------------------------


class _SnmpAgent(SnmpResponder):
    def __init__(self, owner: FleetDevice) -> None:
        super().__init__(COMMUNITY)
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        mode = self.owner.mode
        if mode == "silent" or self.transport is None:
            return
        if mode == "garbage":
            self.transport.sendto(GARBAGE, addr)
            return
        if mode == "slow":
            loop = asyncio.get_running_loop()
            loop.call_later(self.owner.delay, super().datagram_received, data, addr)
            return
        super().datagram_received(data, addr)


class SnmpDevice(FleetDevice):
    """A 48-port switch or a UPS (the SNMP bench's table; both MIBs on every agent)."""

    def __init__(self, device: Device) -> None:
        super().__init__(device)
        self.agent = _SnmpAgent(self)
        fill(self.agent, device.index)

    def apply_break(self, broken: bool) -> None:
        if self.device.kind == "switch":
            self.agent.set((*IF_OPER, UPLINK_PORT), codec.T_INTEGER, 2 if broken else 1)
        else:  # upsOutputSource battery(5), seconds on battery, alarms present
            self.agent.set((*UPS, 4, 1, 0), codec.T_INTEGER, 5 if broken else 3)
            self.agent.set((*UPS, 2, 2, 0), codec.T_INTEGER, 60 if broken else 0)
            self.agent.set((*UPS, 6, 1, 0), codec.T_GAUGE32, 1 if broken else 0)

    async def start(self) -> None:
        await self.agent.start(self.device.host, self.device.port)

    async def stop(self) -> None:
        await self.agent.stop()


# ----- NUT UPS units -----------------------------------------------------------------------


class _FleetNutServer(NutServer):
    def __init__(self, owner: FleetDevice, upses: dict[str, UpsState]) -> None:
        super().__init__(upses)
        self.owner = owner

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The demo server's loop, with the device's mode applied to every request: clients
        # keep their connection between polls, so a fault must reach open connections too.
        self._clients.add(writer)
        try:
            for _ in range(10_000_000):  # bounded: one request per round
                line = await reader.readline()
                if not line or not line.endswith(b"\n") or len(line) > 1024:
                    return
                mode = self.owner.mode
                if mode == "silent":
                    continue  # a hung upsd: the request is read, nothing is answered
                if mode == "slow":
                    await asyncio.sleep(self.owner.delay)
                if mode == "garbage":
                    reply, hang_up = GARBAGE.decode("latin-1") + "\n", False
                else:
                    reply, hang_up = self.answer(line.decode("utf-8", "replace").strip())
                writer.write(reply.encode("latin-1" if mode == "garbage" else "utf-8"))
                await writer.drain()
                if hang_up:
                    return
        except (ConnectionError, ValueError):
            return
        finally:
            self._clients.discard(writer)
            writer.close()


class NutDevice(FleetDevice):
    UPS_NAME = "ups"

    def __init__(self, device: Device) -> None:
        super().__init__(device)
        variables = {
            "device.mfr": "Fleet Power",
            "device.model": "FP-3000",
            "device.type": "ups",
            "battery.charge.low": "20",
            "driver.name": "dutyd-fleet",
            **power_cut(0.0),
        }
        self.ups = UpsState(f"Fleet UPS {device.name}", variables)
        self.server = _FleetNutServer(self, {self.UPS_NAME: self.ups})

    def apply_break(self, broken: bool) -> None:
        self.ups.variables.update(power_cut(50.0 if broken else 0.0))

    async def start(self) -> None:
        await self.server.start(self.device.host, self.device.port)

    async def stop(self) -> None:
        await self.server.stop()


# ----- Modbus TCP room sensors -------------------------------------------------------------

TEMPERATURE_REGISTER = 0  # int16 tenths of °C
HUMIDITY_REGISTER = 1  # uint16 tenths of %RH


class ModbusDevice(FleetDevice):
    """A room sensor: holding registers 0 (°C ×10, int16) and 1 (%RH ×10). A lean asyncio
    Modbus TCP server (function codes 3 and 4), so a thousand of them cost no threads."""

    def __init__(self, device: Device) -> None:
        super().__init__(device)
        self.registers = [221 + device.index % 20, 480 + device.index % 50]
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def apply_break(self, broken: bool) -> None:
        self.registers[TEMPERATURE_REGISTER] = 300 if broken else 221 + self.device.index % 20

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.device.host, self.device.port)

    def reply(self, frame: bytes) -> bytes:
        tid, _proto, _length, unit = struct.unpack(">HHHB", frame[:7])
        pdu = frame[7:]
        fc = pdu[0]
        if fc not in (3, 4) or len(pdu) < 5:
            body = bytes([fc | 0x80, 1])  # illegal function
        else:
            start, count = struct.unpack(">HH", pdu[1:5])
            if count < 1 or start + count > len(self.registers):
                body = bytes([fc | 0x80, 2])  # illegal data address
            else:
                values = self.registers[start : start + count]
                body = bytes([fc, 2 * count]) + struct.pack(f">{count}H", *values)
        return struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            for _ in range(10_000_000):  # bounded: one request per round
                header = await reader.readexactly(7)
                (length,) = struct.unpack(">H", header[4:6])
                if not 2 <= length <= 254:
                    return
                frame = header + await reader.readexactly(length - 1)
                mode = self.mode
                if mode == "silent":
                    continue
                if mode == "slow":
                    await asyncio.sleep(self.delay)
                writer.write(GARBAGE if mode == "garbage" else self.reply(frame))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None


# ----- HTTP applications -------------------------------------------------------------------


class HttpApps:
    """Every HTTP application of a shard: one aiohttp app, one TCPSite per device address;
    the handler finds the device by the address it was reached on."""

    def __init__(self) -> None:
        self.by_host: dict[str, HttpDevice] = {}
        self._runner: web.AppRunner | None = None

    async def start(self, devices: list[HttpDevice]) -> None:
        if not devices:
            return
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/health", self._page)
        # A silent app's handlers hang on purpose: do not wait for them at shutdown.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        for d in devices:
            self.by_host[d.device.host] = d
            await web.TCPSite(self._runner, d.device.host, d.device.port).start()

    async def _page(self, request: web.Request) -> web.StreamResponse:
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        device = self.by_host.get(sock[0]) if sock else None
        if device is None:
            return web.Response(status=404)
        mode = device.mode
        if mode == "silent":
            await asyncio.sleep(3600)  # cancelled when the client gives up
        if mode == "slow":
            await asyncio.sleep(device.delay)
        if mode == "garbage" and request.transport is not None:
            request.transport.write(GARBAGE)
            request.transport.close()
            return web.Response()
        if mode == "break":
            return web.Response(status=500, text="500 Internal Server Error: database down")
        return web.Response(
            text=f"<html><title>{device.device.name}</title><body>App OK</body></html>",
            content_type="text/html",
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class HttpDevice(FleetDevice):
    """Served by the shard's HttpApps."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


# ----- Linux servers over SSH ---------------------------------------------------------------


class _FleetLinux(SimulatedLinux):
    def __init__(self, owner: FleetDevice) -> None:
        super().__init__(demo_state(0.0))
        self.owner = owner
        self.state.clock = 0.0

    async def _run(self, process: asyncssh.SSHServerProcess[str]) -> int:
        self.state.clock = time.time()
        mode = self.owner.mode
        if mode == "silent":
            await asyncio.sleep(3600)  # cancelled when the client disconnects
        if mode == "slow":
            await asyncio.sleep(self.owner.delay)
        if mode == "garbage":
            process.stdout.write(GARBAGE.decode("latin-1"))
            return 0
        return await super()._run(process)


class SshDevice(FleetDevice):
    """A Linux server; all of a fleet's servers share one host key and one client key (written
    by `python -m bench.fleet write`), each listens on its own address."""

    def __init__(self, device: Device, keys: tuple[Any, Any]) -> None:
        super().__init__(device)
        self.linux = _FleetLinux(self)
        self.linux.host_key, self.linux.client_key = keys

    def apply_break(self, broken: bool) -> None:
        root = self.linux.state.filesystems[0]
        root.used_kb = int(root.size_kb * (0.99 if broken else 0.55))

    async def start(self) -> None:
        self.apply_break(False)
        owner = self.linux
        owner._server = await asyncssh.create_server(
            lambda: _server_side(owner),
            self.device.host,
            self.device.port,
            server_host_keys=[owner.host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(
                owner.client_key.export_public_key().decode()
            ),
            process_factory=owner._serve,
            encoding="utf-8",
            allow_pty=False,
            x11_forwarding=False,
            agent_forwarding=False,
        )
        owner.port = self.device.port

    async def stop(self) -> None:
        # Silent servers keep their sessions open on purpose: drop them before closing.
        for conn in list(self.linux._conns):
            conn.abort()
        await self.linux.stop()


def _server_side(owner: SimulatedLinux) -> asyncssh.SSHServer:
    from dutyd.agent.demo.ssh_server import _ServerSide

    return _ServerSide(owner)


# ----- keys ----------------------------------------------------------------------------------


def ssh_key_paths(directory: Path) -> tuple[Path, Path, Path]:
    d = directory / "ssh"
    return d / "host_ed25519", d / "client_ed25519", d / "known_hosts"


def write_ssh_keys(directory: Path, hosts: list[Device]) -> None:
    host_path, client_path, known = ssh_key_paths(directory)
    host_path.parent.mkdir(parents=True, exist_ok=True)
    if not host_path.exists():
        host_path.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
        client_path.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    for p in (host_path, client_path):
        os.chmod(p, 0o600)
    public = asyncssh.read_private_key(host_path).export_public_key().decode().strip()
    known.write_text("".join(f"[{d.host}]:{d.port} {public}\n" for d in hosts))


def read_ssh_keys(directory: Path) -> tuple[Any, Any]:
    host_path, client_path, _ = ssh_key_paths(directory)
    return asyncssh.read_private_key(host_path), asyncssh.read_private_key(client_path)
