"""The trap decoder: real notifications decode to what they say; any bytes up to the largest
datagram decode in bounded time and raise only TrapDecodeError (hypothesis fuzzing)."""

from __future__ import annotations

import contextlib
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dutyd.collectors.snmp import codec
from dutyd.collectors.snmp.trap_decode import (
    MAX_DATAGRAM,
    TrapDecodeError,
    decode_community_notification,
    message_version,
    peek_v3_header,
)


def v2_notification(tag: int, trap_oid: tuple[int, ...], rid: int = 0x01020304) -> bytes:
    varbinds = (
        codec.encode_varbind(
            codec.encode_oid_content((1, 3, 6, 1, 2, 1, 1, 3, 0)),
            codec.encode_unsigned(4200, codec.T_TIMETICKS),
        )
        + codec.encode_varbind(
            codec.encode_oid_content((1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)),
            codec.encode_value(codec.T_OID, trap_oid),
        )
        + codec.encode_varbind(
            codec.encode_oid_content((1, 3, 6, 1, 2, 1, 2, 2, 1, 1, 4)), codec.encode_int(4)
        )
    )
    return codec.encode_message(codec.VERSION_2C, b"public", tag, rid, 0, 0, varbinds)


def v1_trap() -> bytes:
    pdu = (
        codec.tlv(codec.T_OID, codec.encode_oid_content((1, 3, 6, 1, 2, 1, 33, 2)))
        + codec.tlv(codec.T_IPADDR, bytes([10, 0, 0, 9]))
        + codec.encode_int(6)
        + codec.encode_int(1)
        + codec.encode_unsigned(100, codec.T_TIMETICKS)
        + codec.tlv(0x30, b"")
    )
    return codec.tlv(
        0x30, codec.encode_int(0) + codec.tlv(codec.T_OCTETS, b"public") + codec.tlv(0xA4, pdu)
    )


LINK_DOWN = (1, 3, 6, 1, 6, 3, 1, 1, 5, 3)
SAMPLES = [v2_notification(0xA7, LINK_DOWN), v2_notification(0xA6, LINK_DOWN), v1_trap()]


def test_v2c_trap_and_inform_response() -> None:
    msg = decode_community_notification(SAMPLES[1])
    assert msg.community == b"public"
    n = msg.notification
    assert (n.kind, n.trap_oid) == ("v2c_inform", LINK_DOWN)
    assert n.varbinds == (((1, 3, 6, 1, 2, 1, 2, 2, 1, 1, 4), 4),)
    assert msg.response is not None
    answer = codec.decode_message(msg.response)
    assert answer[2] == codec.RESPONSE and answer[3] == 0x01020304
    assert decode_community_notification(SAMPLES[0]).response is None


def test_v1_trap_in_snmpv2_form() -> None:
    n = decode_community_notification(v1_trap()).notification
    assert n.kind == "v1_trap"
    assert n.trap_oid == (1, 3, 6, 1, 2, 1, 33, 2, 0, 1)  # RFC 3584: enterprise.0.specific
    assert n.agent_addr == "10.0.0.9"


def test_requests_are_not_notifications() -> None:
    get = codec.encode_request(codec.VERSION_2C, b"public", codec.GET, 5, [b"\x2b\x06"])
    with pytest.raises(TrapDecodeError, match="not a notification"):
        decode_community_notification(get)


def _all_decoders(data: bytes) -> None:
    for decode in (decode_community_notification, peek_v3_header, message_version):
        with contextlib.suppress(TrapDecodeError):
            decode(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=MAX_DATAGRAM))
def test_any_bytes_raise_only_the_decoders_error(data: bytes) -> None:
    t0 = time.perf_counter()
    _all_decoders(data)
    assert time.perf_counter() - t0 < 1.0  # bounded: linear in the datagram, no recursion


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(SAMPLES),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    st.integers(0, 200),
)
def test_mutated_notifications_raise_only_the_decoders_error(
    base: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(base)
    for at, value in flips:
        if at < len(data):
            data[at] = value
    _all_decoders(bytes(data[: len(data) - cut % (len(data) + 1)]))
