"""`depends_on: auto` from the switches' forwarding tables where there is no LLDP (issue 26,
item 3): the `bridge` SNMP profile reads BRIDGE-MIB / Q-BRIDGE-MIB forwarding tables and the
ARP tables (capped, a longer table refused with the reason while the switch stays up), and the
daemon places each device on the edge port that sees its MAC, so a core-switch outage with
everything behind it down pages once, and a MAC that moved port is a `topology.change` entry.
Real snmpd instances on 127.0.1.x serving the tables without LLDP, the real daemon in-process,
a real receiver."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from dutyd.agent import cli
from dutyd.agent.config import load_config
from dutyd.agent.daemon import Daemon
from dutyd.agent.topology import (
    LearnedTopology,
    Link,
    learn_bridge_parents,
    target_ip,
)
from dutyd.collectors.base import CollectorContext, Readings
from dutyd.collectors.snmp.collector import SnmpCollector, SnmpTarget
from dutyd.collectors.snmp.profiles.bridge import ForwardingTable
from tests.site_fixtures import (
    SiteSnmpd,
    arp,
    arp_physical,
    auto_topology_config,
    bridge,
    free_port_on,
    mac,
    q_bridge,
    site_snmp_target,
    start_site,
    stop_site,
    switch,
    ups,
)
from tests.snmp_fixtures import COMMUNITY, SnmpdPeer
from tests.test_notify_delivery import Receiver
from tests.test_topology_auto import until

HOSTS = ["127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4"]
CORE, ACCESS_1, ACCESS_2, UPS = (mac(n) for n in (1, 2, 3, 4))


def site() -> list[tuple[str, str, str, dict[str, list[Any]]]]:
    """A core switch with two access switches (ports 1 and 2), a UPS on port 3 of the first;
    no LLDP anywhere. The core routes: its ARP table (ipNetToMediaTable) knows the others; the
    first access switch's (ipNetToPhysicalTable) knows the core. Access switch 1 serves
    Q-BRIDGE-MIB, the others BRIDGE-MIB's dot1dTpFdbTable."""
    return [
        (
            "core",
            HOSTS[0],
            "core-sw",
            {
                **switch(12, {}),
                **bridge({ACCESS_1: 1, UPS: 1, ACCESS_2: 2}),
                **arp({HOSTS[1]: ACCESS_1, HOSTS[2]: ACCESS_2, HOSTS[3]: UPS}),
            },
        ),
        (
            "access1",
            HOSTS[1],
            "access-sw-1",
            {
                **switch(10, {}),
                **q_bridge({CORE: 10, ACCESS_2: 10, UPS: 3}),
                **arp_physical({HOSTS[0]: CORE}),
            },
        ),
        (
            "access2",
            HOSTS[2],
            "access-sw-2",
            {**switch(10, {}), **bridge({CORE: 10, ACCESS_1: 10, UPS: 10})},
        ),
        ("ups", HOSTS[3], "ups-a", ups()),
    ]


# -- the rule, on its own -------------------------------------------------------------------


def test_devices_hang_off_the_edge_port_not_the_uplinks() -> None:
    fdb = {
        "core": {"m-a1": "p1", "m-ups": "p1", "m-srv": "p1", "m-a2": "p2"},
        "a1": {"m-core": "up", "m-a2": "up", "m-ups": "e3", "m-srv": "e4"},
        "a2": {"m-core": "up", "m-a1": "up", "m-ups": "up", "m-srv": "up"},
    }
    macs = {"core": "m-core", "a1": "m-a1", "a2": "m-a2", "ups": "m-ups", "srv": "m-srv"}
    assert learn_bridge_parents(fdb, macs) == {
        "a1": Link("core", "p1", "bridge"),
        "a2": Link("core", "p2", "bridge"),
        "ups": Link("a1", "e3", "bridge"),
        "srv": Link("a1", "e4", "bridge"),
    }
    # The core's host watched twice (a ping target beside its SNMP one): the same root.
    assert learn_bridge_parents(fdb, {**macs, "core-ping": "m-core"}) == learn_bridge_parents(
        fdb, macs
    )
    # Placed by LLDP: left alone.
    assert "ups" not in learn_bridge_parents(fdb, macs, skip={"ups"})
    # The root's MAC unknown: each switch's busiest port is its uplink, same tree.
    without_core = {k: v for k, v in macs.items() if k != "core"}
    assert learn_bridge_parents(fdb, without_core) == {
        "a1": Link("core", "p1", "bridge"),
        "a2": Link("core", "p2", "bridge"),
        "ups": Link("a1", "e3", "bridge"),
        "srv": Link("a1", "e4", "bridge"),
    }


