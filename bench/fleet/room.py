"""One shard of a simulated room: starts its devices, plays the spec's fault schedule and takes
faults on a control endpoint (127.0.0.1:control_port + shard):

    GET  /devices                -> {"sw-0001": "ok", ...}   this shard's devices and modes
    POST /fault  {"device": "ups-0003", "mode": "break", "delay": 5}
                                 -> {"device": ..., "mode": ..., "at": <Unix time applied>}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import time
from pathlib import Path

from aiohttp import web

from bench.fleet.devices import (
    FleetDevice,
    HttpApps,
    HttpDevice,
    ModbusDevice,
    NutDevice,
    SnmpDevice,
    SshDevice,
    read_ssh_keys,
)
from bench.fleet.spec import MODES, FleetSpec

log = logging.getLogger("bench.fleet")


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Room:
    def __init__(self, spec: FleetSpec, directory: Path, shard: int) -> None:
        self.spec = spec
        self.shard = shard
        self.devices: dict[str, FleetDevice] = {}
        self.http = HttpApps()
        keys = None
        for d in spec.plan():
            if spec.shard_of(d) != shard:
                continue
            if d.kind in ("switch", "snmp_ups"):
                self.devices[d.name] = SnmpDevice(d)
            elif d.kind == "nut_ups":
                self.devices[d.name] = NutDevice(d)
            elif d.kind == "room":
                self.devices[d.name] = ModbusDevice(d)
            elif d.kind == "app":
                self.devices[d.name] = HttpDevice(d)
            else:
                keys = keys or read_ssh_keys(directory)
                self.devices[d.name] = SshDevice(d, keys)
        self._control: web.AppRunner | None = None
        self.started = 0.0

    async def start(self) -> None:
        raise_fd_limit()
        for device in self.devices.values():
            await device.start()
        await self.http.start([d for d in self.devices.values() if isinstance(d, HttpDevice)])
        app = web.Application()
        app.router.add_get("/devices", self._list)
        app.router.add_post("/fault", self._fault)
        self._control = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._control.setup()
        port = self.spec.control_port + self.shard
        await web.TCPSite(self._control, "127.0.0.1", port).start()
        self.started = time.time()

    async def _list(self, _request: web.Request) -> web.Response:
        return web.json_response({n: d.mode for n, d in self.devices.items()})

    async def _fault(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"error": "the body is not JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "the body is a JSON object"}, status=400)
        device = self.devices.get(str(body.get("device")))
        if device is None:
            return web.json_response({"error": "no such device on this shard"}, status=404)
        mode = body.get("mode")
        if mode not in MODES:
            return web.json_response({"error": f"mode: one of {', '.join(MODES)}"}, status=400)
        try:
            delay = float(body.get("delay", 5.0))
        except (TypeError, ValueError):
            return web.json_response({"error": "delay: a number of seconds"}, status=400)
        device.set_mode(mode, delay)
        return web.json_response({"device": device.device.name, "mode": mode, "at": time.time()})

    async def play_schedule(self) -> None:
        epoch = self.spec.epoch if self.spec.epoch is not None else self.started
        events: list[tuple[float, str, str, float]] = []
        for f in self.spec.faults:
            if f.device in self.devices:
                events.append((epoch + f.at, f.device, f.mode, f.delay))
                if f.until is not None:
                    events.append((epoch + f.until, f.device, "ok", f.delay))
        for when, name, mode, delay in sorted(events):
            await asyncio.sleep(max(0.0, when - time.time()))
            self.devices[name].set_mode(mode, delay)
            log.info("%s -> %s", name, mode)

    async def stop(self) -> None:
        if self._control is not None:
            await self._control.cleanup()
        await self.http.stop()
        for device in self.devices.values():
            with contextlib.suppress(Exception):
                await device.stop()


async def serve(spec: FleetSpec, directory: Path, shard: int, duration: float | None) -> None:
    """Serve until SIGTERM/SIGINT (or `duration` seconds); prints one JSON line when ready."""
    import signal

    room = Room(spec, directory, shard)
    await room.start()
    print(json.dumps({"shard": shard, "devices": len(room.devices)}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    schedule = asyncio.create_task(room.play_schedule())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), duration)
    schedule.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await schedule
    # Silent devices hold connections open on purpose; do not wait on them for long.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(room.stop(), 10)
    log.info("stopped")
