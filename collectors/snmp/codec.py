"""A lean BER codec for SNMP v1/v2c messages: GET, GETNEXT, GETBULK and their responses.

This is dutyd's hot path. pysnmp decodes every value into pyasn1 objects, which costs
milliseconds per table walk; here a message is parsed with byte offsets into plain Python
values, and a request is a prebuilt byte string with its request-id patched in.

Values decode to plain Python: INTEGER, Counter32, Gauge32, TimeTicks, Counter64 -> int;
OCTET STRING, IpAddress, Opaque -> bytes; OBJECT IDENTIFIER -> tuple of ints; NULL -> None;
noSuchObject / noSuchInstance / endOfMibView -> the `Exception_` singletons below.
OIDs in varbinds stay as their raw BER content bytes: a column prefix test is then a plain
`bytes.startswith` (each sub-identifier's encoding is self-delimiting) and the next GETBULK
request reuses the bytes the agent sent.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

Oid = tuple[int, ...]
Value = int | bytes | tuple[int, ...] | None

VERSION_1 = 0
VERSION_2C = 1

GET = 0xA0
GETNEXT = 0xA1
RESPONSE = 0xA2
SET = 0xA3
GETBULK = 0xA5

# Error-status values of RFC 3416 that the collector reacts to.
NO_ERROR = 0
TOO_BIG = 1
NO_SUCH_NAME = 2
GEN_ERR = 5
ERROR_NAMES = {
    0: "noError",
    1: "tooBig",
    2: "noSuchName",
    3: "badValue",
    4: "readOnly",
    5: "genErr",
    6: "noAccess",
    7: "wrongType",
    8: "wrongLength",
    9: "wrongEncoding",
    10: "wrongValue",
    11: "noCreation",
    12: "inconsistentValue",
    13: "resourceUnavailable",
    14: "commitFailed",
    15: "undoFailed",
    16: "authorizationError",
    17: "notWritable",
    18: "inconsistentName",
}

# Value tags (universal and SNMP application types).
T_INTEGER = 0x02
T_OCTETS = 0x04
T_NULL = 0x05
T_OID = 0x06
T_IPADDR = 0x40
T_COUNTER32 = 0x41
T_GAUGE32 = 0x42
T_TIMETICKS = 0x43
T_OPAQUE = 0x44
T_COUNTER64 = 0x46
T_NO_SUCH_OBJECT = 0x80
T_NO_SUCH_INSTANCE = 0x81
T_END_OF_MIB = 0x82

# Request-ids are drawn from this range so they always encode in exactly 4 content bytes
# (minimal BER, top bit clear): a prebuilt request is patched in place, lengths unchanged.
REQUEST_ID_MIN = 0x00800000
REQUEST_ID_MAX = 0x7FFFFFFF


class DecodeError(ValueError):
    """The datagram is not a well-formed SNMP v1/v2c message."""


class Exception_:
    """noSuchObject, noSuchInstance or endOfMibView in a response varbind."""

    __slots__ = ("name", "tag")

    def __init__(self, tag: int, name: str) -> None:
        self.tag = tag
        self.name = name

    def __repr__(self) -> str:
        return self.name


NO_SUCH_OBJECT = Exception_(T_NO_SUCH_OBJECT, "noSuchObject")
NO_SUCH_INSTANCE = Exception_(T_NO_SUCH_INSTANCE, "noSuchInstance")
END_OF_MIB_VIEW = Exception_(T_END_OF_MIB, "endOfMibView")
_EXCEPTIONS = {
    T_NO_SUCH_OBJECT: NO_SUCH_OBJECT,
    T_NO_SUCH_INSTANCE: NO_SUCH_INSTANCE,
    T_END_OF_MIB: END_OF_MIB_VIEW,
}

AnyValue = int | bytes | tuple[int, ...] | Exception_ | None
VarBind = tuple[bytes, AnyValue]
# (version, community, pdu tag, request-id, error-status / non-repeaters,
#  error-index / max-repetitions, varbinds)
Message = tuple[int, bytes, int, int, int, int, list[VarBind]]
# What the client reads of a response: (pdu tag, request-id, error-status, error-index,
#  varbind names, varbind values).
Reply = tuple[int, int, int, int, list[bytes], list[AnyValue]]


# ---------------------------------------------------------------------------------------------
# OIDs


def parse_oid(text: str) -> Oid:
    """`"1.3.6.1.2.1.1.3.0"` (a leading dot allowed) -> (1, 3, 6, 1, 2, 1, 1, 3, 0)."""
    parts = text.strip().lstrip(".").split(".")
    try:
        oid = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"{text!r} is not a numeric OID such as 1.3.6.1.2.1.1.3.0") from None
    if len(oid) < 2 or oid[0] > 2 or (oid[0] < 2 and oid[1] > 39) or min(oid) < 0:
        raise ValueError(f"{text!r} is not a valid OID")
    if max(oid) > 0xFFFFFFFF:
        raise ValueError(f"{text!r} has a sub-identifier above 4294967295")
    return oid


def format_oid(oid: Iterable[int]) -> str:
    return ".".join(map(str, oid))


def _subid(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def encode_oid_content(oid: Sequence[int]) -> bytes:
    """The content octets of an OBJECT IDENTIFIER (no tag, no length)."""
    if len(oid) < 2:
        raise ValueError("an OID needs at least two sub-identifiers")
    return _subid(oid[0] * 40 + oid[1]) + b"".join(_subid(n) for n in oid[2:])


# A sub-identifier is at most 32 bits (RFC 2578), 5 octets of 7 bits: a longer run of
# continuation octets is not an OID, and decoding it would build a huge int one shift at a time
# (quadratic in the datagram: 0.4 s for one 64 KB sub-identifier).
_LONG_SUBID = re.compile(rb"[\x80-\xff]{5}")


def decode_subids(data: bytes) -> Oid:
    """Sub-identifiers of raw OID content bytes, without the first-two-arcs rule: used for
    a table index (the bytes after a column prefix)."""
    if len(data) == 1 and data[0] < 0x80:
        return (data[0],)
    if _LONG_SUBID.search(data):
        raise DecodeError("OID sub-identifier longer than 32 bits")
    out: list[int] = []
    n = 0
    for b in data:
        n = (n << 7) | (b & 0x7F)
        if not b & 0x80:
            out.append(n)
            n = 0
    if data and data[-1] & 0x80:
        raise DecodeError("OID ends inside a sub-identifier")
    return tuple(out)


def decode_oid_content(data: bytes) -> Oid:
    """Raw OID content bytes -> the OID as a tuple of ints."""
    if not data:
        raise DecodeError("empty OID")
    subs = decode_subids(data)
    first = subs[0]
    head = (first // 40, first % 40) if first < 80 else (2, first - 80)
    return head + subs[1:]


# ---------------------------------------------------------------------------------------------
# Encoding


def _len(n: int) -> bytes:
    if n < 0x100:
        return _LENGTHS[n]
    if n < 0x10000:
        return bytes((0x82, n >> 8, n & 0xFF))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


_LENGTHS = [bytes((n,)) if n < 0x80 else bytes((0x81, n)) for n in range(0x100)]


def tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _len(len(content)) + content


def encode_int(value: int, tag: int = T_INTEGER) -> bytes:
    """A signed INTEGER, minimal two's complement."""
    if 0 <= value < 0x80:
        return bytes((tag, 1, value))
    length = (value + (value < 0)).bit_length() // 8 + 1
    return tlv(tag, value.to_bytes(length, "big", signed=True))


