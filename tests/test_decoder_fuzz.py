"""Bounded-time property tests of every decoder of device output (issue 12).

A hostile or broken device chooses these bytes. For each decoder: any input up to its cap is
decoded, or refused with the collector's own error, in bounded time. Time is the CPU time of the
calling thread (`time.thread_time()`, tests/cpu_time.py) around the decode alone, so a loaded
machine or another thread of the suite slows it little. Up to LINEAR_SIZE (64 KiB) the bound is
LINEAR_BOUND (50 ms): a quadratic decoder fails there (the issue's df header took 1.3 s at
8 KB). Inputs at a decoder's full cap (4 MiB of SSH output, 1 MiB of HTTP body, ...) get the
linear extrapolation of that bound times two (`cap_bound`), so a linear decoder passes with
room and a super-linear one does not.

Hypothesis draws at most a few KB per example, so big inputs are built from runs: a list of
(fragment, repeat) pairs joined, which is also the adversarial shape (long runs of spaces,
digits, continuation octets). Explicit `@example`s hold the known attacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dutyd.collectors.base import CollectorContext, Readings
from dutyd.collectors.modbus.collector import ModbusRegister
from dutyd.collectors.modbus.registers import WORDS, NotANumber, scaled_value
from dutyd.collectors.nut.collector import NutCollector, NutTarget
from dutyd.collectors.nut.protocol import (
    MAX_LINE_BYTES,
    MAX_LIST_LINES,
    ConnectionClosed,
    NutConnection,
    split_line,
)
from dutyd.collectors.probe_http.collector import MIB, examine_body, text_charset
from dutyd.collectors.snmp import codec
from dutyd.collectors.snmp.profiles.apc_probe import ApcProbeProfile, decode_probe
from dutyd.collectors.snmp.profiles.apc_uio import ApcUioProfile, decode_uio
from dutyd.collectors.snmp.profiles.base import PollData
from dutyd.collectors.snmp.profiles.bridge import COLUMNS as BRIDGE_COLUMNS
from dutyd.collectors.snmp.profiles.bridge import forwarding_table
from dutyd.collectors.snmp.profiles.entity_sensor import EntitySensorProfile, decode_reading
from dutyd.collectors.snmp.profiles.room import BOUNDS as ROOM_BOUNDS
from dutyd.collectors.snmp.profiles.room import MAX_PROBES
from dutyd.collectors.ssh import accounts, journal, parsers
from dutyd.collectors.ssh import commands as cmd
from dutyd.collectors.ssh.config import SshTarget
from dutyd.collectors.ssh.parsers import MAX_DF_LINE_CHARS, ParseError, split_sections
from dutyd.collectors.ssh.readings import PollOutput, take_readings
from dutyd.collectors.ssh.session import MAX_OUTPUT_CHARS
from dutyd.core.errors import CollectError, ReadingUnavailable
from tests.cpu_time import least_cpu_seconds

LINEAR_SIZE = 64 * 1024
LINEAR_BOUND = 0.050
# Enough examples to find the cheap attacks, few enough that this file takes well under a
# minute on a loaded 2-core machine.
EXAMPLES = 150
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Full-cap inputs cost seconds each: the explicit examples and a few drawn ones.
FULL_CAP = settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def cap_bound(size: int) -> float:
    """The CPU-time bound for an input of `size` units: 50 ms up to 64 Ki, beyond that twice
    the linear extrapolation of 50 ms per 64 Ki."""
    return LINEAR_BOUND if size <= LINEAR_SIZE else 2 * LINEAR_BOUND * size / LINEAR_SIZE


def timed(size: int, fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """(result or the exception raised, CPU seconds) of `fn(*args)` on an input of `size`:
    the least thread CPU time of up to three calls (see tests/cpu_time.py)."""
    return least_cpu_seconds(cap_bound(size), fn, *args)


def byte_runs(size: int, fragments: list[bytes]) -> st.SearchStrategy[bytes]:
    fragment = st.one_of(st.sampled_from(fragments), st.binary(min_size=1, max_size=24))
    parts = st.lists(st.tuples(fragment, st.integers(1, size)), min_size=1, max_size=6)
    return parts.map(lambda ps: b"".join(f * n for f, n in ps)[:size])


def text_runs(size: int, fragments: list[str]) -> st.SearchStrategy[str]:
    fragment = st.one_of(st.sampled_from(fragments), st.text(min_size=1, max_size=24))
    parts = st.lists(st.tuples(fragment, st.integers(1, size)), min_size=1, max_size=6)
    return parts.map(lambda ps: "".join(f * n for f, n in ps)[:size])


def assert_within(seconds: float, size: int, what: str) -> None:
    bound = cap_bound(size)
    assert seconds < bound, f"{what}: {size} units took {seconds:.3f}s CPU (bound {bound:.3f}s)"


# ---------------------------------------------------------------------------------------------
# SNMP BER: one datagram, at most 65,535 octets (the UDP length field).

MAX_DATAGRAM = 65535


def _response(varbinds: bytes) -> bytes:
    return codec.encode_response(codec.VERSION_2C, b"public", 0x01020304, varbinds)


def _varbind(oid: bytes, value: bytes) -> bytes:
    return codec.encode_varbind(oid, value)


SNMP_ATTACKS = [
    # One OID sub-identifier of 64 KB of continuation octets (quadratic before the fix).
    _response(_varbind(b"\x2b\x06", codec.tlv(codec.T_OID, b"\x81" * 65400 + b"\x01"))),
    _response(_varbind(b"\x2b\x06\x01" + b"\xff" * 65400 + b"\x01", codec.NULL)),
    # A 64 KB INTEGER: a Python int no float can hold (OverflowError downstream).
    _response(_varbind(b"\x2b\x06", codec.tlv(codec.T_INTEGER, b"\x7f" * 65400))),
    _response(_varbind(b"\x2b\x06", codec.tlv(codec.T_COUNTER64, b"\xff" * 65400))),
    # Lengths pointing past the end, at every level, in the long form.
    b"\x30\x84\xff\xff\xff\xff" + b"\x02\x01\x01" * 10,
    b"\x30\x84\x7f\xff\xff\xff\x02\x01\x01\x04\x84\xff\xff\xff\xf0public",
    _response(b"\x30\x84\xff\xff\xff\x00\x06\x02\x2b\x06\x05\x00"),
    # Deep nesting of SEQUENCEs, indefinite lengths, all NUL, all 0xFF.
    b"\x30\x82\xff\xfb" + b"\x30\x82\xff\xf7" * 16000,
    b"\x30\x80" * 32000,
    b"\x00" * MAX_DATAGRAM,
    b"\xff" * MAX_DATAGRAM,
    # The most varbinds a datagram holds, as a GETBULK answer of a long table.
    _response(_varbind(b"\x2b\x06\x01\x02\x01\x02\x02\x01\x0a\x01", b"\x41\x01\x07") * 3800),
]


def _snmp_message() -> st.SearchStrategy[bytes]:
    """A GET/GETBULK response of random varbinds (repeated as a bulk answer is), then
    truncated, a byte overwritten, or a length field made huge."""
    oid = st.binary(min_size=1, max_size=20).map(lambda b: b"\x2b" + b)
    value = st.one_of(
        st.tuples(
            st.sampled_from(
                [
                    codec.T_INTEGER,
                    codec.T_OCTETS,
                    codec.T_OID,
                    codec.T_NULL,
                    codec.T_IPADDR,
                    codec.T_COUNTER32,
                    codec.T_GAUGE32,
                    codec.T_TIMETICKS,
                    codec.T_COUNTER64,
                    codec.T_OPAQUE,
                    codec.T_NO_SUCH_OBJECT,
                    codec.T_END_OF_MIB,
                    0x30,
                    0x99,
                ]
            ),
            st.binary(max_size=40),
            st.integers(1, 300),
        ).map(lambda t: codec.tlv(t[0], t[1] * t[2]))
    )
    varbinds = st.lists(st.tuples(oid, value, st.integers(1, 500)), min_size=0, max_size=4).map(
        lambda vbs: b"".join(_varbind(o, v) * n for o, v, n in vbs)
    )
    mutation = st.one_of(
        st.just(("none", 0, 0)),
        st.tuples(st.just("cut"), st.integers(0, MAX_DATAGRAM), st.just(0)),
        st.tuples(st.just("set"), st.integers(0, MAX_DATAGRAM), st.integers(0, 255)),
        st.tuples(st.just("long"), st.integers(0, MAX_DATAGRAM), st.integers(0, 2**32 - 1)),
    )

    def build(vbs: bytes, m: tuple[str, int, int]) -> bytes:
        data = _response(vbs)[:MAX_DATAGRAM]
        kind, at, v = m
        at = at % max(len(data), 1)
        if kind == "cut":
            return data[:at]
        if kind == "set":
            return data[:at] + bytes((v,)) + data[at + 1 :]
        if kind == "long":
            return (data[:at] + b"\x84" + v.to_bytes(4, "big") + data[at + 1 :])[:MAX_DATAGRAM]
        return data

    return st.builds(build, varbinds, mutation)


def _check_snmp(data: bytes) -> None:
    result, seconds = timed(len(data), codec.decode_message, data)
    assert_within(seconds, len(data), "decode_message")
    if isinstance(result, Exception):
        assert isinstance(result, codec.DecodeError), repr(result)
        return
    for name, value in result[6]:
        # What the client does next with a name (table indexes) and a value (a float).
        index, seconds = timed(len(name), codec.decode_subids, name)
        assert_within(seconds, len(name), "decode_subids")
        assert not isinstance(index, Exception), repr(index)
        if isinstance(value, int):
            assert math.isfinite(float(value))
    rid, seconds = timed(len(data), codec.peek_request_id, data)
    assert rid is None or isinstance(rid, int)
    assert_within(seconds, len(data), "peek_request_id")


@FUZZ
@given(st.one_of(_snmp_message(), byte_runs(MAX_DATAGRAM, [b"\x30\x84", b"\x81", b"\x00"])))
@example(b"")
@example(b"\x30")
def test_snmp_any_datagram_decodes_in_bounded_time(data: bytes) -> None:
    _check_snmp(data)


@pytest.mark.parametrize("data", SNMP_ATTACKS, ids=range(len(SNMP_ATTACKS)))
def test_snmp_hostile_datagrams(data: bytes) -> None:
    assert len(data) <= MAX_DATAGRAM
    _check_snmp(data)


# ---------------------------------------------------------------------------------------------
# NUT: lines of at most MAX_LINE_BYTES (4096), at most MAX_LIST_LINES (4000) per answer.

NUT_FRAGMENTS = [
    " ",
    '"',
    "\\",
    '\\"',
    "\\\\",
    "VAR rack ",
    "VAR rack battery.charge ",
    "VAR rack ups.status ",
    "9",
    "inf",
    "\x00",
    "\n",
]


@FUZZ
@given(text_runs(MAX_LINE_BYTES, NUT_FRAGMENTS))
@example(" " * MAX_LINE_BYTES)
@example('VAR rack x "' + "\\" * (MAX_LINE_BYTES - 13) + '"')
@example('VAR rack x "' + '\\"' * 2000 + '"')
@example(' "' * (MAX_LINE_BYTES // 2))
def test_nut_any_line_splits_in_bounded_time(line: str) -> None:
    result, seconds = timed(len(line), split_line, line)
    assert_within(seconds, len(line), "split_line")
    # ValueError is split_line's documented refusal; the collector turns it into BadResponse.
    assert not isinstance(result, Exception) or type(result) is ValueError, repr(result)


async def _nut_answer(data: bytes, readings: Readings) -> None:
    context = CollectorContext()
    try:
        nut = NutCollector(
            NutTarget.model_validate({"name": "u", "kind": "nut", "address": "127.0.0.1"}), context
        )
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        conn = NutConnection(reader, None)  # type: ignore[arg-type]  # only read here
        values = await nut._read_var_list(conn, "rack")
        if isinstance(values, dict):
            nut._emit(readings, values, {"ups": "rack"})
    finally:
        await context.close()


def _check_nut(data: bytes) -> None:
    readings = Readings({}, 0.0)

    def read() -> None:
        readings.samples.clear()
        asyncio.run(_nut_answer(data, readings))

    result, seconds = timed(len(data), read)
    assert_within(seconds, len(data), "LIST VAR answer")
    assert result is None or isinstance(result, CollectError | ConnectionClosed), repr(result)
    assert all(math.isfinite(s.value) for s in readings.samples)


def _nut_lines() -> st.SearchStrategy[bytes]:
    line = st.one_of(
        text_runs(300, NUT_FRAGMENTS).map(lambda t: f'VAR rack battery.charge "{t}"'),
        text_runs(300, NUT_FRAGMENTS),
    )
    return st.lists(st.tuples(line, st.integers(1, 200)), max_size=4).map(
        lambda ls: (
            "BEGIN LIST VAR rack\n"
            + "".join((li + "\n") * n for li, n in ls)
            + "END LIST VAR rack\n"
        ).encode()[:LINEAR_SIZE]
    )


@FUZZ
@given(st.one_of(_nut_lines(), byte_runs(LINEAR_SIZE, [b"\n", b" ", b'"', b"\\", b"\xff"])))
@example(b"BEGIN LIST VAR rack\n" + b'VAR rack battery.charge "' + b"9" * 4000 + b'"\n')
@example(b"BEGIN LIST VAR rack\n" + b'VAR rack ups.load "inf"\nEND LIST VAR rack\n')
@example(b"BEGIN LIST VAR rack\n" + b" " * LINEAR_SIZE)
@example(b"BEGIN LIST VAR rack\n" + b"\xff\xfe\x00\n" * 8000)
def test_nut_any_answer_reads_in_bounded_time(data: bytes) -> None:
    _check_nut(data)


def test_nut_answer_at_its_full_cap() -> None:
    """MAX_LIST_LINES lines of MAX_LINE_BYTES, each needing the slow (unescaping) path: about
    16 MiB, bound twice the 64 KiB bound extrapolated."""
    value = '\\"' * ((MAX_LINE_BYTES - 40) // 2)
    line = f'VAR rack v "{value}"\n'.encode()
    assert len(line) <= MAX_LINE_BYTES
    _check_nut(b"BEGIN LIST VAR rack\n" + line * (MAX_LIST_LINES - 1))


# ---------------------------------------------------------------------------------------------
# Modbus: register words of any value, each type and order, scale and offset in config range.


@FUZZ
@given(
    st.sampled_from(list(WORDS)),
    st.sampled_from(["big", "little"]),
    st.sampled_from(["big", "little"]),
    st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != 0),
    st.floats(allow_nan=False, allow_infinity=False),
)
# float32 max (0x7F7FFFFF) times a huge scale: infinity was exported before the fix.
@example("float32", "big", "big", [0x7F7F, 0xFFFF], 1e300, 0.0)
@example("uint32", "big", "big", [0xFFFF, 0xFFFF], 1.7e308, 1.7e308)
@example("float32", "big", "big", [0x7FC0, 0x0000], 1.0, 0.0)  # NaN
@example("float32", "little", "little", [0x0000, 0x807F], 1.0, 0.0)  # -inf, swapped
def test_modbus_any_registers_decode_to_a_finite_number_or_not_a_number(
    type_: str, word_order: str, byte_order: str, words: list[int], scale: float, offset: float
) -> None:
    reg = ModbusRegister.model_validate(
        {
            "name": "x_celsius",
            "address": 0,
            "type": type_,
            "word_order": word_order,
            "byte_order": byte_order,
            "scale": scale,
            "offset": offset,
        }
    )
    words = words[: reg.count]
    result, seconds = timed(
        len(words),
        scaled_value,
        words,
        reg.type,
        reg.word_order,
        reg.byte_order,
        reg.scale,
        reg.offset,
    )
    assert_within(seconds, len(words), "scaled_value")
    if isinstance(result, Exception):
        assert isinstance(result, NotANumber), repr(result)
    else:
        assert isinstance(result, float) and math.isfinite(result)


# ---------------------------------------------------------------------------------------------
# SSH: each parser on any text; the whole poll (sections + every reading) on any stdout up to
# MAX_OUTPUT_CHARS (4 MiB per stream; df lines over MAX_DF_LINE_CHARS are refused).

SSH_FRAGMENTS = [
    " ",
    "\t",
    "9",
    "1.5",
    "\n",
    "%",
    "/",
    "-",
    "\x00",
    "\udcff",  # what a surrogateescape'd invalid UTF-8 byte looks like
    "\ufffd",  # and a replaced one
    "²",
    "Filesystem ",
    "Filesystem 1024-blocks Used Available Capacity Mounted on\n",
    "/dev/sda1 ext4 100 50 50 50% /\n",
    "MemTotal: ",
    " kB\n",
    "active\n",
    "1700000000 4096\n",
    "1e999",
    "name ",
    "root:x:0:0:root:/root:/bin/bash\n",
    ":",
    "PASS_MAX_DAYS\t99999\n",
    "minlen = 8\n",
    "ops pts/0 192.0.2.1 Mon Dec  7 09:15:02 2026 - Mon Dec  7 10:00:00 2026\n",
    "Mon Dec ",
    "2026-12-07T10:00:01+0000 db1 sshd[812]: error: kex_exchange_identification\n",
    "2026-12-07T10:00:01+00:00 ",
    "-- No entries --\n",
    "root:!\n",
    "ops:$\n",
]
PARSERS: dict[str, Callable[[str], Any]] = {
    "loadavg": parsers.parse_loadavg,
    "nproc": parsers.parse_nproc,
    "uptime": parsers.parse_uptime,
    "epoch": parsers.parse_epoch,
    "meminfo": parsers.parse_meminfo,
    "df": parsers.parse_df,
    "df_untyped": lambda t: parsers.parse_df(t, with_type=False),
    "df_inodes": lambda t: parsers.parse_df(t, inodes=True),
    "is_active": lambda t: parsers.parse_is_active(t, ["a.service", "b.service"]),
    "backup_files": parsers.parse_backup_files,
    "command_output": parsers.parse_command_output,
    "os_release": parsers.parse_os_release,
    "passwd": accounts.parse_passwd,
    "login_defs": accounts.parse_login_defs,
    "pwquality": accounts.parse_pwquality,
    "last": accounts.parse_last,
    "shadow": accounts.parse_shadow,
    "journal": lambda t: journal.parse_journal(t, 0.0, 4e9),
    "journal_reading": lambda t: journal.read_journal(t, t[:200], 0.0, 4e9),
}


# -- SNMP room sensors: ENTITY-SENSOR-MIB rows, APC probe rows ----------------------------------

# What an agent may put in a column: any INTEGER (a Python int of any size), the values the
# MIBs give meaning to, and what is not an INTEGER at all.
_SNMP_VALUE = st.one_of(
    st.integers(),
    st.integers(min_value=-20, max_value=20),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.binary(max_size=40),
    st.none(),
    st.sampled_from([codec.NO_SUCH_OBJECT, codec.NO_SUCH_INSTANCE, codec.END_OF_MIB_VIEW]),
    st.tuples(st.integers(0, 2**32)),
)


def _room_reading_ok(name: str, value: float) -> bool:
    low, high = ROOM_BOUNDS[name]
    return math.isfinite(value) and low <= value <= high


@FUZZ
@given(_SNMP_VALUE, _SNMP_VALUE, _SNMP_VALUE, _SNMP_VALUE, _SNMP_VALUE)
@example(8, 17, 0, 10**9, 1)  # yotta: 10^33 degrees
@example(8, 1, 9, -(10**9), 1)  # yocto and 9 places: 10^-24
@example(8, 9, 0, 2**200, 1)  # beyond Integer32
@example(8, 9, 1, 235, 1)
@example(True, 9, 1, 235, 1)  # a bool is no INTEGER
def test_entity_sensor_rows_decode_to_a_room_reading_or_none(
    kind: Any, scale: Any, precision: Any, value: Any, status: Any
) -> None:
    got, seconds = timed(1, decode_reading, kind, scale, precision, value, status)
    assert_within(seconds, 1, "decode_reading")
    assert got is None or _room_reading_ok(*got), got


@FUZZ
@given(_SNMP_VALUE, _SNMP_VALUE, _SNMP_VALUE, _SNMP_VALUE)
@example(2, 10**30, 2, 10**30)
@example(2, -(10**6), 2, -1)
@example(2, 2**64, 1, 101)
def test_apc_probe_rows_decode_to_room_readings_or_nothing(
    status: Any, temp: Any, units: Any, humidity: Any
) -> None:
    got, seconds = timed(1, decode_probe, status, temp, units, humidity)
    assert_within(seconds, 1, "decode_probe")
    assert isinstance(got, dict), got
    assert all(_room_reading_ok(name, v) for name, v in got.items()), got


@FUZZ
@given(_SNMP_VALUE, _SNMP_VALUE, _SNMP_VALUE)
@example(1, 10**30, -(10**30))
@example(3, -1, 101)
def test_apc_uio_rows_decode_to_room_readings_or_nothing(
    alarm: Any, temp: Any, humidity: Any
) -> None:
    got, seconds = timed(1, decode_uio, alarm, temp, humidity)
    assert_within(seconds, 1, "decode_uio")
    assert all(_room_reading_ok(name, v) for name, v in got.items()), got


@FUZZ
@given(
    st.sampled_from([EntitySensorProfile, ApcProbeProfile, ApcUioProfile]),
    st.lists(st.tuples(st.binary(max_size=6), _SNMP_VALUE), max_size=400),
)
def test_room_sensor_tables_of_any_rows_give_bounded_samples_or_the_reason(
    profile: Any, cells: list[tuple[bytes, Any]]
) -> None:
    """Any rows in any of the profile's columns (indexes of any bytes): samples within the
    room bounds, at most MAX_PROBES probes, or ReadingUnavailable."""
    columns = profile.__new__(profile).columns()
    table: dict[Any, dict[bytes, Any]] = {c: {} for c in columns}
    for n, (index, value) in enumerate(cells):
        table[columns[n % len(columns)]][index] = value
    readings = Readings({"target": "t"}, 0.0)
    data = PollData({}, table, None, None)

    def emit() -> None:
        with contextlib.suppress(ReadingUnavailable):
            profile(object()).emit(data, readings)

    _, seconds = timed(len(cells), emit)
    assert_within(seconds, len(cells), profile.name)
    for sample in readings.samples:
        if sample.name == "room_sensor_ok":
            assert sample.value in (0.0, 1.0)
        else:
            assert _room_reading_ok(sample.name, sample.value), sample
    assert len({dict(s.labels)["sensor"] for s in readings.samples}) <= MAX_PROBES


_INDEX = st.one_of(
    st.binary(max_size=24),
    st.lists(st.integers(0, 2**32), max_size=22).map(
        lambda subids: codec.encode_oid_content((1, 3, *subids))[1:]
    ),
)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(BRIDGE_COLUMNS) - 1), _INDEX, _SNMP_VALUE), max_size=600)
)
# A hostile ifIndex for a bridge port (negative, beyond 2^32): no OID to name the port by.
@example([(0, b"\x02\x00\x00\x00\x00\x01", 3), (2, b"\x03", -5)])
@example([(1, b"\x01\x02\x00\x00\x00\x00\x01", 3), (2, b"\x03", 2**80)])
def test_forwarding_tables_of_any_rows_decode_in_bounded_time(
    cells: list[tuple[int, bytes, Any]],
) -> None:
    """Any rows in the bridge profile's columns: MACs as six hex octets, ports and IPs as
    text, nothing else, in bounded time."""
    columns: dict[Any, dict[bytes, Any]] = {c: {} for c in BRIDGE_COLUMNS}
    for column, index, value in cells:
        columns[BRIDGE_COLUMNS[column]][index] = value
    table, seconds = timed(len(cells), forwarding_table, columns)
    assert_within(seconds, len(cells), "forwarding_table")
    hexmac = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
    assert all(hexmac.match(m) and isinstance(p, str) and p for m, p in table.macs.items())
    assert all(hexmac.match(m) for m in table.arp.values())
    assert len(table.macs) <= len(cells) and len(table.arp) <= len(cells)


def _finite_numbers(value: Any) -> bool:
    """Whether every number inside a parser's result is finite."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_finite_numbers(v) for v in value)
    if isinstance(value, dict):
        return all(_finite_numbers(v) for v in value.values())
    if hasattr(value, "__slots__"):
        return all(_finite_numbers(getattr(value, s)) for s in value.__slots__)
    return True


