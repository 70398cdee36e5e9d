"""The Modbus TCP collector against real pyModbusTCP servers and misbehaving TCP peers."""

from __future__ import annotations

import asyncio
import math
import random
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from pydantic import ValidationError
from pyModbusTCP.server import DataBank, DataHandler, ModbusServer

from dutyd.agent.demo import DEVICES
from dutyd.agent.demo.room_sensor import RoomSensorDevice, room_climate
from dutyd.collectors import COLLECTORS
from dutyd.collectors.base import CollectorContext, Readings
from dutyd.collectors.modbus import (
    ModbusCollector,
    ModbusRegister,
    ModbusTarget,
    decode_registers,
    plan_reads,
)
from dutyd.core.errors import BadResponse, CollectError, TargetTimeout, TargetUnreachable
from tests.peers import free_port

# ----- decoding ----------------------------------------------------------------------------

# How vendors document 32-bit layouts: byte letters A (most significant) .. D, in wire order.
LAYOUT_32 = {
    ("big", "big"): "ABCD",
    ("little", "big"): "CDAB",
    ("big", "little"): "BADC",
    ("little", "little"): "DCBA",
}
VALUES = {
    "int16": [0, 1, -1, 225, -123, 32767, -32768],
    "uint16": [0, 1, 480, 0x1234, 65535],
    "int32": [0, -2, 123456789, -123456789, 2147483647, -2147483648],
    "uint32": [0, 70000, 3_000_000_000, 4294967295],
    "float32": [0.0, 22.5, -40.25, 0.001, 1234.5678, -3.4e38],
}
FORMATS = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f"}


def encode(value: float, type_: str, word_order: str, byte_order: str) -> list[int]:
    """Registers as a device with this layout would hold `value` (written independently of
    the collector: struct plus the vendors' ABCD letter notation)."""
    wire = struct.pack(FORMATS[type_], value)
    if len(wire) == 2:
        letters = "AB" if byte_order == "big" else "BA"
    else:
        letters = LAYOUT_32[(word_order, byte_order)]
    laid = bytes(wire["ABCD".index(ch)] for ch in letters)
    return [laid[i] << 8 | laid[i + 1] for i in range(0, len(laid), 2)]


DECODE_CASES = [
    pytest.param(t, v, wo, bo, id=f"{t}-{v}-words_{wo}-bytes_{bo}")
    for t, values in VALUES.items()
    for v in values
    for wo in ("big", "little")
    for bo in ("big", "little")
]


@pytest.mark.parametrize(("type_", "value", "word_order", "byte_order"), DECODE_CASES)
def test_decode_round_trip(type_: str, value: float, word_order: str, byte_order: str) -> None:
    words = encode(value, type_, word_order, byte_order)
    expected = struct.unpack(FORMATS[type_], struct.pack(FORMATS[type_], value))[0]
    assert decode_registers(words, type_, word_order, byte_order) == expected


@pytest.mark.parametrize(
    ("words", "type_", "word_order", "byte_order", "expected"),
    [
        # 22.5 is 0x41B40000 as a float32.
        ([0x41B4, 0x0000], "float32", "big", "big", 22.5),
        ([0x0000, 0x41B4], "float32", "little", "big", 22.5),
        ([0xB441, 0x0000], "float32", "big", "little", 22.5),
        ([0x0000, 0xB441], "float32", "little", "little", 22.5),
        ([0xFF85], "int16", "big", "big", -123.0),
        ([0x85FF], "int16", "big", "little", -123.0),
        ([0xFF85], "uint16", "big", "big", 65413.0),
        ([0xFFFF, 0xFFFE], "int32", "big", "big", -2.0),
        ([0xFFFE, 0xFFFF], "int32", "little", "big", -2.0),
        ([0x0001, 0x0002], "uint32", "big", "big", 65538.0),
        ([0x0002, 0x0001], "uint32", "little", "big", 65538.0),
    ],
)
def test_decode_known_vectors(
    words: list[int], type_: str, word_order: str, byte_order: str, expected: float
) -> None:
    assert decode_registers(words, type_, word_order, byte_order) == expected