def encode_unsigned(value: int, tag: int) -> bytes:
    """Counter32, Gauge32, TimeTicks, Counter64: unsigned, a leading zero if the top bit is set."""
    length = value.bit_length() // 8 + 1
    return tlv(tag, value.to_bytes(length, "big"))


NULL = b"\x05\x00"


def encode_value(tag: int, value: AnyValue) -> bytes:
    """A varbind value TLV (used by the responder in the demo and the benchmark)."""
    if tag == T_INTEGER:
        assert isinstance(value, int)
        return encode_int(value)
    if tag in (T_COUNTER32, T_GAUGE32, T_TIMETICKS, T_COUNTER64):
        assert isinstance(value, int)
        return encode_unsigned(value, tag)
    if tag in (T_OCTETS, T_IPADDR, T_OPAQUE):
        assert isinstance(value, bytes)
        return tlv(tag, value)
    if tag == T_OID:
        assert isinstance(value, tuple)
        return tlv(T_OID, encode_oid_content(value))
    if tag in _EXCEPTIONS:
        return bytes((tag, 0))
    if tag == T_NULL:
        return NULL
    raise ValueError(f"cannot encode tag 0x{tag:02x}")


def encode_varbind(oid_content: bytes, value_tlv: bytes = NULL) -> bytes:
    return tlv(0x30, tlv(T_OID, oid_content) + value_tlv)


