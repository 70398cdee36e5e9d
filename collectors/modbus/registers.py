"""Modbus register decoding: the number that raw 16-bit register words encode, for each register
type and word/byte order vendors use. Pure functions, no I/O."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Literal

RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32"]
Order = Literal["big", "little"]

WORDS: dict[str, int] = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}
_STRUCT: dict[str, str] = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "float32": ">f",
}


def decode_registers(
    words: Sequence[int],
    type: RegisterType,  # named as the config key
    word_order: Order = "big",
    byte_order: Order = "big",
) -> float:
    """The number that raw 16-bit register values encode.

    `byte_order` is the order of the two bytes inside each register (Modbus itself is big
    endian); `word_order` says whether the first register of a 32-bit value holds its most
    significant word (big, "ABCD") or its least significant one (little, "CDAB").
    A float32 may decode to NaN or infinity; the caller decides what that means.
    """
    if type not in WORDS:
        raise ValueError(f"unknown register type {type!r}")
    if len(words) != WORDS[type]:
        raise ValueError(f"{type} needs {WORDS[type]} register(s), got {len(words)}")
    raw = bytearray()
    for word in words if word_order == "big" else reversed(words):
        if not 0 <= word <= 0xFFFF:
            raise ValueError(f"register value {word} is not a 16-bit word")
        high, low = word >> 8, word & 0xFF
        raw += bytes((high, low)) if byte_order == "big" else bytes((low, high))
    return float(struct.unpack(_STRUCT[type], raw)[0])


def tidy(value: float, type_: str) -> float:
    """Drop the binary noise of raw*scale (22.400000000000002 -> 22.4), which would otherwise
    show in alert texts; 12 digits keep every int32 exact, 7 match a float32's precision."""
    return float(f"{value:.{7 if type_ == 'float32' else 12}g}")


class NotANumber(ValueError):
    """The registers hold NaN or infinity, or scaling took the value out of a float's range."""


def scaled_value(
    words: Sequence[int],
    type: RegisterType,  # named as the config key
    word_order: Order,
    byte_order: Order,
    scale: float,
    offset: float,
) -> float:
    """The exported value of one register value: raw * scale + offset, tidied. Raises
    NotANumber (with the raw value in its message) rather than return a non-finite number:
    a float32 sensor fault, or a huge raw value times a large scale, is no reading."""
    raw = decode_registers(words, type, word_order, byte_order)
    if not math.isfinite(raw):
        raise NotANumber(f"reads {raw}")
    value = raw * scale + offset
    if not math.isfinite(value):
        raise NotANumber(f"reads {raw:g}, which times scale {scale:g} is out of range")
    return tidy(value, type)
