"""Delivery through apprise json:// to a real HTTP receiver on loopback: grouping, the outbox
through a receiver outage (every message arrives, none twice after dedup by id), failover to
the next contact, and a SIGKILLed sender whose outbox is delivered after restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from dutyd.core.records import AlertEvent, AlertState, labels_of
from dutyd.core.tasks import LoopWatch
from dutyd.exporters.instrumentation import Instrumentation
from dutyd.notify import service as service_module
from dutyd.notify.config import EscalationConfig, NotifyConfig, OncallConfig
from dutyd.notify.service import NotifyService
from dutyd.storage.sqlite import SqliteStorage
from tests.peers import free_port


class Receiver:
    """A webhook receiver: records every POST (JSON body and headers)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[dict[str, Any]] = []
        self.arrived: list[float] = []
        self.status = 200
        self._runner: web.AppRunner | None = None
        self.got = asyncio.Event()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append({"path": request.path, "body": body, "headers": dict(request.headers)})
        self.arrived.append(time.perf_counter())
        self.got.set()
        return web.Response(status=self.status, text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def ids(self) -> list[str]:
        return [r["body"].get("message_id", "") for r in self.received]

    async def wait_for(self, count: int, within: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while len(self.received) < count:
                    self.got.clear()
                    await self.got.wait()
        assert len(self.received) >= count, f"got {len(self.received)} of {count}"


def configs(
    contacts: dict[str, str], person_contacts: list[str], **notify: Any
) -> tuple[OncallConfig, EscalationConfig, NotifyConfig]:
    oncall = OncallConfig.model_validate(
        {
            "pairs": [["Zhang Wei"]],
            "people": [{"name": "Zhang Wei", "language": "zh", "contacts": person_contacts}],
        }
    )
    escalation = EscalationConfig.model_validate(
        {"policies": [{"name": "all", "steps": [{"after": 0, "oncall": True}]}]}
    )
    cfg = NotifyConfig.model_validate(
        {
            "channels": {name: {"url": url} for name, url in contacts.items()},
            "retry_initial": 0.05,
            "retry_max": 0.3,
            "group_wait": 0.05,
            **notify,
        }
    )
    return oncall, escalation, cfg


def firing(n: int, site: str = "hq", ts: float | None = None) -> AlertEvent:
    now = ts or time.time()
    return AlertEvent(
        fingerprint=f"fp{n}",
        rule="host_down",
        labels=labels_of({"target": f"host{n}", "site": site}),
        state=AlertState.FIRING,
        previous=AlertState.PENDING,
        severity="critical",
        summary=f"host{n} unreachable",
        value=0.0,
        active_since=now,
        timestamp=now,
    )


async def make_service(
    db: Path, *cfg: Any
) -> tuple[NotifyService, SqliteStorage, CollectorRegistry]:
    storage = SqliteStorage(db)
    await storage.open()
    registry = CollectorRegistry()
    service = NotifyService(*cfg, storage, Instrumentation(registry))
    await service.start()
    return service, storage, registry


async def test_json_delivery_grouped_by_site(tmp_path: Path) -> None:
    receiver = Receiver()
    await receiver.start()
    service, storage, registry = await make_service(
        tmp_path / "d.db", *configs({"hook": receiver.url()}, ["hook"])
    )
    try:
        now = time.time()
        # Three alerts of one site starting together: one message. Another site: its own.
        for n in range(3):
            await service(firing(n, "hq", now))
        await service(firing(9, "branch", now))
        await receiver.wait_for(2, 5)
        await asyncio.sleep(0.2)
        assert len(receiver.received) == 2
        bodies = sorted((r["body"] for r in receiver.received), key=lambda b: b["title"])
        assert "3 条告警" in bodies[0]["title"] and "host2 unreachable" in bodies[0]["message"]
        assert bodies[1]["title"] == "告警: host9 unreachable"
        for r in receiver.received:
            assert r["headers"]["X-Dutyd-Message-Id"] == r["body"]["message_id"]
            assert f"编号: {r['body']['message_id']}" in r["body"]["message"]
        sent = registry.get_sample_value("dutyd_notifications_sent_total", {"channel": "hook"})
        assert sent == 2
        log = await storage.log.read(kinds=["notify.sent"])
        assert len(log) == 2
        assert (await service.outbox.stats(time.time())).depth == 0
    finally:
        await service.stop()
        await storage.close()
        await receiver.stop()


async def test_receiver_down_then_up_every_message_once(tmp_path: Path) -> None:
    receiver = Receiver()
    service, storage, registry = await make_service(
        tmp_path / "d.db", *configs({"hook": receiver.url()}, ["hook"], group_wait=0)
    )
    try:
        now = time.time()
        for n in range(20):
            await service(firing(n, f"site{n}", now))
        await asyncio.sleep(1.0)  # receiver down: connection refused, retries back off
        depth = registry.get_sample_value("dutyd_notify_outbox_depth")
        assert depth == 20
        assert (registry.get_sample_value("dutyd_notify_outbox_oldest_age_seconds") or 0) > 0.5
        failed = registry.get_sample_value("dutyd_notifications_failed_total", {"channel": "hook"})
        assert failed and failed >= 20
        await receiver.start()
        await receiver.wait_for(20, 10)
        await asyncio.sleep(0.3)
        ids = receiver.ids()
        assert len(set(ids)) == 20  # every message arrived; dedup by id leaves each once
        assert len(ids) == len(set(ids))
        assert (await service.outbox.stats(time.time())).depth == 0
        retries = await storage.log.read(kinds=["notify.retry"])
        assert retries and "error" in retries[0].data
    finally:
        await service.stop()
        await storage.close()
        await receiver.stop()


async def test_failover_to_the_next_contact(tmp_path: Path) -> None:
    receiver = Receiver()
    await receiver.start()
    dead = f"json://127.0.0.1:{free_port()}/nobody"
    service, storage, _ = await make_service(
        tmp_path / "d.db",
        *configs({"sms": dead, "hook": receiver.url("backup")}, ["sms", "hook"], failover_after=2),
    )
    try:
        await service(firing(1))
        await receiver.wait_for(1, 10)
        assert receiver.received[0]["path"] == "/backup"
        failover = await storage.log.read(kinds=["notify.failover"])
        assert failover[0].data["channel"] == "sms" and failover[0].data["to"] == "hook"
    finally:
        await service.stop()
        await storage.close()
        await receiver.stop()


# -- SIGKILL: a subprocess fills the outbox while the receiver is down, and is killed. ----------


def _worker(db: str, url: str, count: int) -> None:
    async def main() -> None:
        service, _, _ = await make_service(
            Path(db), *configs({"hook": url}, ["hook"], group_wait=0)
        )
        now = time.time()
        for n in range(count):
            await service(firing(n, f"site{n}", now))
        for _ in range(1000):
            if (await service.outbox.stats(time.time())).depth >= count:
                break
            await asyncio.sleep(0.02)
        print("queued", flush=True)
        await asyncio.sleep(60)  # killed long before this

    asyncio.run(main())


def _fill_and_kill(db: Path, url: str, count: int) -> None:
    """Run the worker until its outbox holds `count` rows, then SIGKILL it."""
    root = Path(__file__).parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.test_notify_delivery", str(db), url, str(count)],
        stdout=subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the worker prints "queued" (or dies: b"")
        assert line.strip() == b"queued"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


async def test_sigkill_with_full_outbox_then_restart(tmp_path: Path) -> None:
    receiver = Receiver()
    db = tmp_path / "d.db"
    count = 30
    await asyncio.to_thread(_fill_and_kill, db, receiver.url(), count)
    await receiver.start()
    service, storage, _ = await make_service(db, *configs({"hook": receiver.url()}, ["hook"]))
    try:
        await receiver.wait_for(count, 10)
        await asyncio.sleep(0.3)
        ids = receiver.ids()
        assert len(ids) == count and len(set(ids)) == count
        titles = {json.dumps(r["body"]["title"], ensure_ascii=False) for r in receiver.received}
        assert len(titles) == count
    finally:
        await service.stop()
        await storage.close()
        await receiver.stop()


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))


