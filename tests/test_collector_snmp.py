"""The SNMP collector against real net-snmp snmpd, and against scripted misbehaving agents."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from dutyd.collectors import COLLECTORS
from dutyd.collectors.base import CollectorContext, Readings
from dutyd.collectors.snmp import codec
from dutyd.collectors.snmp.collector import SnmpCollector, SnmpTarget
from dutyd.collectors.snmp.profiles.base import CounterTracker
from dutyd.core.errors import BadCredentials, BadResponse, ReadingUnavailable, TargetTimeout
from tests.snmp_fixtures import (
    COMMUNITY,
    UPS_BASE,
    V3_AUTH,
    V3_AUTH_256,
    V3_PRIV,
    V3_PRIV_256,
    V3_USER,
    V3_USER_256,
    ScriptedAgent,
    SnmpdPeer,
    echo_values,
    endless_table,
    reply,
    sensor_values,
    switch_values,
    ups_values,
)

C64 = 1 << 64
C32 = 1 << 32
IF_OPER_2 = "1.3.6.1.2.1.2.2.1.8.2"
IF_NAME_1 = "1.3.6.1.2.1.31.1.1.1.1.1"
IF_NAME_2 = "1.3.6.1.2.1.31.1.1.1.1.2"
IF_HC_IN_1 = "1.3.6.1.2.1.31.1.1.1.6.1"
IF_IN_1 = "1.3.6.1.2.1.2.2.1.10.1"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"


# ----- helpers -----------------------------------------------------------------------------


@pytest.fixture
def snmpd(tmp_path: Path) -> Iterator[SnmpdPeer]:
    values = {**switch_values(), **ups_values(), **sensor_values()}
    peer = SnmpdPeer(tmp_path, values)
    yield peer
    peer.stop()


@pytest.fixture
async def make(context: CollectorContext) -> AsyncIterator[Callable[..., SnmpCollector]]:
    made: list[SnmpCollector] = []

    def factory(address: str, **options: Any) -> SnmpCollector:
        options.setdefault("timeout", 2)
        if options.get("version", "2c") != "3":
            options.setdefault("community", COMMUNITY)
        cfg = SnmpTarget.model_validate(
            {"name": "dev", "kind": "snmp", "address": address, **options}
        )
        c = SnmpCollector(cfg, context)
        made.append(c)
        return c

    yield factory
    for c in made:
        await c.close()


@pytest.fixture
async def agent() -> AsyncIterator[Callable[..., Any]]:
    agents: list[ScriptedAgent] = []

    async def start(behaviour: Any) -> ScriptedAgent:
        a = ScriptedAgent(behaviour)
        await a.start()
        agents.append(a)
        return a

    yield start
    for a in agents:
        await a.stop()


async def poll(collector: SnmpCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    readings = Readings({"target": "dev"}, 0.0)
    await collector.collect(readings)
    out = {}
    for s in readings.samples:
        labels = tuple((k, v) for k, v in s.labels if k not in ("target",))
        out[(s.name, labels)] = s.value
    return out


def port(name: str, p: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    n = int(p.rsplit("/", 1)[1])
    return (name, (("descr", f"GigabitEthernet0/{n}"), ("port", p)))


def plain(name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, ())


V3_OPTIONS = {
    "version": "3",
    "user": V3_USER,
    "auth_protocol": "SHA256",
    "auth_password": V3_AUTH,
    "priv_protocol": "AES128",
    "priv_password": V3_PRIV,
}


# ----- against real snmpd ------------------------------------------------------------------


async def test_switch_port_flap_counters_and_reboot(snmpd: SnmpdPeer, make) -> None:
    sw = make(snmpd.address, profiles=["switch"])
    first = await poll(sw)
    assert first[port("if_oper_up", "Gi0/2")] == 1.0
    assert first[port("if_admin_up", "Gi0/2")] == 1.0
    assert first[port("if_speed_bytes", "Gi0/1")] == 1e9 / 8  # 1 Gbit/s
    assert first[port("if_in_octets_total", "Gi0/1")] == 10**12 + 1
    assert first[port("if_out_octets_total", "Gi0/3")] == 2 * 10**12 + 3
    assert first[port("if_in_errors_total", "Gi0/4")] == 4.0
    assert first[plain("device_uptime_seconds")] == 3600.0
    assert first[plain("device_rebooted")] == 0.0
    assert len([k for k in first if k[0] == "if_oper_up"]) == 4

    snmpd.change({IF_OPER_2: ["integer", 2], IF_HC_IN_1: ["counter64", 10**12 + 5001]})
    down = await poll(sw)
    assert down[port("if_oper_up", "Gi0/2")] == 0.0
    assert down[port("if_oper_up", "Gi0/1")] == 1.0
    assert down[port("if_in_octets_total", "Gi0/1")] == 10**12 + 5001

    # Counter64 wraps: from near 2^64 through zero, the total keeps growing.
    snmpd.change({IF_OPER_2: ["integer", 1], IF_HC_IN_1: ["counter64", C64 - 1000]})
    before = (await poll(sw))[port("if_in_octets_total", "Gi0/1")]
    snmpd.change({IF_HC_IN_1: ["counter64", 5000]})
    after = await poll(sw)
    assert after[port("if_oper_up", "Gi0/2")] == 1.0
    assert after[port("if_in_octets_total", "Gi0/1")] - before == pytest.approx(6000, abs=4096)
    assert after[port("if_in_octets_total", "Gi0/1")] > before

    # sysUpTime goes backwards: the device restarted, and its counters reset with it.
    snmpd.change({SYS_UPTIME: ["timeticks", 500], IF_HC_IN_1: ["counter64", 10]})
    rebooted = await poll(sw)
    assert rebooted[plain("device_rebooted")] == 1.0
    assert rebooted[plain("device_uptime_seconds")] == 5.0
    assert rebooted[port("if_in_octets_total", "Gi0/1")] == 10.0
    snmpd.change({SYS_UPTIME: ["timeticks", 1500]})
    assert (await poll(sw))[plain("device_rebooted")] == 0.0


async def test_port_names_are_read_again_when_due_on_a_new_port_and_after_a_restart(
    snmpd: SnmpdPeer, make
) -> None:
    sw = make(snmpd.address, profiles=["switch"])
    assert port("if_oper_up", "Gi0/2") in await poll(sw)

    # Polls in between reuse the names: a rename shows at the next refresh, not before
    # (the state and counters of every port are read every poll).
    snmpd.change({IF_NAME_2: ["string", "Uplink"], IF_OPER_2: ["integer", 2]})
    between = await poll(sw)
    assert between[port("if_oper_up", "Gi0/2")] == 0.0
    assert not any(dict(labels).get("port") == "Uplink" for _, labels in between)

    # A port that appears is named at once, in the same poll.
    snmpd.change({k: v for k, v in switch_values(indexes=[5]).items() if not k.endswith(".1.3.0")})
    added = await poll(sw)
    assert added[port("if_oper_up", "Gi0/5")] == 1.0
    assert added[port("if_in_octets_total", "Gi0/5")] == 10**12 + 5

    # A restart may renumber the ports (no ifIndex persistence): index 1 is now Gi0/3 and
    # index 3 is Gi0/1. The restart's poll labels each index by its new name.
    snmpd.change(
        {
            SYS_UPTIME: ["timeticks", 500],
            IF_NAME_1: ["string", "Gi0/3"],
            "1.3.6.1.2.1.2.2.1.2.1": ["string", "GigabitEthernet0/3"],
            "1.3.6.1.2.1.31.1.1.1.1.3": ["string", "Gi0/1"],
            "1.3.6.1.2.1.2.2.1.2.3": ["string", "GigabitEthernet0/1"],
            IF_HC_IN_1: ["counter64", 77],
        }
    )
    restarted = await poll(sw)
    assert restarted[plain("device_rebooted")] == 1.0
    assert restarted[port("if_in_octets_total", "Gi0/3")] == 77.0
    assert restarted[port("if_in_octets_total", "Gi0/1")] == 10**12 + 3
    assert restarted[("if_oper_up", (("descr", "GigabitEthernet0/2"), ("port", "Uplink")))] == 0.0

    # With label_refresh 0s the names are read every poll, as snmp_exporter does.
    every = make(snmpd.address, profiles=["switch"], label_refresh="0s")
    await poll(every)
    snmpd.change({IF_NAME_2: ["string", "Core-link"]})
    renamed = await poll(every)
    assert renamed[("if_oper_up", (("descr", "GigabitEthernet0/2"), ("port", "Core-link")))] == 0.0


async def test_port_names_are_read_again_after_label_refresh(snmpd: SnmpdPeer, make) -> None:
    sw = make(snmpd.address, profiles=["switch"], label_refresh="0.2s")
    await poll(sw)
    snmpd.change({IF_NAME_2: ["string", "Uplink"]})
    await asyncio.sleep(0.3)
    renamed = await poll(sw)
    assert renamed[("if_oper_up", (("descr", "GigabitEthernet0/2"), ("port", "Uplink")))] == 1.0


async def test_v1_counter32_wrap_and_port_filter(snmpd: SnmpdPeer, make) -> None:
    sw = make(snmpd.address, version="1", profiles=["switch"], port_pattern="^Gi0/[13]$")
    snmpd.change({IF_IN_1: ["counter", C32 - 100]})
    first = await poll(sw)
    assert {k[1][1][1] for k in first if k[0] == "if_oper_up"} == {"Gi0/1", "Gi0/3"}
    assert first[port("if_in_octets_total", "Gi0/1")] == C32 - 100
    assert first[port("if_speed_bytes", "Gi0/1")] == 1e9 / 8  # v1: ifSpeed
    snmpd.change({IF_IN_1: ["counter", 400]})
    wrapped = await poll(sw)
    assert wrapped[port("if_in_octets_total", "Gi0/1")] == C32 + 400


async def test_ups_goes_on_battery(snmpd: SnmpdPeer, make) -> None:
    ups = make(snmpd.address, profiles=["ups"])
    mains = await poll(ups)
    assert mains[plain("ups_on_battery")] == 0.0
    assert mains[plain("ups_on_line")] == 1.0
    assert mains[plain("ups_battery_low")] == 0.0
    assert mains[plain("ups_battery_charge_percent")] == 100.0
    assert mains[plain("ups_battery_runtime_seconds")] == 1800.0
    assert mains[plain("ups_input_voltage_volts")] == 231.0
    assert mains[plain("ups_output_load_percent")] == 37.0
    # A UPS reads sysUpTime too, so its restarts (and its coldStart traps) reach
    # unexpected_device_reboot.
    assert mains[plain("device_uptime_seconds")] == 3600.0
    assert mains[plain("device_rebooted")] == 0.0
    snmpd.change(ups_values(on_battery=True))
    battery = await poll(ups)
    assert battery[plain("ups_on_battery")] == 1.0
    assert battery[plain("ups_on_line")] == 0.0
    assert battery[plain("ups_output_source")] == 5.0
    assert battery[plain("ups_battery_low")] == 1.0
    assert battery[plain("ups_seconds_on_battery")] == 120.0
    assert battery[plain("ups_alarms_present")] == 2.0
    assert set(k[0] for k in battery) == SnmpCollector.emits(ups.config)
    snmpd.change({SYS_UPTIME: ["timeticks", 500]})  # the UPS restarted
    assert (await poll(ups))[plain("device_rebooted")] == 1.0
    # net-snmp's own snmpget reads the same from the agent (a second opinion on the fixture).
    seen = snmpd.snmpget(["-v2c", "-c", COMMUNITY], f"{UPS_BASE}.4.1.0")
    assert f".{UPS_BASE}.4.1.0 = INTEGER: 5" in seen


@pytest.mark.parametrize(
    "options",
    [
        V3_OPTIONS,
        {
            "version": "3",
            "user": V3_USER_256,
            "auth_protocol": "SHA512",
            "auth_password": V3_AUTH_256,
            "priv_protocol": "AES256",
            "priv_password": V3_PRIV_256,
        },
        # net-snmp's and snmp_exporter's spellings: `-a SHA-256 -x AES` (AES = AES-128).
        {**V3_OPTIONS, "auth_protocol": "sha-256", "priv_protocol": "AES"},
    ],
    ids=["sha256-aes128", "sha512-aes256", "net-snmp-spellings"],
)
async def test_v3_auth_priv(snmpd: SnmpdPeer, make, options: dict[str, str]) -> None:
    dev = make(snmpd.address, profiles=["switch", "ups"], **options)
    got = await poll(dev)
    assert got[plain("ups_on_battery")] == 0.0
    assert got[port("if_in_octets_total", "Gi0/2")] == 10**12 + 2
    snmpd.change({IF_OPER_2: ["integer", 2], **ups_values(on_battery=True)})
    got = await poll(dev)
    assert got[port("if_oper_up", "Gi0/2")] == 0.0
    assert got[plain("ups_on_battery")] == 1.0


async def test_secrets_from_env_and_file(
    snmpd: SnmpdPeer, make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DUTYD_TEST_SNMP_AUTH", V3_AUTH)
    priv = tmp_path / "priv"
    priv.write_text(V3_PRIV + "\n")
    community = tmp_path / "community"
    community.write_text(COMMUNITY)
    v3 = {k: v for k, v in V3_OPTIONS.items() if not k.endswith("_password")}
    dev = make(
        snmpd.address,
        profiles=["ups"],
        auth_password_env="DUTYD_TEST_SNMP_AUTH",
        priv_password_file=str(priv),
        **v3,
    )
    assert (await poll(dev))[plain("ups_on_line")] == 1.0
    v2 = make(snmpd.address, profiles=["ups"], community=None, community_file=str(community))
    assert (await poll(v2))[plain("ups_on_line")] == 1.0
    assert V3_AUTH not in repr(dev.config) and COMMUNITY not in repr(v2.config)


async def test_v3_wrong_credentials_are_named(snmpd: SnmpdPeer, make) -> None:
    wrong_auth = make(snmpd.address, profiles=["ups"], **{**V3_OPTIONS, "auth_password": "x" * 12})
    with pytest.raises(BadCredentials, match="wrong auth password"):
        await poll(wrong_auth)


async def test_v3_wrong_priv_password(snmpd: SnmpdPeer, make) -> None:
    wrong_priv = make(snmpd.address, profiles=["ups"], **{**V3_OPTIONS, "priv_password": "y" * 12})
    with pytest.raises(BadCredentials, match="wrong privacy password"):
        await poll(wrong_priv)


async def test_v3_unknown_user(snmpd: SnmpdPeer, make) -> None:
    nobody = make(snmpd.address, profiles=["ups"], **{**V3_OPTIONS, "user": "nobody"})
    with pytest.raises(BadCredentials, match="unknown user"):
        await poll(nobody)


async def test_v3_host_down_is_not_called_a_wrong_password(make) -> None:
    from tests.peers import free_port

    dev = make(f"127.0.0.1:{free_port('udp')}", profiles=["ups"], timeout=0.6, **V3_OPTIONS)
    with pytest.raises(TargetTimeout, match="not even to SNMPv3 engine discovery"):
        await poll(dev)


async def test_wrong_community_is_no_answer(snmpd: SnmpdPeer, make) -> None:
    dev = make(snmpd.address, profiles=["ups"], community="not-it", timeout=0.5, retries=0)
    with pytest.raises(TargetTimeout, match=r"no answer .*wrong community or host down"):
        await poll(dev)


async def test_fast_path_matches_pysnmp_value_by_value(snmpd: SnmpdPeer, make) -> None:
    # Multi-byte ifIndexes (127/128, 16383/16384, 2^31-1) check the walk's ordering logic.
    indexes = [1, 2, 127, 128, 16383, 16384, 2**31 - 1]
    values = {**switch_values(indexes=indexes), **ups_values()}
    values[IF_HC_IN_1] = ["counter64", C64 - 7]
    values["1.3.6.1.2.1.2.2.1.2.2"] = ["string", "é\x01"]
    snmpd.set_values(values)
    options = {"profiles": ["switch", "ups"], "max_repetitions": 3}
    fast = make(snmpd.address, **options)
    slow = make(snmpd.address, client="pysnmp", **options)
    v1_fast = make(snmpd.address, version="1", **options)
    v1_slow = make(snmpd.address, version="1", client="pysnmp", **options)
    for a, b in ((fast, slow), (v1_fast, v1_slow)):
        sa, ca = await a.client().fetch(a.query, 100)
        sb, cb = await b.client().fetch(b.query, 100)
        assert sa == sb
        assert ca == cb
        assert [len(c) for c in ca] == [len(indexes)] * len(a.query.columns)
        assert [codec.decode_subids(i)[0] for i in ca[0]] == indexes
        assert await poll(a) == await poll(b)


async def test_v1_end_of_mib_view_both_paths(context: CollectorContext, make) -> None:
    """v1 ends a walk at the end of the MIB with noSuchName; v2c with endOfMibView."""
    from dutyd.agent.demo.snmp_responder import SnmpResponder

    responder = SnmpResponder(COMMUNITY)
    for i in (1, 2, 3):
        responder.set((1, 3, 6, 1, 4, 1, 99999, 7, 1, 1, i), codec.T_INTEGER, 10 * i)
        responder.set((1, 3, 6, 1, 4, 1, 99999, 7, 1, 2, i), codec.T_GAUGE32, 20 * i)
    await responder.start()
    try:
        oids = [
            {"name": "a_value", "column": "1.3.6.1.4.1.99999.7.1.1"},
            {"name": "b_value", "column": "1.3.6.1.4.1.99999.7.1.2"},
        ]
        got = []
        for version in ("1", "2c"):
            for client in ("fast", "pysnmp"):
                dev = make(f"127.0.0.1:{responder.port}", version=version, client=client, oids=oids)
                got.append(await poll(dev))
        assert got[0][("b_value", (("index", "3"),))] == 60.0
        assert len(got[0]) == 6
        assert all(g == got[0] for g in got)
    finally:
        await responder.stop()


async def test_sensor_profile_and_oid_map(snmpd: SnmpdPeer, make) -> None:
    dev = make(
        snmpd.address,
        profiles=["sensor"],
        sensors=[
            {
                "sensor": "room-a",
                "temperature": "1.3.6.1.4.1.99999.1.1.0",
                "humidity": "1.3.6.1.4.1.99999.1.2.0",
                "temperature_scale": 0.1,
            },
            {
                "temperature_column": "1.3.6.1.4.1.99999.2.1.3",
                "name_column": "1.3.6.1.4.1.99999.2.1.2",
                "temperature_scale": 0.1,
            },
        ],
        oids=[
            {"name": "ups_input_line1_volts", "oid": f"{UPS_BASE}.3.3.1.3.1", "scale": 1},
            {
                "name": "port_in_total",
                "column": "1.3.6.1.2.1.2.2.1.10",
                "type": "counter32",
                "index_label": "ifindex",
            },
        ],
    )
    got = await poll(dev)
    assert got[("room_temperature_celsius", (("sensor", "room-a"),))] == pytest.approx(23.5)
    assert got[("room_humidity_percent", (("sensor", "room-a"),))] == 41.0
    assert got[("room_temperature_celsius", (("sensor", "rack2-top"),))] == pytest.approx(24.8)
    assert got[plain("ups_input_line1_volts")] == 231.0
    assert got[("port_in_total", (("ifindex", "3"),))] == 3000.0
    assert {k[0] for k in got} == SnmpCollector.emits(dev.config)


async def test_missing_mib_is_unavailable(tmp_path: Path, make) -> None:
    peer = SnmpdPeer(tmp_path, switch_values())
    try:
        ups = make(peer.address, profiles=["ups"])
        with pytest.raises(ReadingUnavailable, match="does not serve UPS-MIB"):
            await poll(ups)
        oids = make(peer.address, oids=[{"name": "x_volts", "oid": "1.3.6.1.4.1.99999.9.0"}])
        with pytest.raises(ReadingUnavailable, match=r"none of the configured OIDs"):
            await poll(oids)
    finally:
        peer.stop()


# ----- scripted misbehaving agents ---------------------------------------------------------


async def test_garbage_truncated_and_wrong_request_id(snmpd: SnmpdPeer, agent, make) -> None:
    good_value = codec.encode_int(3)

    def garbage(raw: bytes, msg: codec.Message) -> list[bytes]:
        return [b"\x30\x03\x02\x01\x07", b"hello, not snmp"]

    def truncated(raw: bytes, msg: codec.Message) -> list[bytes]:
        return [reply(msg, echo_values(msg, good_value))[:-5]]

    def wrong_id(raw: bytes, msg: codec.Message) -> list[bytes]:
        return [reply(msg, echo_values(msg, good_value), rid=msg[3] ^ 0x5555)]

    for behaviour, match in (
        (garbage, "not SNMP v1/v2c replies"),
        (truncated, "not SNMP v1/v2c replies"),
        (wrong_id, "requests we did not make"),
    ):
        bad = await agent(behaviour)
        broken = make(bad.address, profiles=["ups"], timeout=0.6, retries=1)
        healthy = make(snmpd.address, profiles=["ups"])
        results = await asyncio.gather(poll(broken), poll(healthy), return_exceptions=True)
        assert isinstance(results[0], BadResponse), results[0]
        assert match in str(results[0])
        assert isinstance(results[1], dict) and results[1][plain("ups_on_line")] == 1.0
        assert bad.requests == 2  # the request and its one retry


async def test_late_replies_are_a_slow_agent_not_a_broken_one(agent, make) -> None:
    """Issue 14: an agent answering each request only after it timed out (its reply arrives
    during the next poll) was reported as sending "replies to requests we did not make"."""
    held: list[bytes] = []

    def slow(raw: bytes, msg: codec.Message) -> list[bytes]:
        late, held[:] = list(held), [reply(msg, echo_values(msg, codec.encode_int(3)))]
        return late

    bad = await agent(slow)
    dev = make(bad.address, profiles=["ups"], timeout=0.5, retries=0)
    with pytest.raises(TargetTimeout, match="no answer"):
        await poll(dev)
    with pytest.raises(TargetTimeout) as caught:
        await poll(dev)
    message = str(caught.value)
    assert "late reply(ies) to requests that had timed out: slow agent" in message
    assert "did not make" not in message and "broken agent" not in message


async def test_scheduler_marks_only_the_broken_target_down(snmpd: SnmpdPeer, agent, make) -> None:
    from dutyd.agent.scheduler import Scheduler

    def truncated(raw: bytes, msg: codec.Message) -> list[bytes]:
        return [reply(msg, echo_values(msg, codec.encode_int(1)))[:-3]]

    bad = await agent(truncated)
    broken = make(bad.address, profiles=["ups"], timeout=0.5)
    healthy = make(snmpd.address, profiles=["switch", "ups"])
    scheduler = Scheduler(lambda _r: None)
    down, up = await asyncio.gather(scheduler.poll_once(broken), scheduler.poll_once(healthy))
    assert not down.ok and down.reason == "bad_response"
    assert f"127.0.0.1:{bad.port} sent 2 datagram(s) that are not SNMP" in down.message
    assert up.ok and len(up.samples) > 30


async def test_reply_from_wrong_address_is_ignored(agent, make) -> None:
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    sent: list[bytes] = []

    def relay(raw: bytes, msg: codec.Message) -> list[bytes]:
        sent.append(reply(msg, echo_values(msg, codec.encode_int(3))))
        return []

    bad = await agent(relay)
    dev = make(bad.address, profiles=["ups"], timeout=0.6, retries=0)
    task = asyncio.create_task(poll(dev))
    for _ in range(100):
        if sent:
            break
        await asyncio.sleep(0.005)
    transport = dev.client().transport  # type: ignore[attr-defined]
    ep = transport._endpoints[socket.AF_INET]
    other.sendto(sent[0], ep.get_extra_info("sockname")[:2])
    with pytest.raises(TargetTimeout, match=r"came from 127\.0\.0\.1"):
        await task
    other.close()
    assert transport.stats.wrong_address == 1


async def test_endless_table_is_cut_at_max_rows(agent, make) -> None:
    def endless(raw: bytes, msg: codec.Message) -> list[bytes]:
        return [reply(msg, endless_table(msg, column_len=9))]

    bad = await agent(endless)
    column = {"name": "x_rows", "column": "1.3.6.1.4.1.99999.5.1"}
    dev = make(bad.address, oids=[column], max_rows=300, max_repetitions=50)
    with pytest.raises(BadResponse, match="more than 300 rows"):
        await poll(dev)
    assert bad.requests <= 8


ROWS_COLUMN = (1, 3, 6, 1, 4, 1, 99999, 5, 1)


def scripted_rows(batches: list[list[int]]) -> Any:
    """An agent walking ROWS_COLUMN: the k-th request gets the rows of batches[k] (one-arc
    indexes, in the order given), then one name past the column."""
    served: list[int] = []

    def behaviour(raw: bytes, msg: codec.Message) -> list[bytes]:
        k = len(served)
        served.append(k)
        if k >= len(batches):
            after = codec.encode_oid_content((1, 3, 6, 1, 4, 1, 99999, 6, 1))
            return [reply(msg, [(after, codec.encode_int(0))])]
        vbs = [
            (codec.encode_oid_content((*ROWS_COLUMN, i)), codec.encode_int(i)) for i in batches[k]
        ]
        return [reply(msg, vbs)]

    return behaviour


async def test_walk_refuses_a_row_repeated_within_one_reply(agent, make) -> None:
    column = {"name": "x_rows", "column": "1.3.6.1.4.1.99999.5.1"}
    bad = await agent(scripted_rows([[1, 2, 2, 3]]))
    dev = make(bad.address, oids=[column])
    with pytest.raises(BadResponse, match=r"not advancing: index 2 came after 2"):
        await poll(dev)


async def test_walk_refuses_rows_going_back_across_replies(agent, make) -> None:
    column = {"name": "x_rows", "column": "1.3.6.1.4.1.99999.5.1"}
    bad = await agent(scripted_rows([[1, 2, 3], [2, 4]]))
    dev = make(bad.address, oids=[column])
    with pytest.raises(BadResponse, match=r"not advancing: index 2 came after 3"):
        await poll(dev)


async def test_walk_takes_multi_byte_indexes_out_of_byte_order(agent, make) -> None:
    # 16384 encodes as 81 80 00, which sorts before 256 (82 00) byte by byte: OID order wins.
    column = {"name": "x_rows", "column": "1.3.6.1.4.1.99999.5.1"}
    ok = await agent(scripted_rows([[1, 256, 16384], [16385]]))
    dev = make(ok.address, oids=[column])
    got = await poll(dev)
    assert sorted(v for (name, _), v in got.items() if name == "x_rows") == [
        1.0,
        256.0,
        16384.0,
        16385.0,
    ]


async def test_exceptions_in_replies(agent, make) -> None:
    no_such = codec.encode_value(codec.T_NO_SUCH_INSTANCE, None)
    # upsOutputSource answers (battery); everything else, sysUpTime too, is noSuchInstance.
    output_source = codec.encode_oid_content(codec.parse_oid(f"{UPS_BASE}.4.1.0"))

    def mixed(raw: bytes, msg: codec.Message) -> list[bytes]:
        vbs = [(oid, codec.encode_int(5) if oid == output_source else no_such) for oid, _ in msg[6]]
        return [reply(msg, vbs)]

    dev = make((await agent(mixed)).address, profiles=["ups"])
    got = await poll(dev)
    assert got == {
        plain("ups_output_source"): 5.0,
        plain("ups_on_battery"): 1.0,
        plain("ups_on_bypass"): 0.0,
        plain("ups_on_line"): 0.0,
    }

    def end_of_mib(raw: bytes, msg: codec.Message) -> list[bytes]:
        return [
            reply(msg, [(oid, codec.encode_value(codec.T_END_OF_MIB, None)) for oid, _ in msg[6]])
        ]

    sw = make((await agent(end_of_mib)).address, profiles=["switch"])
    with pytest.raises(ReadingUnavailable, match="lists no interfaces"):
        await poll(sw)


async def test_collector_is_registered() -> None:
    assert COLLECTORS["snmp"] is SnmpCollector


# ----- pure logic --------------------------------------------------------------------------


def test_config_validation() -> None:
    base = {"name": "x", "kind": "snmp", "address": "10.0.0.1", "profiles": ["ups"]}
    with pytest.raises(ValidationError, match="needs community"):
        SnmpTarget.model_validate(base)
    with pytest.raises(ValidationError, match="needs `user`"):
        SnmpTarget.model_validate({**base, "version": "v3"})
    with pytest.raises(ValidationError, match="at least 8"):
        SnmpTarget.model_validate({**base, **V3_OPTIONS, "auth_password": "short"})
    with pytest.raises(ValidationError, match="only for version 3"):
        SnmpTarget.model_validate({**base, "community": "c", "user": "u"})
    with pytest.raises(ValidationError, match="nothing to read"):
        SnmpTarget.model_validate({**base, "community": "c", "profiles": []})
    with pytest.raises(ValidationError, match="ends in _total"):
        SnmpTarget.model_validate(
            {
                **base,
                "community": "c",
                "oids": [{"name": "a", "oid": "1.3.6.1", "type": "counter64"}],
            }
        )
    with pytest.raises(ValidationError, match="numeric OID"):
        SnmpTarget.model_validate(
            {**base, "community": "c", "oids": [{"name": "a", "oid": "sysUpTime.0"}]}
        )
    ok = SnmpTarget.model_validate({**base, "community_env": "PATH", "version": 2})
    assert ok.version == "2c" and ok.endpoint() == ("10.0.0.1", 161)
    assert "PATH" not in repr(ok)


@pytest.mark.parametrize(
    ("auth", "priv", "want"),
    [
        ("SHA", "AES", ("SHA", "AES128")),
        ("SHA1", "aes", ("SHA", "AES128")),
        ("HMAC-SHA", "AES-128", ("SHA", "AES128")),
        ("SHA-256", "AES128", ("SHA256", "AES128")),
        ("sha256", "aes_192", ("SHA256", "AES192")),
        ("SHA512", "AES-256", ("SHA512", "AES256")),
        ("usmHMAC192SHA256AuthProtocol", "AES256C", ("SHA256", "AES256C")),
        ("md5", "DES", ("MD5", "DES")),
        ("MD5", "des-cbc", ("MD5", "DES")),
        ("SHA-224", "AES-192-C", ("SHA224", "AES192C")),
    ],
)
def test_v3_protocol_spellings_are_accepted(auth: str, priv: str, want: tuple[str, str]) -> None:
    base = {"name": "x", "kind": "snmp", "address": "10.0.0.1", "profiles": ["ups"]}
    cfg = SnmpTarget.model_validate(
        {**base, **V3_OPTIONS, "auth_protocol": auth, "priv_protocol": priv}
    )
    assert (cfg.auth_protocol, cfg.priv_protocol) == want


def test_v3_unknown_protocol_names_the_accepted_ones() -> None:
    base = {"name": "x", "kind": "snmp", "address": "10.0.0.1", "profiles": ["ups"]}
    with pytest.raises(
        ValidationError, match=r"not an SNMPv3 privacy protocol; use one of .*AES128"
    ):
        SnmpTarget.model_validate({**base, **V3_OPTIONS, "priv_protocol": "3DES"})
    with pytest.raises(ValidationError, match="not an SNMPv3 authentication protocol"):
        SnmpTarget.model_validate({**base, **V3_OPTIONS, "auth_protocol": "SHA3"})


def test_config_report_keeps_the_case_of_acronyms() -> None:
    """The config report lower-cases pydantic's "Input should be" after the key path; it used
    to do so to every message, giving "sNMPv3 uses user/auth/priv, not a community"."""
    from dutyd.agent.config import load_from_dict
    from dutyd.core.errors import ConfigError

    target = {"name": "x", "kind": "snmp", "address": "10.0.0.1", "profiles": ["ups"]}
    with pytest.raises(ConfigError) as caught:
        load_from_dict({"targets": [{**target, **V3_OPTIONS, "community": "c"}]}, "<test>")
    assert "SNMPv3 uses user/auth/priv, not a community" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_from_dict({"targets": [{**target, "community": "c", "retries": "many"}]}, "<test>")
    assert "retries: input should be a valid integer" in str(caught.value)


@given(st.binary(max_size=200))
def test_decoder_never_raises_anything_but_decode_error(data: bytes) -> None:
    with contextlib.suppress(codec.DecodeError):
        codec.decode_message(data)


def test_config_loads_through_the_daemon_config() -> None:
    from dutyd.agent.config import load_from_dict

    settings = load_from_dict(
        {
            "targets": [
                {
                    "name": "sw1",
                    "kind": "snmp",
                    "address": "127.0.0.1:1161",
                    "community": "c",
                    "profiles": ["switch"],
                    "port_pattern": "^Te",
                }
            ]
        },
        "<test>",
    )
    target = settings.targets[0]
    assert isinstance(target, SnmpTarget)
    assert "if_oper_up" in SnmpCollector.emits(target)
    assert "device_rebooted" in SnmpCollector.emits(target)
    assert "ups_on_battery" not in SnmpCollector.emits(target)


def test_counter_tracker_wrap_versus_reset() -> None:
    t = CounterTracker()
    for raw, rebooted, limit, want in [
        (C32 - 10, None, None, C32 - 10),
        (5, None, None, C32 + 5),  # wrap: the old value was high
        (100, None, None, C32 + 100),
        (50, None, None, 50),  # cleared counters: a reset, not a 4 GB jump
        (60, True, None, 60),
    ]:
        t.begin()
        assert t.update("k", raw, C32, rebooted, limit) == want
        t.end()
    t.begin()
    assert t.update("k", 10, C32, None, max_increase=100.0) == 10.0  # implausible wrap
    t.end()


@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=12),
            st.one_of(st.integers(-(2**31), 2**31 - 1), st.binary(max_size=300)),
        ),
        max_size=30,
    )
)
def test_codec_round_trip(varbinds: list[tuple[list[int], int | bytes]]) -> None:
    body = b""
    want = []
    for tail, value in varbinds:
        oid = (1, 3, *tail)
        tag = codec.T_INTEGER if isinstance(value, int) else codec.T_OCTETS
        body += codec.encode_varbind(codec.encode_oid_content(oid), codec.encode_value(tag, value))
        want.append((oid, value))
    data = codec.encode_response(1, b"public", 0x01234567, body)
    msg = codec.decode_message(data)
    assert msg[3] == 0x01234567
    assert [(codec.decode_oid_content(o), v) for o, v in msg[6]] == want
    for cut in (1, len(data) // 2, len(data) - 1):
        with pytest.raises(codec.DecodeError):
            codec.decode_message(data[:cut])


# ----- the demo devices --------------------------------------------------------------------


async def test_demo_switch_and_ups_follow_the_scenario(context: CollectorContext) -> None:
    from dutyd.agent.demo import DEVICES
    from dutyd.agent.demo.nut_ups import LOW_BATTERY_AT, MAINS_BACK_AT, MAINS_LOST_AT
    from dutyd.agent.demo.snmp_devices import FLAP_DOWN_AT, FLAP_PORT, SnmpDevices

    assert SnmpDevices in DEVICES
    device = SnmpDevices(speed=1.0)
    await device.start()
    collectors = [SnmpCollector(SnmpTarget.model_validate(t), context) for t in device.targets()]
    switch, uplinks, ups = collectors
    try:
        seen = []
        for t in (0.0, FLAP_DOWN_AT + 1, MAINS_LOST_AT + 1, LOW_BATTERY_AT + 1, MAINS_BACK_AT + 1):
            device.advance(t)
            sw, up, u = await poll(switch), await poll(uplinks), await poll(ups)
            assert len([k for k in sw if k[0] == "if_oper_up"]) == 24
            assert len([k for k in up if k[0] == "if_oper_up"]) == 2
            flap = (
                "if_oper_up",
                (("descr", f"GigabitEthernet0/{FLAP_PORT}"), ("port", f"Gi0/{FLAP_PORT}")),
            )
            assert sw[flap] == up[flap]
            seen.append((sw[flap], u[plain("ups_on_battery")], u[plain("ups_battery_low")]))
        assert seen == [
            (1.0, 0.0, 0.0),
            (0.0, 0.0, 0.0),
            (0.0, 1.0, 0.0),
            (0.0, 1.0, 1.0),
            (1.0, 0.0, 0.0),
        ]
    finally:
        for c in collectors:
            await c.close()
        await device.stop()
