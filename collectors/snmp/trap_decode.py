"""Decoding SNMP notifications: v1 Trap-PDUs, v2c SNMPv2-Trap and InformRequest PDUs, and
the outer header of a v3 message.

v1/v2c go through the lean BER codec (`codec`): byte offsets, plain Python values, no pyasn1.
A v3 message is only opened as far as its header and security parameters (version, flags,
authoritative engine ID, user name, digest): enough to drop an unknown user or engine, or a
wrong digest, before pysnmp is given a key for it. Everything here raises `TrapDecodeError`
and nothing else, whatever the bytes (the fuzz test in tests/test_traps_decode.py holds it to
that).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from dutyd.collectors.snmp.codec import (
    RESPONSE,
    T_INTEGER,
    T_IPADDR,
    T_OCTETS,
    T_OID,
    T_TIMETICKS,
    VERSION_1,
    VERSION_2C,
    AnyValue,
    DecodeError,
    Oid,
    decode_oid_content,
    decode_varbinds,
    format_oid,
    read_header,
    read_int,
)

T = TypeVar("T")

TRAP_V1 = 0xA4
INFORM = 0xA6
TRAP_V2 = 0xA7
VERSION_3 = 3
# The largest UDP payload over IPv4; the listener reads no more.
MAX_DATAGRAM = 65507

SYS_UPTIME_0 = (1, 3, 6, 1, 2, 1, 1, 3, 0)
SNMP_TRAP_OID_0 = (1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)
# SNMP-COMMUNITY-MIB snmpTrapAddress.0: the originator's address, added by proxies (RFC 3584).
SNMP_TRAP_ADDRESS_0 = (1, 3, 6, 1, 6, 3, 18, 1, 3, 0)
# snmpTraps: coldStart(1) warmStart(2) linkDown(3) linkUp(4) authenticationFailure(5) ...
SNMP_TRAPS = (1, 3, 6, 1, 6, 3, 1, 1, 5)


class TrapDecodeError(DecodeError):
    """The datagram is not a well-formed SNMP notification."""


@dataclass(frozen=True, slots=True)
class Notification:
    """One trap or inform, whatever its version, in SNMPv2 form (RFC 3584 for v1)."""

    version: str  # "1", "2c" or "3"
    confirmed: bool  # an InformRequest: the sender waits for our response
    trap_oid: Oid
    # The varbinds after sysUpTime.0 and snmpTrapOID.0, OIDs as tuples.
    varbinds: tuple[tuple[Oid, AnyValue], ...]
    # The originating agent when the message says (v1 agent-addr, snmpTrapAddress.0).
    agent_addr: str | None = None

    @property
    def kind(self) -> str:
        """`v1_trap`, `v2c_trap`, `v2c_inform`, `v3_trap`, `v3_inform` (a metric label)."""
        return f"v{self.version}_{'inform' if self.confirmed else 'trap'}"

    def describe(self) -> str:
        """The trap OID and varbind OIDs, for a log line (values left out: they may be long)."""
        names = ", ".join(format_oid(o) for o, _ in self.varbinds[:12])
        more = f" (+{len(self.varbinds) - 12} more)" if len(self.varbinds) > 12 else ""
        return f"{format_oid(self.trap_oid)} [{names}{more}]"


@dataclass(frozen=True, slots=True)
class CommunityMessage:
    """A decoded v1/v2c notification, its community, and the response an inform needs."""

    community: bytes
    notification: Notification
    response: bytes | None


@dataclass(frozen=True, slots=True)
class V3Header:
    """What a v3 message says before its (possibly encrypted) scoped PDU."""

    msg_id: int
    flags: int  # bit 0 auth, bit 1 priv, bit 2 reportable
    security_model: int
    engine_id: bytes
    user: bytes
    # msgAuthenticationParameters (the digest; empty without auth) and where it starts in the
    # datagram: enough to check the digest before pysnmp is given a key for a new engine.
    auth_params: bytes = b""
    auth_at: int = 0
    # msgAuthoritativeEngineBoots / Time: the sender's clock as the message states it (for
    # the RFC 3414 §3.2.7 time window; unauthenticated until the digest is checked).
    boots: int = 0
    engine_time: int = 0

    @property
    def is_discovery(self) -> bool:
        """An engine-ID discovery probe (RFC 3414 §4): no engine ID, no user."""
        return not self.engine_id and not self.user


def message_version(data: bytes) -> int:
    """The version field of a datagram (0 = v1, 1 = v2c, 3 = v3). Raises TrapDecodeError."""
    try:
        p, end = read_header(data, 0, 0x30, len(data))
        version, _ = read_int(data, p, end)
    except (DecodeError, IndexError):
        raise TrapDecodeError("not an SNMP message") from None
    return version


def decode_community_notification(data: bytes) -> CommunityMessage:
    """A v1 Trap-PDU or a v2c SNMPv2-Trap / InformRequest. Raises TrapDecodeError."""
    return _decoded(_decode, data)


def _decoded(decode: Callable[[bytes], T], data: bytes) -> T:
    """Run a decoder on a datagram; every way it can fail becomes a TrapDecodeError."""
    if len(data) > MAX_DATAGRAM:
        raise TrapDecodeError("datagram larger than UDP allows")
    try:
        return decode(data)
    except TrapDecodeError:
        raise
    except DecodeError as exc:
        raise TrapDecodeError(str(exc)) from None
    except IndexError:
        raise TrapDecodeError("datagram ends early (truncated)") from None


def _decode(data: bytes) -> CommunityMessage:
    total = len(data)
    p, end = read_header(data, 0, 0x30, total)
    if end != total:
        raise TrapDecodeError("trailing octets after the message")
    version, p = read_int(data, p, end)
    if version not in (VERSION_1, VERSION_2C):
        raise TrapDecodeError(f"not SNMP v1/v2c (version field {version})")
    s, p = read_header(data, p, T_OCTETS, end)
    community = data[s:p]
    pdu_at = p
    tag = data[p]
    if version == VERSION_1 and tag == TRAP_V1:
        return CommunityMessage(community, _v1_trap(data, p, end), None)
    if version == VERSION_2C and tag in (TRAP_V2, INFORM):
        p, pend = read_header(data, p, tag, end)
        if pend != end:
            raise TrapDecodeError("trailing octets after the PDU")
        _, p = read_int(data, p, end)  # request-id
        _, p = read_int(data, p, end)  # error-status
        _, p = read_int(data, p, end)  # error-index
        p, vend = read_header(data, p, 0x30, end)
        if vend != end:
            raise TrapDecodeError("trailing octets after the varbind list")
        notification = _v2_notification("2c", tag == INFORM, decode_varbinds(data, p, vend))
        # The response to an inform is the same PDU (request-id, zero error fields, the same
        # varbinds) with the Response tag (RFC 3416 §4.2.7): the sender's bytes, one changed.
        response = None
        if tag == INFORM:
            response = data[:pdu_at] + bytes((RESPONSE,)) + data[pdu_at + 1 :]
        return CommunityMessage(community, notification, response)
    raise TrapDecodeError(f"not a notification (SNMP version {version}, PDU type 0x{tag:02x})")


def _v1_trap(data: bytes, p: int, end: int) -> Notification:
    p, pend = read_header(data, p, TRAP_V1, end)
    if pend != end:
        raise TrapDecodeError("trailing octets after the Trap-PDU")
    s, p = read_header(data, p, T_OID, end)
    enterprise = decode_oid_content(data[s:p])
    s, p = read_header(data, p, T_IPADDR, end)
    if p - s != 4:
        raise TrapDecodeError("agent-addr is not 4 octets")
    # 0.0.0.0: the sender did not say.
    agent_addr = ".".join(str(b) for b in data[s:p]) if any(data[s:p]) else None
    generic, p = read_int(data, p, end)
    specific, p = read_int(data, p, end)
    s, p = read_header(data, p, T_TIMETICKS, end)  # time-stamp
    p, vend = read_header(data, p, 0x30, end)
    if vend != end:
        raise TrapDecodeError("trailing octets after the varbind list")
    varbinds = decode_varbinds(data, p, vend)
    # RFC 3584 §3.1: the SNMPv2 trap OID of a v1 trap.
    if 0 <= generic <= 5:
        trap_oid: Oid = (*SNMP_TRAPS, generic + 1)
    elif generic == 6:
        if specific < 0:
            raise TrapDecodeError("negative specific-trap")
        trap_oid = (*enterprise, 0, specific)
    else:
        raise TrapDecodeError(f"generic-trap {generic} is not 0..6")
    return Notification(
        "1",
        False,
        trap_oid,
        tuple((decode_oid_content(o), v) for o, v in varbinds),
        agent_addr,
    )


def _v2_notification(
    version: str, confirmed: bool, raw: list[tuple[bytes, AnyValue]]
) -> Notification:
    """sysUpTime.0 and snmpTrapOID.0 first (RFC 3416 §4.2.6), then the trap's varbinds."""
    varbinds = [(decode_oid_content(o), v) for o, v in raw]
    return notification_from_varbinds(version, confirmed, varbinds)


