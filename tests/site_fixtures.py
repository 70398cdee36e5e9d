"""A simulated machine room on loopback addresses 127.0.1.x: real net-snmp snmpd instances
(switches with IF-MIB and LLDP-MIB tables, a UPS with UPS-MIB), each on its own address with
its own sysName and sysLocation, all on one UDP port; and listeners that count every packet and
connection that reaches an address (a sweep must never touch one outside its range)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from dutyd.agent.discovery import SweepOptions, community
from dutyd.collectors.snmp import codec
from tests.paging_fixtures import li_na_on_duty
from tests.peers import PeerProcess, require_binary
from tests.snmp_fixtures import (
    _NO_BUILTIN,
    COMMUNITY,
    PASS_SCRIPT,
    SERVED,
    SNMPD,
    V3_AUTH,
    V3_PRIV,
    V3_USER,
    SnmpdPeer,
    switch_values,
    ups_values,
)
from tests.test_notify_delivery import Receiver

LLDP = ".1.0.8802.1.1.2"
# BRIDGE-MIB (the forwarding table, bridge port -> ifIndex) and IP-MIB's ARP table.
BRIDGE = ".1.3.6.1.2.1.17"
ARP = ".1.3.6.1.2.1.4.22.1.2"  # the column: snmpd's own table module registers 4.22.1
ARP_PHYSICAL = ".1.3.6.1.2.1.4.35.1.4"  # ipNetToPhysicalPhysAddress, likewise


def free_port_on(hosts: list[str], kind: str = "udp") -> int:
    """A port number free on every one of these addresses."""
    family = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    for _ in range(50):
        with socket.socket(socket.AF_INET, family) as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts[1:]:
                with socket.socket(socket.AF_INET, family) as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no {kind} port free on all of {hosts}")


def lldp_values(ports: dict[int, str], neighbours: dict[int, str]) -> dict[str, list[Any]]:
    """LLDP-MIB: local port descriptions, and per local port the neighbour's sysName."""
    v: dict[str, list[Any]] = {}
    for num, desc in ports.items():
        v[f"1.0.8802.1.1.2.1.3.7.1.4.{num}"] = ["string", desc]
    for num, name in neighbours.items():
        v[f"1.0.8802.1.1.2.1.4.1.1.9.0.{num}.1"] = ["string", name]
    return v