def encode_message(
    version: int,
    community: bytes,
    pdu_tag: int,
    request_id: int,
    field1: int,
    field2: int,
    varbinds: bytes,
) -> bytes:
    """A whole message; `varbinds` is the concatenation of encoded varbinds."""
    pdu = encode_int(request_id) + encode_int(field1) + encode_int(field2) + tlv(0x30, varbinds)
    return tlv(0x30, encode_int(version) + tlv(T_OCTETS, community) + tlv(pdu_tag, pdu))


class RequestTemplate:
    """A request encoded once with a placeholder request-id; `build(rid)` patches it in.

    Valid for request-ids in [REQUEST_ID_MIN, REQUEST_ID_MAX], which all take 4 octets."""

    __slots__ = ("prefix", "suffix")

    def __init__(
        self,
        version: int,
        community: bytes,
        pdu_tag: int,
        oids: Sequence[bytes],
        field1: int = 0,
        field2: int = 0,
    ) -> None:
        varbinds = b"".join(encode_varbind(o) for o in oids)
        msg = encode_message(version, community, pdu_tag, REQUEST_ID_MIN, field1, field2, varbinds)
        pdu_len = len(
            encode_int(REQUEST_ID_MIN)
            + encode_int(field1)
            + encode_int(field2)
            + tlv(0x30, varbinds)
        )
        # The PDU ends the message; its request-id content starts 2 octets (tag, length 4)
        # into the PDU content.
        at = len(msg) - pdu_len + 2
        assert msg[at - 2 : at + 4] == encode_int(REQUEST_ID_MIN)
        self.prefix = msg[:at]
        self.suffix = msg[at + 4 :]

    def build(self, request_id: int) -> bytes:
        return self.prefix + request_id.to_bytes(4, "big") + self.suffix


# The octets before a name in a request's varbind (SEQUENCE and OID headers), by the name's
# length: all short-form up to 123 octets of name.
_VARBIND_HEADS = [bytes((0x30, n + 4, T_OID, n)) for n in range(124)]


def encode_request(
    version: int,
    community: bytes,
    pdu_tag: int,
    request_id: int,
    oids: Sequence[bytes],
    non_repeaters: int = 0,
    max_repetitions: int = 0,
) -> bytes:
    """A GET/GETNEXT/GETBULK request for raw OID contents (each with a NULL value)."""
    heads = _VARBIND_HEADS
    parts: list[bytes] = []
    for o in oids:
        n = len(o)
        if n < len(heads):
            parts += (heads[n], o, NULL)
        else:
            parts.append(encode_varbind(o))
    varbinds = b"".join(parts)
    pdu = b"".join(
        (
            b"\x02\x04" + request_id.to_bytes(4, "big")
            if REQUEST_ID_MIN <= request_id <= REQUEST_ID_MAX
            else encode_int(request_id),
            encode_int(non_repeaters),
            encode_int(max_repetitions),
            b"\x30",
            _len(len(varbinds)),
            varbinds,
        )
    )
    body = b"".join((_message_head(version, community), bytes((pdu_tag,)), _len(len(pdu)), pdu))
    return b"\x30" + _len(len(body)) + body


@functools.lru_cache(maxsize=256)
def _message_head(version: int, community: bytes) -> bytes:
    """Version and community, as every request of a target starts."""
    return encode_int(version) + tlv(T_OCTETS, community)


def encode_response(
    version: int,
    community: bytes,
    request_id: int,
    varbinds: bytes,
    error_status: int = 0,
    error_index: int = 0,
) -> bytes:
    return encode_message(
        version, community, RESPONSE, request_id, error_status, error_index, varbinds
    )


# ---------------------------------------------------------------------------------------------
# Decoding


