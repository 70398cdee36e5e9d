"""`dutyd demo`: start the simulated devices, monitor them with the duty rules, tell the story."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.agent.demo import DEVICES
from dutyd.agent.demo.base import DemoDevice
from dutyd.agent.demo.phones import DemoPager, demo_duty_sections
from dutyd.core.configtypes import format_duration, parse_duration
from dutyd.core.redact import redact_address
from dutyd.rules.packs import load_pack

log = logging.getLogger("dutyd.demo")

# The duty rules' durations are minutes; the demo plays them in seconds so a visitor sees the
# whole life of an alert. Everything else (thresholds, hysteresis, references) is the real duty
# pack: each entry is the pack rule with only its `for` shortened.
DEMO_FOR: dict[str, str] = {
    "room_temperature_out_of_range": "10s",
    "room_humidity_out_of_range": "10s",
    "disk_almost_full": "15s",
    "disk_full": "10s",
    "application_fault": "10s",
}


def _demo_rule(name: str, for_: str) -> dict[str, Any]:
    rule = next(r for r in load_pack("duty") if r.name == name)
    data = rule.model_dump(by_alias=True, exclude_none=True)
    data["for"] = for_
    demo, was = parse_duration(for_), rule.for_
    data["reference"] = {
        "en": f"{rule.reference.en} (demo: {for_} instead of {format_duration(was)})",
        "zh": f"{rule.reference.zh}（演示：{format_duration(demo, 'zh')}，"
        f"实际为 {format_duration(was, 'zh')}）",
    }
    return data


DEMO_RULE_OVERRIDES: list[dict[str, Any]] = [_demo_rule(n, f) for n, f in DEMO_FOR.items()]


def demo_config(devices: list[DemoDevice], port: int, db_path: Path) -> dict[str, Any]:
    targets: list[dict[str, Any]] = []
    for device in devices:
        targets.extend(device.targets())
    return {
        "targets": targets,
        "rules": {"packs": ["duty"], "custom": DEMO_RULE_OVERRIDES},
        "http": {"listen": "127.0.0.1", "port": port},
        "storage": {"path": str(db_path)},
    }


async def run_demo(
    port: int, speed: float = 1.0, duration: float | None = None, language: str | None = None
) -> int:
    if port == 0:
        port = _free_port()
    devices = [cls(speed=speed) for cls in DEVICES]
    pager = DemoPager()
    with tempfile.TemporaryDirectory(prefix="dutyd-demo-") as tmp:
        started: list[DemoDevice] = []
        try:
            for device in devices:
                await device.start()
                started.append(device)
            # The engineers' phones: a webhook receiver that prints each page with its ack link,
            # so the escalation is seen walking its steps (minutes of the policy as seconds).
            await pager.start()
            config = demo_config(devices, port, Path(tmp) / "demo.db")
            config.update(demo_duty_sections(pager.port, port, language))
            settings = load_from_dict(config, "<demo>")
            daemon = Daemon(settings)
            _print_intro(settings, devices)
            story = asyncio.create_task(_play(devices))
            if duration is not None:
                asyncio.get_running_loop().call_later(duration, daemon.request_stop)
            try:
                await daemon.run()
            finally:
                story.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await story
        finally:
            await pager.stop()
            for device in reversed(started):
                await device.stop()
    return 0


async def _play(devices: list[DemoDevice]) -> None:
    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        for device in devices:
            try:
                device.advance(elapsed)
            except Exception:
                log.exception("demo device %s failed to advance", type(device).__name__)
        await asyncio.sleep(0.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _print_intro(settings: Any, devices: list[DemoDevice]) -> None:
    lines = ["", "dutyd demo: a simulated machine room on loopback, watched by the duty rules", ""]
    lines.append("Watching:")
    for t in settings.targets:
        lines.append(f"  - {t.name:<16} {t.kind:<7} {redact_address(t.address)}")
    story = [line for d in devices for line in d.story()]
    if story:
        lines += ["", "What will happen:"] + [f"  - {s}" for s in story]
    url = f"http://{settings.http.listen}:{settings.http.port}"
    lines += [
        "",
        f"Status:   {url}/status   (the on-call page; API token {_api_token(settings)})",
        f"Metrics:  {url}/metrics   (alerts: dutyd_alert_state)",
        f"Health:   {url}/healthz",
        "Escalation: critical alerts page the on-duty pair at once, the manager after 20 s",
        "            and the director after 40 s until acknowledged (the phones print below).",
        "Stop:     Ctrl-C",
        "",
    ]
    print("\n".join(lines), flush=True)


def _api_token(settings: Any) -> str:
    # The demo's token is made up for this run; printing it lets a visitor acknowledge.
    return str(settings.api.secret() or "")
