"""Modbus TCP room sensors (temperature, humidity, leak, smoke) read through pyModbusTCP."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pyModbusTCP import constants as mb
from pyModbusTCP.client import ModbusClient
from pyModbusTCP.utils import valid_host

from dutyd.collectors.base import (
    Collector,
    CollectorContext,
    Readings,
    TargetConfig,
    parse_host_port,
)
from dutyd.collectors.modbus.registers import (
    WORDS,
    NotANumber,
    Order,
    RegisterType,
    scaled_value,
    tidy,
)
from dutyd.core.configtypes import LabelMap, StrictModel, check_metric_name, format_duration
from dutyd.core.errors import BadResponse, CollectError, TargetTimeout, TargetUnreachable
from dutyd.core.redact import redact_address

Table = Literal["holding", "input", "coil", "discrete"]

DEFAULT_PORT = 502
_BIT_TABLES = frozenset({"coil", "discrete"})
# The most one request may ask for (Modbus application protocol, functions 0x01-0x04).
_MAX_PER_REQUEST: dict[str, int] = {"holding": 125, "input": 125, "coil": 2000, "discrete": 2000}
_TABLE_NOUN: dict[str, str] = {
    "holding": "holding register",
    "input": "input register",
    "coil": "coil",
    "discrete": "discrete input",
}
# Labels the daemon stamps on every sample; a register may not redefine them.
_RESERVED_LABELS = frozenset({"target", "kind"})


def split_endpoint(address: str) -> tuple[str, int]:
    """(host, port) of a Modbus device; the host must be one pyModbusTCP accepts."""
    host, port = parse_host_port(address, DEFAULT_PORT)
    if not valid_host(host):
        raise ValueError(f"{host!r} is not a host name or IP address")
    return host, port


class ModbusRegister(StrictModel):
    """One value read from the device and exported as one sample."""

    name: str = Field(
        min_length=1,
        max_length=200,
        description="Sample name with its unit, e.g. room_temperature_celsius.",
    )
    address: int = Field(
        ge=0,
        le=65535,
        description="Address as sent on the wire, 0-based (register 40001 is address 0).",
    )
    table: Table = Field(
        "holding",
        description="holding or input registers; coil or discrete for 0/1 inputs (leak, smoke).",
    )
    type: RegisterType = Field(
        "uint16",
        description="int16, uint16, int32, uint32 or float32 (32-bit types use 2 registers).",
    )
    word_order: Order = Field(
        "big", description="32-bit values: big if the first register holds the high word."
    )
    byte_order: Order = Field(
        "big", description="Order of the two bytes inside each register (Modbus: big)."
    )
    scale: float = Field(1.0, allow_inf_nan=False, description="Exported value = raw*scale+offset.")
    offset: float = Field(0.0, allow_inf_nan=False, description="Added after scale.")
    unit: str = Field("", max_length=32, description="Free text shown in the HELP line, e.g. °C.")
    labels: LabelMap = Field(
        default_factory=dict,
        description="Labels telling this sample apart from others of the same name, "
        "e.g. sensor: rack3-top.",
    )

    @field_validator("name")
    @classmethod
    def _metric_name(cls, v: str) -> str:
        return check_metric_name(v)

    @field_validator("scale")
    @classmethod
    def _scale_not_zero(cls, v: float) -> float:
        if v == 0:
            raise ValueError("must not be 0 (every reading would be the offset)")
        return v

    @model_validator(mode="after")
    def _fits(self) -> ModbusRegister:
        if self.table in _BIT_TABLES:
            given = self.model_fields_set & {"type", "word_order", "byte_order"}
            if given:
                keys = ", ".join(sorted(given))
                raise ValueError(f"{keys}: only for holding/input registers, not a {self.table}")
        if self.address + self.count > 65536:
            raise ValueError(
                f"a {self.type} at address {self.address} runs past the last address 65535"
            )
        return self

    @property
    def count(self) -> int:
        """Registers (or bits) this value occupies."""
        return 1 if self.table in _BIT_TABLES else WORDS[self.type]

    def help(self) -> str:
        unit = f" ({self.unit})" if self.unit else ""
        return f"{self.name}{unit} read from Modbus {_TABLE_NOUN[self.table]} {self.address}"


class ModbusTarget(TargetConfig):
    """A Modbus TCP device (room sensor, leak detector, PDU) and the registers to read."""

    kind: Literal["modbus"] = "modbus"
    address: str = Field(
        min_length=1, description=f"host or host:port (default port {DEFAULT_PORT})."
    )
    unit_id: int = Field(1, ge=0, le=255, description="Modbus unit (slave) id, 0-255.")
    registers: list[ModbusRegister] = Field(
        min_length=1, description="The register map: one entry per exported value."
    )

    @field_validator("address")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        split_endpoint(v)
        return v.strip()

    @model_validator(mode="after")
    def _distinct_series(self) -> ModbusTarget:
        seen: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        for i, reg in enumerate(self.registers):
            clash = (_RESERVED_LABELS | set(self.labels)) & set(reg.labels)
            if clash:
                raise ValueError(
                    f"registers[{i}].labels: {', '.join(sorted(clash))} is already a target label"
                )
            series = (reg.name, tuple(sorted(reg.labels.items())))
            if series in seen:
                raise ValueError(
                    f"registers[{i}] and registers[{seen[series]}] both export {reg.name} "
                    "with the same labels; give them distinct labels (e.g. sensor: ...)"
                )
            seen[series] = i
        return self

    @property
    def host(self) -> str:
        return split_endpoint(self.address)[0]

    @property
    def port(self) -> int:
        return split_endpoint(self.address)[1]


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One request: `count` consecutive registers (or bits) of one table from `start`."""

    table: Table
    start: int
    count: int
    names: tuple[str, ...]

    def describe(self) -> str:
        noun = _TABLE_NOUN[self.table]
        where = (
            f"{noun} {self.start}"
            if self.count == 1
            else f"{noun}s {self.start}-{self.start + self.count - 1}"
        )
        shown = ", ".join(self.names[:4]) + (", ..." if len(self.names) > 4 else "")
        return f"{where} ({shown})"