def _header(data: bytes, p: int, tag: int, end: int) -> tuple[int, int]:
    """Check the tag at `p`, return (content start, content end) bounded by `end`."""
    if data[p] != tag:
        raise DecodeError(f"expected tag 0x{tag:02x} at offset {p}, got 0x{data[p]:02x}")
    n = data[p + 1]
    # Short form, and the one- and two-octet long forms of every SNMP datagram, inline.
    if n < 0x80:
        p += 2
    elif n == 0x82:
        n = data[p + 2] << 8 | data[p + 3]
        p += 4
    elif n == 0x81:
        n = data[p + 2]
        p += 3
    else:
        k = n & 0x7F
        if k == 0 or k > 4:
            raise DecodeError("unsupported length form")
        p += 2
        n = int.from_bytes(data[p : p + k], "big")
        p += k
    if p + n > end:
        raise DecodeError("length runs past the end of the datagram (truncated?)")
    return p, p + n


def _int(data: bytes, p: int, end: int) -> tuple[int, int]:
    s, e = _header(data, p, T_INTEGER, end)
    if e == s or e - s > 8:
        raise DecodeError("bad INTEGER length")
    value = int.from_bytes(data[s:e])  # big-endian; unsigned, then the sign (a faster call)
    if data[s] > 0x7F:
        value -= 1 << (8 * (e - s))
    return value, e


# For the other decoders of the package (trap_decode): the same bounded TLV readers.
read_header = _header
read_int = _int

# Content octets of a numeric value: Counter64 takes 9 (a leading zero when the top bit is set).
# A longer one is no SNMP type, and as a Python int it would not even convert to a float.
MAX_NUMBER_OCTETS = 9


_UNSIGNED = frozenset((T_COUNTER32, T_GAUGE32, T_TIMETICKS, T_COUNTER64))
_OCTETS = frozenset((T_OCTETS, T_IPADDR, T_OPAQUE))


def decode_message(data: bytes) -> Message:
    """Parse one SNMP v1/v2c message (any PDU but a v1 trap). Raises DecodeError."""
    try:
        version, community, pdu_tag, request_id, field1, field2, p, vend = _decode_head(data)
        varbinds = decode_varbinds(data, p, vend)
    except IndexError:
        raise DecodeError("datagram ends early (truncated)") from None
    return (version, community, pdu_tag, request_id, field1, field2, varbinds)


def decode_reply(data: bytes) -> Reply:
    """`decode_message` for the client's hot path: the same checks, the varbinds as two
    parallel lists (names, values) and no version or community. Raises DecodeError."""
    try:
        _, _, pdu_tag, request_id, field1, field2, p, vend = _decode_head(data)
        names, values = decode_varbind_lists(data, p, vend)
    except IndexError:
        raise DecodeError("datagram ends early (truncated)") from None
    return (pdu_tag, request_id, field1, field2, names, values)


_PDU_TAGS = frozenset((GET, GETNEXT, RESPONSE, SET, GETBULK, 0xA6, 0xA7, 0xA8))


def _small_int(data: bytes, p: int, end: int) -> tuple[int, int]:
    """An INTEGER at `p`; one content octet (error-status, error-index, version) inline."""
    if data[p] == T_INTEGER and data[p + 1] == 1 and p + 3 <= end:
        value = data[p + 2]
        return (value - 0x100 if value > 0x7F else value), p + 3
    return _int(data, p, end)


def _decode_head(data: bytes) -> tuple[int, bytes, int, int, int, int, int, int]:
    """Everything up to the varbinds: (version, community, pdu tag, request-id, field 1,
    field 2, varbinds start, varbinds end). Raises DecodeError or IndexError."""
    total = len(data)
    p, end = _header(data, 0, 0x30, total)
    if end != total:
        raise DecodeError("trailing octets after the message")
    version, p = _small_int(data, p, end)
    if version != VERSION_2C and version != VERSION_1:
        raise DecodeError(f"not SNMP v1/v2c (version field {version})")
    n = data[p + 1]
    if data[p] == T_OCTETS and n < 0x80 and p + 2 + n <= end:
        s = p + 2
        p = s + n
    else:
        s, p = _header(data, p, T_OCTETS, end)
    community = data[s:p]
    pdu_tag = data[p]
    if pdu_tag not in _PDU_TAGS:
        raise DecodeError(f"unknown PDU type 0x{pdu_tag:02x}")
    p, pend = _header(data, p, pdu_tag, end)
    if pend != end:
        raise DecodeError("trailing octets after the PDU")
    request_id, p = _int(data, p, end)
    field1, p = _small_int(data, p, end)
    field2, p = _small_int(data, p, end)
    p, vend = _header(data, p, 0x30, end)
    if vend != end:
        raise DecodeError("trailing octets after the varbind list")
    return version, community, pdu_tag, request_id, field1, field2, p, vend


