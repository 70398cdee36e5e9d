"""SNMPv3 traps and informs through pysnmp 7's notification receiver (RFC 3413 / 3414).

The listener owns the UDP socket; pysnmp never opens one. A v3 datagram is handed to a
pysnmp engine through `_Bridge`, a pysnmp transport whose sends (inform responses, engine-ID
discovery reports) go out through the listener's socket. pysnmp processes a message
synchronously, so whether it authenticated, decrypted and became a notification is known
when `handle` returns.

USM keys are localized per authoritative engine: informs are ours (the receiver's engine),
traps the sender's. A configured user is registered for our engine at start, and for a
sender's engine the first time one of its traps names that user and carries the right digest
(at most `MAX_ENGINES` engines, or only the user's `engine_ids` when given): any device that
knows the user's passwords may send, as with snmptrapd's `-e` free form, without listing
engine IDs. The digest is checked here, with the user's master key hashed once at start,
before pysnmp gets a row for the engine: a made-up engine ID with a wrong key costs two
hashes and leaves nothing behind, so forged datagrams can neither fill the engine table (and
lock real devices out) nor make pysnmp localize keys and write its MIB for each of them.
A user without authentication is registered once for pysnmp's wildcard engine instead: its
messages prove nothing about their engine, so no engine is learned for it.

A message below its user's security level (noAuthNoPriv naming a user with an auth password,
authNoPriv naming one with a priv password) is refused: pysnmp would accept it, and then
anyone who knows a user name could send traps that page.

Replays. A trap's sender is the authoritative engine, and RFC 3414 §3.2.7b has the receiver
keep the latest boots/time it saw from each engine and refuse a message with lower boots, or
with the same boots and a time more than 150 s behind its estimate of the sender's clock.
pysnmp 7.1.30 overwrites its record with the message's own boots/time just before that
check, so the check compares a message with itself and a captured trap replays for ever.
`EngineClocks` does the check here, before pysnmp sees the message, and learns a sender's
clock only from messages pysnmp then authenticated (a forged datagram can move nothing). It
also refuses a message it has already accepted (the same digest) within the window, which
RFC 3414 lets through: a trap is never sent twice alike (net-snmp and devices give each one
its own msgID and time), so only a replay repeats one. For informs dutyd's own engine is
authoritative, and pysnmp's check (§3.2.7a, against its own clock) is right. pysnmp's
per-engine timeline is cleared after each message: dutyd does not use it, and pysnmp queues
an entry per message for 300 s (about 480 bytes each).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config as pconfig
from pysnmp.entity.engine import SnmpEngine
from pysnmp.entity.rfc3413 import ntfrcv
from pysnmp.proto import rfc1902
from pysnmp.proto.secmod.rfc3414.service import SnmpUSMSecurityModel

from dutyd.collectors.snmp.codec import AnyValue, Oid
from dutyd.collectors.snmp.trap_decode import (
    Notification,
    TrapDecodeError,
    V3Header,
    notification_from_varbinds,
)
from dutyd.collectors.snmp.v3 import AUTH_PROTOCOLS, PRIV_PROTOCOLS, to_python

log = logging.getLogger("dutyd.traps")

# Sender engines learned per daemon (each authenticated by its digest); more are refused, so
# the USM table stays bounded even against a device that holds the keys.
MAX_ENGINES = 256

# RFC 3414 / RFC 7860: each auth protocol's hash and the length of its truncated digest.
AUTH_DIGESTS: dict[str, tuple[str, int]] = {
    "MD5": ("md5", 12),
    "SHA": ("sha1", 12),
    "SHA224": ("sha224", 16),
    "SHA256": ("sha256", 24),
    "SHA384": ("sha384", 32),
    "SHA512": ("sha512", 48),
}
FLAG_AUTH = 0x01
FLAG_PRIV = 0x02

# RFC 3414 §3.2.7: a message more than this far behind the sender's clock is refused.
TIME_WINDOW = 150
MAX_BOOTS = 2147483647  # snmpEngineBoots at its limit: the engine must be re-keyed
# Sender clocks kept (least recently heard from dropped first). Only engines whose messages
# authenticated are kept, and at most MAX_ENGINES are learned, so none is dropped in practice.
MAX_CLOCKS = MAX_ENGINES
# Digests of accepted messages remembered per engine (the most recent), to refuse a replay
# inside the window; a device sending more than this within 150 s leaves older ones
# replayable until the window closes on them.
SEEN_PER_ENGINE = 128

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class V3User:
    """A v3 user's credentials (from `traps.users` or a v3 target)."""

    user: str
    auth_protocol: str | None
    auth_password: str | None
    priv_protocol: str | None
    priv_password: str | None
    engine_ids: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class V3Outcome:
    kind: str  # v3_trap, v3_inform, or v3 when nothing was decrypted
    result: str  # "" for a notification, else the reason it was dropped
    notification: Notification | None = None
    # An inform's Response, to send only when the notification is accepted.
    responses: tuple[tuple[bytes, Address], ...] = ()
    user: str = ""  # the user it authenticated as (whose targets it may speak for)