def test_decode_nan_and_bad_input() -> None:
    assert math.isnan(decode_registers([0x7FC0, 0x0000], "float32"))
    with pytest.raises(ValueError, match="needs 2 register"):
        decode_registers([1], "float32")
    with pytest.raises(ValueError, match="not a 16-bit word"):
        decode_registers([70000], "uint16")
    with pytest.raises(ValueError, match="unknown register type"):
        decode_registers([1], "int8")  # type: ignore[arg-type]


# ----- configuration -----------------------------------------------------------------------


def target_dict(address: str = "127.0.0.1", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "sensor-1",
        "kind": "modbus",
        "address": address,
        "registers": [{"name": "room_temperature_celsius", "address": 0}],
    }
    base.update(extra)
    return base


def test_address_forms_and_defaults() -> None:
    t = ModbusTarget.model_validate(target_dict("10.0.0.5"))
    assert (t.host, t.port, t.unit_id) == ("10.0.0.5", 502, 1)
    t = ModbusTarget.model_validate(target_dict("sensor-a.example:1502"))
    assert (t.host, t.port) == ("sensor-a.example", 1502)
    t = ModbusTarget.model_validate(target_dict("[::1]:5020"))
    assert (t.host, t.port) == ("::1", 5020)
    reg = t.registers[0]
    assert (reg.table, reg.type, reg.word_order, reg.byte_order, reg.scale, reg.offset) == (
        "holding",
        "uint16",
        "big",
        "big",
        1.0,
        0.0,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"address": "10.0.0.5:70000"}, "port '70000' must be a number from 1 to 65535"),
        ({"address": "bad host!"}, "is not a host name or IP address"),
        ({"unit_id": 256}, "less than or equal to 255"),
        ({"registers": []}, "at least 1 item"),
        ({"registers": [{"name": "room temp", "address": 0}]}, "is not a metric name"),
        ({"registers": [{"name": "dutyd_temp", "address": 0}]}, "reserved for dutyd"),
        ({"registers": [{"name": "t", "address": 65536}]}, "less than or equal to 65535"),
        (
            {"registers": [{"name": "t", "address": 65535, "type": "float32"}]},
            "runs past the last address 65535",
        ),
        ({"registers": [{"name": "t", "address": 0, "type": "int8"}]}, "'int16'"),
        (
            {"registers": [{"name": "leak", "address": 0, "table": "coil", "type": "int16"}]},
            "type: only for holding/input registers, not a coil",
        ),
        ({"registers": [{"name": "t", "address": 0, "scale": 0}]}, "must not be 0"),
        ({"registers": [{"name": "t", "address": 0, "colour": "red"}]}, "Extra inputs"),
        (
            {"registers": [{"name": "t", "address": 0}, {"name": "t", "address": 1}]},
            "registers[1] and registers[0] both export t",
        ),
        (
            {
                "labels": {"room": "A"},
                "registers": [{"name": "t", "address": 0, "labels": {"room": "B"}}],
            },
            "room is already a target label",
        ),
    ],
)
def test_bad_configs(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        ModbusTarget.model_validate(target_dict(**change))
    assert message in str(info.value)


def test_same_name_with_distinct_labels_is_fine_and_registered() -> None:
    t = ModbusTarget.model_validate(
        target_dict(
            registers=[
                {"name": "rack_temperature_celsius", "address": 0, "labels": {"sensor": "top"}},
                {"name": "rack_temperature_celsius", "address": 1, "labels": {"sensor": "low"}},
                {"name": "water_leak_detected", "address": 0, "table": "discrete"},
            ]
        )
    )
    assert COLLECTORS["modbus"] is ModbusCollector
    assert ModbusCollector.emits(t) == {"rack_temperature_celsius", "water_leak_detected"}


def test_plan_reads_groups_adjacent_registers_only() -> None:
    regs = [
        ModbusRegister(name="a", address=0, type="int16"),
        ModbusRegister(name="b", address=1, type="float32"),  # 1-2: adjacent to a
        ModbusRegister(name="c", address=3),  # adjacent to b
        ModbusRegister(name="d", address=10),  # gap: new request
        ModbusRegister(name="e", address=10, type="uint32"),  # overlaps d
        ModbusRegister(name="f", address=3, table="input"),  # other table
        ModbusRegister(name="g", address=4, table="coil"),
        ModbusRegister(name="h", address=5, table="coil"),
    ]
    plan = [(b.table, b.start, b.count, b.names) for b in plan_reads(regs)]
    assert plan == [
        ("holding", 0, 4, ("a", "b", "c")),
        ("holding", 10, 2, ("d", "e")),
        ("input", 3, 1, ("f",)),
        ("coil", 4, 2, ("g", "h")),
    ]
    # A request carries at most 125 registers.
    many = [ModbusRegister(name=f"r{i}", address=i) for i in range(300)]
    assert [(b.start, b.count) for b in plan_reads(many)] == [(0, 125), (125, 125), (250, 50)]


# ----- real pyModbusTCP servers ------------------------------------------------------------


class CountingHandler(DataHandler):
    """The stock server data handler, noting each register read it serves (to count requests)."""

    def __init__(self, data_bank: DataBank) -> None:
        super().__init__(data_bank)
        self.reads: list[tuple[str, int, int]] = []

    def read_h_regs(self, address: int, count: int, srv_info: Any) -> DataHandler.Return:
        self.reads.append(("holding", address, count))
        return super().read_h_regs(address, count, srv_info)

    def read_i_regs(self, address: int, count: int, srv_info: Any) -> DataHandler.Return:
        self.reads.append(("input", address, count))
        return super().read_i_regs(address, count, srv_info)


class Device:
    """A running pyModbusTCP server and its data."""

    def __init__(self, h_regs_size: int = 0x10000) -> None:
        self.bank = DataBank(h_regs_size=h_regs_size)
        self.handler = CountingHandler(self.bank)
        self.port = free_port()
        self.server = ModbusServer(
            host="127.0.0.1", port=self.port, no_block=True, data_hdl=self.handler
        )
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def restart(self) -> None:
        self.server.stop()
        self.server = ModbusServer(
            host="127.0.0.1", port=self.port, no_block=True, data_hdl=self.handler
        )
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def device() -> Iterator[Device]:
    dev = Device()
    yield dev
    dev.stop()


Factory = Callable[..., ModbusCollector]


@pytest.fixture
async def make_collector() -> AsyncIterator[Factory]:
    context = CollectorContext()
    made: list[ModbusCollector] = []

    def make(address: str, registers: list[dict[str, Any]], **extra: Any) -> ModbusCollector:
        cfg = ModbusTarget.model_validate(target_dict(address, registers=registers, **extra))
        collector = ModbusCollector(cfg, context)
        made.append(collector)
        return collector

    yield make
    for collector in made:
        await collector.close()
    await context.close()


async def poll(collector: ModbusCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    cfg = collector.config
    readings = Readings({"target": cfg.name, "kind": cfg.kind, **cfg.labels}, time.time())
    await collector.collect(readings)
    return {(s.name, s.labels): s.value for s in readings.samples}


def lbl(**extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"target": "sensor-1", "kind": "modbus", "site": "dc1", **extra}.items()))


