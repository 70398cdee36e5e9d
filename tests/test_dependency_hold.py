"""The dependency hold for every alert of a child, on real peers (issue 26, item 3): a switch
whose SNMP agent freezes (a real snmpd, stopped with SIGSTOP) and an application behind it that
still answers, with 500. The application's alert is not an unreachable child's: its polls
succeed. Its page waits for the switch's answer (polled out of turn), a switch down pauses a
paged application's escalation and red line with one notice in its thread, and both go on
when the switch is back and the application still fails. Real daemon in-process, a real
receiver on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.web.server import serve_on_loopback
from tests.snmp_fixtures import COMMUNITY, SnmpdPeer, switch_values
from tests.test_notify_delivery import Receiver


class App:
    """An HTTP application whose status the test sets (200, then 500)."""

    def __init__(self) -> None:
        self.status = 200
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(status=self.status, text="portal")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._page)
        self._runner, port = await serve_on_loopback(app)
        self.url = f"http://127.0.0.1:{port}/"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def site(
    tmp: Path,
    snmpd: SnmpdPeer,
    app: App,
    receiver: Receiver,
    switch_every: str,
    switch_timeout: str,
    manager_after: str,
    red_line: str,
) -> dict[str, Any]:
    return {
        "targets": [
            {
                "name": "core-switch",
                "kind": "snmp",
                "address": snmpd.address,
                "community": COMMUNITY,
                "retries": 0,
                "profiles": ["switch"],
                "interval": switch_every,
                "timeout": switch_timeout,
                "labels": {"role": "network"},
            },
            {
                "name": "portal",
                "kind": "http",
                "address": app.url,
                "interval": "1s",
                "timeout": "0.8s",
                "depends_on": ["core-switch"],
                "labels": {"role": "application"},
            },
        ],
        "rules": {
            "packs": [],
            "custom": [
                {
                    "name": "switch_down",
                    "metric": "target_up",
                    "targets": ["core-switch"],
                    "condition": {"below": 1},
                    "severity": "critical",
                    "summary": "{target} is down",
                },
                {
                    "name": "app_failing",
                    "metric": "probe_success",
                    "targets": ["portal"],
                    "condition": {"below": 1},
                    "for": "3s",
                    "red_line": red_line,
                    "severity": "critical",
                    "summary": "{target} answers errors",
                },
            ],
        },
        "oncall": {
            "people": [
                {"name": "Li Na", "contacts": ["phone"]},
                {"name": "Wang Fang", "contacts": ["manager_phone"]},
            ],
            "roles": {"manager": ["Wang Fang"]},
        },
        "notify": {
            "channels": {
                "phone": {"url": receiver.url("li")},
                "manager_phone": {"url": receiver.url("manager")},
            },
            "group_wait": "0s",
        },
        "escalation": {
            "policies": [
                {
                    "name": "application",
                    "match": {"role": "application"},
                    "steps": [
                        {"after": "0s", "people": ["Li Na"]},
                        {"after": manager_after, "roles": ["manager"]},
                    ],
                    "red_line": {"roles": ["manager"]},
                },
                {"name": "network", "steps": [{"after": "0s", "people": ["Li Na"]}]},
            ]
        },
        "http": {"port": 0},
        "storage": {"path": str(tmp / "dutyd.db")},
    }


def told(receiver: Receiver) -> list[tuple[str, str]]:
    """(who, title); a resolve's title without its duration ("... after 11s")."""
    return [
        (r["path"].strip("/"), r["body"]["title"].split(" after ")[0]) for r in receiver.received
    ]