def notification_from_varbinds(
    version: str, confirmed: bool, varbinds: list[tuple[Oid, AnyValue]]
) -> Notification:
    """A Notification from SNMPv2 varbinds (also used for v3, decoded by pysnmp)."""
    trap_oid: Oid | None = None
    rest: list[tuple[Oid, AnyValue]] = []
    agent_addr: str | None = None
    for i, (oid, value) in enumerate(varbinds):
        if i < 2 and oid == SYS_UPTIME_0:
            continue
        if i < 2 and oid == SNMP_TRAP_OID_0:
            if not isinstance(value, tuple):
                raise TrapDecodeError("snmpTrapOID.0 is not an OBJECT IDENTIFIER")
            trap_oid = value
            continue
        if oid == SNMP_TRAP_ADDRESS_0 and isinstance(value, bytes) and len(value) == 4:
            agent_addr = ".".join(str(b) for b in value)
        rest.append((oid, value))
    if trap_oid is None:
        raise TrapDecodeError("no snmpTrapOID.0 among the first two varbinds")
    return Notification(version, confirmed, trap_oid, tuple(rest), agent_addr)


def peek_v3_header(data: bytes) -> V3Header:
    """The header and USM security parameters of a v3 message. Raises TrapDecodeError."""
    return _decoded(_v3_header, data)