ROOM_MAP: list[dict[str, Any]] = [
    {"name": "room_temperature_celsius", "address": 0, "type": "int16", "scale": 0.1},
    {"name": "room_humidity_percent", "address": 1, "scale": 0.1, "offset": -2},
    {
        "name": "pdu_power_watts",
        "address": 10,
        "type": "float32",
        "word_order": "little",
        "labels": {"sensor": "pdu-a"},
    },
    {"name": "pdu_energy_watt_hours_total", "address": 12, "type": "uint32"},
    {"name": "rack_temperature_celsius", "address": 5, "table": "input", "type": "int32",
     "scale": 0.001, "labels": {"sensor": "rack3-top"}},
    {"name": "water_leak_detected", "address": 3, "table": "coil"},
    {"name": "smoke_detected", "address": 7, "table": "discrete"},
]  # fmt: skip


def load_room(bank: DataBank, temp_tenths: int, leak: bool) -> None:
    bank.set_holding_registers(0, [temp_tenths & 0xFFFF, 512])
    bank.set_holding_registers(10, encode(1234.5, "float32", "little", "big"))
    bank.set_holding_registers(12, encode(3_000_000_000, "uint32", "big", "big"))
    bank.set_input_registers(5, encode(-5250, "int32", "big", "big"))
    bank.set_coils(3, [leak])
    bank.set_discrete_inputs(7, [True])


