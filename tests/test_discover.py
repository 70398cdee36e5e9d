"""`dutyd discover` on a simulated room of real peers on 127.0.1.x (agent/discovery.py,
agent/discovercli.py, agent/topology.py): it finds and classifies each device, learns from
LLDP which switch each hangs off, writes a config `check-config` accepts, merges, refuses
ranges larger than a /22 before sending anything, and never touches an address outside its
range (listeners just outside count every packet)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from dutyd.agent import cli
from dutyd.agent.config import load_config
from dutyd.agent.discovercli import write_config
from dutyd.agent.discovery import Sweep, SweepOptions, community
from dutyd.agent.topology import LearnedTopology, describe, learn_parents, render_tree
from dutyd.collectors.base import CollectorContext, Readings
from dutyd.collectors.snmp.collector import SnmpCollector, SnmpTarget
from dutyd.core.records import Sample
from dutyd.web.server import serve_on_loopback
from tests.nut_fixtures import OL_VARS, UpsdPeer
from tests.peers import free_port
from tests.site_fixtures import (
    Counter,
    SiteSnmpd,
    arp,
    bridge,
    free_port_on,
    mac,
    snmp_sweep,
    switch,
    ups,
)
from tests.snmp_fixtures import COMMUNITY, V3_AUTH, V3_PRIV, V3_USER, SnmpdPeer
from tests.ssh_fixtures import SshdServer
from tests.tls import self_signed_cert

NET = "127.0.1.0/29"  # hosts .1 to .6
INSIDE = [f"127.0.1.{i}" for i in range(1, 7)]
# The network and broadcast addresses of the range, and the next network's first host.
OUTSIDE = ["127.0.1.0", "127.0.1.7", "127.0.1.8"]


async def discover(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dutyd.agent.cli",
        "discover",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_discover_classifies_a_room_and_writes_a_config_that_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    snmp_port = free_port_on(INSIDE + OUTSIDE, "udp")
    tcp_port = free_port_on(INSIDE + OUTSIDE, "tcp")
    nut_port, ssh_port, http_port = tcp_port, tcp_port, tcp_port  # one port, told apart by host
    # The NUT server, the SSH server and the web server have no LLDP: the core's ARP table
    # knows their MACs, the access switch's bridge table has each on its own port (the core
    # sees them all on its uplink).
    hosts = {4: "127.0.1.4", 5: "127.0.1.5", 6: "127.0.1.6", 2: "127.0.1.2"}
    core_values = {
        **switch(12, {2: "access-sw-1", 5: "no-such-device"}),
        **arp({ip: mac(n) for n, ip in hosts.items()}),
        **bridge({mac(n): 2 for n in hosts}),
    }
    access_values = {
        **switch(10, {10: "core-sw", 3: "ups-a"}),
        **bridge({mac(4): 4, mac(5): 5, mac(6): 6}),
    }
    rooms = [
        ("core", "127.0.1.1", "core-sw", "Room A", core_values),
        ("access", "127.0.1.2", "access-sw-1", "Room A", access_values),
        ("ups", "127.0.1.3", "ups-a", "Room A rack 4", ups()),  # SNMP v3 only
    ]
    peers: list[SiteSnmpd] = []
    (tmp_path / "nut").mkdir()
    nut = UpsdPeer(tmp_path / "nut", {"rack1": OL_VARS}, host="127.0.1.4")
    nut.port = nut_port
    (tmp_path / "nut" / "upsd.conf").write_text(f"LISTEN 127.0.1.4 {nut_port}\nMAXAGE 3\n")
    (tmp_path / "ssh").mkdir()
    sshd = SshdServer(tmp_path / "ssh", host="127.0.1.5")
    sshd.port = ssh_port

    async def portal(request: web.Request) -> web.Response:
        return web.Response(text="portal")

    app = web.Application()
    app.router.add_route("*", "/", portal)
    runner = web.AppRunner(app)
    counter = Counter()
    try:
        for sub, host, name, room, values in rooms:
            peers.append(
                SiteSnmpd(tmp_path / sub, host, snmp_port, name, room, values, sub == "ups")
            )
        for peer in peers:
            peer.wait_ready()
        nut.start()
        sshd.start()
        await runner.setup()
        await web.TCPSite(runner, "127.0.1.6", http_port).start()
        for host in OUTSIDE:
            await counter.listen(host, [snmp_port], [tcp_port])

        env = {"SITE_COMMUNITY": COMMUNITY, "SNMP_AUTH": V3_AUTH, "SNMP_PRIV": V3_PRIV}
        probe = [
            "--community-env",
            "SITE_COMMUNITY",
            "--v3-user",
            f"{V3_USER}:SHA256:SNMP_AUTH:AES:SNMP_PRIV",
            "--snmp-port",
            str(snmp_port),
            "--nut-port",
            str(nut_port),
            "--ssh-port",
            str(ssh_port),
            "--http-port",
            str(http_port),
            "--https-port",
            str(free_port_on(INSIDE, "tcp")),
            "--timeout",
            "1",
            "--rate",
            "200",
            "--ssh-key",
            str(sshd.client_key_path),
        ]
        written = tmp_path / "site.yaml"
        code, _, err = await discover(NET, *probe, "-o", str(written), env=env)
        assert code == 0, err
        assert (
            "6 addresses" in err
            and "6 devices found (6 new), 2 dependencies learned from LLDP, 3 from bridge tables"
            in err
        ), err
        text = written.read_text()
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        settings = load_config(written)  # what check-config does
        targets = {t.name: t for t in settings.targets}
        assert list(targets) == [
            "core-sw",
            "access-sw-1",
            "ups-a",
            "nut-127.0.1.4",
            "ssh-127.0.1.5",
            "http-127.0.1.6",
        ], text
        core, access, ups_a = targets["core-sw"], targets["access-sw-1"], targets["ups-a"]
        assert core.kind == "snmp" and core.profiles == ["switch"] and not core.depends_on
        assert core.labels == {"role": "core", "room": "Room-A"}
        assert access.labels["role"] == "network" and ups_a.labels["role"] == "ups"
        assert core.community_env is not None and core.address == f"127.0.1.1:{snmp_port}"
        assert access.profiles == ["switch"] and access.depends_on == ["core-sw"]
        assert ups_a.profiles == ["ups"] and ups_a.depends_on == ["access-sw-1"]
        # The UPS answers SNMP v3 only: its target says so, the passwords from variables.
        assert ups_a.version == "3" and ups_a.user == V3_USER and ups_a.community_env is None
        assert ups_a.auth_password_env is not None and ups_a.priv_protocol is not None
        assert V3_AUTH not in text and V3_PRIV not in text
        assert targets["nut-127.0.1.4"].kind == "nut"
        # Placed by the bridge tables: each on its access-switch port, not the core's uplink.
        for name in ("nut-127.0.1.4", "ssh-127.0.1.5", "http-127.0.1.6"):
            assert targets[name].depends_on == ["access-sw-1"], (name, text)
        assert (
            "depends_on: [access-sw-1]   # guessed: access-sw-1's bridge table has its MAC on "
            "port GigabitEthernet0/5" in text
        ), text
        assert targets["nut-127.0.1.4"].address == f"127.0.1.4:{nut_port}"
        assert targets["ssh-127.0.1.5"].kind == "ssh"
        assert targets["http-127.0.1.6"].address == f"http://127.0.1.6:{http_port}/"
        # Commented for a person: what each was recognised by, and what was guessed.
        assert "# 12 interfaces, 2 LLDP neighbours" in text
        assert "depends_on: [core-sw]   # guessed: LLDP saw it on core-sw port Gi0/2" in text
        assert '# UPS: "rack1"' in text and "# guessed: the account dutyd logs in with" in text
        assert COMMUNITY not in text  # the variable is named, never the community
        # Nothing reached an address outside the range.
        assert counter.hits == []

        # The tree of the written config.
        assert cli.main(["topology", str(written)]) == 0
        tree = capsys.readouterr().out
        assert tree.startswith(
            "core-sw\n└── access-sw-1\n    ├── ups-a\n    ├── nut-127.0.1.4\n"
            "    ├── ssh-127.0.1.5\n    └── http-127.0.1.6\n"
        ), tree

        # --merge: a config that watches the core switch already (under its own name).
        mine = tmp_path / "dutyd.yaml"
        mine.write_text(
            yaml.safe_dump(
                {
                    "targets": [
                        {
                            "name": "core",
                            "kind": "snmp",
                            "address": f"127.0.1.1:{snmp_port}",
                            "community_env": "SITE_COMMUNITY",
                            "profiles": ["switch"],
                        }
                    ]
                }
            )
        )
        code, _, err = await discover(NET, *probe, "--merge", str(mine), env=env)
        assert code == 0, err
        merged = mine.read_text()  # edited in place (tests/test_discover_merge.py)
        names = [t["name"] for t in yaml.safe_load(merged)["targets"]]
        assert names[0] == "core" and "core-sw" not in names and "access-sw-1" in names, merged
        assert "depends_on: [core]" in merged  # the merged config's own name for it
        assert counter.hits == []
    finally:
        counter.close()
        await runner.cleanup()
        sshd.stop()
        nut.stop()
        for peer in peers:
            peer.stop()


def test_ranges_larger_than_a_22_are_refused_before_anything_is_sent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["discover", "127.0.0.0/21"]) == 2
    err = capsys.readouterr().err
    assert (
        "127.0.0.0/21: 2048 addresses, more than a /22 (1024); split it, or give --allow-large"
        in err
    )
    assert cli.main(["discover", "127.0.0.0/8", "--allow-large"]) == 2
    assert "more than 65536 addresses" in capsys.readouterr().err
    assert cli.main(["discover", "127.0.1.0/29", "--community-env", "NO_SUCH_VAR_26"]) == 2
    assert "NO_SUCH_VAR_26: the variable is not set" in capsys.readouterr().err
    assert cli.main(["discover", "127.0.1.0/29", "--rate", "0"]) == 2
    assert "must be above 0" in capsys.readouterr().err


def test_the_tree_is_rooted_at_the_switch_most_switches_see() -> None:
    # The access switch has more neighbours (its servers), the core more switches.
    switches = {
        "core": [("Te1", "acc-1"), ("Te2", "acc-2")],
        "acc-1": [("Gi48", "core-sys"), ("Gi1", "srv-1"), ("Gi2", "srv-2"), ("Gi3", "srv-3")],
        "acc-2": [("Gi48", "core-sys")],
    }
    known = {
        "core-sys": "core",
        "acc-1": "acc-1",
        "acc-2": "acc-2",
        "srv-1": "srv-1",
        "srv-2": "srv-2",
        "srv-3": "srv-3",
    }
    parents = learn_parents(switches, known)
    assert {k: (v.parent, v.port) for k, v in parents.items()} == {
        "acc-1": ("core", "Te1"),
        "acc-2": ("core", "Te2"),
        "srv-1": ("acc-1", "Gi1"),
        "srv-2": ("acc-1", "Gi2"),
        "srv-3": ("acc-1", "Gi3"),
    }
    tree = render_tree(
        {"b": ["a"], "c": ["a", "b"], "d": ["e"], "e": ["d"]}, ["a", "b", "c", "d", "e"]
    )
    assert tree.splitlines() == [
        "a",
        "├── b",
        "└── c  (also depends on b)",
        "d",
        "└── e",
        "    └── d",
    ]


def test_learned_topology_waits_for_every_switch_and_keeps_what_a_dead_one_said() -> None:
    def target(name: str, profiles: list[str] | None = None) -> Any:
        raw = {"name": name, "kind": "snmp", "address": "127.0.0.1", "community": "x"}
        raw.update({"profiles": profiles or ["ups"], "depends_on": "auto"})
        return SnmpTarget.model_validate(raw)

    def lldp(target: str, *rows: tuple[str, str]) -> list[Sample]:
        return [
            Sample.of("lldp_neighbour", 1, 0.0, {"target": target, "port": p, "neighbour": n})
            for p, n in rows
        ]

    targets = [target("core", ["switch", "lldp"]), target("acc", ["switch", "lldp"]), target("ups")]
    topo = LearnedTopology(targets)
    # The access switch answers first: nothing is learned from half the room.
    assert topo.observe("acc", lldp("acc", ("Gi48", "core"), ("Gi3", "ups"))) == []
    assert topo.parents_of("ups") == []
    changes = topo.observe("core", lldp("core", ("Te1", "acc")))
    assert [describe(c) for c in changes] == [
        "acc learned on core port Te1",
        "ups learned on acc port Gi3",
    ]
    # The core stops answering: what it said holds.
    assert topo.observe("core", [], ok=False) == []
    assert topo.parents() == {"acc": ["core"], "core": [], "ups": ["acc"]}
    # A reload keeps what the switches said.
    again = LearnedTopology(targets, topo)
    assert again.parents_of("ups") == ["acc"]
    moved = again.observe("acc", lldp("acc", ("Gi48", "core"), ("Gi7", "ups")))
    assert [describe(c) for c in moved] == ["ups moved from acc port Gi3 to acc port Gi7"]


async def test_hostile_answers_are_read_bounded_and_never_crash_the_sweep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A device that floods a line without end, answers garbage datagrams or a forged SNMP
    reply: the sweep finishes within its timeouts and takes nothing from it."""
    monkeypatch.setenv("HOSTILE_COMMUNITY", "public")
    host = "127.0.1.9"
    snmp_port = free_port_on([host], "udp")
    tcp_port = free_port_on([host], "tcp")

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(200):  # 200 x 64 KiB without a newline, then gone
                writer.write(b"SSH-" + b"x" * 65536)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    class Garbage(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.transport.sendto(b"\x30\x82\xff\xff garbage", addr)
            self.transport.sendto(data[:20], addr)  # truncated echo of the request

    server = await asyncio.start_server(flood, host, tcp_port)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        Garbage, local_addr=(host, snmp_port)
    )
    try:
        options = SweepOptions(
            [community("HOSTILE_COMMUNITY")],
            snmp_port=snmp_port,
            nut_port=tcp_port,
            ssh_ports=[tcp_port],
            http_ports=[tcp_port],
            https_ports=[],
            timeout=0.5,
        )
        started = asyncio.get_running_loop().time()
        devices = await Sweep(options).run([host])
        assert asyncio.get_running_loop().time() - started < 5
        assert devices == []  # nothing it said is taken for a device
    finally:
        transport.close()
        server.close()


