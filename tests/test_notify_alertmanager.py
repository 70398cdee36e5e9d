"""The Alertmanager forwarder against a real prometheus-alertmanager on loopback, routing to
a webhook receiver: a dutyd alert arrives with its labels, and then its resolve."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from dutyd.core.records import AlertState
from dutyd.exporters.instrumentation import Instrumentation
from dutyd.notify.config import EscalationConfig, NotifyConfig, OncallConfig
from dutyd.notify.service import NotifyService
from dutyd.storage.sqlite import SqliteStorage
from tests.peers import PeerProcess, free_port, require_binary, wait_for_tcp
from tests.test_notify_delivery import Receiver, firing


@pytest.fixture
async def alertmanager(tmp_path: Path) -> AsyncIterator[tuple[int, Receiver]]:
    binary = require_binary("/usr/bin/prometheus-alertmanager")
    receiver = Receiver()
    await receiver.start()
    port = free_port()
    config = {
        "route": {
            "receiver": "hook",
            "group_by": ["alertname", "target"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {
                "name": "hook",
                "webhook_configs": [
                    {"url": f"http://127.0.0.1:{receiver.port}/am", "send_resolved": True}
                ],
            }
        ],
    }
    (tmp_path / "am.yml").write_text(yaml.safe_dump(config))
    peer = PeerProcess(
        [
            binary,
            f"--config.file={tmp_path / 'am.yml'}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        tmp_path,
        log_name="alertmanager.log",
    )
    try:
        await asyncio.to_thread(wait_for_tcp, port, 20)
        yield port, receiver
    finally:
        peer.stop()
        await receiver.stop()


async def test_alert_and_resolve_reach_alertmanager(
    tmp_path: Path, alertmanager: tuple[int, Receiver]
) -> None:
    port, receiver = alertmanager
    storage = SqliteStorage(tmp_path / "d.db")
    await storage.open()
    service = NotifyService(
        OncallConfig(),
        EscalationConfig(),
        NotifyConfig.model_validate({"alertmanager": [{"url": f"http://127.0.0.1:{port}"}]}),
        storage,
        Instrumentation(CollectorRegistry()),
        generator_url="http://dutyd.example:8646",
    )
    await service.start()
    try:
        event = firing(7, "hq")
        await service(event)
        await receiver.wait_for(1, 15)
        msg = receiver.received[0]["body"]
        assert msg["status"] == "firing"
        alert = msg["alerts"][0]
        assert alert["labels"] == {
            "alertname": "host_down",
            "severity": "critical",
            "target": "host7",
            "site": "hq",
        }
        assert alert["annotations"]["summary"] == "host7 unreachable"
        assert alert["generatorURL"] == "http://dutyd.example:8646"
        resolve = dataclasses.replace(
            event, state=AlertState.RESOLVED, previous=AlertState.FIRING, timestamp=time.time()
        )
        await service(resolve)
        await receiver.wait_for(2, 15)
        resolved = receiver.received[-1]["body"]
        assert resolved["status"] == "resolved"
        assert resolved["alerts"][0]["labels"]["target"] == "host7"
        assert resolved["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
        assert (await service.outbox.stats(time.time())).depth == 0
    finally:
        await service.stop()
        await storage.close()


async def test_throttled_or_timed_out_alertmanager_is_retried_not_dropped() -> None:
    """429 (rate limited) and 408 are "try again later": treating them as permanent would drop
    the alert (the forward has no fallback channel). Other 4xx are refusals of this payload."""
    from aiohttp import web

    from dutyd.notify.channels.alertmanager import AlertmanagerChannel
    from dutyd.notify.config import AlertmanagerForward

    answers = [429, 408, 400, 503]

    async def alerts(request: web.Request) -> web.Response:
        return web.Response(status=answers.pop(0), text="busy")

    app = web.Application()
    app.router.add_post("/api/v2/alerts", alerts)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    channel = AlertmanagerChannel("am", AlertmanagerForward(url=f"http://127.0.0.1:{port}"))
    try:
        results = [await channel.send("m1", {"alerts": []}) for _ in range(4)]
    finally:
        await channel.close()
        await runner.cleanup()
    assert [r.ok for r in results] == [False] * 4
    assert [r.retry for r in results] == [True, True, False, True]
    assert results[0].error.startswith("HTTP 429")
