"""SNMP traps end to end: the real `dutyd run` with a trap listener, real net-snmp snmpd agents
(a UPS and a switch, polled once an hour), net-snmp's snmptrap / snmpinform as the devices'
notification senders, and a real HTTP receiver for the pages.

A UPS going on battery pages at once (not at the next hourly poll), a link down on an uplink
port fires the duty pack's switch_uplink_down, an inform is acknowledged, a wrong community
is dropped and counted, and 10,000 garbage datagrams change nothing but a counter. A UPS's
coldStart pages unexpected_device_reboot, and a trap's own sample is ruled on before the poll
it asks for.
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_fixtures import DaemonProcess
from tests.peers import free_port, require_binary
from tests.snmp_fixtures import COMMUNITY, SnmpdPeer, switch_values, ups_values

TRAP_COMMUNITY = "trap-secret"
UPLINK_INDEX = 4
IF_INDEX = "1.3.6.1.2.1.2.2.1.1"
IF_ADMIN = "1.3.6.1.2.1.2.2.1.7"
IF_OPER = "1.3.6.1.2.1.2.2.1.8"
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
UPS_TRAP_ON_BATTERY = "1.3.6.1.2.1.33.2.1"
COLD_START = "1.3.6.1.6.3.1.1.5.1"
MINUTES_REMAINING = "1.3.6.1.2.1.33.1.2.3.0"


def ups_agent(on_battery: bool) -> dict[str, list[Any]]:
    """A UPS's UPS-MIB values and its sysUpTime (which the snmpd fixture waits for)."""
    return {"1.3.6.1.2.1.1.3.0": ["timeticks", 360000], **ups_values(on_battery)}


class PageReceiver:
    """A webhook receiver (apprise json://) on loopback: records every page."""

    def __init__(self) -> None:
        self.pages: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with owner.lock:
                    owner.pages.append({"at": time.monotonic(), "body": json.loads(body)})
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def texts(self) -> list[str]:
        with self.lock:
            return [json.dumps(p["body"], ensure_ascii=False) for p in self.pages]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[PageReceiver]:
    r = PageReceiver()
    yield r
    r.stop()


@pytest.fixture
def ups(tmp_path: Path) -> Iterator[SnmpdPeer]:
    d = tmp_path / "ups"
    d.mkdir()
    peer = SnmpdPeer(d, ups_agent(on_battery=False))
    yield peer
    peer.stop()


@pytest.fixture
def switch(tmp_path: Path) -> Iterator[SnmpdPeer]:
    d = tmp_path / "switch"
    d.mkdir()
    peer = SnmpdPeer(d, switch_values(ports=4))
    yield peer
    peer.stop()


SHORT_FOR = {"ups_on_battery": {"for": "1s"}, "switch_uplink_down": {"for": "1s"}}