async def test_reads_register_map_from_real_server(device: Device, make_collector: Factory):
    load_room(device.bank, -123, leak=False)
    collector = make_collector(device.address, ROOM_MAP, labels={"site": "dc1"})
    assert await poll(collector) == {
        ("room_temperature_celsius", lbl()): -12.3,
        ("room_humidity_percent", lbl()): 49.2,  # 512 * 0.1 - 2
        ("pdu_power_watts", lbl(sensor="pdu-a")): 1234.5,
        ("pdu_energy_watt_hours_total", lbl()): 3_000_000_000.0,
        ("rack_temperature_celsius", lbl(sensor="rack3-top")): -5.25,
        ("water_leak_detected", lbl()): 0.0,
        ("smoke_detected", lbl()): 1.0,
    }
    # Adjacent holding registers 0-1 and 10-13 each took one request, not one per value.
    assert sorted(device.handler.reads) == [("holding", 0, 2), ("holding", 10, 4), ("input", 5, 2)]
    assert collector.metric_help["room_temperature_celsius"] == (
        "room_temperature_celsius read from Modbus holding register 0"
    )


async def test_coils_and_changes_between_polls(device: Device, make_collector: Factory):
    collector = make_collector(
        device.address,
        [
            {"name": "water_leak_detected", "address": 3, "table": "coil"},
            {"name": "door_open", "address": 4, "table": "coil"},
            {"name": "smoke_detected", "address": 7, "table": "discrete"},
        ],
        labels={"site": "dc1"},
    )
    first = await poll(collector)
    assert first == {
        ("water_leak_detected", lbl()): 0.0,
        ("door_open", lbl()): 0.0,
        ("smoke_detected", lbl()): 0.0,
    }
    device.bank.set_coils(3, [True, True])
    device.bank.set_discrete_inputs(7, [True])
    assert set((await poll(collector)).values()) == {1.0}


async def test_help_text_names_unit_table_and_address() -> None:
    cfg = ModbusTarget.model_validate(
        target_dict(
            registers=[
                {"name": "room_temperature_celsius", "address": 0, "unit": "°C"},
                {"name": "water_leak_detected", "address": 9, "table": "discrete"},
            ]
        )
    )
    assert ModbusCollector.help_for(cfg) == {
        "room_temperature_celsius": "room_temperature_celsius (°C) read from Modbus "
        "holding register 0",
        "water_leak_detected": "water_leak_detected read from Modbus discrete input 9",
    }


async def test_float32_nan_is_reported_not_exported(device: Device, make_collector: Factory):
    device.bank.set_holding_registers(0, [225, 0x7FC0, 0x0000])
    collector = make_collector(
        device.address,
        [
            {"name": "room_temperature_celsius", "address": 0, "type": "int16", "scale": 0.1},
            {"name": "room_dew_point_celsius", "address": 1, "type": "float32"},
        ],
    )
    readings = Readings({"target": "sensor-1"}, time.time())
    with pytest.raises(BadResponse) as info:
        await collector.collect(readings)
    assert "room_dew_point_celsius (holding register 1) reads nan" in info.value.message
    assert [(s.name, s.value) for s in readings.samples] == [("room_temperature_celsius", 22.5)]


