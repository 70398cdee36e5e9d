"""The trap listener against net-snmp's snmptrap and snmpinform: v1, v2c and v3 (authPriv)
traps and informs, communities and users checked (each for its own targets), engine IDs
restricted, unknown traps and sources counted, a trap credited to its datagram's source (a
payload's address only from a trusted relay), v3 replays refused, floods bounded per source
and in total, and the scheduler's request_poll that every trap asks for.

The forged cases come from 127.0.0.9, a loopback address that is no target (net-snmp's
`--clientaddr` binds the sending socket there), or name another target's address."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dutyd.agent.scheduler import POLL_NOW_MIN_GAP, Scheduler
from dutyd.collectors.base import Collector, Readings, TargetConfig
from dutyd.collectors.snmp import trap_v3
from dutyd.collectors.snmp.collector import SnmpTarget
from dutyd.collectors.snmp.trap_config import TrapsConfig
from dutyd.collectors.snmp.trap_listener import BURST_SECONDS, TrapListener
from dutyd.core.clock import FakeClock
from dutyd.core.records import Sample
from tests.peers import require_binary

USER = ["-u", "traps", "-l", "authPriv", "-a", "SHA-256", "-A", "auth-secret-1", "-x", "AES"]
USER += ["-X", "priv-secret-1"]
UPS_B_USER = ["-u", "ups-b-user", "-l", "authPriv", "-a", "SHA", "-A", "auth-secret-b"]
UPS_B_USER += ["-x", "AES", "-X", "priv-secret-b"]
RELAY = "127.0.0.5"  # a trap proxy (traps.relays), itself no target
STRANGER = "127.0.0.9"  # a host that is no target
UPS_A = "127.0.0.1"  # ups-a's address (its agent at 127.0.0.1:1161)
SNMP_TRAP_ADDRESS = "1.3.6.1.6.3.18.1.3.0"
ALARM_ADDED = "1.3.6.1.2.1.33.2.3"
ALARM_DESCR = "1.3.6.1.2.1.33.1.6.2.1.2.1"
LOW_BATTERY = "1.3.6.1.2.1.33.1.6.3.3"
SENDER_ENGINE = "0x8000000001020304"
ON_BATTERY = "1.3.6.1.2.1.33.2.1"
COLD_START = "1.3.6.1.6.3.1.1.5.1"
LINK_UP = "1.3.6.1.6.3.1.1.5.4"
IF_INDEX = "1.3.6.1.2.1.2.2.1.1"
IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
IF_ADMIN = "1.3.6.1.2.1.2.2.1.7"
IF_OPER = "1.3.6.1.2.1.2.2.1.8"
IF_NAME = "1.3.6.1.2.1.31.1.1.1.1"


def port_varbinds(index: int, oper: int) -> list[str]:
    """IF-MIB linkDown/linkUp varbinds (ifIndex, ifAdminStatus, ifOperStatus) plus the port's
    names, which label it when no poll has yet (the sink here has no collector)."""
    return [
        f"{IF_INDEX}.{index}", "i", str(index), f"{IF_ADMIN}.{index}", "i", "1",
        f"{IF_OPER}.{index}", "i", str(oper), f"{IF_NAME}.{index}", "s", f"Gi0/{index}",
        f"{IF_DESCR}.{index}", "s", f"GigabitEthernet0/{index}",
    ]  # fmt: skip


class RecordingSink:
    """The daemon side of the listener's interface, recording what it is handed."""

    def __init__(self) -> None:
        self.samples: list[tuple[str, Sample]] = []
        self.polls: list[str] = []
        self.counts: dict[tuple[str, str], int] = {}
        self.changed = asyncio.Event()

    def deliver(self, target: str, samples: list[Sample]) -> None:
        self.samples += [(target, s) for s in samples]

    def request_poll(self, target: str) -> None:
        self.polls.append(target)

    def collector(self, target: str) -> object | None:
        return None

    def count(self, kind: str, result: str) -> None:
        self.counts[(kind, result)] = self.counts.get((kind, result), 0) + 1
        self.changed.set()

    def values(self, name: str) -> list[tuple[str, float]]:
        return [(t, s.value) for t, s in self.samples if s.name == name]


def ups_target(name: str, address: str, community: str = "poll-community") -> SnmpTarget:
    return SnmpTarget.model_validate(
        {"name": name, "kind": "snmp", "address": address, "community": community,
         "profiles": ["ups"]}
    )  # fmt: skip


