"""A site from nothing (issue 26, "done when"): `dutyd discover` writes the room's targets, a
main file includes them beside the duty team, and the daemon pages once for a core-switch
outage with the access switch and the UPS behind it down too (the dependencies LLDP taught),
and once when the UPS goes on battery. No target entry is written by hand. Real snmpd
instances on 127.0.1.x, the real daemon in-process, a real receiver."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
from pathlib import Path

import pytest
import yaml

from dutyd.agent.config import load_config
from dutyd.agent.daemon import Daemon
from dutyd.agent.discovercli import write_config
from dutyd.agent.discovery import Sweep, hosts_of
from tests.paging_fixtures import li_na_on_duty
from tests.site_fixtures import SiteSnmpd, free_port_on, snmp_sweep, stop_site, switch, ups
from tests.snmp_fixtures import COMMUNITY, UPS_BASE, SnmpdPeer, ups_values
from tests.test_notify_delivery import Receiver

HOSTS = ["127.0.1.1", "127.0.1.2", "127.0.1.3"]


async def test_discovered_site_pages_once_for_a_core_outage_and_once_for_a_ups_on_battery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SITE_COMMUNITY", COMMUNITY)
    port = free_port_on(HOSTS, "udp")
    rooms = [
        ("core", HOSTS[0], "core-sw", "Room A", switch(12, {1: "access-sw-1"})),
        ("access", HOSTS[1], "access-sw-1", "Room A", switch(10, {10: "core-sw", 3: "ups-a"})),
        ("ups", HOSTS[2], "ups-a", "Room A", ups()),
    ]
    peers: list[SiteSnmpd] = []
    receiver = Receiver()
    daemon: Daemon | None = None
    try:
        for sub, host, name, room, values in rooms:
            peers.append(SiteSnmpd(tmp_path / sub, host, port, name, room, values))
        for peer in peers:
            peer.wait_ready()
        options = snmp_sweep("SITE_COMMUNITY", port, timeout=0.5, rate=200)
        devices = await Sweep(options).run(hosts_of(["127.0.1.0/29"], False))
        text, _ = write_config(devices, options, ["127.0.1.0/29"], {}, [], dt.datetime.now(dt.UTC))
        (tmp_path / "conf.d").mkdir()
        (tmp_path / "conf.d" / "room-a.yaml").write_text(text)

        await receiver.start()
        main = tmp_path / "dutyd.yaml"
        main.write_text(
            yaml.safe_dump(
                {
                    "include": ["conf.d/*.yaml"],
                    "defaults": {"snmp": {"interval": "1s"}},
                    "rules": {
                        "overrides": {
                            name: {"for": "0s"}
                            for name in (
                                "core_backbone_outage",
                                "datacentre_network_outage",
                                "ups_snmp_unreachable",
                                "ups_on_battery",
                            )
                        }
                    },
                    **li_na_on_duty(receiver),
                    "http": {"port": 0},
                    "storage": {"path": str(tmp_path / "dutyd.db")},
                }
            )
        )
        settings = load_config(main)
        assert {t.name: t.depends_on for t in settings.targets} == {
            "core-sw": [],
            "access-sw-1": ["core-sw"],
            "ups-a": ["access-sw-1"],
        }
        daemon = Daemon(settings)
        await daemon.start()
        status = daemon.latest.status
        for _ in range(100):
            if all(status.get(n) and status[n].up for n in ("core-sw", "access-sw-1", "ups-a")):
                break
            await asyncio.sleep(0.1)

        # The core switch fails, and everything behind it with it.
        for peer in peers:
            os.kill(peer.proc.pid, signal.SIGSTOP)
        await receiver.wait_for(1, 10)
        await asyncio.sleep(6.0)  # every child polled, held for its parents, judged
        titles = [r["body"]["title"] for r in receiver.received]
        assert len(titles) == 1 and "core-sw" in titles[0], titles
        down = {a["labels"]["target"]: a for a in daemon.operations.list_alerts()}
        assert down["access-sw-1"]["suppressed"] == "parent core-sw is down", down
        # The nearest ancestor down (itself muted by the core).
        assert down["ups-a"]["suppressed"] == "parent access-sw-1 is down", down

        # Back; then the UPS goes on battery: its own page.
        for peer in peers:
            os.kill(peer.proc.pid, signal.SIGCONT)
        await receiver.wait_for(2, 10)  # the core's resolve
        on_battery = {**ups_values(True), f"{UPS_BASE}.2.1.0": ["integer", 2]}  # not low yet
        SnmpdPeer.set_values(peers[2], {"1.3.6.1.2.1.1.3.0": ["timeticks", 360000], **on_battery})  # type: ignore[arg-type]
        await receiver.wait_for(3, 10)
        await asyncio.sleep(1.0)
        titles = [r["body"]["title"] for r in receiver.received]
        assert len(titles) == 3, titles
        assert titles[1].startswith("RESOLVED") and "core-sw" in titles[1], titles
        assert titles[2].startswith("ALERT") and "ups-a" in titles[2], titles
    finally:
        if daemon is not None:
            await daemon.stop()
        await receiver.stop()
        stop_site(peers)
