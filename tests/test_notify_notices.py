"""Notices to those already paged, through the whole pipeline to a real webhook receiver
(apprise json:// on loopback): an acknowledgement that expires (issue 13, defect 3) and an
alert that starts and stops flapping (defect 4). The events are those the rules engine emits
(`rules.engine`: UNACKNOWLEDGED with the note "acknowledgement expired"; on flapping, the
state change muted with reason "flapping" and then FLAPPING; SETTLED then the held resolve)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

from dutyd.core.records import AlertChange, AlertEvent, AlertState
from dutyd.notify.config import EscalationConfig, OncallConfig
from tests.test_notify_delivery import Receiver, configs, firing, make_service

PEOPLE = {
    "pairs": [["Zhang Wei"]],
    "people": [
        {"name": "Zhang Wei", "contacts": ["zhang"]},
        {"name": "Wang Fang", "contacts": ["wang"]},
    ],
    "roles": {"manager": ["Wang Fang"]},
}


def setup(receiver: Receiver, steps: list[dict[str, Any]], repeat: str) -> tuple[Any, ...]:
    _, _, notify = configs(
        {"zhang": receiver.url("zhang"), "wang": receiver.url("wang")}, [], group_wait=0
    )
    oncall = OncallConfig.model_validate(PEOPLE)
    escalation = EscalationConfig.model_validate(
        {"policies": [{"name": "all", "steps": steps, "repeat": repeat}]}
    )
    return oncall, escalation, notify


def change(event: AlertEvent, what: AlertChange, **kw: Any) -> AlertEvent:
    return dataclasses.replace(event, change=what, timestamp=time.time(), **kw)


def titles(receiver: Receiver, path: str) -> list[str]:
    return [r["body"]["title"] for r in receiver.received if r["path"] == path]


async def test_expired_ack_is_told_with_one_step_and_no_repeat(tmp_path: Path) -> None:
    receiver = Receiver()
    await receiver.start()
    cfg = setup(receiver, [{"after": "0s", "oncall": True}], "0s")
    service, storage, _ = await make_service(tmp_path / "d.db", *cfg)
    try:
        event = firing(1)
        await service(event)
        await service(change(event, AlertChange.ACKNOWLEDGED, actor="Zhang Wei"))
        await receiver.wait_for(2, 5)
        await service(
            change(
                event, AlertChange.UNACKNOWLEDGED, actor="Zhang Wei", note="acknowledgement expired"
            )
        )
        await receiver.wait_for(3, 5)
        assert titles(receiver, "/zhang") == [
            "ALERT: host1 unreachable",
            "ACKNOWLEDGED: host1 unreachable",
            "ACKNOWLEDGEMENT EXPIRED: host1 unreachable",
        ]
    finally:
        await service.stop()
        await storage.close()
        await receiver.stop()


async def test_expired_ack_resumes_escalation_with_one_message_per_person(
    tmp_path: Path,
) -> None:
    receiver = Receiver()
    await receiver.start()
    steps = [{"after": "0s", "oncall": True}, {"after": "2s", "roles": ["manager"]}]
    cfg = setup(receiver, steps, "2s")
    service, storage, _ = await make_service(tmp_path / "d.db", *cfg)
    try:
        event = firing(1)
        await service(event)
        await service(change(event, AlertChange.ACKNOWLEDGED, actor="Zhang Wei"))
        await receiver.wait_for(2, 5)
        await asyncio.sleep(event.timestamp + 4.5 - time.time())
        # The ack expires 4.5 s after firing: step 2 (2 s) and the first reminder (4 s) are
        # both due. Zhang hears the ack expired; Wang, reached for the first time, step 2 only.
        await service(
            change(
                event, AlertChange.UNACKNOWLEDGED, actor="Zhang Wei", note="acknowledgement expired"
            )
        )
        await receiver.wait_for(4, 5)
        await asyncio.sleep(0.5)  # the next reminder is due at 6 s
        assert titles(receiver, "/zhang") == [
            "ALERT: host1 unreachable",
            "ACKNOWLEDGED: host1 unreachable",
            "ACKNOWLEDGEMENT EXPIRED: host1 unreachable",
        ]
        assert titles(receiver, "/wang") == ["ALERT: host1 unreachable"]
        (to_wang,) = [r for r in receiver.received if r["path"] == "/wang"]
        assert "escalation step 2" in to_wang["body"]["message"]
        # Escalation resumed: the next reminder reaches both.
        await receiver.wait_for(6, 5)
        assert titles(receiver, "/zhang")[-1] == "STILL UNACKNOWLEDGED: host1 unreachable"
        assert titles(receiver, "/wang")[-1] == "STILL UNACKNOWLEDGED: host1 unreachable"
    finally:
        await service.stop()
        await storage.close()
        await receiver.stop()


async def test_flapping_is_told_and_its_resolve_held_until_it_settles(tmp_path: Path) -> None:
    receiver = Receiver()
    await receiver.start()
    cfg = setup(receiver, [{"after": "0s", "oncall": True}], "0s")
    service, storage, _ = await make_service(tmp_path / "d.db", *cfg)
    try:
        event = firing(1)
        await service(event)
        await receiver.wait_for(1, 5)
        # The resolve that makes it flapping is muted, then FLAPPING follows (rules.engine).
        resolved = dataclasses.replace(
            event,
            state=AlertState.RESOLVED,
            previous=AlertState.FIRING,
            timestamp=time.time(),
            notify=False,
            muted_reason="flapping",
        )
        await service(resolved)
        await service(change(resolved, AlertChange.FLAPPING))
        await receiver.wait_for(2, 5)
        await asyncio.sleep(0.3)
        assert titles(receiver, "/zhang") == [
            "ALERT: host1 unreachable",
            "FLAPPING, NOTIFICATIONS HELD: host1 unreachable",
        ]
        # Fires again while flapping: muted, nothing sent.
        again = dataclasses.replace(
            event, timestamp=time.time(), notify=False, muted_reason="flapping"
        )
        await service(again)
        # Settles while firing: told, and escalation resumes.
        await service(change(again, AlertChange.SETTLED))
        await receiver.wait_for(3, 5)
        # Then flaps again and settles resolved: the held resolve goes out after settling,
        # once (the resolve itself says it is over).
        flapped = dataclasses.replace(resolved, timestamp=time.time())
        await service(flapped)
        await service(change(flapped, AlertChange.FLAPPING))
        await receiver.wait_for(4, 5)
        await service(change(flapped, AlertChange.SETTLED))
        await service(dataclasses.replace(flapped, timestamp=time.time(), notify=True))
        await receiver.wait_for(5, 5)
        await asyncio.sleep(0.3)
        assert titles(receiver, "/zhang") == [
            "ALERT: host1 unreachable",
            "FLAPPING, NOTIFICATIONS HELD: host1 unreachable",
            "SETTLED, NOTIFICATIONS RESUME: host1 unreachable",
            "FLAPPING, NOTIFICATIONS HELD: host1 unreachable",
            "RESOLVED: host1 unreachable",
        ]
    finally:
        await service.stop()
        await storage.close()
        await receiver.stop()


def test_every_message_kind_has_a_title_in_every_language() -> None:
    from dutyd.notify.escalation import PageKind
    from dutyd.notify.templates import TEXT

    for language, text in TEXT.items():
        missing = [str(k) for k in PageKind if str(k) not in text]
        assert not missing, (language, missing)


# -- the same through the real daemon: the engine's own events, the API's ack ----------------


def _daemon_config(portal: Any, receiver: Receiver, **rules: Any) -> dict[str, Any]:
    from tests.test_notify_chaos import daemon_config

    cfg = daemon_config(portal, receiver, 1, retry_initial="0.2s")
    cfg["rules"].update(rules)
    cfg["api"] = {"token": "chaos-test-token"}
    cfg["oncall"]["pairs"] = [cfg["oncall"]["pairs"][0][:1]]  # one person on duty: /p0
    return cfg


def _post(daemon: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    import json
    import urllib.request

    req = urllib.request.Request(daemon.url + path, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("X-Dutyd-Token", "chaos-test-token")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(json.loads(resp.read()))


async def test_daemon_tells_an_expired_ack(tmp_path: Path) -> None:
    from tests.daemon_fixtures import DaemonProcess
    from tests.test_notify_chaos import Portal

    portal = Portal()
    receiver = Receiver()
    await receiver.start()
    portal.set(500)
    daemon = await asyncio.to_thread(DaemonProcess, tmp_path, _daemon_config(portal, receiver))
    try:
        await receiver.wait_for(1, 30)
        await asyncio.to_thread(
            _post,
            daemon,
            "/api/v1/ack",
            {"alert": "app_failing", "actor": "Li Na", "note": "on it", "expires_in": "2s"},
        )
        await receiver.wait_for(3, 20)
        await asyncio.sleep(0.5)
        assert titles(receiver, "/p0") == [
            "ALERT: app0 is failing",
            "ACKNOWLEDGED: app0 is failing",
            "ACKNOWLEDGEMENT EXPIRED: app0 is failing",
        ]
    finally:
        await asyncio.to_thread(daemon.stop)
        await receiver.stop()
        portal.stop()


async def test_daemon_holds_a_flapping_resolve_until_it_settles(tmp_path: Path) -> None:
    from tests.daemon_fixtures import DaemonProcess
    from tests.test_notify_chaos import Portal

    portal = Portal()
    receiver = Receiver()
    await receiver.start()
    cfg = _daemon_config(portal, receiver, flapping={"changes": 2, "within": "60s", "settle": "3s"})
    portal.set(500)
    daemon = await asyncio.to_thread(DaemonProcess, tmp_path, cfg)
    try:
        await receiver.wait_for(1, 30)
        portal.set(200)  # the resolve is the second change: flapping
        await receiver.wait_for(2, 20)
        resolved_at = time.monotonic()
        await receiver.wait_for(3, 20)  # the held resolve, once it has settled
        assert time.monotonic() - resolved_at > 1.5  # held, not sent at once
        await asyncio.sleep(0.5)
        assert titles(receiver, "/p0") == [
            "ALERT: app0 is failing",
            "FLAPPING, NOTIFICATIONS HELD: app0 is failing",
            "RESOLVED: app0 works again",
        ]
    finally:
        await asyncio.to_thread(daemon.stop)
        await receiver.stop()
        portal.stop()