def site(
    ups: SnmpdPeer,
    switch: SnmpdPeer | None,
    trap_port: int,
    hook_port: int,
    overrides: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The UPS and (when given) the switch's uplinks, polled hourly, with the duty pack;
    `overrides` shortens the rules' `for` (by default so the test does not wait 30s)."""
    common = {"kind": "snmp", "community": COMMUNITY, "interval": "1h", "timeout": "3s"}
    targets: list[dict[str, Any]] = [
        {
            "name": "ups-a",
            "address": ups.address,
            "profiles": ["ups"],
            "labels": {"site": "hq", "role": "ups"},
            **common,
        }
    ]
    if switch is not None:
        targets.append(
            {
                "name": "sw1-uplinks",
                "address": switch.address,
                "profiles": ["switch"],
                "port_pattern": f"^Gi0/{UPLINK_INDEX}$",
                "labels": {"site": "hq", "role": "uplink"},
                **common,
            }
        )
    return {
        "targets": targets,
        "traps": {
            "listen": "127.0.0.1",
            "port": trap_port,
            "communities": [{"community": TRAP_COMMUNITY, "targets": ["*"]}],
        },
        "rules": {"overrides": SHORT_FOR if overrides is None else overrides},
        "oncall": {
            "pairs": [["Zhang Wei"]],
            "people": [{"name": "Zhang Wei", "language": "en", "contacts": ["pager"]}],
        },
        "escalation": {"policies": [{"name": "all", "steps": [{"after": 0, "oncall": True}]}]},
        "notify": {
            "channels": {"pager": {"url": f"json://127.0.0.1:{hook_port}/hook"}},
            "group_wait": 0.05,
        },
        "log": {"level": "INFO"},
        "api": {"read_token": READ_TOKEN},
    }


READ_TOKEN = "traps-test-read-token"


def net_snmp(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary(tool)
    return subprocess.run(
        [binary, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"MIBS": "", "MIBDIRS": "/nonexistent", "PATH": "/usr/bin:/bin"},
    )


def polls(daemon: DaemonProcess) -> float:
    return daemon.metric_value("dutyd_polls_total", kind="snmp") or 0.0


def traps(daemon: DaemonProcess, kind: str, result: str) -> float:
    return daemon.metric_value("dutyd_traps_received_total", kind=kind, result=result) or 0.0


def test_traps_page_at_once_and_bad_input_changes_nothing(
    tmp_path: Path, ups: SnmpdPeer, switch: SnmpdPeer, receiver: PageReceiver
) -> None:
    trap_port = free_port("udp")
    daemon = DaemonProcess(tmp_path, site(ups, switch, trap_port, receiver.port))
    to = f"127.0.0.1:{trap_port}"
    try:
        # The first polls (within 10s of the start); the next are an hour away.
        daemon.wait_until(
            lambda: (
                daemon.metric_value("ups_on_battery", target="ups-a") == 0.0
                and daemon.metric_value("if_oper_up", target="sw1-uplinks", port="Gi0/4") == 1.0
            ),
            30,
            "the first polls",
        )
        assert traps(daemon, "v2c_trap", "mapped") == 0.0  # pre-filled
        first_polls = polls(daemon)
        assert first_polls == 2.0

        # -- the UPS goes on battery and says so with a v2c trap -------------------------------
        ups.set_values(ups_agent(on_battery=True))
        sent = time.monotonic()
        out = net_snmp(
            "snmptrap", "-v2c", "-c", TRAP_COMMUNITY, to, "", UPS_TRAP_ON_BATTERY,
            MINUTES_REMAINING, "i", "4",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        daemon.wait_until(
            lambda: any("battery" in t and "ups-a" in t for t in receiver.texts()),
            30,
            "the on-battery page",
        )
        paged_after = receiver.pages[0]["at"] - sent
        assert paged_after < 30.0  # the next scheduled poll is an hour away
        assert traps(daemon, "v2c_trap", "mapped") == 1.0
        # The trap's own sample (runtime from the varbind) is in, with the poller's name.
        assert daemon.metric_value("ups_on_battery", target="ups-a") == 1.0
        # Only the polls the trap asked for (one per target at that address), no hourly one.
        daemon.wait_until(lambda: polls(daemon) == first_polls + 2, 10, "the trap's polls")

        # -- the uplink goes down: a v2c linkDown (IF-MIB) -------------------------------------
        switch.change({f"{IF_OPER}.{UPLINK_INDEX}": ["integer", 2]})
        out = net_snmp(
            "snmptrap", "-v2c", "-c", TRAP_COMMUNITY, to, "", LINK_DOWN,
            f"{IF_INDEX}.{UPLINK_INDEX}", "i", str(UPLINK_INDEX),
            f"{IF_ADMIN}.{UPLINK_INDEX}", "i", "1",
            f"{IF_OPER}.{UPLINK_INDEX}", "i", "2",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        daemon.wait_until(
            lambda: any("Uplink Gi0/4" in t and "sw1-uplinks" in t for t in receiver.texts()),
            30,
            "the switch_uplink_down page",
        )
        assert daemon.metric_value("if_oper_up", target="sw1-uplinks", port="Gi0/4") == 0.0

        # -- an inform is acknowledged (snmpinform waits for our response) ---------------------
        out = net_snmp(
            "snmpinform", "-v2c", "-c", TRAP_COMMUNITY, "-t", "5", "-r", "1", to, "",
            UPS_TRAP_ON_BATTERY,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert traps(daemon, "v2c_inform", "mapped") == 1.0

        # -- bad input: a wrong community, then 10,000 garbage datagrams -----------------------
        daemon.wait_until(lambda: polls(daemon) >= first_polls + 6, 15, "the trap polls")
        time.sleep(1.5)  # the last trap-asked polls settle
        before_alerts = alerts(daemon)
        before_polls = polls(daemon)
        before_ingested = daemon.metric_value("dutyd_samples_ingested_total")
        pages_before = len(receiver.pages)

        out = net_snmp("snmptrap", "-v2c", "-c", "not-the-community", to, "", UPS_TRAP_ON_BATTERY)
        assert out.returncode == 0, out.stderr
        daemon.wait_until(
            lambda: traps(daemon, "v2c_trap", "bad_community") == 1.0, 10, "the wrong community"
        )

        # Forged, from a host that is no target (issue 24): a v1 coldStart whose agent-addr
        # is the UPS, with the polling community; a v2c low-battery alarm naming the UPS in
        # snmpTrapAddress.0. Neither is credited to the UPS.
        out = net_snmp(
            "snmptrap", "-v1", "-c", COMMUNITY, "--clientaddr=127.0.0.9", to,
            "1.3.6.1.4.1.99999", "127.0.0.1", "0", "0", "",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        out = net_snmp(
            "snmptrap", "-v2c", "-c", TRAP_COMMUNITY, "--clientaddr=127.0.0.9", to, "",
            "1.3.6.1.2.1.33.2.3", "1.3.6.1.2.1.33.1.6.2.1.2.1", "o", "1.3.6.1.2.1.33.1.6.3.3",
            "1.3.6.1.6.3.18.1.3.0", "a", "127.0.0.1",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        daemon.wait_until(
            lambda: (
                traps(daemon, "v1_trap", "unknown_source") == 1.0
                and traps(daemon, "v2c_trap", "unknown_source") == 1.0
            ),
            10,
            "the forged traps dropped",
        )

        garbage = _garbage(10_000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for start in range(0, len(garbage), 50):
                for g in garbage[start : start + 50]:
                    s.sendto(g, ("127.0.0.1", trap_port))
                # Paced so the loopback socket buffer never overflows: each batch counted.
                daemon.wait_until(
                    lambda n=start + 50: _dropped(daemon) >= min(n, len(garbage)),
                    20,
                    "the garbage counted",
                )
        assert _dropped(daemon) == 10_000
        time.sleep(1.0)
        assert polls(daemon) == before_polls
        assert daemon.metric_value("dutyd_samples_ingested_total") == before_ingested
        assert alerts(daemon) == before_alerts
        assert len(receiver.pages) == pages_before
        assert daemon.metric_value("target_up", target="ups-a") == 1.0
        # One log line for that source within the minute, however much it sent.
        assert daemon.peer.log().count("SNMP notification from 127.0.0.1") == 1
        assert "not-the-community" not in daemon.peer.log()
        code, _ = daemon.terminate()
        assert code == 0, daemon.peer.log()[-3000:]
    finally:
        daemon.stop()


def test_ups_restart_trap_pages_and_a_trap_sample_is_ruled_on_before_its_poll(
    tmp_path: Path, ups: SnmpdPeer, receiver: PageReceiver
) -> None:
    """A UPS's coldStart fires unexpected_device_reboot at once (its poll reads sysUpTime, so
    the trap is its `device_rebooted`), but a trap alone holds the alert only until the poll
    it asks for: a poll that saw no restart resolves it at once, though the rule keeps firing
    for 1h on a restart a poll saw (issue 24: a forged coldStart stayed firing for that hour);
    a restart the poll confirms keeps it firing. A trap that says "on battery" from a UPS whose poll
    says on line: the trap's sample reaches the rules first (ups_on_battery goes pending),
    the poll it asks for comes after and clears it (pending -> inactive, no page). The
    duty pack's own `for: 10s` is kept, so only the poll can end the pending state in time."""
    trap_port = free_port("udp")
    daemon = DaemonProcess(tmp_path, site(ups, None, trap_port, receiver.port, overrides={}))
    to = f"127.0.0.1:{trap_port}"
    try:
        daemon.wait_until(
            lambda: daemon.metric_value("device_rebooted", target="ups-a") == 0.0,
            30,
            "the first poll, with the UPS's sysUpTime",
        )
        first_polls = polls(daemon)

        # -- the UPS restarted and says so -------------------------------------------------
        out = net_snmp("snmptrap", "-v2c", "-c", TRAP_COMMUNITY, to, "", COLD_START)
        assert out.returncode == 0, out.stderr
        daemon.wait_until(
            lambda: any("ups-a" in t and "restarted" in t for t in receiver.texts()),
            30,
            "the unexpected_device_reboot page",
        )
        assert traps(daemon, "v2c_trap", "mapped") == 1.0
        assert traps(daemon, "v2c_trap", "unmapped") == 0.0
        daemon.wait_until(lambda: polls(daemon) == first_polls + 1, 10, "the trap's poll")
        # The poll saw no restart of its own (the agent did not restart): the trap's word
        # is contradicted, and keep_firing_for (1h) does not hold what only a trap said.
        assert daemon.metric_value("device_rebooted", target="ups-a") == 0.0
        daemon.wait_until(
            lambda: ("unexpected_device_reboot", "resolved") in alert_states(daemon),
            10,
            "the contradicted restart alert resolved",
        )
        daemon.wait_until(
            lambda: any("has not restarted again" in t for t in receiver.texts()),
            30,
            "the resolve page",
        )

        # -- a real restart: the trap opens, the poll confirms (sysUpTime went back) --------
        time.sleep(1.0)  # past POLL_NOW_MIN_GAP
        ups.change({"1.3.6.1.2.1.1.3.0": ["timeticks", 100]})
        restarted_pages = sum("restarted" in t for t in receiver.texts())
        out = net_snmp("snmptrap", "-v2c", "-c", TRAP_COMMUNITY, to, "", COLD_START)
        assert out.returncode == 0, out.stderr
        daemon.wait_until(lambda: polls(daemon) == first_polls + 2, 10, "the second trap's poll")
        daemon.wait_until(
            lambda: daemon.metric_value("device_rebooted", target="ups-a") == 1.0,
            10,
            "the poll seeing the restart",
        )
        daemon.wait_until(
            lambda: sum("restarted" in t for t in receiver.texts()) == restarted_pages + 1,
            10,
            "the second restart page",
        )
        time.sleep(0.5)
        assert ("unexpected_device_reboot", "firing") in alert_states(daemon)

        # -- a trap says on battery, the UPS says on line when polled ----------------------
        time.sleep(1.0)  # past POLL_NOW_MIN_GAP: the next trap's poll goes out at once
        pages_before = len(receiver.pages)
        pending = events(daemon, "pending")
        inactive = events(daemon, "inactive")
        firing = events(daemon, "firing")
        out = net_snmp("snmptrap", "-v2c", "-c", TRAP_COMMUNITY, to, "", UPS_TRAP_ON_BATTERY)
        assert out.returncode == 0, out.stderr
        daemon.wait_until(
            lambda: events(daemon, "inactive") == inactive + 1, 10, "the poll clearing it"
        )
        # pending first (the trap's sample), then inactive (the poll's): had the poll been
        # ruled on first, the trap's sample would have left it pending until `for` fired it.
        assert events(daemon, "pending") == pending + 1
        assert traps(daemon, "v2c_trap", "mapped") == 3.0
        assert polls(daemon) == first_polls + 3
        assert daemon.metric_value("ups_on_battery", target="ups-a") == 0.0  # the poll's
        log = daemon.peer.log()
        went_pending = log.rindex("PENDING ups_on_battery")
        assert log.find("INACTIVE ups_on_battery", went_pending) > went_pending
        time.sleep(0.5)
        assert events(daemon, "firing") == firing
        assert len(receiver.pages) == pages_before
        assert not any("battery" in t for t in receiver.texts())
        code, _ = daemon.terminate()
        assert code == 0, daemon.peer.log()[-3000:]
    finally:
        daemon.stop()


def events(daemon: DaemonProcess, state: str) -> float:
    return daemon.metric_value("dutyd_alert_events_total", state=state) or 0.0


def alert_states(daemon: DaemonProcess) -> set[tuple[str, str]]:
    body = json.loads(daemon.get("/api/v1/alerts", {"X-Dutyd-Token": READ_TOKEN})[1])
    return {(a["rule"], a["state"]) for a in body["alerts"]}


def alerts(daemon: DaemonProcess) -> list[tuple[str, str, float, bool]]:
    """Each alert's identity and state (not its ever-growing duration)."""
    body = json.loads(daemon.get("/api/v1/alerts", {"X-Dutyd-Token": READ_TOKEN})[1])
    return sorted(
        (a["fingerprint"], a["state"], a["value"], a["acknowledged"] is not None)
        for a in body["alerts"]
    )


def _dropped(daemon: DaemonProcess) -> float:
    return traps(daemon, "unknown", "malformed") + traps(daemon, "unknown", "rate_limited")


def _garbage(n: int) -> list[bytes]:
    """Random bytes, truncated real notifications, and SNMP requests (not notifications)."""
    import random

    rng = random.Random(16)
    real = bytes.fromhex(
        "302902010104067075626c6963a71c020401020304020100020100300e300c06082b060102010103004300"
    )
    out = []
    for i in range(n):
        if i % 3 == 0:
            out.append(rng.randbytes(rng.randint(0, 300)))
        elif i % 3 == 1:
            out.append(real[: rng.randint(0, len(real) - 1)])
        else:
            out.append(bytes([0x30, 0x82, 0xFF, 0xFF]) + rng.randbytes(20))
    return out