class SiteSnmpd:
    """snmpd on host:port, with sysName/sysLocation and the given values (pass_persist)."""

    def __init__(
        self,
        tmp: Path,
        host: str,
        port: int,
        name: str,
        location: str,
        values: dict,
        v3_only: bool = False,
    ) -> None:
        """`v3_only`: no community answers, only the v3 user (V3_USER, SHA-256 and AES)."""
        self.host, self.port, self.dir = host, port, tmp
        self.v3_only = v3_only
        tmp.mkdir(parents=True, exist_ok=True)
        self.values_path = tmp / "values.json"
        SnmpdPeer.set_values(self, values)  # type: ignore[arg-type]
        script = tmp / "pass.py"
        script.write_text(PASS_SCRIPT)
        persist = tmp / "persist"
        persist.mkdir()
        lines = [
            f"agentaddress udp:{host}:{port}",
            f'createUser {V3_USER} SHA-256 "{V3_AUTH}" AES "{V3_PRIV}"',
            f"rouser {V3_USER} priv",
            *([] if v3_only else [f"rocommunity {COMMUNITY} default"]),
            f"sysName {name}",
            f"sysLocation {location}",
        ]
        lines += [
            f"pass_persist -p 1 {oid} {sys.executable} {script} {self.values_path}"
            for oid in (*SERVED, LLDP, BRIDGE, ARP, ARP_PHYSICAL)
        ]
        conf = tmp / "snmpd.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.proc = PeerProcess(
            [
                require_binary(SNMPD),
                "-f",
                "-Lf",
                str(tmp / "snmpd.log"),
                "-C",
                "-c",
                str(conf),
                "-I",
                _NO_BUILTIN,
            ],
            cwd=tmp,
            env={"SNMP_PERSISTENT_DIR": str(persist), "MIBS": "", "MIBDIRS": str(tmp)},
        )

    def wait_ready(self, timeout: float = 10.0) -> None:
        if self.v3_only:
            self._wait_bound(timeout)
            return
        req = codec.encode_request(
            codec.VERSION_2C,
            COMMUNITY.encode(),
            codec.GET,
            0x01000000,
            [codec.encode_oid_content((1, 3, 6, 1, 2, 1, 1, 3, 0))],
        )
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            while time.monotonic() < deadline and self.proc.alive():
                s.sendto(req, (self.host, self.port))
                try:
                    data = s.recv(65535)
                except OSError:
                    continue
                vb = codec.decode_message(data)[6]
                if vb and isinstance(vb[0][1], int):
                    self._warm(s, deadline)
                    return
        raise RuntimeError(f"snmpd on {self.host}:{self.port} not ready:\n{self.proc.log()}")

    def _wait_bound(self, timeout: float) -> None:
        """Until snmpd holds its UDP port (a v3-only agent answers no community to ask)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.alive():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind((self.host, self.port))
                except OSError:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"snmpd on {self.host}:{self.port} did not start:\n{self.proc.log()}")

    def _warm(self, s: socket.socket, deadline: float) -> None:
        """One GETNEXT into each subtree: snmpd starts each pass_persist script on its first
        request, which would otherwise make a daemon's first poll slow."""
        for n, subtree in enumerate((*SERVED, LLDP, BRIDGE, ARP, ARP_PHYSICAL)):
            oid = codec.parse_oid(subtree)
            req = codec.encode_request(
                codec.VERSION_2C,
                COMMUNITY.encode(),
                codec.GETNEXT,
                0x01000001 + n,
                [codec.encode_oid_content(oid)],
            )
            while time.monotonic() < deadline:
                s.sendto(req, (self.host, self.port))
                try:
                    s.recv(65535)
                    break
                except OSError:
                    continue

    def stop(self) -> None:
        self.proc.stop()


def start_site(
    peers: list[SiteSnmpd], tmp: Path, port: int, rooms: list[tuple[str, str, str, dict]]
) -> None:
    """Start a snmpd per (subdirectory, host, sysName, values) in Room A, each added to `peers`
    as it starts (the caller stops them), and wait until all answer."""
    for sub, host, name, values in rooms:
        peers.append(SiteSnmpd(tmp / sub, host, port, name, "Room A", values))
    for peer in peers:
        peer.wait_ready()


def stop_site(peers: list[SiteSnmpd]) -> None:
    """Stop the site's snmpd instances, those the test froze (SIGSTOP) too."""
    for peer in peers:
        os.kill(peer.proc.pid, signal.SIGCONT)
        peer.stop()


def auto_topology_config(tmp: Path, receiver: Receiver, targets: list[dict], token: str) -> dict:
    """The daemon's config for the site: SNMP targets (community from `SITE_COMMUNITY`) that
    learn their parents (`depends_on: auto`), the outage rules at once, Li Na on duty paged
    through the receiver, the API on `token`, the store in `tmp`."""
    overrides = ("core_backbone_outage", "datacentre_network_outage", "ups_snmp_unreachable")
    return {
        "defaults": {
            "snmp": {
                "community_env": "SITE_COMMUNITY",
                "interval": "1s",
                "timeout": "1s",
                "depends_on": "auto",
            }
        },
        "targets": targets,
        "rules": {"overrides": {name: {"for": "0s"} for name in overrides}},
        **li_na_on_duty(receiver),
        "http": {"port": 0},
        "api": {"token": token},
        "storage": {"path": str(tmp / "dutyd.db")},
    }


def site_snmp_target(
    name: str, host: str, port: int, role: str, profiles: list[str], **more: Any
) -> dict:
    """The config entry of a site device polled over SNMP, labelled with its `role`."""
    return {
        "name": name,
        "kind": "snmp",
        "address": f"{host}:{port}",
        "profiles": profiles,
        "labels": {"role": role},
        **more,
    }


