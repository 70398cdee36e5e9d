"""The duty operations on the daemon (what the API and CLI call): acknowledge, silence,
maintenance windows, listing; each recorded in the duty log with its actor, and all of it
back after a restart."""

from __future__ import annotations

import asyncio
import time

import pytest

from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.agent.scheduler import PollResult
from dutyd.core.records import AlertChange, AlertEvent, AlertState, Sample
from dutyd.rules.engine import UnknownAlert


def settings(tmp_path):
    return load_from_dict(
        {
            "http": {"port": 0},
            "storage": {"path": str(tmp_path / "d.db")},
            "rules": {"overrides": {"device_down": {"for": "0s"}}},
        }
    )


def poll(daemon: Daemon, target: str, up: bool) -> None:
    now = time.time()
    sample = Sample.of("target_up", 1.0 if up else 0.0, now, {"target": target, "kind": "ssh"})
    daemon._on_poll(PollResult(target, "ssh", [sample], up, "", "", now, 0.01, 0.0))


async def settle(daemon: Daemon) -> None:
    for _ in range(100):
        if daemon.journal.pending() == 0:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)


async def test_ack_silence_maintenance_and_restart(tmp_path):
    daemon = Daemon(settings(tmp_path))
    seen: list[AlertEvent] = []

    async def listener(event: AlertEvent) -> None:
        seen.append(event)

    daemon.journal.listeners.append(listener)
    await daemon.start()
    try:
        poll(daemon, "srv1", False)
        await settle(daemon)
        (alert,) = daemon.operations.list_alerts()
        assert alert["state"] == "firing" and alert["rule"] == "device_down"
        fp = alert["fingerprint"]

        with pytest.raises(UnknownAlert):
            await daemon.operations.acknowledge("0000", "li.wei")
        expires = time.time() + 3600
        ack = await daemon.operations.acknowledge(fp, "li.wei", "rebooting it", expires)
        assert ack.change is AlertChange.ACKNOWLEDGED
        assert daemon.operations.list_alerts()[0]["acknowledged"]["by"] == "li.wei"

        sid = await daemon.operations.silence(
            {"target": "srv2"}, time.time() + 600, "wang", "disk swap"
        )
        with pytest.raises(ValueError, match="regex"):
            await daemon.operations.silence({"target": {"=~": "("}}, time.time() + 600, "wang", "x")
        poll(daemon, "srv2", False)
        wid = await daemon.operations.add_maintenance(
            time.time() - 1, time.time() + 600, "zhao", "rack move", targets=["srv3"]
        )
        poll(daemon, "srv3", False)
        await settle(daemon)
        by_target = {a["labels"]["target"]: a for a in daemon.operations.list_alerts()}
        assert by_target["srv2"]["silenced_by"] == [str(sid)]
        assert by_target["srv2"]["suppressed"] == "silenced by wang: disk swap"
        assert by_target["srv3"]["maintenance"] == [str(wid)]
        sent = {dict(e.labels)["target"] for e in seen if e.state is AlertState.FIRING and e.notify}
        assert sent == {"srv1"}
        assert [s["id"] for s in daemon.operations.list_silences()] == [str(sid)]
        assert [w["id"] for w in daemon.operations.list_maintenance()] == [str(wid)]

        assert await daemon.operations.remove_silence(sid, "wang")
        assert not await daemon.operations.remove_silence(9999, "wang")
        log = await daemon.storage.log.read(
            kinds=["alert.acknowledged", "silence.", "maintenance."]
        )
        assert [(e.kind, e.actor) for e in log] == [
            ("alert.acknowledged", "li.wei"),
            ("silence.add", "wang"),
            ("maintenance.add", "zhao"),
            ("silence.remove", "wang"),
        ]
    finally:
        await daemon.stop()

    again = Daemon(settings(tmp_path))
    await again.start()
    try:
        by_target = {a["labels"]["target"]: a for a in again.operations.list_alerts()}
        assert by_target["srv1"]["acknowledged"]["note"] == "rebooting it"
        assert by_target["srv1"]["active_since"] == alert["active_since"]
        assert by_target["srv3"]["maintenance"] == [str(wid)]
        assert again.operations.list_silences() == []  # it was removed
        assert await again.operations.remove_maintenance(wid, "zhao")
        assert again.operations.list_maintenance() == []
    finally:
        await again.stop()


async def test_event_counts_survive_a_restart(tmp_path):
    def outbreaks(n: float) -> list[Sample]:
        return [
            Sample.of("security_virus_outbreaks_total", n, time.time(), {"target": "av-console"})
        ]

    daemon = Daemon(settings(tmp_path))
    await daemon.start()
    try:
        for n in (0, 1, 2, 3):  # a baseline, then three outbreaks: not yet more than 3
            daemon.operations.ingest_samples(outbreaks(n))
        await settle(daemon)
        assert daemon.operations.list_alerts() == []
    finally:
        await daemon.stop()

    again = Daemon(settings(tmp_path))
    await again.start()
    try:
        again.operations.ingest_samples(outbreaks(4))  # the fourth within the year
        await settle(again)
        (alert,) = again.operations.list_alerts()
        assert (alert["rule"], alert["state"], alert["value"]) == (
            "virus_outbreaks_red_line",
            "firing",
            4.0,
        )
    finally:
        await again.stop()
