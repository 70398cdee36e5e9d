"""SNMP traps: trap received -> page at a webhook receiver, and traps decoded per second.

1. Latency: an in-process daemon with N UPS targets (one loopback address each, 127.0.1.x,
   answered by a small UPS-MIB responder on mains, polled once an hour) and its trap listener.
   For each target a v2c upsTrapOnBattery datagram is sent from that target's address; the
   duty pack's ups_on_battery rule (its `for` set to 0 to time the pipeline, not the rule)
   fires and pages through the outbox to an apprise json:// receiver. Timed from the sendto
   to the receiver's arrival; prints p50 and p99.
2. Throughput: v2c linkDown traps (ifIndex, ifAdminStatus, ifOperStatus, ifName) decoded
   and mapped by one core, in a loop:
   `decode_community_notification` alone, and decode + target match + samples.
3. v3: N distinct authentic v3 traps (authNoPriv SHA; one captured from net-snmp's
   snmptrap, its engine time advanced and its digest remade for each) through the listener
   and pysnmp, on one core: traps per second, and the process's resident memory grown
   (pysnmp used to queue ~480 bytes per message for 300 s; dutyd keeps 128 digests per engine).

    python -m bench.bench_traps [--targets 100] [--decode 200000] [--v3 40000]
    python bench/bench_traps.py [--targets 100] [--decode 200000] [--v3 40000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as `python bench/bench_traps.py` too, not only `python -m bench.bench_traps`: the peers
# it reuses live in tests/, importable from the repository root.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dutyd.agent.config import load_from_dict  # noqa: E402
from dutyd.agent.daemon import Daemon  # noqa: E402
from dutyd.collectors.snmp import codec  # noqa: E402
from dutyd.collectors.snmp.collector import SnmpTarget  # noqa: E402
from dutyd.collectors.snmp.trap_decode import decode_community_notification  # noqa: E402
from dutyd.collectors.snmp.trap_map import TrapMapper  # noqa: E402
from tests.peers import free_port  # noqa: E402
from tests.snmp_fixtures import reply  # noqa: E402
from tests.test_notify_delivery import Receiver  # noqa: E402

COMMUNITY = b"bench"
UPS = (1, 3, 6, 1, 2, 1, 33, 1)
ON_MAINS = {
    (*UPS, 2, 1, 0): 2,  # batteryNormal
    (*UPS, 4, 1, 0): 3,  # upsOutputSource normal
}


class _Ups(asyncio.DatagramProtocol):
    """A UPS agent on mains: answers every GET, UPS-MIB values or 0."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        msg = codec.decode_message(data)
        values = [
            (oid, codec.encode_int(ON_MAINS.get(codec.decode_oid_content(oid), 0)))
            for oid, _ in msg[6]
        ]
        self.transport.sendto(reply(msg, values), addr)


def trap(trap_oid: tuple[int, ...], extra: bytes = b"") -> bytes:
    varbinds = (
        codec.encode_varbind(
            codec.encode_oid_content((1, 3, 6, 1, 2, 1, 1, 3, 0)),
            codec.encode_unsigned(12345, codec.T_TIMETICKS),
        )
        + codec.encode_varbind(
            codec.encode_oid_content((1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)),
            codec.encode_value(codec.T_OID, trap_oid),
        )
        + extra
    )
    return codec.encode_message(codec.VERSION_2C, COMMUNITY, 0xA7, 0x01000001, 0, 0, varbinds)


async def latency(n: int, tmp: Path) -> list[float]:
    receiver = Receiver()
    await receiver.start()
    agent_port = free_port("udp")
    loop = asyncio.get_running_loop()
    agents = []
    for i in range(n):
        t, _ = await loop.create_datagram_endpoint(
            _Ups, local_addr=(f"127.0.1.{i + 1}", agent_port)
        )
        agents.append(t)
    trap_port = free_port("udp")
    config = {
        "targets": [
            {
                "name": f"ups-{i}",
                "kind": "snmp",
                "address": f"127.0.1.{i + 1}:{agent_port}",
                "community": COMMUNITY.decode(),
                "profiles": ["ups"],
                "interval": "1h",
                "timeout": "2s",
                "labels": {"site": f"site{i}", "role": "ups"},
            }
            for i in range(n)
        ],
        "traps": {"port": trap_port, "max_per_source": 1000},
        "rules": {"overrides": {"ups_on_battery": {"for": "0s"}}},
        "http": {"port": 0},
        "storage": {"path": str(tmp / "bench.db")},
        "oncall": {"pairs": [["Ops"]], "people": [{"name": "Ops", "contacts": ["hook"]}]},
        "escalation": {"policies": [{"name": "all", "steps": [{"after": 0, "oncall": True}]}]},
        "notify": {
            "channels": {
                "hook": {"url": receiver.url(), "rate_limit": {"count": 100000, "per": 1}}
            },
            "group_wait": 0,
        },
    }
    daemon = Daemon(load_from_dict(config, "<bench>"))
    await daemon.start()
    on_battery = trap((1, 3, 6, 1, 2, 1, 33, 2, 1))
    out: list[float] = []
    try:
        # Every target's first poll (within 10 s of the start): all on mains.
        for _ in range(300):
            if len(daemon.latest.latest("ups_on_battery")) >= n:
                break
            await asyncio.sleep(0.1)
        for i in range(n):
            seen = len(receiver.received)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((f"127.0.1.{i + 1}", 0))
                t0 = time.perf_counter()
                s.sendto(on_battery, ("127.0.0.1", trap_port))
                async with asyncio.timeout(10):
                    while not any(f"ups-{i} " in str(r["body"]) for r in receiver.received[seen:]):
                        receiver.got.clear()
                        await receiver.got.wait()
            k = next(
                j for j in range(seen, len(receiver.received))
                if f"ups-{i} " in str(receiver.received[j]["body"])
            )  # fmt: skip
            out.append(receiver.arrived[k] - t0)
    finally:
        await daemon.stop()
        for t in agents:
            t.close()
        await receiver.stop()
    return out


