"""Run the real `dutyd` daemon as a subprocess and read its /metrics over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

from dutyd.core.clock import FakeClock
from tests.peers import PeerProcess, free_port, wait_for_tcp


class DaemonProcess:
    def __init__(
        self,
        tmp: Path,
        config: dict,
        env: dict[str, str] | None = None,
        wrapper: list[str] | None = None,
        piped: bool = False,
    ) -> None:
        """`wrapper`: a command the daemon runs under (e.g. nsenter into a mount namespace);
        it must exec the daemon, so the PID stopped is the daemon's. `piped`: see PeerProcess."""
        self.tmp = tmp
        self.port = config.setdefault("http", {}).setdefault("port", free_port())
        config.setdefault("storage", {"path": str(tmp / "dutyd.db")})
        self.config_path = tmp / "dutyd.yaml"
        self.write_config(config)
        self.peer = PeerProcess(
            [
                *(wrapper or []),
                sys.executable,
                "-m",
                "dutyd.agent.cli",
                "run",
                "-c",
                str(self.config_path),
            ],
            tmp,
            env=env,
            log_name="dutyd.log",
            piped=piped,
        )
        try:
            wait_for_tcp(self.port, timeout=20)
        except TimeoutError:
            self.peer.stop()
            raise AssertionError(f"dutyd did not start:\n{self.peer.log()}") from None

    def write_config(self, config: dict) -> None:
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> str:
        status, body = self.get("/metrics")
        assert status == 200, body
        return body

    def metric_value(self, name: str, **labels: str) -> float | None:
        """The value of the first series of `name` whose labels include `labels`."""
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line.split("}")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return None

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if check():
                    return
            time.sleep(0.2)
        raise AssertionError(
            f"timed out waiting for {what}\n--- dutyd log ---\n{self.peer.log()[-6000:]}"
        )

    def signal(self, sig: int) -> None:
        self.peer.proc.send_signal(sig)

    def terminate(self, timeout: float = 5.0) -> tuple[int, float]:
        t0 = time.monotonic()
        self.peer.proc.send_signal(signal.SIGTERM)
        code = self.peer.proc.wait(timeout)
        took = time.monotonic() - t0
        self.peer.stop()
        return code, took

    def stop(self) -> None:
        self.peer.stop()


async def run_until(
    clock: FakeClock, done: Callable[[], bool], within: float = 20.0, step: float = 0.05
) -> None:
    """Advance the fake clock `step` at a time (letting the loop run between) until `done`;
    fail after `within` real seconds."""
    deadline = time.monotonic() + within
    while not done():
        assert time.monotonic() < deadline, "not done in time"
        await clock.advance(step)
        await asyncio.sleep(0.05)


def room_sensor_target(port: int, interval: str = "0.5s") -> dict:
    """The config entry of a room A temperature/humidity sensor on a loopback Modbus port."""
    return {
        "name": "room-a-sensor",
        "kind": "modbus",
        "address": f"127.0.0.1:{port}",
        "interval": interval,
        "timeout": "1s",
        "labels": {"site": "hq", "room": "A"},
        "registers": [
            {
                "name": "room_temperature_celsius",
                "address": 0,
                "type": "int16",
                "scale": 0.1,
                "unit": "°C",
            },
            {
                "name": "room_humidity_percent",
                "address": 1,
                "type": "uint16",
                "scale": 0.1,
                "unit": "%RH",
            },
        ],
    }
