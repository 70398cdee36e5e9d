"""Modbus TCP collector: a register map read from a device (PDU meters, room sensors, chillers).
See README.md beside this file. `registers.py` decodes register words; `collector.py` holds the
target model and the collector."""

from __future__ import annotations

from dutyd.collectors.modbus.collector import (
    ModbusCollector,
    ModbusRegister,
    ModbusTarget,
    ReadBlock,
    plan_reads,
    split_endpoint,
)
from dutyd.collectors.modbus.registers import decode_registers

__all__ = [
    "ModbusCollector",
    "ModbusRegister",
    "ModbusTarget",
    "ReadBlock",
    "decode_registers",
    "plan_reads",
    "split_endpoint",
]
