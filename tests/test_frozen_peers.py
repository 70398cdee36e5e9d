"""A peer that freezes mid-conversation never outlives a poll's timeout: for every collector
kind, the real scheduler on the real clock reports the poll as a timeout within timeout +
POLL_CANCEL_GRACE, the next poll comes on schedule, and the target answers again once thawed.

Real snmpd, upsd and sshd are frozen with SIGSTOP (sshd with the session processes it
forked); the TCP, HTTP and Modbus peers are servers of the test's own that, once frozen, stop
accepting (TCP: the accept queue is full, so a connect gets no answer) or accept, read the
request and send half of the reply before falling silent (HTTP, Modbus)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dutyd.agent.scheduler import POLL_CANCEL_GRACE, PollResult, Scheduler
from dutyd.collectors import COLLECTORS
from dutyd.collectors.base import CollectorContext
from dutyd.core.clock import SYSTEM_CLOCK
from tests.nut_fixtures import OL_VARS, UpsdPeer
from tests.snmp_fixtures import COMMUNITY, SnmpdPeer, sensor_values, switch_values, ups_values
from tests.ssh_fixtures import SshdServer, descendants

# Scheduling slack on a shared 2-core machine: how late a result may come beyond the bound.
SLACK = 0.4


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


async def check_frozen_peer(
    context: CollectorContext,
    target: dict[str, Any],
    freeze: Callable[[], None],
    thaw: Callable[[], None],
) -> None:
    """Poll `target` on the scheduler: an answer, then `freeze()`: two polls that end as
    timeouts within their bound and on their slots, then `thaw()`: an answer again."""
    collector = COLLECTORS[target["kind"]](
        COLLECTORS[target["kind"]].config_model.model_validate(target), context
    )
    interval, timeout = collector.config.interval, collector.config.timeout
    results: asyncio.Queue[PollResult] = asyncio.Queue()
    scheduler = Scheduler(results.put_nowait, clock=SYSTEM_CLOCK)

    async def next_result() -> PollResult:
        async with asyncio.timeout(interval + timeout + POLL_CANCEL_GRACE + 5):
            return await results.get()

    scheduler.start(collector)
    frozen = False
    try:
        first = await next_result()
        assert first.ok, (first.reason, first.message)
        freeze()
        frozen = True
        stuck = [await next_result(), await next_result()]
        for r in stuck:
            assert not r.ok and r.reason == "timeout", (r.reason, r.message)
            assert r.duration <= timeout + POLL_CANCEL_GRACE + SLACK, (r.duration, r.message)
            assert r.lag <= SLACK, r.lag  # started on its slot, not after the last poll
        gaps = [stuck[0].started_at - first.started_at, stuck[1].started_at - stuck[0].started_at]
        assert gaps == pytest.approx([interval, interval], abs=SLACK), gaps
        thaw()
        frozen = False
        for _ in range(4):
            again = await next_result()
            if again.ok:
                break
        assert again.ok, (again.reason, again.message)
    finally:
        if frozen:
            thaw()
        await scheduler.stop()


# ----- real daemons, SIGSTOP ---------------------------------------------------------------


async def test_frozen_snmpd(tmp_path: Path, context: CollectorContext) -> None:
    snmpd = SnmpdPeer(tmp_path, {**switch_values(), **ups_values(), **sensor_values()})
    try:
        target = {
            "name": "ups-snmp",
            "kind": "snmp",
            "address": snmpd.address,
            "community": COMMUNITY,
            "profiles": ["ups"],
            "interval": 1.5,
            "timeout": 1,
        }
        pid = snmpd.proc.pid
        await check_frozen_peer(
            context,
            target,
            lambda: os.kill(pid, signal.SIGSTOP),
            lambda: os.kill(pid, signal.SIGCONT),
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(snmpd.proc.pid, signal.SIGCONT)
        snmpd.stop()


async def test_frozen_upsd(tmp_path: Path, context: CollectorContext) -> None:
    upsd = UpsdPeer(tmp_path, {"rack": OL_VARS})
    try:
        upsd.start()
        assert upsd.upsd is not None
        pid = upsd.upsd.pid
        target = {
            "name": "ups-nut",
            "kind": "nut",
            "address": f"127.0.0.1:{upsd.port}",
            "ups": "rack",
            "interval": 1.5,
            "timeout": 1,
        }
        await check_frozen_peer(
            context,
            target,
            lambda: os.kill(pid, signal.SIGSTOP),
            lambda: os.kill(pid, signal.SIGCONT),
        )
    finally:
        if upsd.upsd is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(upsd.upsd.pid, signal.SIGCONT)
        upsd.stop()


async def test_frozen_sshd(tmp_path: Path, context: CollectorContext) -> None:
    sshd = SshdServer(tmp_path)
    sshd.start()
    sshd.write_known_hosts()
    assert sshd.proc is not None
    listener = sshd.proc.pid
    frozen: list[int] = []

    def freeze() -> None:
        # The listener and the session processes it forked for the kept connection.
        frozen[:] = [listener, *descendants(listener)]
        signal_all(frozen, signal.SIGSTOP)

    try:
        target = {
            "name": "srv",
            "kind": "ssh",
            "address": "127.0.0.1",
            "port": sshd.port,
            "username": sshd.user,
            "client_keys": [str(sshd.client_key_path)],
            "known_hosts": str(sshd.known_hosts_path),
            "trusted_hosts_file": str(tmp_path / "dutyd_known_hosts"),
            "interval": 3,
            "timeout": 2.5,
        }
        await check_frozen_peer(context, target, freeze, lambda: signal_all(frozen, signal.SIGCONT))
    finally:
        signal_all(frozen, signal.SIGCONT)
        sshd.kill_all()


# ----- servers of the test's own -------------------------------------------------------------


class StallingServer:
    """A loopback TCP server, one thread per connection running `answer(conn)`. Frozen, a
    connection that comes with a request gets `partial(reply)` and then silence (no more
    reading either) until thawed; with `stop_accepting`, frozen also means no accept at all,
    the accept queue filled so that a connect gets no SYN-ACK."""

    def __init__(self, reply: Callable[[bytes], bytes | None], stop_accepting: bool = False):
        self.reply = reply
        self.stop_accepting = stop_accepting
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)  # accept queue of one: two unaccepted connections fill it
        self.port = self.sock.getsockname()[1]
        self.frozen = threading.Event()
        self.thawed = threading.Event()
        self.closing = threading.Event()
        self._fillers: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, fn: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=fn, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        self.sock.settimeout(0.05)
        while not self.closing.is_set():
            if self.stop_accepting and self.frozen.is_set():
                self.thawed.wait(0.05)
                continue
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        buf = b""
        with conn:
            while not self.closing.is_set():
                try:
                    chunk = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                answer = self.reply(buf)
                if answer is None:
                    continue  # not a whole request yet
                buf = b""
                if self.frozen.is_set():
                    with contextlib.suppress(OSError):
                        conn.sendall(answer[: max(1, len(answer) // 2)])
                    self.thawed.wait(30)  # mid-reply: neither reads nor writes any more
                    return  # then hang up: the client reconnects
                try:
                    conn.sendall(answer)
                except OSError:
                    return

    def freeze(self) -> None:
        self.thawed.clear()
        self.frozen.set()
        if self.stop_accepting:
            # Fill the accept queue (a backlog of 0 holds one): later SYNs are dropped.
            for _ in range(3):
                filler = socket.socket()
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", self.port))
                self._fillers.append(filler)

    def thaw(self) -> None:
        for filler in self._fillers:
            filler.close()
        self._fillers.clear()
        self.frozen.clear()
        self.thawed.set()

    def close(self) -> None:
        self.thaw()
        self.closing.set()
        self.sock.close()
        for thread in self._threads:
            thread.join(2)


@pytest.fixture
def stalling() -> Iterator[Callable[..., StallingServer]]:
    servers: list[StallingServer] = []

    def make(reply: Callable[[bytes], bytes | None], **options: Any) -> StallingServer:
        server = StallingServer(reply, **options)
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.close()


def http_reply(request: bytes) -> bytes | None:
    if b"\r\n\r\n" not in request:
        return None
    body = b"all systems nominal\n"
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def modbus_reply(request: bytes) -> bytes | None:
    """Read holding/input registers (functions 3 and 4), every register 215."""
    if len(request) < 12:
        return None
    tid, _, _, unit, function, _, count = struct.unpack(">HHHBBHH", request[:12])
    data = struct.pack(f">{count}H", *([215] * count))
    pdu = bytes([function, len(data)]) + data
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


async def test_frozen_tcp_listener(context: CollectorContext, stalling) -> None:
    server = stalling(lambda _request: None, stop_accepting=True)
    target = {
        "name": "db-port",
        "kind": "tcp",
        "address": f"127.0.0.1:{server.port}",
        "interval": 1.5,
        "timeout": 1,
    }
    await check_frozen_peer(context, target, server.freeze, server.thaw)


async def test_frozen_http_server_mid_reply(context: CollectorContext, stalling) -> None:
    server = stalling(http_reply)
    target = {
        "name": "portal",
        "kind": "http",
        "address": f"http://127.0.0.1:{server.port}/",
        "interval": 1.5,
        "timeout": 1,
    }
    await check_frozen_peer(context, target, server.freeze, server.thaw)


async def test_frozen_modbus_device_mid_reply(context: CollectorContext, stalling) -> None:
    server = stalling(modbus_reply)
    target = {
        "name": "room-a-sensor",
        "kind": "modbus",
        "address": f"127.0.0.1:{server.port}",
        "interval": 1.5,
        "timeout": 1,
        "registers": [{"name": "room_temperature_celsius", "address": 0, "scale": 0.1}],
    }
    await check_frozen_peer(context, target, server.freeze, server.thaw)
