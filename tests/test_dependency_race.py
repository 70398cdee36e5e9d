"""Reachability: a switch and the application behind it stop answering at the same moment.
With the poll phases set against us (the child notices first, the parent's next poll is
seconds away), the child must not page before its parent is known down: one outage, one page.
Real daemon in-process, real HTTP devices and a real receiver on loopback."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from tests.dependency_fixtures import application_paging, application_target
from tests.http_fixtures import HttpApplication
from tests.paging_fixtures import li_na_paged, target_down_rule
from tests.test_notify_delivery import Receiver


def settings(tmp: Path, switch: HttpApplication, app: HttpApplication, receiver: Receiver) -> dict:
    return {
        "targets": [
            # The parent: polled every 5 s, as switches are, with a 1 s timeout.
            {
                "name": "core-switch",
                "kind": "http",
                "address": switch.url,
                "interval": "5s",
                "timeout": "1s",
            },
            # The child: polled every 0.5 s, and it fires after 1 s down.
            {
                "name": "portal",
                "kind": "http",
                "address": app.url,
                "interval": "0.5s",
                "timeout": "0.3s",
                "depends_on": ["core-switch"],
            },
        ],
        "rules": {
            "packs": [],
            "custom": [
                target_down_rule("target_down", for_="1s"),
            ],
        },
        **li_na_paged(receiver),
        "http": {"port": 0},
        "storage": {"path": str(tmp / "dutyd.db")},
    }


async def both_hang_right_after_a_switch_poll(
    switch: HttpApplication, app: HttpApplication
) -> float:
    """Both healthy, then both stop answering just after a poll of the switch answered (its
    next scheduled poll a whole interval away: the phases against us); when they broke."""
    for _ in range(150):
        if switch.polled_at and app.polled_at:
            break
        await asyncio.sleep(0.1)
    switch.polled.clear()
    await asyncio.wait_for(switch.polled.wait(), 10)
    await asyncio.sleep(0.1)  # that poll answered
    switch.hang = app.hang = True
    return time.monotonic()


async def test_one_outage_one_page_whatever_the_poll_phases(tmp_path: Path) -> None:
    switch, app, receiver = HttpApplication(), HttpApplication(), Receiver()
    for peer in (switch, app, receiver):
        await peer.start()
    daemon = Daemon(load_from_dict(settings(tmp_path, switch, app, receiver), "<test>"))
    await daemon.start()
    try:
        broke = await both_hang_right_after_a_switch_poll(switch, app)

        # The child notices within 0.5 s and would fire at ~1.5 s; the switch's scheduled
        # poll is ~5 s away. Its out-of-turn poll must come right after the child's failure.
        await asyncio.sleep(4.0)
        early = [t - broke for t in switch.polled_at if t > broke]
        assert early and early[0] < 1.5, early
        await receiver.wait_for(1, 6)
        await asyncio.sleep(1.0)
        bodies = [json.dumps(r["body"]) for r in receiver.received]
        assert len(bodies) == 1, bodies
        assert "core-switch" in bodies[0] and "portal is down" not in bodies[0]
        portal = next(
            a for a in daemon.operations.list_alerts() if a["labels"]["target"] == "portal"
        )
        assert portal["state"] == "firing" and "core-switch is down" in portal["suppressed"]
    finally:
        await daemon.stop()
        for peer in (switch, app, receiver):
            await peer.stop()


def issue_settings(
    tmp: Path, switch: HttpApplication, app: HttpApplication, receiver: Receiver
) -> dict:
    """The issue's numbers: the switch polled every 5 s with a 4 s timeout; the application
    behind it polled every 1 s, `for: 3s`, with a red line and a manager step on its policy."""
    down = {"metric": "target_up", "condition": {"below": 1}, "severity": "critical"}
    return {
        "targets": [
            {
                "name": "core-switch",
                "kind": "http",
                "address": switch.url,
                "interval": "5s",
                "timeout": "4s",
            },
            application_target(app.url),
        ],
        "rules": {
            "packs": [],
            "custom": [
                {**down, "name": "switch_down", "targets": ["core-switch"], "for": "3s"},
                {
                    **down,
                    "name": "app_down",
                    "targets": ["portal"],
                    "for": "3s",
                    # Crossed within the test if the app's outage counted while its parent
                    # is down.
                    "red_line": "5s",
                    "summary": "{target} is down",
                },
            ],
        },
        **application_paging(receiver, "4s"),
        "http": {"port": 0},
        "storage": {"path": str(tmp / "dutyd.db")},
    }


async def test_issue_numbers_one_page_and_no_red_line_to_the_manager(tmp_path: Path) -> None:
    """Issue 13, defect 9, with its own numbers and the phases against us: the switch was
    polled just before both stopped answering (its next scheduled poll is 5 s away), so the
    application fails first. One page, the switch's; neither the application's manager step
    nor its red line pages the manager while its parent is down."""
    switch, app, receiver = HttpApplication(), HttpApplication(), Receiver()
    for peer in (switch, app, receiver):
        await peer.start()
    daemon = Daemon(load_from_dict(issue_settings(tmp_path, switch, app, receiver), "<test>"))
    await daemon.start()
    try:
        broke = await both_hang_right_after_a_switch_poll(switch, app)

        # The application fails within ~1.8 s (poll + timeout) and would fire 3 s later; the
        # switch answers nothing for 4 s. Its out-of-turn poll comes right after the app's
        # failure, not at its scheduled time.
        await asyncio.sleep(3.0)
        early = [t - broke for t in switch.polled_at if t > broke]
        assert early and early[0] < 2.5, early

        # Switch known down at ~6 s, fires 3 s later; the app's would-be step 2 (4 s) and red
        # line (5 s) are long past by 20 s.
        await receiver.wait_for(1, 15)
        await asyncio.sleep(max(0.0, 20 - (time.monotonic() - broke)))
        pages = [(r["path"], r["body"]["title"]) for r in receiver.received]
        assert len(pages) == 1, pages
        (path, title) = pages[0]
        assert path == "/li" and "core-switch" in title and "portal" not in title, pages
        assert not [p for p in pages if p[0] == "/manager"], pages
        portal = next(
            a for a in daemon.operations.list_alerts() if a["labels"]["target"] == "portal"
        )
        assert portal["state"] == "firing" and "core-switch is down" in portal["suppressed"]
        red = await daemon.storage.log.read(kinds=["escalation.red_line"])
        assert red == [], red
    finally:
        await daemon.stop()
        for peer in (switch, app, receiver):
            await peer.stop()