def test_two_switches_seeing_each_other_make_no_loop() -> None:
    """Two switches, each seeing the other on a port it calls an edge: one of them is the
    root (the one with the ARP table), never each other's parent."""
    fdb = {"x": {"m-y": "1", "m-s": "2"}, "y": {"m-x": "1"}}
    macs = {"x": "m-x", "y": "m-y", "s": "m-s"}
    links = learn_bridge_parents(fdb, macs, arp_sizes={"y": 5})
    assert links == {"x": Link("y", "1", "bridge"), "s": Link("x", "2", "bridge")}


def test_target_addresses_as_arp_tables_write_them() -> None:
    assert target_ip("127.0.1.4:1161") == "127.0.1.4"
    assert target_ip("https://[::1]:8443/health") == "::1"
    assert target_ip("http://user@10.0.0.5/") == "10.0.0.5"
    assert target_ip("ups-a.example:161") is None


def two_switches_and_a_server(
    tmp_path: Path, more: list[dict[str, Any]] | None = None, before: LearnedTopology | None = None
) -> LearnedTopology:
    path = tmp_path / "dutyd.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "defaults": {"snmp": {"community": "x", "depends_on": "auto"}},
                "targets": [
                    {"name": "core", "kind": "snmp", "address": "10.0.0.1", "profiles": ["bridge"]},
                    {"name": "a1", "kind": "snmp", "address": "10.0.0.2", "profiles": ["bridge"]},
                    {"name": "srv", "kind": "tcp", "address": "10.0.0.9:22", "depends_on": "auto"},
                    *(more or []),
                ],
            }
        )
    )
    return LearnedTopology(load_config(path).targets, before)


def test_a_reload_keeps_what_the_tables_said_and_places_a_new_target_on_one_host(
    tmp_path: Path,
) -> None:
    """A reload adds the server's web application (same host): it is placed from the tables
    read before the reload, without waiting for the switches' next polls."""
    topo = two_switches_and_a_server(tmp_path)
    topo.observe("core", [], True, ForwardingTable({"aa": "p1", "99": "p1"}, {"10.0.0.2": "aa"}))
    a1 = ForwardingTable({"99": "e4", "c0": "up"}, {"10.0.0.9": "99", "10.0.0.1": "c0"})
    topo.observe("a1", [], True, a1)
    assert topo.parents_of("srv") == ["a1"]
    web = {
        "name": "srv-web",
        "kind": "http",
        "address": "http://10.0.0.9:8080/",
        "depends_on": "auto",
    }
    reloaded = two_switches_and_a_server(tmp_path, [web], topo)
    assert reloaded.parents_of("srv") == ["a1"]
    assert reloaded.parents_of("srv-web") == ["a1"]
    assert reloaded.view()["learned"]["srv-web"] == {"parent": "a1", "port": "e4", "how": "bridge"}


def test_a_mac_learned_later_is_looked_up_in_the_tables_read_before(tmp_path: Path) -> None:
    """The access switch answers first, before the router's ARP table named the server's
    MAC: its table is read again for it, so the server is placed on its edge port at once
    (not on the core's downlink first, then "moved")."""
    topo = two_switches_and_a_server(tmp_path)
    assert topo.observe("a1", [], True, ForwardingTable({"99": "e4", "c0": "up"}, {})) == []
    core = ForwardingTable(
        {"aa": "p1", "99": "p1", "c0": "cpu"},
        {"10.0.0.1": "c0", "10.0.0.2": "aa", "10.0.0.9": "99"},
    )
    changes = topo.observe("core", [], True, core)
    assert [(c, now) for c, _, now in changes] == [
        ("a1", Link("core", "p1", "bridge")),
        ("srv", Link("a1", "e4", "bridge")),
    ]