async def test_restart_resumes_escalation_without_repeating_pages(tmp_path: Path) -> None:
    """After a restart the daemon hands over the alerts still firing: steps already sent are
    not sent again, and the later steps still come."""
    receiver = Receiver()
    await receiver.start()
    oncall, _, notify = configs({"hook": receiver.url()}, ["hook"], group_wait=0)
    oncall = OncallConfig.model_validate(
        {
            "pairs": [["Zhang Wei"]],
            "people": [
                {"name": "Zhang Wei", "contacts": ["hook"]},
                {"name": "Wang Fang", "contacts": ["hook"]},
            ],
            "roles": {"manager": ["Wang Fang"]},
        }
    )
    escalation = EscalationConfig.model_validate(
        {
            "policies": [
                {
                    "name": "all",
                    "steps": [
                        {"after": 0, "oncall": True},
                        {"after": "1500ms", "roles": ["manager"]},
                    ],
                }
            ]
        }
    )
    event = firing(1)
    view = {
        "fingerprint": event.fingerprint,
        "rule": event.rule,
        "labels": dict(event.labels),
        "severity": event.severity,
        "state": "firing",
        "summary": event.summary,
        "value": 0.0,
        "active_since": event.active_since,
        "fired_at": event.timestamp,
        "acknowledged": None,
        "silenced_by": [],
        "suppressed": "",
    }
    try:
        service, storage, _ = await make_service(tmp_path / "d.db", oncall, escalation, notify)
        await service(event)
        await receiver.wait_for(1, 5)
        await service.stop()
        await storage.close()
        service, storage, _ = await make_service(tmp_path / "d.db", oncall, escalation, notify)
        service.resume([view])
        await receiver.wait_for(2, 5)
        await asyncio.sleep(0.3)
        assert len(receiver.received) == 2  # step 1 once, then step 2 (the manager)
        assert "escalation step 2" in receiver.received[1]["body"]["message"]
        await service.stop()
        await storage.close()
    finally:
        await receiver.stop()