@dataclass(slots=True)
class _Clock:
    """What a receiver knows of one authoritative engine's clock (RFC 3414 §2.3)."""

    boots: int
    time: int  # the engine's time when last learned
    latest: int  # latestReceivedEngineTime
    at: float  # our monotonic time when it was learned
    seen: OrderedDict[bytes, None]  # digests of accepted messages, oldest first


class EngineClocks:
    """The latest boots/time per sender engine, and the RFC 3414 §3.2.7b window check."""

    def __init__(self, monotonic: Callable[[], float], limit: int = MAX_CLOCKS) -> None:
        self._monotonic = monotonic
        self._limit = limit
        self._clocks: OrderedDict[bytes, _Clock] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clocks)

    def fresh(self, engine_id: bytes, boots: int, time: int, digest: bytes) -> bool:
        """Whether a message stating `boots`/`time` may be current (§3.2.7b.2) and is not
        one already accepted."""
        known = self._clocks.get(engine_id)
        if known is None:
            return boots < MAX_BOOTS
        estimate = known.time + (self._monotonic() - known.at)
        return not (
            known.boots >= MAX_BOOTS
            or boots < known.boots
            or (boots == known.boots and time < estimate - TIME_WINDOW)
            or digest in known.seen
        )

    def learn(self, engine_id: bytes, boots: int, time: int, digest: bytes) -> None:
        """An authenticated message's clock (§3.2.7b.1: kept when it is the latest)."""
        known = self._clocks.get(engine_id)
        if known is None:
            known = self._clocks[engine_id] = _Clock(
                boots, time, time, self._monotonic(), OrderedDict()
            )
        elif boots > known.boots or (boots == known.boots and time > known.latest):
            known.boots, known.time, known.latest = boots, time, time
            known.at = self._monotonic()
        known.seen[digest] = None
        if len(known.seen) > SEEN_PER_ENGINE:
            known.seen.popitem(last=False)
        self._clocks.move_to_end(engine_id)
        while len(self._clocks) > self._limit:
            self._clocks.popitem(last=False)


class _Bridge(udp.UdpAsyncioTransport):
    """A pysnmp transport without a socket of its own: sends go through `send`."""

    def __init__(self, send: Callable[[bytes, Address], None]) -> None:
        super().__init__()
        self.send = send
        # While a notification is processed, what pysnmp sends (an inform's Response) is held
        # here: the listener sends it only once it accepts the notification (a target
        # matches), so the sender of a dropped inform sees no acknowledgement.
        self.held: list[tuple[bytes, Address]] | None = None

    def open_server_mode(self, iface: Any = None, sock: Any = None) -> _Bridge:
        return self

    def send_message(self, outgoingMessage: Any, transportAddress: Any) -> None:
        message = (bytes(outgoingMessage), (str(transportAddress[0]), int(transportAddress[1])))
        if self.held is not None:
            self.held.append(message)
        else:
            self.send(*message)

    def close_transport(self) -> None:
        self._callback_function = None


@dataclass(frozen=True, slots=True)
class _Keys:
    """A user's master keys (RFC 3414 A.2: the password hashed over 1 MiB), hashed once: a
    key for one more engine is then a single hash, not another megabyte."""

    auth: Any  # pysnmp OctetString, or None without authentication
    priv: Any  # pysnmp OctetString, or None without privacy