def test_a_table_not_read_and_a_mac_aged_out_keep_the_learned_place(tmp_path: Path) -> None:
    topo = two_switches_and_a_server(tmp_path)
    core = ForwardingTable({"aa": "p1", "99": "p1"}, {"10.0.0.2": "aa", "10.0.0.9": "99"})
    a1 = ForwardingTable({"99": "e4", "c0": "up"}, {"10.0.0.1": "c0"})
    assert topo.observe("core", [], True, core) == []  # a1 not heard yet
    changes = topo.observe("a1", [], True, a1)
    assert [(c, now) for c, _, now in changes] == [
        ("a1", Link("core", "p1", "bridge")),
        ("srv", Link("a1", "e4", "bridge")),
    ]
    # a1's table refused (too long): no news.
    assert topo.observe("a1", [], True, None) == []
    # The server idle: its MAC aged out of every table and its ARP entry too: it stays.
    assert topo.observe("core", [], True, ForwardingTable({"aa": "p1"}, {})) == []
    assert topo.observe("a1", [], True, ForwardingTable({"c0": "up"}, {})) == []
    assert topo.parents_of("srv") == ["a1"]
    # It speaks again on another port: a move.
    moved = topo.observe("a1", [], True, ForwardingTable({"99": "e7", "c0": "up"}, {}))
    assert moved == [("srv", Link("a1", "e4", "bridge"), Link("a1", "e7", "bridge"))]


# -- the profile, on a real snmpd -----------------------------------------------------------


def bridge_target(peer: SnmpdPeer, max_rows: int) -> SnmpTarget:
    return SnmpTarget.model_validate(
        {
            "name": "sw",
            "kind": "snmp",
            "address": peer.address,
            "community": COMMUNITY,
            "profiles": ["switch", "bridge"],
            "bridge_max_rows": max_rows,
        }
    )


async def test_the_bridge_profile_reads_both_fdb_tables_and_both_arp_tables(
    tmp_path: Path,
) -> None:
    values = {
        **switch(4, {}),
        **bridge({mac(10): 2}),
        **q_bridge({mac(11): 3}, fdb_id=20),
        **arp({"10.0.0.10": mac(10)}),
        **arp_physical({"10.0.0.11": mac(11)}),
    }
    peer = SnmpdPeer(
        tmp_path, values, served=(".1.3.6.1.2.1.17", ".1.3.6.1.2.1.4.22.1.2", ".1.3.6.1.2.1.4.35")
    )
    context = CollectorContext()
    collector = SnmpCollector(bridge_target(peer, 100), context)
    try:
        readings = Readings({"target": "sw"}, 0.0)
        await collector.collect(readings)
        assert collector.take_forwarding() == (
            ForwardingTable(
                {mac(10): "Gi0/2", mac(11): "Gi0/3"},
                {"10.0.0.10": mac(10), "10.0.0.11": mac(11)},
            ),
            "",
        )
        assert collector.take_forwarding() is None  # once per poll
        got = {s.name: s.value for s in readings.samples if s.name.startswith("bridge_")}
        assert got == {"bridge_fdb_read": 1.0, "bridge_fdb_macs": 2.0}
    finally:
        await collector.close()
        await context.close()
        peer.stop()


async def test_a_forwarding_table_over_the_cap_is_refused_and_the_switch_stays_up(
    tmp_path: Path,
) -> None:
    values = {**switch(4, {}), **bridge({mac(n): 1 + n % 4 for n in range(10, 16)})}
    peer = SnmpdPeer(tmp_path, values, served=(".1.3.6.1.2.1.17",))
    context = CollectorContext()
    collector = SnmpCollector(bridge_target(peer, 5), context)
    try:
        readings = Readings({"target": "sw"}, 0.0)
        await collector.collect(readings)  # no CollectError: the switch is up
        table, reason = collector.take_forwarding()  # type: ignore[misc]
        assert table is None
        assert "1.3.6.1.2.1.17.4.3.1.2 has more than 5 rows" in reason, reason
        names = {s.name: s.value for s in readings.samples}
        assert names["bridge_fdb_read"] == 0.0 and "bridge_fdb_macs" not in names
        assert names["if_oper_up"] == 1.0  # the switch profile's readings stand
    finally:
        await collector.close()
        await context.close()
        peer.stop()