def plan_reads(registers: Sequence[ModbusRegister]) -> list[ReadBlock]:
    """Group registers so that adjacent or overlapping ones of a table share one request.

    Gaps are never read across: many devices answer "illegal data address" for addresses
    they do not map, which would fail the whole block.
    """
    blocks: list[ReadBlock] = []
    for table in ("holding", "input", "coil", "discrete"):
        regs = sorted((r for r in registers if r.table == table), key=lambda r: r.address)
        start = end = -1
        names: list[str] = []
        for reg in regs:
            reg_end = reg.address + reg.count
            if (
                names
                and reg.address <= end
                and max(end, reg_end) - start <= _MAX_PER_REQUEST[table]
            ):
                end = max(end, reg_end)
                names.append(reg.name)
                continue
            if names:
                blocks.append(ReadBlock(table, start, end - start, tuple(names)))
            start, end, names = reg.address, reg_end, [reg.name]
        if names:
            blocks.append(ReadBlock(table, start, end - start, tuple(names)))
    return blocks


class _Client(ModbusClient):  # type: ignore[misc]  # pyModbusTCP ships no type hints
    """pyModbusTCP's client, remembering the last frame received: a garbled reply then tells
    itself apart from a connection the device closed without answering."""

    def __init__(self, **kwargs: Any) -> None:
        self.last_rx = b""
        super().__init__(**kwargs)

    def on_tx_rx(self, frame: bytes, is_tx: bool) -> None:
        if not is_tx:
            self.last_rx = frame