def gauge_target(name: str, address: str) -> SnmpTarget:
    """A device watched through an OID map of gauges alone: its poll reads no sysUpTime."""
    return SnmpTarget.model_validate(
        {"name": name, "kind": "snmp", "address": address, "community": "poll-community",
         "oids": [{"name": "pdu_load_amperes", "oid": "1.3.6.1.4.1.99999.3.1.0"}]}
    )  # fmt: skip


def uplink_target(name: str, address: str) -> SnmpTarget:
    """A switch's uplink port, watched alone (as the duty pack's switch_uplink_down expects)."""
    return SnmpTarget.model_validate(
        {"name": name, "kind": "snmp", "address": address, "community": "poll-community",
         "profiles": ["switch"], "port_pattern": "^Gi0/4$"}
    )  # fmt: skip


@pytest.fixture
async def listening() -> AsyncIterator[tuple[TrapListener, RecordingSink]]:
    cfg = TrapsConfig.model_validate(
        {
            "port": 0,
            "relays": [RELAY],
            "communities": [
                {"community": "trap-community", "targets": ["*"]},
                {"community": "ups-b-community", "targets": ["ups-b"]},
            ],
            "users": [
                {
                    "user": "traps",
                    "auth_protocol": "SHA256",
                    "auth_password": "auth-secret-1",
                    "priv_protocol": "AES128",
                    "priv_password": "priv-secret-1",
                    "targets": ["*"],
                },
                {
                    "user": "pinned",
                    "auth_protocol": "SHA",
                    "auth_password": "auth-secret-2",
                    "engine_ids": ["8000000001aabbcc"],
                    "targets": ["*"],
                },
                {"user": "open", "targets": ["*"]},  # noAuthNoPriv
                {  # ups-b's own user: it speaks for ups-b alone
                    "user": "ups-b-user",
                    "auth_protocol": "SHA",
                    "auth_password": "auth-secret-b",
                    "priv_protocol": "AES128",
                    "priv_password": "priv-secret-b",
                    "targets": ["ups-b"],
                },
            ],
            "maps": [
                {"trap": "1.3.6.1.4.1.99999.0.7", "metric": "pdu_breaker_tripped", "value": 1}
            ],
        }
    )
    targets = [
        ups_target("ups-a", "127.0.0.1:1161"),
        ups_target("ups-b", "127.0.0.2", community="ups-b-poll"),
        gauge_target("pdu-c", "127.0.0.3"),
        uplink_target("sw1-uplinks", "127.0.0.4"),
    ]
    sink = RecordingSink()
    listener = TrapListener(cfg, [(t, {"target": t.name, "kind": "snmp"}) for t in targets], sink)
    await listener.start()
    yield listener, sink
    await listener.stop()


async def send(tool: str, *args: str) -> tuple[int, str]:
    binary = require_binary(tool)
    proc = await asyncio.create_subprocess_exec(
        binary,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"MIBS": "", "MIBDIRS": "/nonexistent", "PATH": "/usr/bin:/bin"},
    )
    _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def counted(sink: RecordingSink, key: tuple[str, str], n: int = 1) -> None:
    async with asyncio.timeout(10):
        while sink.counts.get(key, 0) < n:
            sink.changed.clear()
            await sink.changed.wait()


def to(listener: TrapListener) -> str:
    return f"127.0.0.1:{listener.address[1]}"


async def test_v1_v2c_traps_and_inform(listening: tuple[TrapListener, RecordingSink]) -> None:
    listener, sink = listening
    rc, err = await send(
        "snmptrap", "-v2c", "-c", "trap-community", to(listener), "", ON_BATTERY,
        "1.3.6.1.2.1.33.1.2.3.0", "i", "4",
    )  # fmt: skip
    assert rc == 0, err
    await counted(sink, ("v2c_trap", "mapped"))
    assert ("ups-a", 1.0) in sink.values("ups_on_battery")
    assert sink.values("ups_battery_runtime_seconds") == [("ups-a", 240.0)]
    assert sink.polls == ["ups-a"]

    # v1 through a trusted relay: matched by its agent-addr (127.0.0.2 = ups-b), not the
    # relay's address; UPS-MIB's upsTrapAlarmEntryAdded with upsAlarmLowBattery as v1
    # enterprise upsTraps, specific 3.
    rc, err = await send(
        "snmptrap", "-v1", "-c", "trap-community", f"--clientaddr={RELAY}", to(listener),
        "1.3.6.1.2.1.33.2", "127.0.0.2", "6", "3", "", ALARM_DESCR, "o", LOW_BATTERY,
    )  # fmt: skip
    assert rc == 0, err
    await counted(sink, ("v1_trap", "mapped"))
    assert sink.values("ups_battery_low") == [("ups-b", 1.0)]
    assert sink.polls[-1] == "ups-b"

    rc, err = await send(
        "snmpinform", "-v2c", "-c", "trap-community", "-t", "3", "-r", "0", to(listener), "",
        ON_BATTERY,
    )  # fmt: skip
    assert rc == 0, err  # snmpinform exits 0 only when the inform was acknowledged
    assert sink.counts[("v2c_inform", "mapped")] == 1