class V3Receiver:
    """Authenticates and decrypts v3 notifications with the configured users."""

    def __init__(
        self,
        users: list[V3User],
        send: Callable[[bytes, Address], None],
        monotonic: Callable[[], float],
    ) -> None:
        self.engine = SnmpEngine()
        self.clocks = EngineClocks(monotonic)
        self.users = {u.user.encode(): u for u in users}
        self._keys = {u.user.encode(): _master_keys(u) for u in users}
        self._registered: set[tuple[bytes, bytes]] = set()
        self._engines: set[bytes] = set()
        self._bridge = _Bridge(send)
        pconfig.add_transport(self.engine, udp.DOMAIN_NAME, self._bridge)
        for user in users:
            self._add_user(user, None)
            if not user.auth_protocol:
                # pysnmp falls back to this row for an engine it has no row for.
                wildcard = SnmpUSMSecurityModel.wildcard_security_engine_id.asOctets()
                self._add_user(user, wildcard)
        self._got: list[tuple[Oid, AnyValue]] | None = None
        self._receiver = ntfrcv.NotificationReceiver(self.engine, self._on_notification)
        (engine_id,) = self.engine.get_mib_builder().import_symbols(
            "__SNMP-FRAMEWORK-MIB", "snmpEngineID"
        )
        self.engine_id = bytes(engine_id.syntax)
        usm = self.engine.security_models[SnmpUSMSecurityModel.SECURITY_MODEL_ID]
        # pysnmp's own record of sender clocks (see the module doc): emptied after each
        # message. Checked here so that a pysnmp that renamed them fails at start, not later.
        self._pysnmp_timeline: dict[Any, Any] = usm._SnmpUSMSecurityModel__timeline  # type: ignore[attr-defined]
        self._pysnmp_timeline_queue: dict[Any, Any] = usm._SnmpUSMSecurityModel__timelineExpQueue  # type: ignore[attr-defined]
        if not isinstance(self._pysnmp_timeline, dict) or not isinstance(
            self._pysnmp_timeline_queue, dict
        ):
            raise RuntimeError("pysnmp's USM timeline is not where dutyd expects it")

    def _add_user(self, user: V3User, engine_id: bytes | None) -> None:
        keys = self._keys[user.user.encode()]
        kwargs: dict[str, Any] = {}
        if user.auth_protocol:
            kwargs["authProtocol"] = AUTH_PROTOCOLS[user.auth_protocol]
            kwargs["authKey"] = keys.auth
            kwargs["authKeyType"] = pconfig.USM_KEY_TYPE_MASTER
        if user.priv_protocol:
            kwargs["privProtocol"] = PRIV_PROTOCOLS[user.priv_protocol]
            kwargs["privKey"] = keys.priv
            kwargs["privKeyType"] = pconfig.USM_KEY_TYPE_MASTER
        if engine_id is not None:
            kwargs["securityEngineId"] = rfc1902.OctetString(engine_id)
        pconfig.add_v3_user(self.engine, user.user, **kwargs)

    def _authentic(self, user: V3User, header: V3Header, data: bytes) -> bool:
        """Whether the message's digest is right for `user` at its authoritative engine
        (RFC 3414 §6.3.2 / RFC 7860: HMAC over the message with the digest field zeroed,
        keyed with the master key localized to that engine)."""
        assert user.auth_protocol is not None
        hash_name, length = AUTH_DIGESTS[user.auth_protocol]
        digest = header.auth_params
        if len(digest) != length:
            return False
        master = self._keys[user.user.encode()].auth.asOctets()
        local = hashlib.new(hash_name, master + header.engine_id + master).digest()
        at = header.auth_at
        zeroed = data[:at] + bytes(length) + data[at + length :]
        mac = hmac.new(local, zeroed, hash_name).digest()[:length]
        return hmac.compare_digest(mac, digest)

    def _on_notification(
        self,
        engine: Any,
        state_reference: Any,
        context_engine_id: Any,
        context_name: Any,
        varbinds: Any,
        cb_ctx: Any,
    ) -> None:
        self._got = [(tuple(name), to_python(value)) for name, value in varbinds]

    def handle(self, data: bytes, addr: Address, header: V3Header) -> V3Outcome:
        """One v3 datagram whose header parsed; pysnmp answers informs and discovery."""
        if header.is_discovery:
            # Engine-ID discovery before an inform: pysnmp answers with a Report.
            self._process(data, addr)
            return V3Outcome("v3", "discovery")
        user = self.users.get(header.user)
        if user is None:
            return V3Outcome("v3", "bad_user")
        if (user.auth_protocol and not header.flags & FLAG_AUTH) or (
            user.priv_protocol and not header.flags & FLAG_PRIV
        ):
            return V3Outcome("v3", "bad_user")  # below the user's security level
        engine_id = header.engine_id
        if engine_id != self.engine_id:
            allowed = user.engine_ids
            if (allowed and engine_id not in allowed) or not 5 <= len(engine_id) <= 32:
                return V3Outcome("v3", "unknown_engine_id")
            if user.auth_protocol and (engine_id, header.user) not in self._registered:
                # Authenticated before anything is registered: a forged engine ID leaves no
                # trace, so it cannot use up MAX_ENGINES and lock real devices out.
                if not self._authentic(user, header, data):
                    return V3Outcome("v3", "bad_user")
                if engine_id not in self._engines and len(self._engines) >= MAX_ENGINES:
                    return V3Outcome("v3", "unknown_engine_id")
                self._engines.add(engine_id)
                self._registered.add((engine_id, header.user))
                self._add_user(user, engine_id)
        # A trap's clock is its sender's: refused here when behind what that engine said
        # before (pysnmp's own check cannot, see the module doc). Without authentication a
        # message proves nothing about its engine, so there is nothing to check.
        timed = engine_id != self.engine_id and bool(header.flags & FLAG_AUTH)
        if timed and not self.clocks.fresh(
            engine_id, header.boots, header.engine_time, header.auth_params
        ):
            return V3Outcome("v3", "replayed")
        self._bridge.held = []
        try:
            got = self._process(data, addr)
        finally:
            held, self._bridge.held = self._bridge.held or [], None
            self._pysnmp_timeline.clear()
            self._pysnmp_timeline_queue.clear()
        if got is not None and timed:
            # pysnmp authenticated it: its clock is the sender's.
            self.clocks.learn(engine_id, header.boots, header.engine_time, header.auth_params)
        if got is None:
            # Wrong digest, undecryptable, outside the time window, unknown context: pysnmp
            # dropped it; a Report it made about that goes out, as RFC 3414 asks.
            for message, to in held:
                self._bridge.send(message, to)
            return V3Outcome("v3", "bad_user")
        try:
            # pysnmp answers an inform (and only an inform) while processing it.
            notification = notification_from_varbinds("3", bool(held), got)
        except TrapDecodeError:
            return V3Outcome("v3", "malformed")
        return V3Outcome(notification.kind, "", notification, tuple(held), user.user)

    def _process(self, data: bytes, addr: Address) -> list[tuple[Oid, AnyValue]] | None:
        self._got = None
        callback = self._bridge._callback_function
        if callback is None:
            return None
        try:
            callback(self._bridge, udp.UdpTransportAddress(addr), data)
        except Exception:
            # pysnmp raises on what it cannot parse; that is bad input, not a fault of ours.
            log.debug("pysnmp refused a v3 datagram from %s", addr[0], exc_info=True)
            return None
        return self._got

    def close(self) -> None:
        self._receiver.close(self.engine)
        self.engine.close_dispatcher()


def _master_keys(user: V3User) -> _Keys:
    """The user's master keys as pysnmp hashes them (its localization of them to an engine
    is then what `_authentic` computes)."""
    if not user.auth_protocol:
        return _Keys(None, None)
    auth_protocol = AUTH_PROTOCOLS[user.auth_protocol]
    auth = pconfig.AUTH_SERVICES[auth_protocol].hash_passphrase(
        rfc1902.OctetString(user.auth_password or "")
    )
    priv = None
    if user.priv_protocol:
        priv = pconfig.PRIV_SERVICES[PRIV_PROTOCOLS[user.priv_protocol]].hash_passphrase(
            auth_protocol, rfc1902.OctetString(user.priv_password or "")
        )
    return _Keys(auth, priv)