class ModbusCollector(Collector[ModbusTarget]):
    """Reads a register map from one Modbus TCP device over a connection kept between polls."""

    kind = "modbus"
    config_model = ModbusTarget

    def __init__(self, config: ModbusTarget, context: CollectorContext) -> None:
        super().__init__(config, context)
        # Names come from the config, so HELP texts are per instance (see help_for).
        self.metric_help = self.help_for(config)
        self._host, self._port = split_endpoint(config.address)
        self._where = f"{redact_address(config.address)} unit {config.unit_id}"
        self._blocks = plan_reads(config.registers)
        # Where each register's value sits: (block index, offset in the block), in config order.
        self._slots: list[tuple[ModbusRegister, int, int]] = []
        for reg in config.registers:
            for i, block in enumerate(self._blocks):
                if block.table == reg.table and 0 <= reg.address - block.start < block.count:
                    self._slots.append((reg, i, reg.address - block.start))
                    break
        self._client: _Client | None = None
        # One request at a time on the connection, even if a timed-out poll's thread lingers.
        self._busy = threading.Lock()
        self._closed = False
        # pyModbusTCP refuses timeouts of an hour or more.
        self._socket_timeout = min(config.timeout, 3599.0)
        # Safety net only: connecting and one request may each take up to the timeout, and a
        # peer trickling a reply byte by byte restarts the socket timeout on every byte.
        self._guard = 2 * config.timeout + 1.0

    @classmethod
    def emits(cls, config: TargetConfig) -> set[str]:
        if not isinstance(config, ModbusTarget):
            raise TypeError(f"expected a ModbusTarget, got {type(config).__name__}")
        return {reg.name for reg in config.registers}

    @classmethod
    def help_for(cls, config: ModbusTarget) -> dict[str, str]:
        """HELP text per sample name, from the register map (the first register of a name)."""
        helps: dict[str, str] = {}
        for reg in config.registers:
            helps.setdefault(reg.name, reg.help())
        return helps

    async def collect(self, readings: Readings) -> None:
        try:
            async with asyncio.timeout(self._guard):
                results = await self.context.run_blocking(self._read_all)
        except TimeoutError as exc:
            raise TargetTimeout(
                f"no complete answer from Modbus device {self._where} "
                f"within {format_duration(self._guard)}"
            ) from exc
        not_numbers: list[str] = []
        for reg, block_index, pos in self._slots:
            values = results[block_index]
            if reg.table in _BIT_TABLES:
                value = tidy((1.0 if values[pos] else 0.0) * reg.scale + reg.offset, reg.type)
            else:
                try:
                    value = scaled_value(
                        values[pos : pos + reg.count],
                        reg.type,
                        reg.word_order,
                        reg.byte_order,
                        reg.scale,
                        reg.offset,
                    )
                except NotANumber as exc:
                    not_numbers.append(f"{reg.name} ({_TABLE_NOUN[reg.table]} {reg.address}) {exc}")
                    continue
            readings.add_labelled(reg.name, value, reg.labels)
        if not_numbers:
            # A sensor fault or a wrong word/byte order; never export it as a number.
            raise BadResponse(
                f"Modbus device {self._where}: {'; '.join(not_numbers)}, not a number "
                "(sensor fault, or wrong word_order/byte_order)"
            )

    async def close(self) -> None:
        self._closed = True
        self._drop_client_if_closed()

    def _drop_client_if_closed(self) -> None:
        # The connection belongs to whoever holds `_busy`: closing it under a poll still in its
        # thread would pull the socket from under pyModbusTCP. close() and a poll's end both
        # call this after their own step (flag set / lock released), so one of them closes it.
        if self._closed and self._busy.acquire(blocking=False):
            try:
                self._drop_client()
            finally:
                self._busy.release()

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # ----- blocking part, run in the context's thread pool ------------------------------

    def _read_all(self) -> list[list[int] | list[bool]]:
        if not self._busy.acquire(blocking=False):
            raise TargetTimeout(
                f"Modbus device {self._where}: the previous poll is still waiting for an answer"
            )
        try:
            if self._closed:
                raise TargetUnreachable(f"Modbus device {self._where}: the collector is closed")
            if self._client is None:
                self._client = _Client(
                    host=self._host,
                    port=self._port,
                    unit_id=self.config.unit_id,
                    timeout=self._socket_timeout,
                    auto_open=True,
                    auto_close=False,
                )
            client = self._client
            deadline = time.monotonic() + self.config.timeout
            results: list[list[int] | list[bool]] = []
            for block in self._blocks:
                if results and time.monotonic() > deadline:
                    raise TargetTimeout(
                        f"Modbus device {self._where} answered too slowly: "
                        f"{block.describe()} not read within {format_duration(self.config.timeout)}"
                    )
                results.append(self._request(client, block))
            return results
        except OSError as exc:
            # pyModbusTCP lets name resolution errors (socket.gaierror) through.
            if self._client is not None:
                self._client.close()
            raise TargetUnreachable(
                f"cannot reach Modbus device {self._where}: {exc.strerror or exc}"
            ) from exc
        finally:
            self._busy.release()
            self._drop_client_if_closed()

    def _request(self, client: _Client, block: ReadBlock) -> list[int] | list[bool]:
        read = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }[block.table]
        for attempt in (1, 2):
            reused = client.is_open
            client.last_rx = b""
            started = time.monotonic()
            values = read(block.start, block.count)
            if values is not None:
                if len(values) != block.count:
                    raise BadResponse(
                        f"Modbus device {self._where} sent {len(values)} values "
                        f"for {block.describe()}"
                    )
                return list(values)
            error = client.last_error
            dropped = error in (mb.MB_SEND_ERR, mb.MB_RECV_ERR, mb.MB_SOCK_CLOSE_ERR)
            if attempt == 1 and reused and dropped and not client.last_rx:
                # Devices close idle connections; that is no fault. Reconnect once.
                client.close()
                continue
            raise self._failure(client, block, time.monotonic() - started)
        raise AssertionError("unreachable")  # pragma: no cover

    def _failure(self, client: _Client, block: ReadBlock, elapsed: float) -> CollectError:
        error = client.last_error
        within = format_duration(self.config.timeout)
        what = block.describe()
        if error == mb.MB_EXCEPT_ERR:
            code = client.last_except
            meaning = mb.EXP_TXT.get(code, "unknown exception code")
            return BadResponse(
                f"Modbus device {self._where} refused to read {what}: exception {code} ({meaning})"
            )
        if error == mb.MB_TIMEOUT_ERR:
            return TargetTimeout(f"no answer from Modbus device {self._where} within {within}")
        if error == mb.MB_CONNECT_ERR:
            # pyModbusTCP reports every failed connect alike; its duration tells them apart.
            if elapsed >= 0.9 * self._socket_timeout:
                return TargetTimeout(
                    f"no answer from Modbus device {self._where} within {within} "
                    "(TCP connection not accepted)"
                )
            return TargetUnreachable(
                f"cannot connect to Modbus device {self._where}: connection refused or no route"
            )
        if error == mb.MB_RECV_ERR and client.last_rx:
            head = client.last_rx[:12].hex(" ")
            return BadResponse(
                f"garbled reply from Modbus device {self._where} reading {what}: "
                f"not a valid Modbus TCP frame (starts {head})"
            )
        if error == mb.MB_RECV_ERR:
            return BadResponse(
                f"Modbus device {self._where} closed the connection without answering a read "
                f"of {what} (not Modbus TCP, or too many clients connected?)"
            )
        if error in (mb.MB_SEND_ERR, mb.MB_SOCK_CLOSE_ERR):
            return TargetUnreachable(
                f"connection to Modbus device {self._where} lost while sending a request"
            )
        return BadResponse(
            f"reading {what} from Modbus device {self._where} failed: {client.last_error_as_txt}"
        )
