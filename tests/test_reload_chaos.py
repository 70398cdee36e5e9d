"""A reload must never silently drop what is watched (against the real daemon process, a real
loopback receiver counting pages): an emptied file is refused, a removed target ends its
alerts with a notice to those paged, and zero targets is not ready."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path
from typing import Any

from dutyd.storage.sqlite import SqliteStorage
from tests.daemon_fixtures import DaemonProcess
from tests.paging_fixtures import li_na_paged, target_down_rule
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
            "custom": [target_down_rule("node_down")],
        },
        **li_na_paged(receiver),
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


def told(receiver: Receiver) -> dict[str, list[tuple[str, str]]]:
    """Per target, what its person was told, in arrival order: (kind, message id). A grouped
    message (targets of one site changing together) counts once for each target it names."""
    out: dict[str, list[tuple[str, str]]] = {}
    for r in receiver.received:
        body = r["body"]
        kind = body["title"].split(":", 1)[0]
        for target in dict.fromkeys(re.findall(r"target=([\w-]+)\)", body["message"])):
            out.setdefault(target, []).append((kind, body["message_id"]))
    return out


async def test_reload_to_empty_and_back_counts_every_page_in_order(tmp_path: Path) -> None:
    """The whole cycle of issue 13, defect 5, counted: an emptied file is refused (no page);
    an explicit `targets: []` ends each alert with one "no longer watched" notice; restoring
    the file pages each target again, once. Nothing lost, nothing twice, nothing out of
    order."""
    receiver = Receiver()
    await receiver.start()
    dead = free_port()
    both = config(receiver, ["sw-a", "sw-b"], dead)
    daemon = DaemonProcess(tmp_path, both)
    try:
        await wait(lambda: firing(daemon) == {"sw-a", "sw-b"}, 20, "both alerts firing")
        await wait(lambda: set(told(receiver)) == {"sw-a", "sw-b"}, 10, "both paged")

        daemon.config_path.write_text("")
        daemon.signal(signal.SIGHUP)
        await wait(
            lambda: "config.reload_rejected" in daemon.get("/api/v1/log", READ)[1],
            10,
            "the refusal",
        )
        await asyncio.sleep(1.5)  # three polls: a page the refusal let through would be here
        assert {t: [k for k, _ in m] for t, m in told(receiver).items()} == {
            "sw-a": ["ALERT"],
            "sw-b": ["ALERT"],
        }

        daemon.write_config(config(receiver, [], dead))
        daemon.signal(signal.SIGHUP)
        await wait(lambda: daemon.get("/readyz")[0] == 503, 10, "not ready")
        await wait(lambda: all(len(m) == 2 for m in told(receiver).values()), 10, "both notices")
        notices = [r for r in receiver.received if r["body"]["title"].startswith("RESOLVED")]
        for r in notices:
            text = json.dumps(r["body"], ensure_ascii=False)
            assert "No longer watched" in text, text
            assert "removed from the configuration" in text, text

        daemon.write_config(both)
        daemon.signal(signal.SIGHUP)
        await wait(lambda: firing(daemon) == {"sw-a", "sw-b"}, 20, "both firing again")
        await wait(lambda: all(len(m) == 3 for m in told(receiver).values()), 10, "re-paged")
        await wait(lambda: daemon.get("/readyz")[0] == 200, 10, "ready again")
        await asyncio.sleep(1.5)  # anything sent twice or late would be here by now

        seen = told(receiver)
        assert set(seen) == {"sw-a", "sw-b"}
        for target, messages in seen.items():
            assert [k for k, _ in messages] == ["ALERT", "RESOLVED", "ALERT"], (target, messages)
        ids = receiver.ids()
        assert len(ids) == len(set(ids)), f"a message went out twice: {ids}"
        assert all(ids), "every message carries its id"
        # The re-page is a new alert (new start), not the first page again.
        for messages in seen.values():
            assert messages[0][1] != messages[2][1]
    finally:
        daemon.stop()
        await receiver.stop()


def rule(name: str, match: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "metric": "target_up",
        "match": match,
        "condition": {"below": 1},
        "for": "0s",
        "severity": "critical",
        "summary": "{target} is down (" + name + ")",
    }


async def test_a_reload_that_stops_watching_a_firing_alert_ends_it(tmp_path: Path) -> None:
    """The issue's case: a reload removed a firing alert's rule, and its reminders went on
    forever (13 pages in 2 h; the row stayed firing); a reload changed a rule's match so the
    series was no longer selected, and the alert never resolved. Now both end with a notice
    saying why, their reminders stop and their rows close."""
    receiver = Receiver()
    await receiver.start()
    dead = free_port()
    cfg = config(receiver, ["sw-a"], dead)
    cfg["rules"]["custom"] = [
        rule("node_down", {"target": "sw-a"}),
        rule("uplink_down", {"target": {"=~": "sw-.*"}}),
    ]
    cfg["escalation"]["policies"][0]["repeat"] = "1s"  # a reminder every second
    daemon = DaemonProcess(tmp_path, cfg)
    try:

        def alerts() -> set[str]:
            status, body = daemon.get("/api/v1/alerts?state=firing", READ)
            assert status == 200, body
            return {a["rule"] for a in json.loads(body)["alerts"]}

        await wait(lambda: alerts() == {"node_down", "uplink_down"}, 20, "both alerts firing")
        await receiver.wait_for(4, 10)  # the pages and a reminder or two
        assert len(receiver.received) >= 4

        # node_down removed; uplink_down changed to select the core switches only.
        cfg["rules"]["custom"] = [rule("uplink_down", {"target": {"=~": "core-.*"}})]
        daemon.write_config(cfg)
        pages = len(receiver.received)
        daemon.signal(signal.SIGHUP)
        await wait(lambda: alerts() == set(), 10, "both alerts ended")
        await asyncio.sleep(1.0)  # the notices go out
        notices = [json.dumps(r["body"]) for r in receiver.received[pages:]]
        removed = [n for n in notices if "rule node_down removed by reload" in n]
        changed = [n for n in notices if "rule uplink_down changed by reload" in n]
        assert removed and changed, notices
        assert all("no longer watched" in n.lower() for n in removed + changed)

        # No reminder for either after the notices (the old code: one a second, forever).
        settled = len(receiver.received)
        await asyncio.sleep(3.5)
        assert receiver.received[settled:] == []

        # Their rows are closed: the duty log has the resolves, the alert table none firing.
        status, body = daemon.get("/api/v1/log?kind=alert.resolved", READ)
        assert status == 200, body
        notes = [e["data"]["note"] for e in json.loads(body)["entries"]]
        assert "no longer watched: rule removed by reload" in notes, notes
        assert "no longer watched: rule changed by reload" in notes, notes
    finally:
        daemon.stop()
        await receiver.stop()
    storage = SqliteStorage(tmp_path / "dutyd.db")
    await storage.open()
    try:
        rows = await storage.alerts.load_all()
        assert [r.state for r in rows if r.state == "firing"] == []
    finally:
        await storage.close()
