"""The HTTP front door (web/frontdoor.py) against a real `dutyd run` whose open-file limit is
1,024 (prlimit), flooded with 2,000 idle and slowloris connections from other loopback
addresses, while a collector polls and a page is sent (finding 2 of issue 24)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from dutyd.web.frontdoor import DoorLimits, fit_to_descriptors
from dutyd.web.server import HttpServer
from tests.daemon_fixtures import DaemonProcess
from tests.test_notify_chaos import Portal, daemon_config
from tests.test_notify_delivery import Receiver

ATTACKERS = [f"127.0.0.{n}" for n in range(9, 49)]  # 40 addresses, 50 connections each
CONNECTIONS = 2000


class Flood:
    """2,000 connections to `port`: half silent, half slowloris (a request line, then one
    header byte per round, never the blank line). Runs a bounded number of rounds on a
    thread; every socket is closed at the end."""

    def __init__(self, port: int, rounds: int, every: float) -> None:
        self.port = port
        self.rounds = rounds
        self.every = every
        self.sockets: list[socket.socket] = []
        self.opened = 0
        self.all_open = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join(60)

    def _run(self) -> None:
        try:
            for n in range(CONNECTIONS):
                s = socket.socket()
                s.setblocking(False)
                s.bind((ATTACKERS[n % len(ATTACKERS)], 0))
                s.connect_ex(("127.0.0.1", self.port))
                self.sockets.append(s)
                self.opened += 1
            self.all_open.set()
            time.sleep(0.3)
            slow = self.sockets[::2]
            for s in slow:
                with contextlib.suppress(OSError):
                    s.send(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            for _ in range(self.rounds):
                time.sleep(self.every)
                for s in slow:
                    with contextlib.suppress(OSError):
                        s.send(b"X")
        finally:
            for s in self.sockets:
                s.close()


class CountingPortal(Portal):
    """The switchable portal, counting the polls it answers."""

    def __init__(self) -> None:
        super().__init__()
        base = self.handler.do_GET
        self.count = 0

        def do_get(handler: object) -> None:
            self.count += 1
            base(handler)

        self.handler.do_GET = do_get


@pytest.fixture
def portal() -> Iterator[CountingPortal]:
    p = CountingPortal()
    yield p
    p.stop()


def healthz_seconds(port: int) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        assert resp.status == 200
        resp.read()
    return time.perf_counter() - t0


async def test_idle_and_slowloris_flood_does_not_blind_the_daemon(
    tmp_path: Path,
    portal: CountingPortal,
) -> None:
    receiver = Receiver()
    await receiver.start()
    cfg = daemon_config(portal, receiver, 1)
    # header_timeout shorter than the flood, so the slowloris connections are cut mid-way.
    cfg["http"] = {"header_timeout": "3s"}
    daemon = await asyncio.to_thread(
        DaemonProcess, tmp_path, cfg, wrapper=["prlimit", "--nofile=1024:1024", "--"]
    )
    try:
        await asyncio.to_thread(
            daemon.wait_until,
            lambda: daemon.metric_value("probe_success", target="app0") == 1.0,
            20,
            "the first good poll",
        )
        log_lines_before = len(daemon.peer.log().splitlines())
        polls_before, flood_started = portal.count, time.monotonic()
        flood = Flood(daemon.port, rounds=16, every=0.5)
        flood.start()
        assert await asyncio.to_thread(flood.all_open.wait, 30)
        await asyncio.sleep(1.0)  # the flood is in: every cap reached
        portal.set(500)  # the app fails: its page must go out through the flood
        latencies = []
        for _ in range(12):
            latencies.append(await asyncio.to_thread(healthz_seconds, daemon.port))
            await asyncio.sleep(0.25)
        await receiver.wait_for(1, 15)
        polls_during = portal.count - polls_before
        flood_seconds = time.monotonic() - flood_started
        await asyncio.to_thread(flood.join)
        assert receiver.received, f"no page arrived\n{daemon.peer.log()[-3000:]}"
        assert "app0 is failing" in receiver.received[0]["body"]["message"]
        print(
            f"flood: healthz max {max(latencies) * 1000:.1f} ms, {polls_during} polls in "
            f"{flood_seconds:.1f} s, "
            f"log +{len(daemon.peer.log().splitlines()) - log_lines_before} lines"
        )
        assert max(latencies) < 0.25, latencies
        # Polled every second through the flood (a second's slack at each end).
        assert polls_during >= flood_seconds - 2, (polls_during, flood_seconds)
        log = daemon.peer.log()
        assert "Too many open files" not in log, log[-3000:]
        new_lines = len(log.splitlines()) - log_lines_before
        assert len(log.splitlines()) < 100, log[-3000:]
        assert new_lines < 20, log[-3000:]
        # The door refused and cut connections; /metrics shows it.
        closed = await asyncio.to_thread(
            daemon.metric_value, "dutyd_http_connections_closed_total", reason="limit"
        )
        cut = await asyncio.to_thread(
            daemon.metric_value, "dutyd_http_connections_closed_total", reason="header_timeout"
        )
        assert closed and closed > 1000, closed
        assert cut and cut > 0, cut
        code, _ = await asyncio.to_thread(daemon.terminate, 10)
        assert code == 0
    finally:
        daemon.stop()
        await receiver.stop()


@contextlib.asynccontextmanager
async def serving(limits: DoorLimits) -> AsyncIterator[HttpServer]:
    server = HttpServer(CollectorRegistry(), lambda: (True, "ready"), "127.0.0.1", 0, limits=limits)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def connect(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        async with asyncio.timeout(within):
            return await reader.read(1) == b""
    except ConnectionError:  # reset, or a write after the close broke the pipe
        return True
    except TimeoutError:
        return False


async def get_healthz(port: int, source: str) -> bytes:
    reader, writer = await connect(port, source)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    async with asyncio.timeout(2):
        data = await reader.read()
    writer.close()
    return data


async def test_caps_per_client_and_in_total_keep_a_reserve_for_trusted_clients() -> None:
    limits = DoorLimits(max_connections=10, max_per_client=4, reserved=2)
    async with serving(limits) as server:
        port = server.port
        held = [await connect(port, "127.0.0.9") for _ in range(4)]
        await asyncio.sleep(0.1)
        # A fifth from the same address is closed at once.
        fifth, fifth_writer = await connect(port, "127.0.0.9")
        assert await closed_by_server(fifth, 1.0)
        fifth_writer.close()
        # Another address fills the general part (10 - 2 reserved).
        held += [await connect(port, "127.0.0.10") for _ in range(4)]
        await asyncio.sleep(0.1)
        assert server.door is not None and server.door.open == 8
        other, other_writer = await connect(port, "127.0.0.11")
        assert await closed_by_server(other, 1.0)
        other_writer.close()
        # The reserve still lets the supervisor in.
        assert b"200 OK" in await get_healthz(port, "127.0.0.1")
        assert server.door.refused == 2
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.2)
        assert server.door.open == 0
        assert b"200 OK" in await get_healthz(port, "127.0.0.11")


async def test_headers_must_be_complete_in_time_and_idle_connections_are_closed() -> None:
    limits = DoorLimits(header_timeout=0.5, idle_timeout=0.5)
    async with serving(limits) as server:
        silent, silent_writer = await connect(server.port, "127.0.0.9")
        slow, slow_writer = await connect(server.port, "127.0.0.9")
        slow_writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        t0 = time.monotonic()
        for _ in range(5):  # one header byte every 0.2 s: never done
            await asyncio.sleep(0.2)
            with contextlib.suppress(ConnectionError):
                slow_writer.write(b"X")
        assert await closed_by_server(silent, 1.0)
        assert await closed_by_server(slow, 1.0)
        assert time.monotonic() - t0 < 2.0
        silent_writer.close()
        slow_writer.close()
        # A kept-alive connection: one answer, then closed once idle.
        reader, writer = await connect(server.port, "127.0.0.9")
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        async with asyncio.timeout(2):
            assert b"200 OK" in await reader.readuntil(b"ok\n")
        assert await closed_by_server(reader, 2.0)
        writer.close()
        assert server.door is not None and server.door.open == 0


async def test_out_of_descriptors_accept_failures_are_logged_once(caplog) -> None:
    limits = DoorLimits(max_connections=1000, max_per_client=1000, reserved=0)
    async with serving(limits) as server:
        clients = [socket.socket() for _ in range(60)]
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        in_use = len(os.listdir("/proc/self/fd"))
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 10, hard))
            for s in clients:
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", server.port))
            await asyncio.sleep(2.0)  # four pauses of the listening socket, each failing again
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for s in clients:
            s.close()
        failing = [r for r in caplog.records if "accept failing" in r.getMessage()]
        assert len(failing) == 1, [r.getMessage() for r in failing]
        assert "Too many open files" in failing[0].getMessage()
        # Once descriptors are back the door accepts again.
        await asyncio.sleep(0.6)
        assert b"200 OK" in await get_healthz(server.port, "127.0.0.1")


def test_the_door_takes_at_most_a_quarter_of_the_open_file_limit() -> None:
    fitted = fit_to_descriptors(DoorLimits(max_connections=4096, reserved=16), 1024)
    assert fitted.max_connections == 256
    assert fitted.reserved == 16
    assert fit_to_descriptors(DoorLimits(max_connections=100), 1024).max_connections == 100


def test_dutyd_run_raises_its_soft_open_file_limit_to_the_hard_one() -> None:
    code = "from dutyd.core.fdlimit import raise_open_file_limit as r; print(r())"
    out = subprocess.run(
        ["prlimit", "--nofile=256:2048", "--", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "2048"