async def test_reload_moves_queued_pages_to_the_new_channel(tmp_path: Path) -> None:
    receiver = Receiver()
    await receiver.start()
    dead = f"json://127.0.0.1:{free_port()}/old"
    oncall, escalation, notify = configs({"old": dead}, ["old"], group_wait=0)
    service, storage, _ = await make_service(tmp_path / "d.db", oncall, escalation, notify)
    try:
        await service(firing(1))
        for _ in range(100):
            if await storage.log.read(kinds=["notify.retry"]):
                break
            await asyncio.sleep(0.02)
        new_oncall, _, new_notify = configs({"new": receiver.url("new")}, ["new"], group_wait=0)
        service.apply(new_oncall, escalation, new_notify)
        await receiver.wait_for(1, 5)
        assert receiver.received[0]["path"] == "/new"
        assert "host1 unreachable" in receiver.received[0]["body"]["title"]
    finally:
        await service.stop()
        await storage.close()
        await receiver.stop()


async def test_stop_ends_the_loops_even_when_woken_as_it_cancels(tmp_path: Path) -> None:
    """On Python 3.11, `asyncio.wait_for` swallows a cancel that lands just as the awaited
    event is set; the delivery and escalation loops then ran on and `stop()` never returned
    (a daemon that cannot be stopped, seen in CI after an acknowledgement)."""
    service, storage, _ = await make_service(tmp_path / "d.db", *configs({}, []))
    try:
        await asyncio.sleep(0.05)  # both loops are waiting on their events
        loops = list(service._tasks)
        service._wake.set()
        service._escalate.set()
        await asyncio.sleep(0)  # the events' waiters complete, the loops not yet resumed
        async with asyncio.timeout(5):
            await service.stop()
        assert loops and all(t.cancelled() for t in loops)
    finally:
        await storage.close()


async def test_the_delivery_loop_outlives_an_unexpected_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A round of the delivery loop that fails unexpectedly (here the queue's read, made to
    fail twice) is said and the loop goes on: the page still arrives. Before, the loop's task
    ended with the error and nothing was sent again, silently (the stop's gather swallowed
    it): seen after a fenced write-back in a database-outage failover run."""
    receiver = Receiver()
    await receiver.start()
    service, storage, _ = await make_service(
        tmp_path / "d.db", *configs({"hook": receiver.url()}, ["hook"], group_wait=0)
    )
    due = service.outbox.due
    failures = 2

    async def failing_due(*args: Any, **kwargs: Any) -> Any:
        nonlocal failures
        if failures > 0:
            failures -= 1
            raise RuntimeError("injected: the queue's read failed")
        return await due(*args, **kwargs)

    try:
        with caplog.at_level(logging.ERROR, logger="dutyd.notify"):
            service.outbox.due = failing_due  # type: ignore[method-assign]
            await service(firing(1))
            await receiver.wait_for(1, 10)
        assert failures == 0
        failed = [r for r in caplog.records if "delivery loop failed" in r.getMessage()]
        assert len(failed) == 2 and failed[0].exc_info is not None
        assert not any(t.done() for t in service._tasks)
    finally:
        await service.stop()
        await storage.close()
        await receiver.stop()


async def test_a_delivery_round_that_keeps_failing_ends_the_loop_as_a_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failing round after round (here 3 in a row), the loop ends: its `LoopWatch` is told
    (the daemon stops with a failure status and its supervisor restarts it), rather than
    logging once a second for ever on a node that sends nothing."""
    monkeypatch.setattr(service_module, "DELIVERY_ROUNDS_FAILING", 3)
    told: list[tuple[str, str]] = []
    storage = SqliteStorage(tmp_path / "d.db")
    await storage.open()
    service = NotifyService(
        *configs({"hook": "json://127.0.0.1:9/hook"}, ["hook"]),
        storage,
        Instrumentation(CollectorRegistry()),
        loops=LoopWatch(on_end=lambda name, why: told.append((name, why))),
    )

    async def failing_due(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected: the queue's read failed")

    await service.start()
    try:
        service.outbox.due = failing_due  # type: ignore[method-assign]
        for _ in range(100):
            if told:
                break
            await asyncio.sleep(0.1)
        assert told == [("notify-deliver", "RuntimeError: injected: the queue's read failed")]
        assert service.loops.problem() is not None
    finally:
        await service.stop()
        await storage.close()