def _v3_header(data: bytes) -> V3Header:
    total = len(data)
    p, end = read_header(data, 0, 0x30, total)
    if end != total:
        raise TrapDecodeError("trailing octets after the message")
    version, p = read_int(data, p, end)
    if version != VERSION_3:
        raise TrapDecodeError(f"not SNMPv3 (version field {version})")
    p, gend = read_header(data, p, 0x30, end)  # msgGlobalData
    msg_id, p = read_int(data, p, gend)
    _, p = read_int(data, p, gend)  # msgMaxSize
    s, p = read_header(data, p, T_OCTETS, gend)
    if p - s != 1:
        raise TrapDecodeError("msgFlags is not one octet")
    flags = data[s]
    model, p = read_int(data, p, gend)
    if p != gend:
        raise TrapDecodeError("trailing octets in msgGlobalData")
    s, p = read_header(data, p, T_OCTETS, end)  # msgSecurityParameters
    q, qend = read_header(data, s, 0x30, p)
    s2, q = read_header(data, q, T_OCTETS, qend)
    engine_id = data[s2:q]
    if data[q] != T_INTEGER:
        raise TrapDecodeError("msgAuthoritativeEngineBoots is not an INTEGER")
    boots, q = read_int(data, q, qend)
    engine_time, q = read_int(data, q, qend)
    s3, q = read_header(data, q, T_OCTETS, qend)
    user = data[s3:q]
    s4, q = read_header(data, q, T_OCTETS, qend)
    if p >= end:
        raise TrapDecodeError("no scoped PDU")
    return V3Header(msg_id, flags, model, engine_id, user, data[s4:q], s4, boots, engine_time)
