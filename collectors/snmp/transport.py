"""One asyncio UDP endpoint per address family, shared by every v1/v2c SNMP target.

Requests are matched to replies by request-id alone, so a thousand targets need one socket.
A reply is accepted only from the address the request went to; datagrams that do not parse,
that carry an unknown request-id or that come from the wrong address are dropped and
counted, and the request they did not answer times out cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import socket
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dutyd.collectors.snmp.codec import (
    REQUEST_ID_MAX,
    REQUEST_ID_MIN,
    RESPONSE,
    DecodeError,
    Reply,
    decode_reply,
)

log = logging.getLogger(__name__)

Address = tuple[str, int]
# Large enough for a few hundred bulk replies in flight at once; the kernel caps it at
# net.core.rmem_max unless we may force it.
_RCVBUF = 4 * 1024 * 1024
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


# Request-ids remembered after they timed out; a slow agent's late replies come within a few
# polls, and a wrap-around of the id space (2**31) is far away.
MAX_EXPIRED_IDS = 4096
_DUE_SLACK = 0.001  # seconds


@dataclass
class TransportStats:
    """Datagrams that answered no request (exposed for tests and debugging)."""

    received: int = 0
    garbage: int = 0
    unknown_request_id: int = 0
    late_replies: int = 0
    wrong_address: int = 0
    send_errors: int = 0


class NoAnswer:
    """Why a request got no valid reply: what, if anything, came from the device instead."""

    __slots__ = ("garbage", "late", "problem", "stray", "wrong_from")

    def __init__(self) -> None:
        self.garbage = 0  # datagrams from the device's address that were not SNMP v1/v2c
        self.stray = 0  # replies from the device's address with a request-id we did not send
        self.late = 0  # replies to our own earlier requests that had already timed out
        self.problem = ""  # what was wrong with the last such datagram
        self.wrong_from: Any = None  # an address that sent the reply meant to come from it


class _Pending:
    __slots__ = ("addr", "data", "deadline", "future", "tries_left", "wait", "why")

    def __init__(
        self,
        future: asyncio.Future[Reply | NoAnswer],
        addr: Address,
        data: bytes,
        wait: float,
    ) -> None:
        self.future = future
        self.addr = addr
        self.data = data
        self.wait = wait
        self.tries_left = 0
        self.deadline = 0  # sequence number of this try's entry in the deadline heap
        self.why: NoAnswer | None = None  # made when the device sends something unusable

    def noted(self) -> NoAnswer:
        why = self.why
        if why is None:
            why = self.why = NoAnswer()
        return why


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SnmpTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # An unconnected UDP socket only sees errors of its own sendto (no route, ...);
        # the request concerned just times out, with this logged for whoever debugs it.
        self.owner.stats.send_errors += 1
        log.debug("SNMP socket error: %s", exc)


class SnmpTransport:
    """The shared client endpoint. Get it with `context.shared("snmp.transport", ...)`."""

    def __init__(self) -> None:
        self.stats = TransportStats()
        self._pending: dict[int, _Pending] = {}
        # Request-ids that timed out (or whose poll gave up) recently, and where they went: a
        # reply to one is a slow agent answering late, not a reply to a request never made.
        self._expired: OrderedDict[int, Address] = OrderedDict()
        self._endpoints: dict[int, asyncio.DatagramTransport] = {}
        self._opening: dict[int, asyncio.Lock] = {}
        self._next_id = random.randint(REQUEST_ID_MIN, REQUEST_ID_MAX)
        self._loop: asyncio.AbstractEventLoop | None = None
        # Every try's deadline, (when, sequence, request-id), in one heap under one loop timer
        # set for the earliest: a timer per request (made, then cancelled when the reply came,
        # nearly always) was a sixth of a request's CPU. The deadlines of answered requests
        # leave the heap lazily, when they reach its top.
        self._deadlines: list[tuple[float, int, int]] = []
        self._sequence = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def _endpoint(self, family: int) -> asyncio.DatagramTransport:
        ep = self._endpoints.get(family)
        if ep is not None:
            return ep
        lock = self._opening.setdefault(family, asyncio.Lock())
        async with lock:
            ep = self._endpoints.get(family)
            if ep is None:
                loop = asyncio.get_running_loop()
                self._loop = loop
                sock = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    sock.setblocking(False)
                    _grow_rcvbuf(sock)
                    sock.bind(("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0))  # noqa: S104 - a client socket must hear replies from any device
                    ep, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
                except BaseException:
                    sock.close()
                    raise
                self._endpoints[family] = ep
        return ep

    def _allocate_id(self) -> int:
        rid = self._next_id
        pending = self._pending
        while rid in pending:
            rid = rid + 1 if rid < REQUEST_ID_MAX else REQUEST_ID_MIN
        self._next_id = rid + 1 if rid < REQUEST_ID_MAX else REQUEST_ID_MIN
        self._expired.pop(rid, None)
        return rid

    def _remember_expired(self, rid: int, addr: Address) -> None:
        self._expired[rid] = addr
        while len(self._expired) > MAX_EXPIRED_IDS:
            self._expired.popitem(last=False)

    async def request(
        self,
        addr: Address,
        family: int,
        build: Callable[[int], bytes],
        wait: float,
        retries: int,
    ) -> Reply | NoAnswer:
        """Send a request and return the reply, or a `NoAnswer` after `retries + 1` tries of
        `wait` seconds each. The same datagram (same request-id) is resent, so a late reply to an
        earlier try still counts."""
        ep = self._endpoints.get(family) or await self._endpoint(family)
        loop = self._loop
        assert loop is not None
        rid = self._allocate_id()
        data = build(rid)
        fut: asyncio.Future[Reply | NoAnswer] = loop.create_future()
        entry = _Pending(fut, addr, data, wait)
        entry.tries_left = retries
        self._pending[rid] = entry
        self._deadline(loop.time() + wait, rid, entry)
        ep.sendto(data, addr)
        try:
            return await fut
        finally:
            if not fut.done() or fut.cancelled():
                self._drop(rid, entry)

    def _live(self, seq: int, rid: int) -> _Pending | None:
        """The request a deadline is for, if it still waits for that try's answer."""
        entry = self._pending.get(rid)
        return entry if entry is not None and entry.deadline == seq else None

    def _deadline(self, when: float, rid: int, entry: _Pending) -> None:
        heap = self._deadlines
        # Most requests are answered in the order they went out: drop those from the top
        # now, so the heap holds about what is in flight.
        while heap and self._live(heap[0][1], heap[0][2]) is None:
            heapq.heappop(heap)
        entry.deadline = seq = next(self._sequence)
        heapq.heappush(heap, (when, seq, rid))
        if self._timer is None or when < self._timer_at:
            self._arm(when)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer = self._loop.call_at(when, self._on_deadline)
        self._timer_at = when

    def _on_deadline(self) -> None:
        self._timer = None
        assert self._loop is not None
        # asyncio runs a timer up to its clock resolution early; what is due within a
        # millisecond is due now (rather than arming the timer again for it).
        now = self._loop.time() + _DUE_SLACK
        heap = self._deadlines
        while heap:
            when, seq, rid = heap[0]
            entry = self._live(seq, rid)
            if entry is None:
                heapq.heappop(heap)
            elif when <= now:
                heapq.heappop(heap)
                self._expire(rid, entry)
            else:
                break
        # A resend above may have armed the timer for its own, later deadline.
        if heap and (self._timer is None or heap[0][0] < self._timer_at):
            self._arm(heap[0][0])

    def _drop(self, rid: int, entry: _Pending) -> None:
        if self._pending.get(rid) is entry:
            del self._pending[rid]
            self._remember_expired(rid, entry.addr)

    def _expire(self, rid: int, entry: _Pending) -> None:
        if entry.future.done():
            self._drop(rid, entry)
            return
        if entry.tries_left > 0:
            entry.tries_left -= 1
            ep = self._endpoints.get(_family_of(entry.addr))
            if ep is not None and not ep.is_closing():
                ep.sendto(entry.data, entry.addr)
            assert self._loop is not None
            self._deadline(self._loop.time() + entry.wait, rid, entry)
            return
        self._pending.pop(rid, None)
        self._remember_expired(rid, entry.addr)
        entry.future.set_result(entry.why or NoAnswer())

    def _received(self, data: bytes, addr: Any) -> None:
        stats = self.stats
        stats.received += 1
        try:
            msg = decode_reply(data)
        except DecodeError as exc:
            stats.garbage += 1
            log.debug("dropped a malformed SNMP datagram from %s: %s", addr, exc)
            self._note(addr, str(exc), garbage=True)
            return
        if msg[0] != RESPONSE:
            stats.garbage += 1
            self._note(addr, f"a PDU of type 0x{msg[0]:02x} instead of a response", garbage=True)
            return
        rid = msg[1]
        entry = self._pending.get(rid)
        if entry is None:
            sent_to = self._expired.get(rid)
            if sent_to is not None and sent_to[0] == addr[0] and sent_to[1] == addr[1]:
                stats.late_replies += 1
                self._note(addr, f"a reply to request-id {rid}, which had timed out", late=True)
                return
            stats.unknown_request_id += 1
            self._note(addr, f"a reply to request-id {rid}, which we did not send")
            return
        want = entry.addr
        if addr[1] != want[1] or addr[0] != want[0]:
            stats.wrong_address += 1
            entry.noted().wrong_from = addr
            log.debug("dropped an SNMP reply from %s meant to come from %s", addr, want)
            return
        del self._pending[rid]
        if not entry.future.done():
            entry.future.set_result(msg)

    def _note(self, addr: Any, problem: str, garbage: bool = False, late: bool = False) -> None:
        """Remember on the device's pending request(s) what it sent that answered nothing,
        so its timeout can say so. Rare (only bad datagrams), so a scan is fine."""
        for entry in self._pending.values():
            if entry.addr[1] == addr[1] and entry.addr[0] == addr[0]:
                why = entry.noted()
                if garbage:
                    why.garbage += 1
                elif late:
                    why.late += 1
                else:
                    why.stray += 1
                why.problem = problem

    async def close(self) -> None:
        for rid, entry in list(self._pending.items()):
            self._drop(rid, entry)
            if not entry.future.done():
                entry.future.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadlines.clear()
        for ep in self._endpoints.values():
            ep.close()
        self._endpoints.clear()
        # Let the loop run the transports' close callbacks so their sockets are released.
        await asyncio.sleep(0)


def _family_of(addr: Address) -> int:
    return socket.AF_INET6 if ":" in addr[0] else socket.AF_INET


def _grow_rcvbuf(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < _RCVBUF:
        # Only with CAP_NET_ADMIN; without it the capped buffer above stays.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RCVBUF)


def family_of(addr: Address) -> int:
    return _family_of(addr)