# -- the daemon, on a site of real snmpd ----------------------------------------------------


async def test_auto_dependencies_from_forwarding_tables_page_once_and_log_a_move(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Access switch 2's table is over its `bridge_max_rows`: refused and logged, the tree
    is learned from the others (the core sees it on its port 2)."""
    caplog.set_level(logging.WARNING, logger="dutyd")
    monkeypatch.setenv("SITE_COMMUNITY", COMMUNITY)
    port = free_port_on(HOSTS, "udp")
    rooms = site()
    peers: list[SiteSnmpd] = []
    receiver = Receiver()
    daemon: Daemon | None = None

    def snmp(name: str, host: str, role: str, profiles: list[str], **more: Any) -> dict:
        return site_snmp_target(name, host, port, role, profiles, **more)

    try:
        start_site(peers, tmp_path, port, rooms)
        await receiver.start()
        targets = [
            snmp("core-sw", HOSTS[0], "core", ["switch", "bridge"]),
            snmp("access-sw-1", HOSTS[1], "network", ["switch", "bridge"]),
            snmp("access-sw-2", HOSTS[2], "network", ["switch", "bridge"], bridge_max_rows=2),
            snmp("ups-a", HOSTS[3], "ups", ["ups"]),
        ]
        config = tmp_path / "dutyd.yaml"
        config.write_text(
            yaml.safe_dump(auto_topology_config(tmp_path, receiver, targets, "bridge-test"))
        )
        daemon = Daemon(load_config(config))
        await daemon.start()
        deps = daemon.engine.mutes.deps
        tree = {
            "access-sw-1": ("core-sw",),
            "access-sw-2": ("core-sw",),
            "ups-a": ("access-sw-1",),
        }
        await until(lambda: deps.parents == tree, 10, "the tree learned from forwarding tables")

        async def changes() -> list[str]:
            entries = await daemon.storage.log.read(kinds=["topology.change"])
            return sorted(e.data["change"] for e in entries)

        await asyncio.sleep(0.3)
        assert await changes() == [
            "access-sw-1 learned on core-sw port Gi0/1",
            "access-sw-2 learned on core-sw port Gi0/2",
            "ups-a learned on access-sw-1 port Gi0/3",
        ]
        refused = [r for r in caplog.records if r.getMessage() == "forwarding table not read"]
        assert refused and refused[0].fields["target"] == "access-sw-2", caplog.records
        assert "has more than 2 rows" in refused[0].fields["reason"], refused[0].fields
        live = ["topology", "--live", "--url", daemon.http.url]
        monkeypatch.setenv("DUTYD_API_TOKEN", "bridge-test")
        assert await asyncio.to_thread(cli.main, live) == 0
        shown = capsys.readouterr().out
        assert "learned from the bridge table: ups-a on access-sw-1 port Gi0/3" in shown, shown

        # The UPS is moved to port 7 of the first access switch: a log entry says so.
        access_1 = rooms[1][3]
        moved = {k: v for k, v in access_1.items() if not k.startswith("1.3.6.1.2.1.17.7")}
        moved |= q_bridge({CORE: 10, ACCESS_2: 10, UPS: 7})
        SnmpdPeer.set_values(peers[1], moved)  # type: ignore[arg-type]
        want = "ups-a moved from access-sw-1 port Gi0/3 to access-sw-1 port Gi0/7"
        for _ in range(50):
            if want in await changes():
                break
            await asyncio.sleep(0.1)
        assert want in await changes(), await changes()
        assert deps.parents == tree

        # The core switch fails and everything behind it: one page, the core's.
        for peer in peers:
            os.kill(peer.proc.pid, signal.SIGSTOP)
        await receiver.wait_for(1, 10)
        await asyncio.sleep(5.0)
        titles = [r["body"]["title"] for r in receiver.received]
        assert len(titles) == 1 and "core-sw" in titles[0], titles
        assert deps.parents == tree  # no answer is no news
    finally:
        if daemon is not None:
            await daemon.stop()
        await receiver.stop()
        stop_site(peers)