async def test_https_servers_are_found_over_tls_and_written_as_https_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real TLS server (a self-signed certificate, as most devices' web pages have) on one
    port and a plain HTTP server on another, each probed both ways: the HTTPS probe finds the
    TLS server's status, neither probe takes the other protocol's port for a web server, and
    the written targets load with the scheme that answered."""
    certs = tmp_path / "certs"
    certs.mkdir()
    cert, key = self_signed_cert(certs)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def page(status: int) -> Any:
        async def answer(request: web.Request) -> web.Response:
            return web.Response(status=status, text="device")

        return answer

    runners = []
    for status, tls in ((200, None), (503, context)):
        app = web.Application()
        app.router.add_route("*", "/", page(status))
        runners.append(await serve_on_loopback(app, ssl_context=tls))
    (plain_runner, plain), (tls_runner, tls_port) = runners
    try:
        written = tmp_path / "web.yaml"
        ports = [
            *("--http-port", str(plain), "--http-port", str(tls_port)),
            *("--https-port", str(tls_port), "--https-port", str(plain)),
        ]
        args = [
            "127.0.0.1/32",
            "--community-env",
            "NO_SNMP",
            "--snmp-port",
            str(free_port_on(["127.0.0.1"], "udp")),
            "--nut-port",
            "0",
            "--ssh-port",
            str(free_port_on(["127.0.0.1"], "tcp")),
            *ports,
            "--timeout",
            "1",
            "-o",
            str(written),
        ]
        code, _, err = await discover(*args, env={"NO_SNMP": "public"})
        assert code == 0, err
        text = written.read_text()
        targets = {t.name: t for t in load_config(written).targets}
        assert {t.address: t.kind for t in targets.values()} == {
            f"http://127.0.0.1:{plain}/": "http",
            f"https://127.0.0.1:{tls_port}/": "http",
        }, text
        assert (
            f'answered HTTP 503\n    kind: http\n    address: "https://127.0.0.1:{tls_port}/"'
            in (text)
        ), text
        # The certificate does not verify here: said, for a person to give its CA.
        assert "# guessed: its certificate does not verify here (self-signed?)" in text, text
        assert text.count("does not verify") == 1, text
        # Trusted here (its CA in the store the polls use): nothing to say.
        code, _, err = await discover(*args, env={"NO_SNMP": "public", "SSL_CERT_FILE": str(cert)})
        assert code == 0, err
        assert "does not verify" not in written.read_text(), written.read_text()
    finally:
        await plain_runner.cleanup()
        await tls_runner.cleanup()


def akcp_values() -> dict[str, list[Any]]:
    """An AKCP sensorProbe (SPAGENT-MIB): two temperature probes (one set to Fahrenheit) and
    a humidity probe, each named by its description."""
    temp, humidity = "1.3.6.1.4.1.3854.1.2.2.1.16.1", "1.3.6.1.4.1.3854.1.2.2.1.17.1"
    return {
        "1.3.6.1.2.1.1.3.0": ["timeticks", 360000],
        f"{temp}.1.0": ["string", "cold aisle"],
        f"{temp}.1.1": ["string", "hot aisle"],
        f"{temp}.3.0": ["integer", 23],
        f"{temp}.3.1": ["integer", 95],
        f"{temp}.12.0": ["integer", 1],
        f"{temp}.12.1": ["integer", 0],
        f"{humidity}.1.0": ["string", "room"],
        f"{humidity}.3.0": ["integer", 41],
    }


async def test_room_sensors_are_recognised_by_their_mib_and_written_as_sensor_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real snmpd serving AKCP SPAGENT-MIB's temperature and humidity tables: discover
    classifies it as a room sensor (before, an "other SNMP device" with nothing to read) and
    writes a `sensor` target whose probes, polled, read the device's values."""
    (tmp_path / "snmpd").mkdir()
    peer = SnmpdPeer(tmp_path / "snmpd", akcp_values(), served=(".1.3.6.1.4.1.3854",))
    context = CollectorContext()
    try:
        options = snmp_sweep("SENSOR_COMMUNITY", peer.port, timeout=2.0)
        monkeypatch.setenv("SENSOR_COMMUNITY", COMMUNITY)
        devices = await Sweep(options).run(["127.0.0.1"])
        assert [d.snmp_class for d in devices] == ["sensor"]
        text, _ = write_config(devices, options, ["127.0.0.1/32"], {}, [], dt.datetime.now(dt.UTC))
        written = tmp_path / "sensors.yaml"
        written.write_text(text)
        (target,) = load_config(written).targets
        assert target.kind == "snmp" and target.profiles == ["sensor"], text
        assert "# guessed: a probe reports Fahrenheit" in text, text
        collector = SnmpCollector(target, context)
        readings = Readings({"target": target.name}, 0.0)
        await collector.collect(readings)
        await collector.close()
        got = {(s.name, dict(s.labels).get("sensor")): s.value for s in readings.samples}
        assert got[("room_temperature_celsius", "cold aisle")] == 23, got
        assert got[("room_humidity_percent", "room")] == 41, got
    finally:
        await context.close()
        peer.stop()


class FirstAnswerOnly(asyncio.DatagramProtocol):
    """A UDP relay in front of a real snmpd that passes its first request and answer (the
    system group), then drops everything: a device that stops answering mid-classification."""

    def __init__(self, agent_port: int) -> None:
        self.agent = ("127.0.0.1", agent_port)
        self.answered = False
        self.dropped = 0
        self.client: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if addr == self.agent:
            if self.client is not None and not self.answered:
                self.answered = True
                self.transport.sendto(data, self.client)
            return
        if self.answered:
            self.dropped += 1
            return
        self.client = addr
        self.transport.sendto(data, self.agent)


async def test_tables_that_get_no_answer_are_said_in_the_written_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A UPS that answers its sysName and then nothing (a slow agent, a lossy link): it is not
    silently written as "an SNMP device" as if it had no UPS-MIB; the config says which tables
    got no answer, and still loads."""
    (tmp_path / "snmpd").mkdir()
    peer = SnmpdPeer(tmp_path / "snmpd", ups())
    loop = asyncio.get_running_loop()
    relay_port = free_port("udp")
    transport, relay = await loop.create_datagram_endpoint(
        lambda: FirstAnswerOnly(peer.port), local_addr=("127.0.0.1", relay_port)
    )
    try:
        monkeypatch.setenv("SENSOR_COMMUNITY", COMMUNITY)
        options = snmp_sweep("SENSOR_COMMUNITY", relay_port, timeout=0.3)
        (device,) = await Sweep(options).run(["127.0.0.1"])
        assert relay.answered and relay.dropped >= 1
        assert device.sys_name and device.snmp_class == "snmp"
        assert "UPS-MIB" in device.unanswered and "IF-MIB" in device.unanswered, device
        text, _ = write_config([device], options, ["127.0.0.1/32"], {}, [], dt.datetime.now(dt.UTC))
        assert "# guessed: no answer within 0.6s from its ARP table, UPS-MIB," in text, text
        written = tmp_path / "partial.yaml"
        written.write_text(text)
        (target,) = load_config(written).targets
        assert [m.name for m in target.oids] == ["snmp_agent_uptime_seconds"], text
    finally:
        transport.close()
        peer.stop()
