"""A reload must never silently drop what is watched (against the real daemon process, a real
loopback receiver counting pages): an emptied file is refused, a removed target ends its
alerts with a notice to those paged, and zero targets is not ready."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

from tests.daemon_fixtures import DaemonProcess
from tests.peers import free_port
from tests.test_notify_delivery import Receiver

TOKEN = "reload-test-token"
READ = {"X-Dutyd-Token": TOKEN}


def config(receiver: Receiver, targets: list[str], dead_port: int) -> dict[str, Any]:
    return {
        "targets": [
            {
                "name": name,
                "kind": "tcp",
                "address": f"127.0.0.1:{dead_port}",
                "interval": "0.5s",
                "timeout": "0.3s",
            }
            for name in targets
        ],
        "rules": {
            "packs": [],
            "custom": [
                {
                    "name": "node_down",
                    "metric": "target_up",
                    "condition": {"below": 1},
                    "for": "0s",
                    "severity": "critical",
                    "summary": "{target} is down",
                }
            ],
        },
        "oncall": {"people": [{"name": "Li Na", "contacts": ["phone"]}]},
        "notify": {"channels": {"phone": {"url": receiver.url("li")}}, "group_wait": "0s"},
        "escalation": {"policies": [{"name": "all", "steps": [{"people": ["Li Na"]}]}]},
        "api": {"token": TOKEN},
    }


def firing(daemon: DaemonProcess) -> set[str]:
    status, body = daemon.get("/api/v1/alerts?state=firing", READ)
    assert status == 200, body
    return {a["labels"]["target"] for a in json.loads(body)["alerts"]}


async def wait(check, within: float, what: str) -> None:
    for _ in range(int(within / 0.2)):
        if check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_reload_to_empty_is_refused_and_removed_targets_end_with_a_notice(
    tmp_path: Path,
) -> None:
    receiver = Receiver()
    await receiver.start()
    dead = free_port()
    daemon = DaemonProcess(tmp_path, config(receiver, ["sw-a", "sw-b"], dead))
    try:
        await wait(lambda: firing(daemon) == {"sw-a", "sw-b"}, 20, "both alerts firing")
        await receiver.wait_for(2, 10)
        pages = len(receiver.received)

        # `: > dutyd.yaml; kill -HUP`: refused, both alerts stay, still ready.
        daemon.config_path.write_text("")
        daemon.signal(signal.SIGHUP)
        await wait(
            lambda: (
                "config.reload_rejected" in daemon.get("/api/v1/log", READ)[1]
                or "config.reload_rejected" in daemon.peer.log()
            ),
            10,
            "the empty file refused",
        )
        assert "write `targets: []`" in daemon.peer.log()
        assert firing(daemon) == {"sw-a", "sw-b"}
        assert daemon.get("/readyz")[0] == 200

        # A target removed: its alert resolves, and the person paged is told why.
        daemon.write_config(config(receiver, ["sw-a"], dead))
        daemon.signal(signal.SIGHUP)
        await wait(lambda: firing(daemon) == {"sw-a"}, 10, "sw-b no longer firing")
        await receiver.wait_for(pages + 1, 10)
        notice = [r for r in receiver.received[pages:] if "sw-b" in json.dumps(r["body"])]
        assert notice, receiver.received[pages:]
        assert "no longer watched" in json.dumps(notice[0]["body"]).lower()
        assert "removed from the configuration" in json.dumps(notice[0]["body"])

        # An explicit `targets: []` is obeyed, and nothing watched is not ready.
        explicit = config(receiver, [], dead)
        daemon.write_config(explicit)
        assert "targets: []" in daemon.config_path.read_text()
        daemon.signal(signal.SIGHUP)
        await wait(lambda: daemon.get("/readyz")[0] == 503, 10, "not ready")
        assert "no targets" in daemon.get("/readyz")[1]
        assert firing(daemon) == set()
        ids = receiver.ids()
        assert len(ids) == len(set(ids)), "a page went out twice"
    finally:
        daemon.stop()
        await receiver.stop()
