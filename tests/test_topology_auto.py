"""`depends_on: auto` (issue 26, item 3): the daemon learns each device's switch from the
switches' LLDP-MIB neighbours (the `lldp` SNMP profile), logs a device that moved port, and a
core-switch outage with everything behind it down pages once. Real snmpd instances on
127.0.1.x, the real daemon in-process, a real receiver."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
import yaml

from dutyd.agent import cli
from dutyd.agent.config import load_config
from dutyd.agent.daemon import Daemon
from dutyd.core.errors import ConfigError
from tests.site_fixtures import (
    SiteSnmpd,
    auto_topology_config,
    free_port_on,
    site_snmp_target,
    start_site,
    stop_site,
    switch,
    ups,
)
from tests.snmp_fixtures import COMMUNITY, SnmpdPeer
from tests.test_notify_delivery import Receiver

HOSTS = ["127.0.1.1", "127.0.1.2", "127.0.1.3"]
LLDP_ROW = "1.0.8802.1.1.2.1.4.1.1.9.0.{port}.1"


async def until(check, within: float, what: str) -> None:
    for _ in range(int(within / 0.1)):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_auto_dependencies_follow_lldp_and_one_core_outage_pages_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SITE_COMMUNITY", COMMUNITY)
    port = free_port_on(HOSTS, "udp")
    access_values = switch(10, {10: "core-sw", 3: "ups-a"})
    rooms = [
        ("core", HOSTS[0], "core-sw", switch(12, {1: "access-sw-1"})),
        ("access", HOSTS[1], "access-sw-1", access_values),
        ("ups", HOSTS[2], "ups-a", ups()),
    ]
    peers: list[SiteSnmpd] = []
    receiver = Receiver()
    daemon: Daemon | None = None

    def snmp(name: str, host: str, role: str, profiles: list[str]) -> dict:
        return site_snmp_target(name, host, port, role, profiles)

    try:
        start_site(peers, tmp_path, port, rooms)
        await receiver.start()
        targets = [
            snmp("core-sw", HOSTS[0], "core", ["switch", "lldp"]),
            snmp("access-sw-1", HOSTS[1], "network", ["switch", "lldp"]),
            snmp("ups-a", HOSTS[2], "ups", ["ups"]),
        ]
        config = tmp_path / "dutyd.yaml"
        config.write_text(
            yaml.safe_dump(auto_topology_config(tmp_path, receiver, targets, "topology-test"))
        )
        daemon = Daemon(load_config(config))
        await daemon.start()
        deps = daemon.engine.mutes.deps
        await until(
            lambda: deps.parents == {"access-sw-1": ("core-sw",), "ups-a": ("access-sw-1",)},
            10,
            "the tree learned from LLDP",
        )

        async def changes() -> list[str]:
            entries = await daemon.storage.log.read(kinds=["topology.change"])
            return sorted(e.data["change"] for e in entries)

        await asyncio.sleep(0.3)
        assert await changes() == [
            "access-sw-1 learned on core-sw port Gi0/1",
            "ups-a learned on access-sw-1 port Gi0/3",
        ]

        # `dutyd topology --live` shows the daemon's learned tree.
        live = ["topology", "--live", "--url", daemon.http.url]
        monkeypatch.setenv("DUTYD_API_TOKEN", "topology-test")  # after the config was read
        assert await asyncio.to_thread(cli.main, live) == 0
        shown = capsys.readouterr().out
        assert "core-sw\n└── access-sw-1\n    └── ups-a\n" in shown, shown
        assert "learned from LLDP: ups-a on access-sw-1 port Gi0/3" in shown, shown

        # The UPS is moved to port 7 of the access switch: a log entry says so.
        moved = {k: v for k, v in access_values.items() if k != LLDP_ROW.format(port=3)}
        moved[LLDP_ROW.format(port=7)] = ["string", "ups-a"]
        SnmpdPeer.set_values(peers[1], moved)  # type: ignore[arg-type]
        await until(lambda: deps.parents.get("ups-a") == ("access-sw-1",), 1, "still learned")
        for _ in range(50):
            if len(await changes()) == 3:
                break
            await asyncio.sleep(0.1)
        assert "ups-a moved from access-sw-1 port Gi0/3 to access-sw-1 port Gi0/7" in (
            await changes()
        )

        # The core switch fails and everything behind it: one page, the core's.
        for peer in peers:
            os.kill(peer.proc.pid, signal.SIGSTOP)
        await receiver.wait_for(1, 10)
        await asyncio.sleep(5.0)
        titles = [r["body"]["title"] for r in receiver.received]
        assert len(titles) == 1 and "core-sw" in titles[0], titles
        # The learned tree holds while the switches are down (no answer is no news).
        assert deps.parents == {"access-sw-1": ("core-sw",), "ups-a": ("access-sw-1",)}
    finally:
        if daemon is not None:
            await daemon.stop()
        await receiver.stop()
        stop_site(peers)


def test_auto_is_a_reserved_word_not_a_target(tmp_path: Path) -> None:
    path = tmp_path / "dutyd.yaml"
    path.write_text(
        "targets:\n"
        "  - {name: auto, kind: tcp, address: '127.0.0.1:22'}\n"
        "  - {name: srv, kind: tcp, address: '127.0.0.1:22', depends_on: auto}\n"
        "  - {name: app, kind: tcp, address: '127.0.0.1:80', depends_on: [auto, srv]}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        "targets[0].name: 'auto' is reserved (depends_on: auto) (line 2)"
    ]
    path.write_text(path.read_text().replace("name: auto,", "name: sw,"))
    settings = load_config(path)
    assert settings.targets[1].learns_parents and settings.targets[1].configured_parents == []
    assert settings.targets[2].configured_parents == ["srv"]