async def until(check, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def peers(tmp_path: Path) -> tuple[SnmpdPeer, App, Receiver]:
    snmp_dir = tmp_path / "snmpd"
    snmp_dir.mkdir()
    snmpd = SnmpdPeer(snmp_dir, switch_values())
    app, receiver = App(), Receiver()
    await app.start()
    await receiver.start()
    return snmpd, app, receiver


async def stop(daemon: Daemon, snmpd: SnmpdPeer, app: App, receiver: Receiver) -> None:
    os.kill(snmpd.proc.pid, signal.SIGCONT)
    await daemon.stop()
    snmpd.proc.stop()
    await app.stop()
    await receiver.stop()


async def test_a_failing_app_behind_a_frozen_switch_pages_only_the_switch(tmp_path: Path) -> None:
    """The issue's numbers: switch every 5 s with a 4 s timeout, application every 1 s,
    `for: 3s`, red line 12 s. Before, the application paged 3 s after the fault, 7 s before
    the switch was known down, and crossed its red line to the manager."""
    snmpd, app, receiver = await peers(tmp_path)
    config = site(tmp_path, snmpd, app, receiver, "5s", "4s", "4s", "12s")
    daemon = Daemon(load_from_dict(config, "<test>"))
    await daemon.start()
    try:
        # Frozen right after the switch's first answer: its next poll is seconds away.
        status = daemon.latest.status
        await until(lambda: status["core-switch"].up and status["portal"].up, 10, "both up")
        os.kill(snmpd.proc.pid, signal.SIGSTOP)
        app.status = 500
        broke = time.monotonic()

        # Past the application's `for` (3 s), manager step (4 s) and red line (12 s).
        await asyncio.sleep(13.5)
        assert told(receiver) == [("li", "ALERT: core-switch is down")]
        portal = next(
            a for a in daemon.operations.list_alerts() if a["labels"]["target"] == "portal"
        )
        assert portal["state"] == "firing", portal
        assert portal["suppressed"] == "parent core-switch is down", portal

        # The switch is back; the application still fails: now it pages, with its red line
        # to the manager (its outage is long past 12 s).
        os.kill(snmpd.proc.pid, signal.SIGCONT)
        await until(lambda: len(receiver.received) >= 4, 12, "the pages after the switch")
        await asyncio.sleep(0.5)
        after = told(receiver)[1:]
        assert sorted(after) == [
            ("li", "ALERT: portal answers errors"),
            ("li", "RESOLVED: switch_down on core-switch back to 1 or above"),
            ("manager", "RED LINE CROSSED: portal answers errors"),
        ], (after, time.monotonic() - broke)
    finally:
        await stop(daemon, snmpd, app, receiver)


async def test_a_switch_down_pauses_a_paged_apps_escalation_and_it_resumes(tmp_path: Path) -> None:
    snmpd, app, receiver = await peers(tmp_path)
    config = site(tmp_path, snmpd, app, receiver, "2s", "1s", "6s", "8s")
    daemon = Daemon(load_from_dict(config, "<test>"))
    await daemon.start()
    try:
        status = daemon.latest.status
        await until(lambda: status["core-switch"].up and status["portal"].up, 10, "both up")
        # The application fails alone: the switch answers its out-of-turn poll, it pages.
        app.status = 500
        await until(lambda: len(receiver.received) >= 1, 8, "the application's page")
        paged = time.monotonic()
        assert told(receiver) == [("li", "ALERT: portal answers errors")]

        # Then the switch freezes: known down within 3 s, one notice in the application's
        # thread; its manager step (6 s) and red line (8 s from its start) wait.
        os.kill(snmpd.proc.pid, signal.SIGSTOP)
        await asyncio.sleep(max(0.0, 8.0 - (time.monotonic() - paged)))
        assert sorted(told(receiver)[1:]) == [
            ("li", "ALERT: core-switch is down"),
            (
                "li",
                "EXPLAINED BY PARENT core-switch (DOWN), ESCALATION PAUSED: portal answers errors",
            ),
        ], told(receiver)

        # Back: those paged are told the application still fails, and its escalation goes on
        # (the manager's step and red line, both due by now).
        os.kill(snmpd.proc.pid, signal.SIGCONT)
        await until(lambda: len(receiver.received) >= 7, 8, "the pages after the switch")
        await asyncio.sleep(0.5)
        assert sorted(told(receiver)[3:]) == [
            (
                "li",
                "PARENT core-switch IS BACK, STILL FAILING, ESCALATION RESUMES: "
                "portal answers errors",
            ),
            ("li", "RESOLVED: switch_down on core-switch back to 1 or above"),
            ("manager", "ALERT: portal answers errors"),
            ("manager", "RED LINE CROSSED: portal answers errors"),
        ], told(receiver)
    finally:
        await stop(daemon, snmpd, app, receiver)