def throughput(count: int) -> tuple[float, float]:
    if_index = (1, 3, 6, 1, 2, 1, 2, 2, 1, 1, 7)
    extra = (
        codec.encode_varbind(codec.encode_oid_content(if_index), codec.encode_int(7))
        + codec.encode_varbind(
            codec.encode_oid_content((1, 3, 6, 1, 2, 1, 2, 2, 1, 7, 7)), codec.encode_int(1)
        )
        + codec.encode_varbind(
            codec.encode_oid_content((1, 3, 6, 1, 2, 1, 2, 2, 1, 8, 7)), codec.encode_int(2)
        )
        # ifName.7, as many switches add: the port is labelled without a lookup.
        + codec.encode_varbind(
            codec.encode_oid_content((1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1, 7)),
            codec.tlv(codec.T_OCTETS, b"Gi0/7"),
        )
    )
    data = trap((1, 3, 6, 1, 6, 3, 1, 1, 5, 3), extra)
    t0 = time.perf_counter()
    for _ in range(count):
        decode_community_notification(data)
    decode_rate = count / (time.perf_counter() - t0)

    target = SnmpTarget.model_validate(
        {"name": "sw1", "kind": "snmp", "address": "10.0.0.2", "community": "x",
         "profiles": ["switch"]}
    )  # fmt: skip
    mapper = TrapMapper([(target, {"target": "sw1", "kind": "snmp"})])
    made = 0
    t0 = time.perf_counter()
    for _ in range(count):
        n = decode_community_notification(data).notification
        for t in mapper.targets_at("10.0.0.2"):
            made += len(mapper.samples(t, n, 0.0, lambda name: None))
    map_rate = count / (time.perf_counter() - t0)
    assert made == 2 * count  # if_oper_up and if_admin_up of Gi0/7 each time
    return decode_rate, map_rate


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def v3_traps(count: int) -> tuple[float, int]:
    """Traps per second through the v3 path, and resident memory grown over `count`."""
    from dutyd.collectors.snmp.trap_config import TrapsConfig
    from dutyd.collectors.snmp.trap_listener import TrapListener
    from tests.test_traps_authenticity import _CountingSink, password_key, retimed
    from tests.test_traps_listener import ON_BATTERY, send

    cfg = TrapsConfig.model_validate(
        {"port": 0, "max_per_source": 100_000, "max_total": 1_000_000,
         "users": [{"user": "sha", "auth_protocol": "SHA", "auth_password": "auth-secret-9",
                    "targets": ["ups-a"]}]}
    )  # fmt: skip
    target = SnmpTarget.model_validate(
        {"name": "ups-a", "kind": "snmp", "address": "127.0.0.1", "community": "x",
         "profiles": ["ups"]}
    )  # fmt: skip
    sink = _CountingSink()
    listener = TrapListener(cfg, [(target, {"target": "ups-a", "kind": "snmp"})], sink)
    await listener.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as capture:
            capture.bind(("127.0.0.1", 0))
            capture.setblocking(False)
            rc, err = await send(
                "snmptrap", "-v3", "-u", "sha", "-l", "authNoPriv", "-a", "SHA", "-A",
                "auth-secret-9", "-e", "0x8000000001050607", "-Z", "1,100000",
                f"127.0.0.1:{capture.getsockname()[1]}", "", ON_BATTERY,
            )  # fmt: skip
            assert rc == 0, err
            data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(capture, 65535), 5)
        key = password_key(b"auth-secret-9", bytes.fromhex("8000000001050607"))
        for i in range(200):  # warm up
            listener.handle(retimed(data, 100_000, 100_000 + i, key), ("127.0.0.1", 1000))
        traps = [retimed(data, 100_000, 100_200 + i, key) for i in range(count)]
        before = _rss_bytes()
        t0 = time.perf_counter()
        for trap in traps:
            listener.handle(trap, ("127.0.0.1", 1000))
        rate = count / (time.perf_counter() - t0)
        grown = _rss_bytes() - before
        assert sink.counts == {("v3_trap", "mapped"): count + 200}, sink.counts
        return rate, grown
    finally:
        await listener.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--decode", type=int, default=200_000)
    parser.add_argument("--v3", type=int, default=40_000)
    args = parser.parse_args()
    logging.getLogger("dutyd").setLevel(logging.ERROR)  # the figures, not 100 alert lines
    with tempfile.TemporaryDirectory() as tmp:
        lat = asyncio.run(latency(args.targets, Path(tmp)))
    lat_ms = sorted(x * 1000 for x in lat)
    p99 = lat_ms[min(len(lat_ms) - 1, round(0.99 * (len(lat_ms) - 1)))]
    print(
        f"trap -> page ({len(lat_ms)} UPS targets, v2c upsTrapOnBattery, rule for: 0s, "
        f"group_wait 0): p50 {statistics.median(lat_ms):.1f} ms, p99 {p99:.1f} ms, "
        f"max {lat_ms[-1]:.1f} ms"
    )
    decode_rate, map_rate = throughput(args.decode)
    print(f"decode, one core: {decode_rate:,.0f} v2c linkDown traps/s")
    print(f"decode + match + samples, one core: {map_rate:,.0f} traps/s")
    v3_rate, v3_grown = asyncio.run(v3_traps(args.v3))
    print(
        f"v3 authNoPriv traps, one core: {v3_rate:,.0f} traps/s; resident memory grown "
        f"{v3_grown / 2**20:.1f} MiB over {args.v3:,} traps"
    )


if __name__ == "__main__":
    main()
