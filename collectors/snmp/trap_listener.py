"""The SNMP trap and inform listener: one asyncio UDP socket, v1/v2c/v3 notifications.

The listener knows nothing of rules or the daemon. It hands what it learns to a `TrapSink`:
samples for a target (`deliver`), a request to poll that target at once (`request_poll`), and a
count per notification (`count(kind, result)`, dutyd_traps_received_total). Every trap from a
known target asks for a poll, so the next sample confirms or clears what the trap said. An
inform is acknowledged only when it is accepted (its community or user checked out and a
target matched): one that is dropped stays unanswered, so its sender sees the failure and can
retry or raise it, instead of believing dutyd has it.

Who a trap speaks for: the target at the datagram's source address. A v1 agent-addr or an
snmpTrapAddress.0 names the origin only when the datagram comes from a trusted relay
(`traps.relays`); from anywhere else the payload's claim is ignored, as anyone can write it.
And a community or v3 user speaks only for the targets it is configured for (its `targets`,
or the one target whose own polling credential it is): a device's credential cannot page
about another device.

Bad input (garbage, truncated datagrams, a wrong community, an unknown v3 user or engine, a
replayed v3 message, more than `max_per_source` a second from one source or `max_total` from
all) is dropped and counted, with at most one log line per source per minute; nothing else
happens. Communities and users are never logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import socket
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from dutyd.collectors.snmp.collector import SnmpTarget
from dutyd.collectors.snmp.trap_config import TrapsConfig, covers
from dutyd.collectors.snmp.trap_decode import (
    TrapDecodeError,
    decode_community_notification,
    message_version,
    peek_v3_header,
)
from dutyd.collectors.snmp.trap_map import TrapMapper, TrapTarget, host_key
from dutyd.core.clock import SYSTEM_CLOCK, Clock
from dutyd.core.records import Sample

log = logging.getLogger("dutyd.traps")

# Label values of dutyd_traps_received_total (bounded sets; pre-filled by the exporter).
KINDS = ("v1_trap", "v2c_trap", "v2c_inform", "v3_trap", "v3_inform", "v3", "unknown")
RESULTS = (
    "mapped",  # a known trap from a known target: samples delivered, poll requested
    # A known trap that is no sample on any of its targets (a port no target watches, a
    # restart from a target whose poll does not read sysUpTime): poll requested only.
    "unmapped",
    "unknown_trap",  # a known target, a trap no mapping knows: poll requested, OIDs logged
    "unknown_source",  # from an address that is no target
    # Valid credentials, but not configured for the target the trap is about.
    "wrong_target",
    "bad_community",
    "bad_user",  # v3: unknown user, wrong digest, undecryptable, outside pysnmp's window
    "unknown_engine_id",  # v3: an engine the user is not allowed from
    "replayed",  # v3: behind its sender's clock (a replay or a stale message, RFC 3414)
    "malformed",  # not an SNMP notification (garbage, truncated, a request or a response)
    "rate_limited",  # over max_per_source or max_total
    "discovery",  # v3 engine-ID discovery before an inform (answered)
)
LOG_EVERY = 60.0  # seconds between two log lines about one source
# Bounds on per-source state, so a flood from many (spoofed) addresses cannot grow memory: the
# source heard from least recently is forgotten first (a source that keeps flooding stays).
MAX_SOURCES = 4096
MAX_LOG_LINES_PER_MINUTE = 60
BURST_SECONDS = 5.0


class TrapSink(Protocol):
    """What the listener needs from the daemon."""

    def deliver(self, target: str, samples: list[Sample]) -> None:
        """Samples a trap stands for, on `target` (the way a poll's samples go)."""

    def request_poll(self, target: str) -> None:
        """Poll `target` now, out of its schedule."""

    def collector(self, target: str) -> object | None:
        """The running collector of `target` (to label a port as its poll did)."""

    def count(self, kind: str, result: str) -> None:
        """One notification of this kind (KINDS) ended with this result (RESULTS)."""


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, listener: TrapListener) -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.listener.handle(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors on a sent inform response: nothing to do.
        log.debug("trap socket error: %s", exc)


class TrapListener:
    def __init__(
        self,
        config: TrapsConfig,
        targets: Iterable[tuple[SnmpTarget, Mapping[str, str]]],
        sink: TrapSink,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config
        self.sink = sink
        # Wall time stamps a trap's samples; monotonic time drives the flood and log limits
        # (a FakeClock makes those exact in tests).
        self._clock = clock
        self._targets = list(targets)
        self.mapper = TrapMapper(self._targets, config.maps)
        self._relays = config.relay_networks()
        # Each configured community with the target patterns it may speak for.
        self._community_targets: dict[bytes, list[str]] = {}
        for c in config.communities:
            self._community_targets.setdefault(c.secret(), []).extend(c.targets)
        self._user_targets: dict[str, list[str]] = {u.user: list(u.targets) for u in config.users}
        self._transport: asyncio.DatagramTransport | None = None
        self._v3: Any = None  # trap_v3.V3Receiver when v3 users are configured
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        burst_total = config.max_total * BURST_SECONDS
        self._total_bucket = (burst_total, clock.monotonic())
        self._logged: OrderedDict[str, float] = OrderedDict()
        self._log_window = (0.0, 0)
        self.address: tuple[str, int] = (config.listen, config.port)
        self._users = self._v3_users()
        self._own_credentials(self._targets)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the socket (raises OSError naming the address if it cannot), resolve target
        host names, and set up the v3 engine when v3 users are configured."""
        loop = asyncio.get_running_loop()
        host = self.config.listen.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self), local_addr=(host, self.config.port), family=family
            )
        except OSError as exc:
            hint = " (ports below 1024 need privileges; see README, SNMP traps)"
            raise OSError(
                exc.errno,
                f"cannot listen for SNMP traps on {host}:{self.config.port}: {exc.strerror}"
                + (hint if self.config.port < 1024 else ""),
            ) from None
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("sockname")
        self.address = (str(sock[0]), int(sock[1]))
        if self._users:
            from dutyd.collectors.snmp.trap_v3 import V3Receiver  # pysnmp only when needed

            self._v3 = V3Receiver(self._users, self._send, self._clock.monotonic)
        await self._resolve(self.mapper)
        log.info(
            "listening for SNMP traps",
            extra={
                "fields": {
                    "address": f"{self.address[0]}:{self.address[1]}",
                    "v3_users": len(self._users),
                }
            },
        )

    async def stop(self) -> None:
        if self._v3 is not None:
            self._v3.close()
            self._v3 = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            await asyncio.sleep(0)

    async def retarget(self, targets: Iterable[tuple[SnmpTarget, Mapping[str, str]]]) -> None:
        """New targets after a config reload (the configured communities and users stay as
        started; each target's own credential follows the target)."""
        listed = list(targets)
        mapper = TrapMapper(listed, self.config.maps)
        await self._resolve(mapper)
        self.mapper = mapper
        self._own_credentials(listed)

    def _own_credentials(self, targets: Iterable[tuple[SnmpTarget, Mapping[str, str]]]) -> None:
        """Each target's polling community / v3 user, which speaks for that target alone
        (`accept_target_credentials`); a v3 user only with the credentials pysnmp has for
        that name (the first listed, see `_v3_users`)."""
        own_community: dict[str, bytes] = {}
        own_user: dict[str, str] = {}
        if self.config.accept_target_credentials:
            from dutyd.collectors.snmp.trap_v3 import V3User

            registered = {u.user: u for u in self._users}
            for t, _ in targets:
                if t.version != "3":
                    community = (t.community_secret() or "").encode()
                    if community:
                        own_community[t.name] = community
                elif t.user is not None:
                    user = V3User(
                        t.user, t.auth_protocol, t.auth_secret(), t.priv_protocol, t.priv_secret()
                    )
                    known = registered.get(t.user)
                    if known is not None and dataclasses.replace(known, engine_ids=()) == user:
                        own_user[t.name] = t.user
        self._own_community = own_community
        self._own_user = own_user
        self.communities = set(self._community_targets) | set(own_community.values())

    def _may_speak_for(self, target: TrapTarget, community: bytes | None, user: str) -> bool:
        """Whether the credential a notification came with may speak for `target`."""
        name = target.name
        if community is not None:
            patterns = self._community_targets.get(community, ())
            return covers(patterns, name) or self._own_community.get(name) == community
        return covers(self._user_targets.get(user, ()), name) or self._own_user.get(name) == user

    def _from_relay(self, source: str) -> bool:
        if not self._relays:
            return False
        try:
            address = ipaddress.ip_address(host_key(source))
        except ValueError:
            return False
        return any(address in network for network in self._relays)

    async def _resolve(self, mapper: TrapMapper) -> None:
        loop = asyncio.get_running_loop()
        for host in mapper.hosts():
            try:
                ipaddress.ip_address(host)
                continue
            except ValueError:
                pass
            try:
                async with asyncio.timeout(5.0):
                    infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
            except (OSError, TimeoutError) as exc:
                log.warning("cannot resolve %s for trap matching: %s", host, exc)
                continue
            for info in infos:
                mapper.alias(host, str(info[4][0]))

    def _v3_users(self) -> list[Any]:
        from dutyd.collectors.snmp.trap_v3 import V3User

        users: dict[str, V3User] = {}
        for u in self.config.users:
            users[u.user] = V3User(
                u.user,
                u.auth_protocol,
                u.auth_secret(),
                u.priv_protocol,
                u.priv_secret(),
                tuple(u.engine_id_bytes()),
            )
        if self.config.accept_target_credentials:
            for t, _ in self._targets:
                if t.version != "3" or t.user is None:
                    continue
                user = V3User(
                    t.user, t.auth_protocol, t.auth_secret(), t.priv_protocol, t.priv_secret()
                )
                known = users.setdefault(t.user, user)
                if dataclasses.replace(known, engine_ids=()) != user:
                    # One user name has one set of keys for traps (pysnmp's USM table).
                    log.warning(
                        "v3 user %s has other credentials on target %s than traps accept "
                        "for that name; traps from %s with its own credentials are refused",
                        t.user,
                        t.name,
                        t.name,
                    )
        return list(users.values())

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(data, addr)

    # -- one datagram ---------------------------------------------------------------------------

    def handle(self, data: bytes, addr: Any) -> None:
        source = str(addr[0])
        now = self._clock.monotonic()
        if not self._admit(source, now):
            self._drop("unknown", "rate_limited", source, now, "more notifications than allowed")
            return
        try:
            version = message_version(data)
            if version == 3:
                self._handle_v3(data, addr, source, now)
                return
            message = decode_community_notification(data)
        except TrapDecodeError as exc:
            self._drop("unknown", "malformed", source, now, str(exc))
            return
        notification = message.notification
        kind = notification.kind
        if message.community not in self.communities:
            self._drop(kind, "bad_community", source, now, "wrong community")
            return
        responses = []
        if message.response is not None:
            responses.append((message.response, (source, int(addr[1]))))
        self._deliver(kind, notification, source, now, responses, community=message.community)

    def _handle_v3(self, data: bytes, addr: Any, source: str, now: float) -> None:
        header = peek_v3_header(data)
        if self._v3 is None:
            self._drop("v3", "bad_user", source, now, "SNMPv3 but no v3 users configured")
            return
        outcome = self._v3.handle(data, (source, int(addr[1])), header)
        if outcome.notification is None:
            if outcome.result == "discovery":
                self.sink.count(outcome.kind, outcome.result)
                return
            why = {
                "bad_user": "v3 user unknown or its keys do not match",
                "unknown_engine_id": "v3 engine ID not allowed for this user",
                "replayed": "v3 message behind its sender's clock: replayed or stale",
            }.get(outcome.result, "bad v3 message")
            self._drop(outcome.kind, outcome.result, source, now, why)
            return
        self._deliver(
            outcome.kind, outcome.notification, source, now, outcome.responses, user=outcome.user
        )

    def _deliver(
        self,
        kind: str,
        notification: Any,
        source: str,
        now: float,
        responses: Iterable[tuple[bytes, tuple[str, int]]] = (),
        community: bytes | None = None,
        user: str = "",
    ) -> None:
        """Samples, a poll and a count for an authenticated notification (with `community`,
        or v3 as `user`); `responses` (an inform's acknowledgement) go out only when a target
        matches, so an inform that is dropped stays unanswered and its sender sees the
        failure."""
        mapper = self.mapper
        origin = source
        if notification.agent_addr is not None and self._from_relay(source):
            origin = notification.agent_addr
        targets = mapper.targets_at(origin)
        via = f" (relayed for {origin})" if origin != source else ""
        if not targets:
            self._drop(
                kind,
                "unknown_source",
                source,
                now,
                f"no snmp target at this address{via}; trap {notification.describe()}",
            )
            return
        targets = [t for t in targets if self._may_speak_for(t, community, user)]
        if not targets:
            self._drop(
                kind,
                "wrong_target",
                source,
                now,
                f"its {'community' if community is not None else 'v3 user'} is not configured "
                f"for the target at this address{via}",
            )
            return
        for message, to in responses:
            self._send(message, to)
        known = mapper.known(notification)
        timestamp = self._clock.time()
        delivered = False
        for target in targets:
            try:
                samples = mapper.samples(target, notification, timestamp, self.sink.collector)
            except Exception:
                # A mapping bug must not stop the listener; the poll still goes out.
                log.exception("mapping a trap for %s failed", target.name)
                samples = []
            if samples:
                self.sink.deliver(target.name, samples)
                delivered = True
            self.sink.request_poll(target.name)
        if not known:
            self._drop(kind, "unknown_trap", source, now, f"unknown trap {notification.describe()}")
        elif delivered:
            self.sink.count(kind, "mapped")
        else:
            # Understood, but none of its targets' polls emits what it stands for: counting it
            # as mapped would hide that it changed nothing. Routine for a port no target
            # watches, so not worth a warning.
            self.sink.count(kind, "unmapped")
            log.debug(
                "trap %s from %s is no sample on %s",
                notification.describe(),
                source,
                ", ".join(t.name for t in targets),
            )

    # -- floods and logging ---------------------------------------------------------------------

    def _admit(self, source: str, now: float) -> bool:
        """Token buckets, bursts of BURST_SECONDS: one per source (`max_per_source` a
        second), then one for all sources (`max_total`). A datagram refused by its source's
        bucket takes nothing from the global one, so one flooding source does not starve
        the others; many sources together are held by the global one."""
        rate = self.config.max_per_source
        burst = rate * BURST_SECONDS
        buckets = self._buckets
        tokens, last = buckets.get(source, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if source in buckets:
            buckets.move_to_end(source)
        elif len(buckets) >= MAX_SOURCES:
            buckets.popitem(last=False)  # the source heard from least recently
        if tokens < 1.0:
            buckets[source] = (tokens, now)
            return False
        total_rate = self.config.max_total
        total, total_last = self._total_bucket
        total = min(total_rate * BURST_SECONDS, total + (now - total_last) * total_rate)
        if total < 1.0:
            self._total_bucket = (total, now)
            buckets[source] = (tokens, now)
            return False
        self._total_bucket = (total - 1.0, now)
        buckets[source] = (tokens - 1.0, now)
        return True

    def _drop(self, kind: str, result: str, source: str, now: float, why: str) -> None:
        self.sink.count(kind, result)
        last = self._logged.get(source)
        if last is not None and now - last < LOG_EVERY:
            return
        start, lines = self._log_window
        if now - start >= 60.0:
            start, lines = now, 0
        if lines >= MAX_LOG_LINES_PER_MINUTE:
            return
        self._log_window = (start, lines + 1)
        logged = self._logged
        logged.pop(source, None)
        while len(logged) >= MAX_SOURCES:
            logged.popitem(last=False)  # logged longest ago
        logged[source] = now
        log.warning(
            "SNMP notification from %s: %s (%s; further ones from there are counted in "
            "dutyd_traps_received_total, logged at most once a minute)",
            source,
            result.replace("_", " "),
            why,
        )
