"""A summary's "down for N" is rendered when it is shown or sent, not frozen when the alert
went pending (issue 13, defect 10c: the status page said "down for 0s" while the card said
30 s). Real daemon in-process, a real dead TCP port as the target, a real receiver."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp

from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from tests.peers import free_port
from tests.test_notify_delivery import Receiver

TOKEN = "durations-token"
FOR = 2.0  # seconds pending before it fires
STEP_2 = 3.0  # seconds after firing: the second page


def settings(tmp: Path, receiver: Receiver) -> dict:
    return {
        "targets": [
            {
                "name": "portal",
                "kind": "tcp",
                "address": f"127.0.0.1:{free_port()}",  # nothing listens: down from the start
                "interval": "0.5s",
                "timeout": "0.3s",
            }
        ],
        "rules": {
            "packs": [],
            "custom": [
                {
                    "name": "portal_down",
                    "metric": "target_up",
                    "condition": {"below": 1},
                    "for": f"{FOR:g}s",
                    "severity": "critical",
                    "summary": "{target} is down for {duration}",
                }
            ],
        },
        "oncall": {"people": [{"name": "Li Na", "contacts": ["phone"]}]},
        "notify": {"channels": {"phone": {"url": receiver.url("li")}}, "group_wait": "0s"},
        "escalation": {
            "policies": [
                {
                    "name": "all",
                    "steps": [
                        {"after": "0s", "people": ["Li Na"]},
                        {"after": f"{STEP_2:g}s", "people": ["Li Na"]},
                    ],
                }
            ]
        },
        "api": {"token": TOKEN},
        "http": {"port": 0},
        "storage": {"path": str(tmp / "dutyd.db")},
    }


def seconds(text: str) -> int:
    """The N of "down for N" in a summary (format_duration: 5s, 1m5s; in Chinese 5秒, 1分5秒)."""
    m = re.search(r"is down for (?:(\d+)(?:m|分钟?))?(?:(\d+)(?:s|秒))?", text)
    assert m is not None and (m.group(1) or m.group(2)), text
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


async def test_down_for_grows_in_the_api_and_in_later_pages(tmp_path: Path) -> None:
    receiver = Receiver()
    await receiver.start()
    daemon = Daemon(load_from_dict(settings(tmp_path, receiver), "<test>"))
    await daemon.start()
    try:
        async with aiohttp.ClientSession(
            daemon.http.url, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as http:

            async def alert() -> dict:
                async with http.get("/api/v1/alerts") as r:
                    assert r.status == 200
                    (view,) = (await r.json())["alerts"]
                    return view

            # The page of step 1, sent as it fired: the time it has been down by then, not
            # the "0s" of when it went pending.
            await receiver.wait_for(1, 15)
            first = receiver.received[0]["body"]
            assert first["title"].startswith("ALERT: portal is down for"), first
            assert seconds(first["title"]) >= FOR - 1, first["title"]

            # The API, asked twice two seconds apart: the duration moves with the clock.
            view = await alert()
            assert view["state"] == "firing"
            shown = seconds(view["summary"])
            assert shown >= FOR - 1, view["summary"]
            await asyncio.sleep(2.0)
            later = await alert()
            assert seconds(later["summary"]) >= shown + 1, (view["summary"], later["summary"])
            # (One text for both languages in this rule; the Chinese view says it in 秒.)
            assert seconds(later["summaries"]["zh"]) >= shown + 1, later["summaries"]

            # Step 2, three seconds after the first page: the later page says so.
            await receiver.wait_for(2, 10)
            second = receiver.received[1]["body"]
            assert "escalation step 2" in second["message"], second
            assert seconds(second["title"]) >= seconds(first["title"]) + STEP_2 - 1, (
                first["title"],
                second["title"],
            )
            assert seconds(second["message"]) == seconds(second["title"]), second
    finally:
        await daemon.stop()
        await receiver.stop()
