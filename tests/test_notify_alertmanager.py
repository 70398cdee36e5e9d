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

from agent.instrumentation import Instrumentation
from agent.notify.config import EscalationConfig, NotifyConfig, OncallConfig
from agent.notify.service import NotifyService
from agent.records import AlertState
from agent.storage.sqlite import SqliteStorage
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
        assert (await service.outbox.stats(time.time()))[0] == 0
    finally:
        await service.stop()
        await storage.close()