def snmp_sweep(env: str, port: int, timeout: float, **more: Any) -> SweepOptions:
    """A discovery sweep that asks SNMP only (the community from `env`) on `port`."""
    return SweepOptions(
        [community(env)],
        snmp_port=port,
        nut_port=None,
        ssh_ports=[],
        http_ports=[],
        https_ports=[],
        timeout=timeout,
        **more,
    )


def switch(ports: int, lldp_ports: dict[int, str]) -> dict[str, list[Any]]:
    descs = {i: f"Gi0/{i}" for i in range(1, ports + 1)}
    return {**switch_values(ports), **lldp_values(descs, lldp_ports)}


def ups() -> dict[str, list[Any]]:
    return {"1.3.6.1.2.1.1.3.0": ["timeticks", 360000], **ups_values()}


class Counter:
    """Counts UDP datagrams and TCP connections reaching (host, port)s."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, int, str]] = []
        self._closers: list[Any] = []

    async def listen(self, host: str, udp_ports: list[int], tcp_ports: list[int]) -> None:
        loop = asyncio.get_running_loop()
        counter = self

        class Udp(asyncio.DatagramProtocol):
            def __init__(self, port: int) -> None:
                self.port = port

            def datagram_received(self, data: bytes, addr: Any) -> None:
                counter.hits.append((host, self.port, "udp"))

        for port in udp_ports:
            transport, _ = await loop.create_datagram_endpoint(
                lambda p=port: Udp(p), local_addr=(host, port)
            )
            self._closers.append(transport.close)
        for port in tcp_ports:

            async def accepted(r: Any, w: Any, p: int = port) -> None:
                counter.hits.append((host, p, "tcp"))
                w.close()

            server = await asyncio.start_server(accepted, host, port)
            self._closers.append(server.close)

    def close(self) -> None:
        for close in self._closers:
            close()


def mac(n: int) -> str:
    return f"02:00:00:00:01:{n:02x}"


def bridge(fdb: dict[str, int]) -> dict[str, list[Any]]:
    """BRIDGE-MIB: MAC -> bridge port (learned), bridge port n -> ifIndex n."""
    v: dict[str, list[Any]] = {}
    for address, port in fdb.items():
        dotted = ".".join(str(int(b, 16)) for b in address.split(":"))
        v[f"1.3.6.1.2.1.17.4.3.1.2.{dotted}"] = ["integer", port]
        v[f"1.3.6.1.2.1.17.1.4.1.2.{port}"] = ["integer", port]
    return v


def q_bridge(fdb: dict[str, int], fdb_id: int = 1) -> dict[str, list[Any]]:
    """Q-BRIDGE-MIB: (FDB id, MAC) -> bridge port, bridge port n -> ifIndex n."""
    v: dict[str, list[Any]] = {}
    for address, port in fdb.items():
        dotted = ".".join(str(int(b, 16)) for b in address.split(":"))
        v[f"1.3.6.1.2.1.17.7.1.2.2.1.2.{fdb_id}.{dotted}"] = ["integer", port]
        v[f"1.3.6.1.2.1.17.1.4.1.2.{port}"] = ["integer", port]
    return v


def arp_physical(entries: dict[str, str]) -> dict[str, list[Any]]:
    """IP-MIB ipNetToPhysicalPhysAddress on ifIndex 1 (IPv4: type 1, length 4): IP -> MAC."""
    return {
        f"1.3.6.1.2.1.4.35.1.4.1.1.4.{ip}": ["octet", address.replace(":", " ")]
        for ip, address in entries.items()
    }


def arp(entries: dict[str, str]) -> dict[str, list[Any]]:
    """IP-MIB ipNetToMediaPhysAddress on ifIndex 1: IP -> MAC."""
    return {
        f"1.3.6.1.2.1.4.22.1.2.1.{ip}": ["octet", address.replace(":", " ")]
        for ip, address in entries.items()
    }