async def test_v3_traps_and_informs(listening: tuple[TrapListener, RecordingSink]) -> None:
    listener, sink = listening
    rc, err = await send(
        "snmptrap", "-v3", *USER, "-e", SENDER_ENGINE, to(listener), "", ON_BATTERY
    )
    assert rc == 0, err
    await counted(sink, ("v3_trap", "mapped"))
    rc, err = await send(
        "snmpinform", "-v3", *USER, "-t", "3", "-r", "0", to(listener), "", ON_BATTERY
    )
    assert rc == 0, err
    assert sink.counts[("v3_inform", "mapped")] == 1
    assert sink.values("ups_on_battery") == [("ups-a", 1.0), ("ups-a", 1.0)]

    # A wrong privacy password: not decrypted, not delivered, counted.
    bad = [*USER[:-1], "wrong-priv-secret"]
    rc, _ = await send("snmptrap", "-v3", *bad, "-e", SENDER_ENGINE, to(listener), "", ON_BATTERY)
    await counted(sink, ("v3", "bad_user"))
    rc, _ = await send(
        "snmptrap", "-v3", "-u", "nobody", "-l", "noAuthNoPriv", "-e", SENDER_ENGINE,
        to(listener), "", ON_BATTERY,
    )  # fmt: skip
    await counted(sink, ("v3", "bad_user"), 2)
    # A user pinned to one engine ID, trapping from another.
    rc, _ = await send(
        "snmptrap", "-v3", "-u", "pinned", "-l", "authNoPriv", "-a", "SHA", "-A",
        "auth-secret-2", "-e", SENDER_ENGINE, to(listener), "", ON_BATTERY,
    )  # fmt: skip
    await counted(sink, ("v3", "unknown_engine_id"))
    assert len(sink.values("ups_on_battery")) == 2