def decode_varbinds(data: bytes, p: int, vend: int) -> list[VarBind]:
    """The varbinds between offsets `p` and `vend` (the content of a varbind list) as
    (name, value) pairs. Raises DecodeError, or IndexError on a datagram that ends early
    (callers translate)."""
    names, values = decode_varbind_lists(data, p, vend)
    return list(zip(names, values, strict=True))


def decode_varbind_lists(data: bytes, p: int, vend: int) -> tuple[list[bytes], list[AnyValue]]:
    """The varbinds between offsets `p` and `vend` as two parallel lists, names (raw OID
    content bytes) and values: one pass, no object per varbind but its name and value.
    Raises DecodeError, or IndexError on a datagram that ends early (callers translate)."""
    names: list[bytes] = []
    values: list[AnyValue] = []
    add_name = names.append
    add_value = values.append
    from_bytes = int.from_bytes
    unsigned, octets, exceptions = _UNSIGNED, _OCTETS, _EXCEPTIONS
    long_subid = _LONG_SUBID.search
    while p < vend:
        # The common case is inlined: short-form lengths everywhere.
        if data[p] != 0x30:
            raise DecodeError("varbind is not a SEQUENCE")
        n = data[p + 1]
        if n < 0x80:
            q = p + 2
            p = q + n
            if p > vend:
                raise DecodeError("varbind runs past the end (truncated?)")
        else:
            q, p = _header(data, p, 0x30, vend)
        # From here on `p` is the end of this varbind (and the start of the next).
        if data[q] != T_OID:
            raise DecodeError("varbind name is not an OID")
        n = data[q + 1]
        if n < 0x80:
            q += 2
            r = q + n
            name = data[q:r]
        else:
            s, r = _header(data, q, T_OID, p)
            name = data[s:r]
        if r >= p or not name:
            raise DecodeError("varbind without a value")
        # Names are kept as raw bytes and decoded later (table indexes): checked here, once.
        # Most names have no multi-byte arc at all (isascii: no octet >= 0x80), and skip the
        # search: it was a twentieth of a 48-port walk's CPU.
        if not name.isascii() and (name[-1] & 0x80 or long_subid(name)):
            raise DecodeError("varbind name is not a well-formed OID")
        tag = data[r]
        n = data[r + 1]
        if n < 0x80:
            s = r + 2
            if s + n != p:
                raise DecodeError("varbind length mismatch")
        else:
            s, e = _header(data, r, tag, p)
            if e != p:
                raise DecodeError("varbind length mismatch")
            n = e - s
        # Most values are one-octet INTEGERs (states) or counters.
        value: AnyValue
        if tag == T_INTEGER:
            if n == 1:
                value = data[s]
                if value > 0x7F:
                    value -= 0x100
            elif 0 < n <= MAX_NUMBER_OCTETS:
                value = from_bytes(data[s:p], "big", signed=True)
            else:
                raise DecodeError(f"INTEGER of {n} octets")
        elif tag in unsigned:
            if n == 1:
                value = data[s]
            elif 0 < n <= MAX_NUMBER_OCTETS:
                value = from_bytes(data[s:p], "big")
            else:
                raise DecodeError(f"unsigned value of {n} octets")
        elif tag in octets:
            value = data[s:p]
        elif tag in exceptions:
            value = exceptions[tag]
        elif tag == T_NULL:
            value = None
        elif tag == T_OID:
            value = decode_oid_content(data[s:p])
        else:
            raise DecodeError(f"unknown value type 0x{tag:02x}")
        add_name(name)
        add_value(value)
    return names, values


def peek_request_id(data: bytes) -> int | None:
    """The request-id of a datagram if its header parses, else None (for counting)."""
    try:
        p, end = _header(data, 0, 0x30, len(data))
        _, p = _int(data, p, end)
        _, p = _header(data, p, T_OCTETS, end)
        p, end = _header(data, p, data[p], end)
        rid, _ = _int(data, p, end)
        return rid
    except (DecodeError, IndexError):
        return None