async def test_modbus_exception_reply_marks_target_down(make_collector: Factory):
    small = Device(h_regs_size=10)  # serves holding registers 0-9 only
    try:
        collector = make_collector(
            small.address,
            [{"name": "room_temperature_celsius", "address": 20, "type": "int16"}],
        )
        with pytest.raises(BadResponse) as info:
            await poll(collector)
        assert info.value.reason == "bad_response"
        assert info.value.message == (
            f"Modbus device {small.address} unit 1 refused to read holding register 20 "
            "(room_temperature_celsius): exception 2 (illegal data address)"
        )
    finally:
        small.stop()


async def test_device_restart_is_not_an_outage(device: Device, make_collector: Factory):
    """The device drops the kept connection (restart, idle timeout): the next poll reconnects."""
    device.bank.set_holding_registers(0, [215])
    collector = make_collector(device.address, [{"name": "t", "address": 0, "scale": 0.1}])
    assert list((await poll(collector)).values()) == [21.5]
    await asyncio.to_thread(device.restart)
    # The old server's connection threads notice the stop within their 1 s socket timeout.
    await asyncio.sleep(1.3)
    device.bank.set_holding_registers(0, [216])
    assert list((await poll(collector)).values()) == [21.6]


# ----- peers that misbehave ----------------------------------------------------------------

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def tcp_peer() -> AsyncIterator[Callable[[Behaviour], Awaitable[int]]]:
    servers: list[asyncio.Server] = []

    async def start(behaviour: Behaviour) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await behaviour(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for _ in range(1000):  # until the client gives up and closes
        if not await reader.read(4096):
            return


async def write_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(4096)
    writer.write(random.Random(7).randbytes(64))
    await writer.drain()
    await never_answer(reader, writer)


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(4096)


async def test_silent_sensor_times_out_within_timeout(tcp_peer, make_collector: Factory):
    port = await tcp_peer(never_answer)
    collector = make_collector(f"127.0.0.1:{port}", [{"name": "t", "address": 0}], timeout="0.5s")
    started = time.monotonic()
    with pytest.raises(TargetTimeout) as info:
        await poll(collector)
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 0.9  # the 0.5 s timeout plus scheduling slack
    assert (
        info.value.message == f"no answer from Modbus device 127.0.0.1:{port} unit 1 within 500ms"
    )


async def test_connection_refused_is_unreachable(make_collector: Factory):
    port = free_port()  # nothing listens there
    collector = make_collector(f"127.0.0.1:{port}", [{"name": "t", "address": 0}], timeout=2)
    started = time.monotonic()
    with pytest.raises(TargetUnreachable) as info:
        await poll(collector)
    assert time.monotonic() - started < 1.0  # refused at once, not a timeout
    assert info.value.reason == "unreachable"
    assert f"cannot connect to Modbus device 127.0.0.1:{port} unit 1" in info.value.message


async def test_garbage_reply_is_bad_response(tcp_peer, make_collector: Factory):
    port = await tcp_peer(write_garbage)
    collector = make_collector(f"127.0.0.1:{port}", [{"name": "t", "address": 0}], timeout=1)
    with pytest.raises(BadResponse) as info:
        await poll(collector)
    garbage = random.Random(7).randbytes(64)
    assert info.value.message == (
        f"garbled reply from Modbus device 127.0.0.1:{port} unit 1 reading holding register 0 "
        f"(t): not a valid Modbus TCP frame (starts {garbage[:7].hex(' ')})"
    )


async def test_peer_hanging_up_is_bad_response(tcp_peer, make_collector: Factory):
    port = await tcp_peer(hang_up)
    collector = make_collector(f"127.0.0.1:{port}", [{"name": "t", "address": 0}], timeout=1)
    for _ in range(2):  # each poll reconnects and fails alike: no endless retry loop
        with pytest.raises(BadResponse, match="closed the connection without answering"):
            await poll(collector)


async def test_hung_target_does_not_block_healthy_one(
    device: Device, tcp_peer, make_collector: Factory
):
    port = await tcp_peer(never_answer)
    hung = make_collector(f"127.0.0.1:{port}", [{"name": "t", "address": 0}], timeout=1.5)
    device.bank.set_holding_registers(0, [230])
    healthy = make_collector(device.address, [{"name": "t", "address": 0, "scale": 0.1}])
    started = time.monotonic()
    finished: dict[str, float] = {}

    async def timed(label: str, collector: ModbusCollector) -> Any:
        try:
            return await poll(collector)
        except CollectError as exc:
            return exc
        finally:
            finished[label] = time.monotonic() - started

    hung_result, healthy_result = await asyncio.gather(timed("hung", hung), timed("ok", healthy))
    assert isinstance(hung_result, TargetTimeout)
    assert list(healthy_result.values()) == [23.0]
    assert finished["ok"] < 0.5
    assert finished["hung"] >= 1.4


async def test_close_during_a_poll_leaves_the_socket_to_that_poll(
    tcp_peer, make_collector: Factory
):
    """Shutdown while a poll waits in its thread: the socket is not pulled from under it, and
    the poll closes it on its way out (no socket left open, no poll after close)."""
    port = await tcp_peer(never_answer)
    collector = make_collector(f"127.0.0.1:{port}", [{"name": "t", "address": 0}], timeout=1)
    polling = asyncio.create_task(poll(collector))
    await asyncio.sleep(0.3)  # connected, waiting for the answer in its thread
    client = collector._client
    assert client is not None and client.is_open
    await collector.close()
    assert client.is_open  # still the poll's
    with pytest.raises(TargetTimeout):
        await polling
    for _ in range(50):  # the thread outlives the asyncio timeout by up to a socket timeout
        if not client.is_open:
            break
        await asyncio.sleep(0.05)
    assert not client.is_open and collector._client is None
    with pytest.raises(TargetUnreachable, match="the collector is closed"):
        await poll(collector)


# ----- the demo device ---------------------------------------------------------------------


def test_room_scenario_fires_then_resolves() -> None:
    temps = {t: room_climate(t)[0] for t in range(0, 200)}
    assert abs(temps[0] - 22.0) < 0.2
    assert abs(room_climate(0)[1] - 48.0) < 0.5
    above = [t for t, c in temps.items() if c > 26.0]
    # Past 26 °C well within the demo's 90 s, continuously until the cooling returns.
    assert above[0] < 45
    assert above == list(range(above[0], above[-1] + 1))
    assert 120 < above[-1] < 140
    assert max(temps.values()) < 28.8
    assert abs(temps[199] - 22.0) < 0.2


async def test_demo_room_sensor_is_read_by_the_collector(make_collector: Factory):
    assert RoomSensorDevice in DEVICES
    dev = RoomSensorDevice(speed=2.0)
    await dev.start()
    try:
        (entry,) = dev.targets()
        cfg = ModbusTarget.model_validate(entry)
        assert (cfg.name, cfg.interval, cfg.timeout) == ("room-a-sensor", 2.0, 1.0)
        assert cfg.labels == {"site": "demo", "room": "A"}
        collector = ModbusCollector(cfg, CollectorContext())
        try:
            for elapsed, low, high in [(0, 21.8, 22.2), (30, 28.3, 28.7), (100, 21.8, 22.2)]:
                dev.advance(elapsed)  # speed 2: scenario seconds 0, 60, 200
                values = {name: v for (name, _), v in (await poll(collector)).items()}
                assert low <= values["room_temperature_celsius"] <= high
                assert 30 < values["room_humidity_percent"] < 60
        finally:
            await collector.close()
            await collector.context.close()
    finally:
        await dev.stop()
