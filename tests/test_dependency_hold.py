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

from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from tests.daemon_fixtures import DaemonProcess
from tests.dependency_fixtures import application_paging, application_target
from tests.http_fixtures import HttpApplication
from tests.peers import free_port
from tests.snmp_fixtures import COMMUNITY, SnmpdPeer, switch_values
from tests.test_notify_delivery import Receiver


def site(
    tmp: Path,
    snmpd: SnmpdPeer,
    app: HttpApplication,
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
            application_target(app.url),
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
        **application_paging(receiver, manager_after),
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


async def peers(tmp_path: Path) -> tuple[SnmpdPeer, HttpApplication, Receiver]:
    snmp_dir = tmp_path / "snmpd"
    snmp_dir.mkdir()
    snmpd = SnmpdPeer(snmp_dir, switch_values())
    app, receiver = HttpApplication(), Receiver()
    await app.start()
    await receiver.start()
    return snmpd, app, receiver


async def stop(daemon: Daemon, snmpd: SnmpdPeer, app: HttpApplication, receiver: Receiver) -> None:
    os.kill(snmpd.proc.pid, signal.SIGCONT)
    await daemon.stop()
    snmpd.proc.stop()
    await app.stop()
    await receiver.stop()


async def switch_back_and_escalation_resumes(snmpd: SnmpdPeer, receiver: Receiver) -> None:
    """The switch is back, the paged application still fails: those paged are told so, and
    its escalation goes on (the manager's step and red line, both due by now)."""
    os.kill(snmpd.proc.pid, signal.SIGCONT)
    await until(lambda: len(receiver.received) >= 7, 8, "the pages after the switch")
    await asyncio.sleep(0.5)
    assert sorted(told(receiver)[3:]) == [
        (
            "li",
            "PARENT core-switch IS BACK, STILL FAILING, ESCALATION RESUMES: portal answers errors",
        ),
        ("li", "RESOLVED: switch_down on core-switch back to 1 or above"),
        ("manager", "ALERT: portal answers errors"),
        ("manager", "RED LINE CROSSED: portal answers errors"),
    ], told(receiver)


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

        await switch_back_and_escalation_resumes(snmpd, receiver)
    finally:
        await stop(daemon, snmpd, app, receiver)


async def test_a_restarted_dutyd_keeps_an_explained_alert_paused_and_resumes_it(
    tmp_path: Path,
) -> None:
    """A real `dutyd run` stopped and started again while the switch is down: the paged
    application's escalation stays paused (no manager step, no red line while the switch is
    down, however long ago they came due), and when the switch is back and the application
    still fails, one "resumed" notice and the escalation goes on, as in a daemon never
    restarted. Before, the restarted daemon took the alert up as an ordinary one: the manager
    was paged during the switch's outage and no "resumed" notice followed."""
    snmpd, app, receiver = await peers(tmp_path)
    config = site(tmp_path, snmpd, app, receiver, "2s", "1s", "6s", "9s")
    config["http"]["port"] = free_port()
    dutyd = await asyncio.to_thread(DaemonProcess, tmp_path, config)
    try:
        app.status = 500
        await until(lambda: len(receiver.received) >= 1, 12, "the application's page")
        paged = time.monotonic()
        assert told(receiver) == [("li", "ALERT: portal answers errors")]
        os.kill(snmpd.proc.pid, signal.SIGSTOP)
        await until(lambda: len(receiver.received) >= 3, 6, "the switch's page and the notice")
        explained = (
            "li",
            "EXPLAINED BY PARENT core-switch (DOWN), ESCALATION PAUSED: portal answers errors",
        )
        assert sorted(told(receiver)[1:]) == [("li", "ALERT: core-switch is down"), explained]

        code, _ = await asyncio.to_thread(dutyd.terminate)
        assert code == 0, dutyd.peer.log()[-3000:]
        dutyd = await asyncio.to_thread(DaemonProcess, tmp_path, config)
        # Restarted; the switch still down past the manager's step (6 s after the page) and
        # the red line (9 s from the start), and past the restarted daemon's first polls.
        await asyncio.sleep(max(4.0, 10.0 - (time.monotonic() - paged)))
        assert len(receiver.received) == 3, (told(receiver), dutyd.peer.log()[-6000:])

        await switch_back_and_escalation_resumes(snmpd, receiver)
    finally:
        os.kill(snmpd.proc.pid, signal.SIGCONT)
        await asyncio.to_thread(dutyd.stop)
        snmpd.proc.stop()
        await app.stop()
        await receiver.stop()
