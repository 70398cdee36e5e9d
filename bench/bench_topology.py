"""`depends_on: auto` from forwarding tables: what a bridge switch's poll costs the event loop.

A simulated site (no peers: pure CPU on the loop): one core switch routing for everything
(its ARP table names every target) and `--access` access switches, `--targets` targets spread
over them, each access switch's table also holding `--extra` MACs that are no targets (PCs,
VMs), the core's table every MAC. Prints, as the least of `--repeat` runs:
- the `bridge` profile's decoding of one walk of the core's table (`forwarding_table`);
- `LearnedTopology.observe` of a poll whose table did not change for the targets (the common
  case: tables churn, the targets' places do not), and of one where a target moved (the tree
  learned again).

    .venv/bin/python bench/bench_topology.py [--access 40] [--targets 1000] [--extra 100]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from dutyd.agent.topology import LearnedTopology
from dutyd.collectors.base import TargetConfig
from dutyd.collectors.probe_tcp.collector import TcpTarget
from dutyd.collectors.snmp.codec import encode_oid_content
from dutyd.collectors.snmp.collector import SnmpTarget
from dutyd.collectors.snmp.profiles.bridge import (
    ARP_MEDIA,
    BASE_PORT_IF_INDEX,
    FDB_PORT,
    IF_NAME,
    ForwardingTable,
    forwarding_table,
)


def mac(n: int) -> bytes:
    return bytes((2, 0, (n >> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255))


def ip(n: int) -> str:
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def least(repeat: int, fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--access", type=int, default=40)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--extra", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    n_sw = args.access + 1
    # Target n: 0 the core, 1..access the access switches, then servers on access switch
    # 1 + n % access, port 1 + n % 40; access switches on core port n.
    targets: list[TargetConfig] = [
        SnmpTarget.model_validate(
            {
                "name": f"sw{n}",
                "kind": "snmp",
                "address": ip(n),
                "community": "x",
                "profiles": ["switch", "bridge"],
                "depends_on": "auto",
            }
        )
        for n in range(n_sw)
    ]
    servers = range(n_sw, n_sw + args.targets)
    targets += [
        TcpTarget.model_validate(
            {"name": f"srv{n}", "kind": "tcp", "address": f"{ip(n)}:22", "depends_on": "auto"}
        )
        for n in servers
    ]

    def access_of(n: int) -> int:
        return 1 + n % args.access

    core: dict[str, str] = {}
    access: dict[int, dict[str, str]] = {a: {mac(0).hex(":"): "up"} for a in range(1, n_sw)}
    for a in range(1, n_sw):
        core[mac(a).hex(":")] = f"p{a}"
        for e in range(args.extra):
            m = mac(1_000_000 + a * 10_000 + e).hex(":")
            core[m] = f"p{a}"
            access[a][m] = f"e{e % 40}"
    for n in servers:
        core[mac(n).hex(":")] = f"p{access_of(n)}"
        access[access_of(n)][mac(n).hex(":")] = f"e{n % 40}"
        for a in range(1, n_sw):
            if a != access_of(n):
                access[a][mac(n).hex(":")] = "up"
    arp = {ip(n): mac(n).hex(":") for n in range(1, n_sw + args.targets)}

    # The walk of the core's table, as the collector hands it to the profile.
    def key(*subids: int) -> bytes:
        return encode_oid_content((1, 3, *subids))[1:]

    columns: dict[Any, dict[bytes, Any]] = {FDB_PORT: {}, BASE_PORT_IF_INDEX: {}, IF_NAME: {}}
    for m, port in core.items():
        number = int(port[1:])
        columns[FDB_PORT][key(*bytes.fromhex(m.replace(":", "")))] = number
        columns[BASE_PORT_IF_INDEX][key(number)] = number
        columns[IF_NAME][key(number)] = port.encode()
    columns[ARP_MEDIA] = {}
    for address, m in arp.items():
        columns[ARP_MEDIA][key(1, *map(int, address.split(".")))] = bytes.fromhex(
            m.replace(":", "")
        )
    rows = sum(len(c) for c in columns.values())
    decode = least(args.repeat, lambda: forwarding_table(columns))

    topo = LearnedTopology(targets)
    tables = {0: ForwardingTable(core, arp)}
    tables |= {a: ForwardingTable(access[a], {}) for a in range(1, n_sw)}
    for n, table in tables.items():
        topo.observe(f"sw{n}", [], True, table)
    placed = sum(1 for n in servers if topo.parents_of(f"srv{n}") == [f"sw{access_of(n)}"])
    same = least(args.repeat, lambda: topo.observe("sw1", [], True, tables[1]))
    moved_a = dict(access[1])
    probe = next(n for n in servers if access_of(n) == 1)
    moved_a[mac(probe).hex(":")] = "e39"
    moved = [tables[1], ForwardingTable(moved_a, {})]
    moves: list[int] = []

    def move() -> None:
        moved.reverse()
        moves.append(len(topo.observe("sw1", [], True, moved[0])))

    flip = least(args.repeat, move)
    assert all(n == 1 for n in moves), moves  # each call moved the server

    print(
        f"site: 1 core + {args.access} access switches, {args.targets} servers, "
        f"{args.extra} other MACs per access switch; core table {len(core)} MACs"
    )
    print(f"servers placed on their access switch: {placed} of {args.targets}")
    print(f"forwarding_table(): {rows} rows decoded in {decode * 1000:.1f} ms")
    print(f"observe, targets' places unchanged: {same * 1000:.2f} ms")
    print(f"observe, a target moved (tree learned again): {flip * 1000:.1f} ms")


if __name__ == "__main__":
    main()