@pytest.mark.parametrize("name", list(PARSERS))
def test_ssh_parser_on_any_text(name: str) -> None:
    parse = PARSERS[name]

    @FUZZ
    @given(text_runs(LINEAR_SIZE, SSH_FRAGMENTS))
    @example("Filesystem" + " " * (MAX_DF_LINE_CHARS - 11) + "x")
    @example("Filesystem 1K-blocks\n" + "/dev/sda1 " + " 1" * 4000 + "\n")
    @example("9" * LINEAR_SIZE)
    @example(" " * (LINEAR_SIZE - 2) + "1x")
    @example("MemTotal: " + "9" * 400 + " kB\nMemFree: 1\n")
    @example("1e999\n")
    @example("a 1e999\nb " + "9" * 400 + "\n")
    @example("1700000000 4096\n" * (LINEAR_SIZE // 16))
    @example("\x00" * LINEAR_SIZE)
    @example("a:b:0:0:e:f:" + "g" * LINEAR_SIZE)
    @example(":" * LINEAR_SIZE)
    @example("x y " + "Mon Dec  7 09:15:02 " * (LINEAR_SIZE // 20))
    @example("minlen = " + "9" * LINEAR_SIZE)
    @example("2026-12-07T10:00:01+0000 " + "h" * LINEAR_SIZE)
    @example("2026-12-07T10:00:01+9999 a b[1]: x\n" * (LINEAR_SIZE // 40))
    @example("9999-99-99T99:99:99-9999 a: \n" * (LINEAR_SIZE // 30))
    def check(text: str) -> None:
        result, seconds = timed(len(text), parse, text)
        assert_within(seconds, len(text), name)
        if isinstance(result, Exception):
            assert isinstance(result, ParseError), repr(result)
        else:
            assert _finite_numbers(result), result

    check()


NONCE = "0123456789abcdef"
MARKER = cmd.marker_for(NONCE)
SSH_CONFIG = SshTarget.model_validate(
    {
        "name": "srv",
        "kind": "ssh",
        "address": "127.0.0.1",
        "username": "mon",
        "password": "x",
        "services": ["a.service", "b.service"],
        "backups": [{"name": "db", "path": "/srv/backup", "max_age": "1d", "retention_days": 7}],
        "commands": [{"name": "queue", "argv": ["mailq-count"]}],
    }
)
SECTIONS = [
    *cmd.standard_sections(with_clock=True),
    cmd.systemd_section(SSH_CONFIG.services),
    cmd.backup_section(0, "/srv/backup", "*"),
    cmd.command_section(0, ["mailq-count"]),
    *cmd.ACCOUNT_SECTIONS,
    cmd.journal_section(1_700_000_000.0),
]


def _script_output(contents: list[tuple[str, str]]) -> str:
    """What the poll script prints: each section's output between its markers."""
    return "".join(
        f"{MARKER} begin {sid}\n{text}\n{MARKER} end {sid} {st_}\n"
        for sid, (text, st_) in zip([s.id for s in SECTIONS], contents, strict=False)
    )


def _check_poll(stdout: str, stderr: str) -> None:
    def poll() -> Readings:
        outputs = split_sections(stdout, stderr, MARKER)
        readings = Readings({}, 0.0)
        out = PollOutput({s.id: s for s in SECTIONS}, outputs, 60.0, 10.0)
        take_readings(readings, out, SSH_CONFIG, 100.0)
        accounts.read_accounts(outputs)  # the software register's sections: nothing escapes
        if (section := outputs.get("journal")) is not None:
            journal.read_journal(section.stdout, section.stderr, 0.0, 4e9)
        return readings

    result, seconds = timed(len(stdout) + len(stderr), poll)
    assert_within(seconds, len(stdout) + len(stderr), "split_sections + take_readings + accounts")
    # Each reading fails on its own (ssh_reading_ok 0); nothing escapes the poll.
    assert isinstance(result, Readings), repr(result)
    assert all(math.isfinite(s.value) for s in result.samples)


def _poll_stdout(size: int) -> st.SearchStrategy[str]:
    section = st.tuples(
        text_runs(size // len(SECTIONS), SSH_FRAGMENTS),
        st.one_of(st.sampled_from(["0", "1", "127", "137", "x", "9" * 5000, "²"]), st.text()),
    )
    return st.lists(section, max_size=len(SECTIONS)).map(
        lambda secs: _script_output(secs)[:MAX_OUTPUT_CHARS]
    )


@FUZZ
@given(st.one_of(_poll_stdout(LINEAR_SIZE), text_runs(LINEAR_SIZE, [*SSH_FRAGMENTS, MARKER])))
@example(f"{MARKER} begin loadavg\n1 2 3\n{MARKER} end loadavg {'9' * 5000}\n")
@example(f"{MARKER} begin loadavg\n1 2 3\n{MARKER} end loadavg ²\n")
@example(f"{MARKER} begin df\n" * (LINEAR_SIZE // 40))
def test_ssh_poll_on_any_output(stdout: str) -> None:
    _check_poll(stdout, "")


def _full(piece: str, share: float = 0.95) -> str:
    """`piece` repeated to fill `share` of the output cap (the markers take the rest)."""
    return piece * int(MAX_OUTPUT_CHARS * share / len(piece))


_EACH = 0.95 / len(SECTIONS)
_DF_HEADER = "Filesystem Type 1024-blocks Used Available Capacity Mounted on\n"
_BEFORE_DF = [("1 1 1", "0"), ("4", "0"), ("MemTotal: 1 kB", "0"), ("5 5", "0")]
_BEFORE_BACKUP = [*_BEFORE_DF, ("", "0"), ("", "0"), ("1700000000", "0"), ("", "0")]


@FULL_CAP
@given(_poll_stdout(MAX_OUTPUT_CHARS))
@example(_script_output([(_full(" ", _EACH), "0")] * len(SECTIONS)))
@example(_script_output([(_full("9", _EACH), "0")] * len(SECTIONS)))
@example(_script_output([(_full("1 ", _EACH), "0")] * len(SECTIONS)))
@example(_script_output([*_BEFORE_DF, (_DF_HEADER + _full("/dev/a ext4 1 1 1 1% /\n"), "0")]))
@example(_script_output([*_BEFORE_DF, ("Filesystem" + _full(" "), "0")]))
@example(_script_output([*_BEFORE_BACKUP, (_full("1700000000 4096\n"), "0")]))
@example(_script_output([*_BEFORE_BACKUP, ("", "0"), (_full("9"), "0")]))
@example(_script_output([*_BEFORE_BACKUP, ("", "0"), (_full(" ") + "1x", "0")]))
def test_ssh_poll_at_the_output_cap(stdout: str) -> None:
    """Up to 4 MiB (MAX_OUTPUT_CHARS) of stdout: bound twice the linear extrapolation of 50 ms
    per 64 KiB (6.4 s at the cap)."""
    assert len(stdout) <= MAX_OUTPUT_CHARS
    _check_poll(stdout, stdout[: MAX_OUTPUT_CHARS // 4])


# ---------------------------------------------------------------------------------------------
# HTTP: any body up to max_body_bytes (default 1 MiB), any charset a Content-Type may name.

IGNORE = [re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d"), re.compile(r"csrf=[0-9a-f]{32}")]
CHARSETS = [
    "utf-8",
    "UTF-16",
    "utf-32-be",
    "latin1",
    "windows-1252",
    "shift_jis",
    "gb18030",
    "iso2022-jp",
    "punycode",
    "idna",
    "utf-7",
    "base64",
    "rot13",
    "zlib",
    "unicode_escape",
    "raw_unicode_escape",
    "x-user-defined",
    "",
    "\x00",
]
HTTP_FRAGMENTS = [b" ", b"9", b"\x00", b"\xff", b"\xc3", b"\x1b$B", b"+", b"-", b"\\u", b"\xe9"]


def _check_body(body: bytes, charset: str, expected: str | None) -> None:
    codec_name, seconds = timed(len(body), text_charset, charset)
    assert isinstance(codec_name, str), repr(codec_name)
    result, more = timed(len(body), examine_body, body, codec_name, expected, IGNORE)
    assert_within(seconds + more, len(body), f"body as {charset!r}")
    assert isinstance(result, tuple), repr(result)


@FUZZ
@given(
    byte_runs(LINEAR_SIZE, HTTP_FRAGMENTS),
    st.one_of(st.sampled_from(CHARSETS), st.text(max_size=30)),
    st.one_of(st.none(), st.text(min_size=1, max_size=20)),
)
@example(b"a-" * (LINEAR_SIZE // 2), "punycode", "x")
@example(b"\\u" * (LINEAR_SIZE // 2), "unicode_escape", "x")
@example(b"+" * LINEAR_SIZE, "utf-7", "x")
@example(b"\xff" * LINEAR_SIZE, "utf-16", "x")
@example(b"\x00" * LINEAR_SIZE, "utf-8", "\x00")
@example(b"2024-01-01 00:0" * (LINEAR_SIZE // 15), "ascii", None)
def test_http_any_body_examines_in_bounded_time(
    body: bytes, charset: str, expected: str | None
) -> None:
    _check_body(body, charset, expected)


@FULL_CAP
@given(byte_runs(MIB, HTTP_FRAGMENTS), st.sampled_from(CHARSETS))
@example(b"a-" * (MIB // 2), "punycode")
@example(b"\xff" * MIB, "utf-8")
@example(b"\x1b$B" * (MIB // 3), "iso2022-jp")
def test_http_body_at_the_default_cap(body: bytes, charset: str) -> None:
    """Bodies of the default max_body_bytes (1 MiB): bound twice the linear extrapolation of
    50 ms per 64 KiB (1.6 s)."""
    _check_body(body, charset, "needle")