async def test_forged_engine_ids_do_not_lock_out_v3_traps(
    listening: tuple[TrapListener, RecordingSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    listener, sink = listening
    monkeypatch.setattr(trap_v3, "MAX_ENGINES", 2)  # 256 in production; the same bound
    # Twice as many made-up engine IDs as may be learned, naming the real user with wrong
    # keys: each is refused as bad_user and learns nothing.
    forged = [*USER]
    forged[forged.index("auth-secret-1")] = "guessed-auth-1"
    for i in range(4):
        rc, err = await send(
            "snmptrap", "-v3", *forged, "-e", f"0x80000000019900000{i}", to(listener), "",
            ON_BATTERY,
        )  # fmt: skip
        assert rc == 0, err
        await counted(sink, ("v3", "bad_user"), i + 1)
    # Nor does a message that skips authentication while naming a user that has a password.
    rc, err = await send(
        "snmptrap", "-v3", "-u", "traps", "-l", "noAuthNoPriv", "-e", "0x8000000001990000ff",
        to(listener), "", ON_BATTERY,
    )  # fmt: skip
    assert rc == 0, err
    await counted(sink, ("v3", "bad_user"), 5)
    # A user without a password proves nothing about its engine: it learns none either.
    for i in range(3):
        rc, err = await send(
            "snmptrap", "-v3", "-u", "open", "-l", "noAuthNoPriv",
            "-e", f"0x80000000019800000{i}", to(listener), "", ON_BATTERY,
        )  # fmt: skip
        assert rc == 0, err
    await counted(sink, ("v3_trap", "mapped"), 3)
    assert sink.counts.get(("v3", "unknown_engine_id"), 0) == 0
    assert sink.values("ups_on_battery") == [("ups-a", 1.0)] * 3

    # Real devices, each with its engine, are still let in: as many as MAX_ENGINES.
    for i in range(2):
        rc, err = await send(
            "snmptrap", "-v3", *USER, "-e", f"0x80000000010000000{i}", to(listener), "",
            ON_BATTERY,
        )  # fmt: skip
        assert rc == 0, err
        await counted(sink, ("v3_trap", "mapped"), 4 + i)
    assert sink.counts.get(("v3", "unknown_engine_id"), 0) == 0
    # And the bound still holds for engines that authenticate.
    rc, err = await send(
        "snmptrap", "-v3", *USER, "-e", "0x800000000100000009", to(listener), "", ON_BATTERY
    )
    assert rc == 0, err
    await counted(sink, ("v3", "unknown_engine_id"))
    assert len(sink.values("ups_on_battery")) == 5


async def test_v3_digest_of_every_auth_protocol() -> None:
    """The digest checked before an engine is learned is the one net-snmp computes, for each
    auth protocol (SHA-256 with AES is the fixture's), with and without privacy."""
    cases = [
        ("MD5", "MD5", None, None),
        ("SHA", "SHA", "DES", "DES"),
        ("SHA224", "SHA-224", "AES128", "AES"),
        ("SHA384", "SHA-384", "AES192", "AES-192"),
        ("SHA512", "SHA-512", "AES256", "AES-256"),
    ]
    users: list[dict[str, str]] = []
    for i, (auth, _, priv, _) in enumerate(cases):
        user = {"user": f"u{i}", "auth_protocol": auth, "auth_password": f"auth-pass-{i}"}
        if priv:
            user |= {"priv_protocol": priv, "priv_password": f"priv-pass-{i}"}
        users.append(user)
    cfg = TrapsConfig.model_validate(
        {"port": 0, "users": [u | {"targets": ["ups-a"]} for u in users]}
    )
    target = ups_target("ups-a", "127.0.0.1")
    sink = RecordingSink()
    listener = TrapListener(cfg, [(target, {"target": "ups-a", "kind": "snmp"})], sink)
    await listener.start()
    try:
        for i, (_, auth, _, priv) in enumerate(cases):
            level = ["-l", "authPriv", "-x", priv, "-X", f"priv-pass-{i}"] if priv else []
            rc, err = await send(
                "snmptrap", "-v3", "-u", f"u{i}", "-a", auth, "-A", f"auth-pass-{i}",
                *(level or ["-l", "authNoPriv"]), "-e", f"0x80000000010{i}0203", to(listener),
                "", ON_BATTERY,
            )  # fmt: skip
            assert rc == 0, err
            await counted(sink, ("v3_trap", "mapped"), i + 1)
        assert sink.counts.get(("v3", "bad_user"), 0) == 0
    finally:
        await listener.stop()


async def test_wrong_community_unknown_trap_user_map(
    listening: tuple[TrapListener, RecordingSink],
) -> None:
    listener, sink = listening
    rc, _ = await send("snmptrap", "-v2c", "-c", "guess", to(listener), "", ON_BATTERY)
    assert rc == 0
    await counted(sink, ("v2c_trap", "bad_community"))
    # The polling community of a target is accepted too (accept_target_credentials).
    await send("snmptrap", "-v2c", "-c", "poll-community", to(listener), "", "1.3.6.1.4.1.1.0.9")
    await counted(sink, ("v2c_trap", "unknown_trap"))
    await send(
        "snmptrap", "-v2c", "-c", "trap-community", to(listener), "", "1.3.6.1.4.1.99999.0.7"
    )
    await counted(sink, ("v2c_trap", "mapped"))
    assert sink.values("pdu_breaker_tripped") == [("ups-a", 1.0)]
    assert sink.polls == ["ups-a", "ups-a"]  # the unknown trap still asks for a poll
    assert sink.values("ups_on_battery") == []


async def test_restart_traps_become_device_rebooted_or_count_unmapped(
    listening: tuple[TrapListener, RecordingSink],
) -> None:
    listener, sink = listening
    # A UPS restarted: its poll reads sysUpTime, so the trap is its `device_rebooted`, which
    # the duty pack's unexpected_device_reboot fires on.
    rc, err = await send("snmptrap", "-v2c", "-c", "trap-community", to(listener), "", COLD_START)
    assert rc == 0, err
    await counted(sink, ("v2c_trap", "mapped"))
    assert sink.values("device_rebooted") == [("ups-a", 1.0)]
    assert sink.polls == ["ups-a"]

    # The same from a device whose poll emits no device_rebooted (gauges only): understood,
    # no sample, a poll; counted as what it is, not as mapped.
    rc, err = await send(
        "snmptrap", "-v1", "-c", "trap-community", "--clientaddr=127.0.0.3", to(listener),
        "1.3.6.1.4.1.99999", "127.0.0.3", "1", "0", "",
    )  # fmt: skip
    assert rc == 0, err
    await counted(sink, ("v1_trap", "unmapped"))
    assert sink.counts.get(("v1_trap", "mapped"), 0) == 0
    assert [t for t, _ in sink.samples] == ["ups-a"]
    assert sink.polls == ["ups-a", "pdu-c"]


async def test_v1_link_down_then_link_up_clears_the_port(
    listening: tuple[TrapListener, RecordingSink],
) -> None:
    listener, sink = listening
    # v1 generic-trap 2 (linkDown) through the relay, matched by its agent-addr.
    rc, err = await send(
        "snmptrap", "-v1", "-c", "trap-community", f"--clientaddr={RELAY}", to(listener),
        "1.3.6.1.4.1.9.1", "127.0.0.4", "2", "0", "", *port_varbinds(4, oper=2),
    )  # fmt: skip
    assert rc == 0, err
    await counted(sink, ("v1_trap", "mapped"))
    uplink = {"port": "Gi0/4", "descr": "GigabitEthernet0/4"}
    down = [s for t, s in sink.samples if t == "sw1-uplinks" and s.name == "if_oper_up"]
    assert [(s.value, {k: s.label(k) for k in uplink}) for s in down] == [(0.0, uplink)]

    # v2c linkUp from the switch itself: the same series back to 1, which clears
    # switch_uplink_down (its poll then confirms it).
    rc, err = await send(
        "snmptrap", "-v2c", "-c", "trap-community", "--clientaddr=127.0.0.4", to(listener),
        "", LINK_UP, *port_varbinds(4, oper=1),
    )  # fmt: skip
    assert rc == 0, err
    await counted(sink, ("v2c_trap", "mapped"))
    oper = [s for t, s in sink.samples if t == "sw1-uplinks" and s.name == "if_oper_up"]
    assert [s.value for s in oper] == [0.0, 1.0]
    assert oper[0].series == oper[1].series
    assert sink.values("if_admin_up") == [("sw1-uplinks", 1.0), ("sw1-uplinks", 1.0)]

    # A port this target does not watch: understood, no sample, still a poll.
    rc, err = await send(
        "snmptrap", "-v1", "-c", "trap-community", "--clientaddr=127.0.0.4", to(listener),
        "1.3.6.1.4.1.9.1", "127.0.0.4", "2", "0", "", *port_varbinds(2, oper=2),
    )  # fmt: skip
    assert rc == 0, err
    await counted(sink, ("v1_trap", "unmapped"))
    assert len(sink.values("if_oper_up")) == 2
    assert sink.polls == ["sw1-uplinks"] * 3


async def test_flood_from_one_source_is_rate_limited_exactly() -> None:
    """A source may send max_per_source a second, with a burst of BURST_SECONDS' worth: with
    the clock held still, exactly the burst passes and every datagram after it is dropped;
    a second later max_per_source more pass. Other sources are not affected."""
    clock = FakeClock()
    cfg = TrapsConfig.model_validate(
        {"port": 0, "communities": [{"community": "trap-community", "targets": ["*"]}],
         "max_per_source": 40}
    )  # fmt: skip
    targets = [ups_target("ups-a", "127.0.0.1"), ups_target("ups-b", "127.0.0.2")]
    sink = RecordingSink()
    labelled = [(t, {"target": t.name, "kind": "snmp"}) for t in targets]
    listener = TrapListener(cfg, labelled, sink, clock)
    await listener.start()
    try:
        trap = await captured_trap()
        burst = int(cfg.max_per_source * BURST_SECONDS)
        assert burst == 200
        await flood(listener, sink, trap, "127.0.0.1", burst + 50)
        assert sink.counts == {("v2c_trap", "mapped"): burst, ("unknown", "rate_limited"): 50}
        await flood(listener, sink, trap, "127.0.0.2", 1)  # another source has its own bucket
        assert sink.counts[("v2c_trap", "mapped")] == burst + 1

        await clock.advance(1.0)  # max_per_source tokens back, no more
        await flood(listener, sink, trap, "127.0.0.1", 41)
        assert sink.counts == {("v2c_trap", "mapped"): burst + 41, ("unknown", "rate_limited"): 51}
        assert [t for t, _ in sink.values("ups_on_battery")].count("ups-a") == burst + 40
    finally:
        await listener.stop()


async def captured_trap() -> bytes:
    """The bytes of one v2c upsTrapOnBattery as net-snmp's snmptrap sends them."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as capture:
        capture.bind(("127.0.0.1", 0))
        capture.setblocking(False)
        port = capture.getsockname()[1]
        rc, err = await send(
            "snmptrap", "-v2c", "-c", "trap-community", f"127.0.0.1:{port}", "", ON_BATTERY
        )
        assert rc == 0, err
        async with asyncio.timeout(5):
            return await loop.sock_recv(capture, 65535)


async def flood(
    listener: TrapListener, sink: RecordingSink, datagram: bytes, source: str, n: int
) -> None:
    """Send `datagram` n times from `source`, in batches the socket buffer holds, and wait
    until the listener has counted each one."""
    before = sum(sink.counts.values())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        for start in range(0, n, 50):
            for _ in range(min(50, n - start)):
                s.sendto(datagram, ("127.0.0.1", listener.address[1]))
            async with asyncio.timeout(10):
                while sum(sink.counts.values()) < before + min(n, start + 50):
                    sink.changed.clear()
                    await sink.changed.wait()


async def test_unknown_source_is_counted(listening: tuple[TrapListener, RecordingSink]) -> None:
    listener, sink = listening
    await send(
        "snmptrap", "-v2c", "-c", "trap-community", "--clientaddr=127.0.0.9", to(listener), "",
        ON_BATTERY,
    )  # fmt: skip
    await counted(sink, ("v2c_trap", "unknown_source"))
    assert sink.samples == [] and sink.polls == []


async def test_inform_from_unknown_source_is_not_acknowledged(
    listening: tuple[TrapListener, RecordingSink],
) -> None:
    """An inform is answered only when it is accepted (credentials and a target): from an
    address that is no target it is dropped, and its sender must see that it failed."""
    listener, sink = listening
    rc, _ = await send(
        "snmpinform", "-v2c", "-c", "trap-community", "-t", "1", "-r", "0",
        "--clientaddr=127.0.0.9", to(listener), "", ON_BATTERY,
    )  # fmt: skip
    assert rc != 0  # snmpinform exits 0 only when the inform was acknowledged
    assert sink.counts == {("v2c_inform", "unknown_source"): 1}
    rc, _ = await send(
        "snmpinform", "-v3", *USER, "-t", "1", "-r", "0", "--clientaddr=127.0.0.9",
        to(listener), "", ON_BATTERY,
    )  # fmt: skip
    assert rc != 0
    assert sink.counts[("v3_inform", "unknown_source")] == 1
    assert sink.samples == [] and sink.polls == []
    # The same informs from a target's address are acknowledged.
    rc, err = await send(
        "snmpinform", "-v2c", "-c", "trap-community", "-t", "3", "-r", "0", to(listener), "",
        ON_BATTERY,
    )  # fmt: skip
    assert rc == 0, err
    rc, err = await send(
        "snmpinform", "-v3", *USER, "-t", "3", "-r", "0", to(listener), "", ON_BATTERY
    )
    assert rc == 0, err
    assert sink.counts[("v2c_inform", "mapped")] == sink.counts[("v3_inform", "mapped")] == 1


class _Counting(Collector[TargetConfig]):
    kind = "count"
    config_model = TargetConfig

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config, None)  # type: ignore[arg-type]
        self.starts: list[float] = []
        self.polled = asyncio.Event()

    async def collect(self, readings: Readings) -> None:
        self.starts.append(time.monotonic())
        self.polled.set()


async def test_request_poll_polls_out_of_schedule_and_coalesces() -> None:
    results: list[Any] = []
    scheduler = Scheduler(results.append)
    collector = _Counting(
        TargetConfig(name="t1", kind="count", address="x", interval=3600.0, timeout=1.0)
    )
    scheduler.start(collector)
    try:
        async with asyncio.timeout(20):
            await collector.polled.wait()  # the first poll (within FIRST_POLL_SPREAD)
            collector.polled.clear()
            for _ in range(50):  # a trap storm is at most one poll per POLL_NOW_MIN_GAP
                assert scheduler.request_poll("t1")
            await collector.polled.wait()
            await asyncio.sleep(POLL_NOW_MIN_GAP * 1.5)
        assert len(collector.starts) == 2
        assert collector.starts[1] - collector.starts[0] >= POLL_NOW_MIN_GAP * 0.99
        assert not scheduler.request_poll("nope")
    finally:
        await scheduler.stop()
