"""Chaos cases against the real daemon (a subprocess) and a real webhook receiver (apprise
json:// on loopback), counting pages by message id: none lost, none twice, none out of order.

- SIGKILL with a full outbox: 20 alerts fire while the receiver is down (40 rows, two people
  on duty), the daemon is killed, the receiver comes up, the daemon restarts on the same
  database: exactly the 40 pages arrive, nothing regenerated beside them.
- Receiver down then up: alerts fire and resolve while the receiver refuses connections; once
  it is back every person gets each alert's page before its resolve.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import signal
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_fixtures import DaemonProcess
from tests.peers import free_port
from tests.test_notify_delivery import Receiver

PEOPLE = ["Li Na", "Zhou Min"]


class _Switchable(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = b"portal"
        self.send_response(type(self).status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Portal:
    """HTTP probe targets: one server whose status is switched (200 up, 500 failing)."""

    def __init__(self) -> None:
        handler = type("Handler", (_Switchable,), {"status": 200})
        self.handler = handler
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/app{n}"

    def set(self, status: int) -> None:
        self.handler.status = status

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def portal() -> Iterator[Portal]:
    p = Portal()
    yield p
    p.stop()


def daemon_config(
    portal: Portal, receiver: Receiver, count: int, site: str = "", **notify: object
) -> dict:
    """`count` apps, one per site; the two people on duty each reach the receiver on their
    own path (so the receiver tells them apart)."""
    return {
        "targets": [
            {
                "name": f"app{n}",
                "kind": "http",
                "address": portal.url(n),
                "interval": "1s",
                "timeout": "1s",
                "labels": {"site": site or f"site{n}"},
            }
            for n in range(count)
        ],
        "rules": {
            "packs": [],
            "custom": [
                {
                    "name": "app_failing",
                    "metric": "probe_success",
                    "condition": {"equals": 0},
                    "severity": "critical",
                    "summary": "{target} is failing",
                    "resolved": "{target} works again",
                }
            ],
        },
        "oncall": {
            "pairs": [PEOPLE],
            "people": [{"name": n, "contacts": [f"hook{i}"]} for i, n in enumerate(PEOPLE)],
        },
        "escalation": {"policies": [{"name": "all", "steps": [{"after": "0s", "oncall": True}]}]},
        "notify": {
            "channels": {
                f"hook{i}": {
                    "url": receiver.url(f"p{i}"),
                    "rate_limit": {"count": 1000, "per": "1s"},
                }
                for i in range(len(PEOPLE))
            },
            "group_wait": "0s",
            "retry_initial": "0.2s",
            "retry_max": "1s",
            **notify,
        },
    }


def depth(daemon: DaemonProcess) -> float:
    return daemon.metric_value("dutyd_notify_outbox_depth") or 0.0


def pages_by_id(receiver: Receiver) -> Counter[str]:
    return Counter(receiver.ids())


def pages_in(receiver: Receiver) -> Counter[tuple[str, str]]:
    """(person's path, alert summary) of every page line of every message received."""
    out: Counter[tuple[str, str]] = Counter()
    for r in receiver.received:
        for line in r["body"]["message"].splitlines():
            if line.startswith("[critical] "):
                out[(r["path"], line.split("] ", 1)[1].split(" (", 1)[0])] += 1
    return out


async def test_sigkill_with_full_outbox_restart_sends_every_page_once(
    tmp_path: Path, portal: Portal
) -> None:
    """Defect 1 of issue 13: on resume step 1 was regenerated for every alert and checked
    only against delivered ids, not against pages still queued in the outbox, so each person
    got one more "ALERT: 20 alerts" message (the alerts of one site regrouped, a new id)."""
    count = 20
    receiver = Receiver()  # not started: connections are refused
    cfg = daemon_config(portal, receiver, count, site="hq")
    portal.set(500)
    daemon = await asyncio.to_thread(DaemonProcess, tmp_path, cfg)
    try:
        await asyncio.to_thread(
            daemon.wait_until,
            lambda: all(
                daemon.metric_value("probe_success", target=f"app{n}") == 0.0 for n in range(count)
            ),
            30,
            "every app failing",
        )
        await asyncio.sleep(2)  # every alert fired and its pages queued
        queued = await asyncio.to_thread(depth, daemon)
        assert queued >= 2, "the pages should wait in the outbox"
        daemon.signal(signal.SIGKILL)
        await asyncio.to_thread(daemon.peer.proc.wait, 5)
    finally:
        daemon.stop()
    await receiver.start()
    daemon = await asyncio.to_thread(DaemonProcess, tmp_path, cfg)
    try:
        await receiver.wait_for(int(queued), 30)
        await asyncio.to_thread(
            daemon.wait_until, lambda: depth(daemon) == 0, 20, "the outbox to drain"
        )
        await asyncio.sleep(3)  # a page regenerated at resume would have gone out by now
        ids = pages_by_id(receiver)
        twice = {i: n for i, n in ids.items() if n > 1}
        assert not twice, f"messages sent twice: {twice}"
        titles = [r["body"]["title"] for r in receiver.received]
        assert len(ids) == queued, titles  # the queued messages, none lost, none added
        # Each person was told of each alert once.
        pages = pages_in(receiver)
        expected = {(f"/p{i}", f"app{n} is failing") for i in range(2) for n in range(count)}
        assert set(pages) == expected, titles
        assert set(pages.values()) == {1}, {k: v for k, v in pages.items() if v > 1}
        code, _ = await asyncio.to_thread(daemon.terminate, 10)
        assert code == 0
    finally:
        daemon.stop()
        await receiver.stop()


async def test_receiver_down_then_up_every_alert_before_its_resolve(
    tmp_path: Path, portal: Portal
) -> None:
    """Defect 2 of issue 13: every outbox row backed off on its own with jitter, so after an
    outage a person could get an alert's resolve before its page."""
    count = 5
    port = free_port()
    receiver = Receiver(port)  # down: refused
    cfg = daemon_config(portal, receiver, count, retry_initial="0.3s", retry_max="2s")
    daemon = await asyncio.to_thread(DaemonProcess, tmp_path, cfg)
    try:
        await asyncio.to_thread(
            daemon.wait_until,
            lambda: daemon.metric_value("probe_success", target=f"app{count - 1}") == 1.0,
            20,
            "the apps answering",
        )
        portal.set(500)
        await asyncio.to_thread(
            daemon.wait_until, lambda: depth(daemon) >= 2 * count, 20, "the pages queued"
        )
        portal.set(200)
        await asyncio.to_thread(
            daemon.wait_until, lambda: depth(daemon) >= 4 * count, 20, "the resolves queued"
        )
        await asyncio.sleep(3)  # several failed attempts each: the backoff spreads them out
        await receiver.start()
        await receiver.wait_for(4 * count, 30)
        await asyncio.to_thread(
            daemon.wait_until, lambda: depth(daemon) == 0, 20, "the outbox to drain"
        )
        await asyncio.sleep(1)
        ids = pages_by_id(receiver)
        assert len(ids) == 4 * count and all(n == 1 for n in ids.values())
        # The order each person saw, per alert (its target opens both its texts): the page,
        # then the resolve.
        seen: dict[tuple[str, str], list[str]] = {}
        for r in receiver.received:
            kind, _, summary = r["body"]["title"].partition(": ")
            seen.setdefault((r["path"], summary.split(" ", 1)[0]), []).append(kind)
        assert len(seen) == 2 * count, seen
        wrong = {k: v for k, v in seen.items() if v != ["ALERT", "RESOLVED"]}
        assert not wrong, f"out of order for {len(wrong)} of {2 * count} pairs: {wrong}"
        code, _ = await asyncio.to_thread(daemon.terminate, 10)
        assert code == 0
    finally:
        daemon.stop()
        await receiver.stop()


def told_per_target(receiver: Receiver) -> dict[str, list[str]]:
    """Per alert (its target), the kinds of message the person got about it, in arrival
    order. A grouped message ("ALERT: 4 alerts") counts for every alert it names."""
    out: dict[str, list[str]] = {}
    for r in receiver.received:
        kind = r["body"]["title"].split(":", 1)[0]
        for target in dict.fromkeys(re.findall(r"target=(\w+)\)", r["body"]["message"])):
            out.setdefault(target, []).append(kind)
    return out


async def test_one_person_many_alerts_receiver_down_then_up_each_alert_in_order(
    tmp_path: Path, portal: Portal
) -> None:
    """The delivery order kept (notify/README.md, "Delivery order"): what one person is told
    about one alert arrives in the order it was created, through a receiver outage, also when
    an alert's page went out grouped with others: its page, its acknowledgement notice, its
    resolve. Four alerts of one site to one person, two acknowledged, all resolved, while the
    receiver refuses connections; once it is back, every message arrives exactly once."""
    count = 4
    receiver = Receiver(free_port())  # down: refused
    cfg = daemon_config(portal, receiver, count, site="hq", retry_initial="0.3s", retry_max="2s")
    cfg["oncall"] = {
        "pairs": [["Li Na"]],
        "people": [{"name": "Li Na", "contacts": ["hook0"]}],
    }
    cfg["notify"]["channels"] = {"hook0": cfg["notify"]["channels"]["hook0"]}
    cfg["api"] = {"token": "order-token"}
    auth = {"X-Dutyd-Token": "order-token", "Content-Type": "application/json"}
    daemon = await asyncio.to_thread(DaemonProcess, tmp_path, cfg)

    def firing() -> dict[str, str]:
        status, body = daemon.get("/api/v1/alerts?state=firing", auth)
        assert status == 200, body
        return {a["labels"]["target"]: a["fingerprint"] for a in json.loads(body)["alerts"]}

    def ack(fingerprint: str) -> None:
        request = urllib.request.Request(
            daemon.url + "/api/v1/ack",
            data=json.dumps({"alert": fingerprint, "actor": "Zhou Min"}).encode(),
            headers=auth,
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            assert r.status == 200

    try:
        await asyncio.to_thread(
            daemon.wait_until,
            lambda: daemon.metric_value("probe_success", target=f"app{count - 1}") == 1.0,
            20,
            "the apps answering",
        )
        portal.set(500)
        await asyncio.to_thread(
            daemon.wait_until, lambda: len(firing()) == count, 20, "every alert firing"
        )
        await asyncio.to_thread(daemon.wait_until, lambda: depth(daemon) >= 1, 10, "pages queued")
        fingerprints = firing()
        for target in ("app0", "app1"):
            await asyncio.to_thread(ack, fingerprints[target])

        def acks_told() -> int:
            status, body = daemon.get("/api/v1/log?kind=escalation.acknowledged", auth)
            assert status == 200, body
            return len(json.loads(body)["entries"])

        # The notices are queued as the acknowledgements are taken (within milliseconds); the
        # resolves come a poll later.
        await asyncio.to_thread(daemon.wait_until, lambda: acks_told() == 2, 10, "ack notices")
        portal.set(200)
        await asyncio.to_thread(daemon.wait_until, lambda: not firing(), 20, "every alert resolved")
        await asyncio.sleep(3)  # several failed attempts each: the backoff spreads them out
        want = {f"app{n}": ["ALERT", "RESOLVED"] for n in range(count)}
        want["app0"] = want["app1"] = ["ALERT", "ACKNOWLEDGED", "RESOLVED"]
        await receiver.start()
        for _ in range(150):
            if told_per_target(receiver) == want and depth(daemon) == 0:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)  # anything sent twice would be here by now
        assert told_per_target(receiver) == want, [r["body"]["title"] for r in receiver.received]
        ids = pages_by_id(receiver)
        assert all(n == 1 for n in ids.values()), ids
        assert {r["path"] for r in receiver.received} == {"/p0"}
        code, _ = await asyncio.to_thread(daemon.terminate, 10)
        assert code == 0
    finally:
        daemon.stop()
        await receiver.stop()
