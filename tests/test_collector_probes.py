"""TCP, HTTP(S) and ICMP probes against real servers on loopback (aiohttp, sockets, the kernel)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

from dutyd.agent.demo import DEVICES
from dutyd.agent.demo.web_app import WebAppDevice
from dutyd.agent.scheduler import Scheduler
from dutyd.collectors import COLLECTORS
from dutyd.collectors.base import CollectorContext, Readings
from dutyd.collectors.probe_http import (
    SESSION_KEY,
    HttpProbeCollector,
    HttpTarget,
    parse_status_ranges,
)
from dutyd.collectors.probe_icmp import (
    ECHO_REPLY,
    ECHO_REQUEST,
    IcmpProbeCollector,
    IcmpTarget,
    checksum,
    decode_icmp,
    encode_echo_request,
)
from dutyd.collectors.probe_tcp import TcpProbeCollector, TcpTarget, split_host_port
from dutyd.core.errors import (
    BadCredentials,
    BadResponse,
    CollectError,
    TargetTimeout,
    TargetUnreachable,
)
from dutyd.web.server import serve_on_loopback
from tests.peers import free_port, require_binary
from tests.tls import self_signed_cert

REPO = Path(__file__).resolve().parent.parent

# ----- helpers -----------------------------------------------------------------------------


def values(readings: Readings) -> dict[str, float]:
    return {s.name: s.value for s in readings.samples}


async def poll(collector: Any) -> dict[str, float]:
    readings = Readings({"target": collector.config.name}, time.time())
    await collector.collect(readings)
    return values(readings)


@dataclass
class Site:
    """What the test web server serves; tests change it between polls."""

    status: int = 200
    body: str = "<h1>Duty portal OK</h1>"
    port: int = 0
    hang: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[web.Request] = field(default_factory=list)

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


SITE = web.AppKey("site", Site)


async def _page(request: web.Request) -> web.StreamResponse:
    site: Site = request.app[SITE]
    site.requests.append(request)
    return web.Response(status=site.status, text=site.body, content_type="text/html")


async def _hang(request: web.Request) -> web.StreamResponse:
    # Released at teardown, so the server can stop; the probe has long given up by then.
    await request.app[SITE].hang.wait()
    return web.Response(text="too late")


async def _redirect(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/")


async def _endless(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    await resp.prepare(request)
    chunk = b"x" * 65536
    with contextlib.suppress(ConnectionError):
        for _ in range(1024):  # 64 MiB at most, far beyond the probe's 1 MiB cap
            await resp.write(chunk)
    return resp


async def _private(request: web.Request) -> web.StreamResponse:
    # The server side of basic auth, decoded independently of the probe's encoder.
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    try:
        pair = base64.b64decode(token, validate=True).decode() if scheme == "Basic" else ""
    except ValueError:
        pair = ""
    if pair != "duty:s3cret pass":
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="duty"'})
    return web.Response(text="private duty roster")


@contextlib.asynccontextmanager
async def serve(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Site]:
    site = Site()
    app = web.Application()
    app[SITE] = site
    app.router.add_get("/", _page)
    app.router.add_get("/hang", _hang)
    app.router.add_get("/old", _redirect)
    app.router.add_get("/endless", _endless)
    app.router.add_get("/private", _private)
    runner, site.port = await serve_on_loopback(app, ssl_context=ssl_context)
    try:
        yield site
    finally:
        site.hang.set()
        await runner.cleanup()


def http(address: str, **options: Any) -> HttpTarget:
    return HttpTarget(name="portal", kind="http", address=address, **options)


# ----- HTTP: status, text, timing ----------------------------------------------------------


async def test_http_status_change_200_500_200(context: CollectorContext) -> None:
    async with serve() as site:
        probe = HttpProbeCollector(http(site.url(), timeout=2), context)
        seen = []
        for status in (200, 500, 200):
            site.status = status
            v = await poll(probe)
            seen.append((v["http_status_code"], v["probe_success"]))
            assert 0 < v["http_duration_seconds"] < 2
            assert 0 < v["http_connect_seconds"] <= v["http_duration_seconds"]
            assert v["http_content_length_bytes"] == len(site.body)
        # The server answered 500: the target is up, the page is not.
        assert seen == [(200, 1.0), (500, 0.0), (200, 1.0)]
        assert len(site.requests) == 3
        assert site.requests[0].headers["User-Agent"] == "dutyd-probe"


async def test_http_expected_text_missing_is_probe_failure_not_down(
    context: CollectorContext,
) -> None:
    async with serve() as site:
        probe = HttpProbeCollector(http(site.url(), expected_text="Duty portal"), context)
        assert (await poll(probe))["http_expected_text_found"] == 1
        site.body = "<h1>Maintenance</h1>"
        v = await poll(probe)
        assert v["http_status_code"] == 200
        assert v["http_expected_text_found"] == 0
        assert v["probe_success"] == 0


async def test_http_expected_status_list(context: CollectorContext) -> None:
    async with serve() as site:
        site.status = 503
        probe = HttpProbeCollector(http(site.url(), expected_status=[200, "503"]), context)
        assert (await poll(probe))["probe_success"] == 1
        site.status = 302  # in the default 200-399, not in this list
        assert (await poll(probe))["probe_success"] == 0


async def test_http_hang_is_target_timeout_within_the_timeout(context: CollectorContext) -> None:
    async with serve() as site:
        probe = HttpProbeCollector(http(site.url("/hang"), timeout=0.5), context)
        started = time.monotonic()
        with pytest.raises(TargetTimeout, match=r"GET http://127\.0\.0\.1:\d+/hang: no complete"):
            await poll(probe)
        assert time.monotonic() - started < 0.6


async def test_http_hang_through_the_scheduler_keeps_the_probe_message(
    context: CollectorContext,
) -> None:
    async with serve() as site:
        probe = HttpProbeCollector(http(site.url("/hang"), timeout=0.5), context)
        result = await Scheduler(lambda _r: None).poll_once(probe)
        assert not result.ok
        assert result.reason == "timeout"
        assert "/hang" in result.message  # ours, not the scheduler's generic one
        assert [s.name for s in result.samples] == ["target_up"]


async def test_http_refused_port_is_unreachable(context: CollectorContext) -> None:
    port = free_port()
    probe = HttpProbeCollector(http(f"http://127.0.0.1:{port}/"), context)
    with pytest.raises(TargetUnreachable, match=f"connection to 127.0.0.1:{port} refused"):
        await poll(probe)


async def test_http_server_closing_without_answer_is_bad_response(
    context: CollectorContext,
) -> None:
    async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()  # the request line arrives, then the "server" hangs up
        writer.close()

    server = await asyncio.start_server(slam, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        probe = HttpProbeCollector(http(f"http://127.0.0.1:{port}/"), context)
        with pytest.raises(BadResponse, match=f"127.0.0.1:{port} closed the connection"):
            await poll(probe)
    finally:
        server.close()
        await server.wait_closed()


async def test_http_body_read_is_capped(context: CollectorContext) -> None:
    async with serve() as site:
        probe = HttpProbeCollector(http(site.url("/endless"), timeout=5), context)
        v = await poll(probe)
        assert v["http_content_length_bytes"] == 1024 * 1024
        small = HttpProbeCollector(http(site.url("/endless"), max_body_bytes=1000), context)
        assert (await poll(small))["http_content_length_bytes"] == 1000


async def test_http_head_and_redirects(context: CollectorContext) -> None:
    async with serve() as site:
        head = HttpProbeCollector(http(site.url(), method="HEAD"), context)
        v = await poll(head)
        assert v["http_status_code"] == 200
        assert "http_content_changed" not in v
        assert site.requests[-1].method == "HEAD"

        follow = HttpProbeCollector(http(site.url("/old")), context)
        assert (await poll(follow))["http_status_code"] == 200
        stay = HttpProbeCollector(http(site.url("/old"), follow_redirects=False), context)
        v = await poll(stay)
        assert v["http_status_code"] == 302
        assert v["probe_success"] == 1  # 302 is within the default 200-399


async def test_http_basic_auth_from_file_and_wrong_password(
    context: CollectorContext, tmp_path: Path
) -> None:
    secret = tmp_path / "portal.pass"
    secret.write_text("s3cret pass\n")
    async with serve() as site:
        good = http(site.url("/private"), username="duty", password_file=str(secret))
        v = await poll(HttpProbeCollector(good, context))
        assert (v["http_status_code"], v["probe_success"]) == (200, 1)
        bad = http(site.url("/private"), username="duty", password="wrong")
        v = await poll(HttpProbeCollector(bad, context))
        assert (v["http_status_code"], v["probe_success"]) == (401, 0)
        assert "wrong" not in repr(bad)


async def _bearer(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Authorization") != "Bearer duty-token-42":
        return web.Response(status=401)
    return web.Response(text=f"roster {request.headers.get('X-Site', '')}")


async def test_http_bearer_token_from_env_and_secret_headers(
    context: CollectorContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORTAL_TOKEN", "duty-token-42\n")
    app = web.Application()
    app.router.add_get("/", _bearer)
    runner, port = await serve_on_loopback(app)
    try:
        url = f"http://127.0.0.1:{port}/"
        good = http(url, bearer_token_env="PORTAL_TOKEN", headers={"X-Site": "hq"})
        v = await poll(HttpProbeCollector(good, context))
        assert (v["http_status_code"], v["probe_success"]) == (200, 1)
        bad = http(url, headers={"Authorization": "Bearer wrong-token"})
        v = await poll(HttpProbeCollector(bad, context))
        assert v["http_status_code"] == 401
        # Header values and tokens are secrets: never in the config's repr or dump.
        shown = repr(good) + repr(bad) + str(bad.model_dump())
        assert "duty-token-42" not in shown and "wrong-token" not in shown
        with pytest.raises(ValueError, match="one of username/password, a bearer token"):
            http(url, username="duty", password="x", bearer_token="y")
    finally:
        await runner.cleanup()


async def test_http_probes_share_one_session(context: CollectorContext) -> None:
    async with serve() as site:
        a = HttpProbeCollector(http(site.url()), context)
        b = HttpProbeCollector(http(site.url("/old")), context)
        await poll(a)
        session = context.shared(SESSION_KEY, lambda: None)
        await poll(b)
        assert context.shared(SESSION_KEY, lambda: None) is session
        assert not session.closed


# ----- HTTP: content integrity -------------------------------------------------------------


async def test_http_body_change_is_flagged_until_accepted(context: CollectorContext) -> None:
    async with serve() as site:
        probe = HttpProbeCollector(http(site.url()), context)
        assert (await poll(probe))["http_content_changed"] == 0  # first page: the baseline
        original = probe.baseline
        assert original == hashlib.sha256(site.body.encode()).hexdigest()

        site.body = "<h1>Duty portal OK</h1><a href='http://198.51.100.7/x.exe'>update</a>"
        v = await poll(probe)
        assert v["http_content_changed"] == 1
        assert v["probe_success"] == 1  # the page is up; it is just not the page we know
        assert (await poll(probe))["http_content_changed"] == 1  # stays raised

        # A 500 error page is not compared with the page, but the change stays visible.
        site.status = 500
        assert (await poll(probe))["http_content_changed"] == 1
        site.status = 200

        assert probe.accept_current_content() == probe.fingerprint != original
        assert (await poll(probe))["http_content_changed"] == 0

        site.body = "<h1>Duty portal OK</h1>"  # the old page differs from the accepted one
        assert (await poll(probe))["http_content_changed"] == 1
        # No sample label carries the fingerprint.
        readings = Readings({}, time.time())
        await probe.collect(readings)
        assert all(len(v) < 40 for s in readings.samples for _, v in s.labels)


async def test_http_content_returns_to_baseline_clears_the_flag(
    context: CollectorContext,
) -> None:
    async with serve() as site:
        probe = HttpProbeCollector(http(site.url()), context)
        await poll(probe)
        site.body = "defaced"
        assert (await poll(probe))["http_content_changed"] == 1
        site.body = "<h1>Duty portal OK</h1>"
        assert (await poll(probe))["http_content_changed"] == 0


async def test_http_ignore_patterns_and_expected_sha256(context: CollectorContext) -> None:
    async with serve() as site:
        plain = HttpProbeCollector(http(site.url()), context)
        stripped = HttpProbeCollector(
            http(site.url(), ignore_patterns=[r"<p class=\"t\">[^<]*</p>"]), context
        )
        for probe in (plain, stripped):
            site.body = '<h1>Duty</h1><p class="t">09:00:01</p>'
            await poll(probe)
        site.body = '<h1>Duty</h1><p class="t">09:00:03</p>'
        assert (await poll(plain))["http_content_changed"] == 1
        assert (await poll(stripped))["http_content_changed"] == 0
        assert stripped.fingerprint == hashlib.sha256(b"<h1>Duty</h1>").hexdigest()

        known = hashlib.sha256(site.body.encode()).hexdigest()
        pinned = HttpProbeCollector(http(site.url(), expected_sha256=known.upper()), context)
        assert (await poll(pinned))["http_content_changed"] == 0
        wrong = HttpProbeCollector(http(site.url(), expected_sha256="0" * 64), context)
        assert (await poll(wrong))["http_content_changed"] == 1  # from the first poll on


async def test_http_first_page_without_expected_text_is_not_the_baseline(
    context: CollectorContext,
) -> None:
    async with serve() as site:
        site.body = "hacked"
        probe = HttpProbeCollector(http(site.url(), expected_text="Duty portal"), context)
        v = await poll(probe)
        assert "http_content_changed" not in v and probe.baseline is None
        site.body = "Duty portal OK"
        assert (await poll(probe))["http_content_changed"] == 0
        assert probe.baseline == hashlib.sha256(b"Duty portal OK").hexdigest()


# ----- HTTPS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, valid for 10 days from now."""
    return self_signed_cert(
        tmp_path_factory.mktemp("tls"), 10, "dutyd test portal", ("cert.pem", "key.pem")
    )


def server_tls(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*tls_files)
    return ctx


async def test_https_with_ca_file_reads_certificate_expiry(
    context: CollectorContext, tls_files: tuple[Path, Path]
) -> None:
    async with serve(server_tls(tls_files)) as site:
        probe = HttpProbeCollector(
            http(site.url(scheme="https"), ca_file=str(tls_files[0])), context
        )
        v = await poll(probe)
        assert v["probe_success"] == 1
        assert 9.99 * 86400 < v["http_tls_cert_expiry_seconds"] <= 10.0 * 86400
        assert v["http_connect_seconds"] > 0  # includes the TLS handshake
        again = await poll(probe)
        assert again["http_tls_cert_expiry_seconds"] <= v["http_tls_cert_expiry_seconds"]


async def test_https_untrusted_certificate_is_a_clear_error(
    context: CollectorContext, tls_files: tuple[Path, Path]
) -> None:
    async with serve(server_tls(tls_files)) as site:
        probe = HttpProbeCollector(http(site.url(scheme="https")), context)
        with pytest.raises(BadCredentials) as caught:
            await poll(probe)
        msg = caught.value.message
        assert "certificate verify failed" in msg
        assert f"127.0.0.1:{site.port}" in msg
        assert "ca_file" in msg

        unverified = HttpProbeCollector(http(site.url(scheme="https"), verify=False), context)
        v = await poll(unverified)
        assert v["probe_success"] == 1
        assert 9.99 * 86400 < v["http_tls_cert_expiry_seconds"] <= 10.0 * 86400


async def test_plain_http_to_a_tls_port_is_a_bad_response(
    context: CollectorContext, tls_files: tuple[Path, Path]
) -> None:
    async with serve(server_tls(tls_files)) as site:
        probe = HttpProbeCollector(http(site.url(), timeout=2), context)
        with pytest.raises(CollectError) as caught:
            await poll(probe)
        assert f"127.0.0.1:{site.port}" in caught.value.message


# ----- HTTP config -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"address": "ftp://127.0.0.1/"}, "http:// or https://"),
        ({"method": "HEAD", "expected_text": "x"}, "HEAD reads no body"),
        ({"expected_status": ["2yy"]}, "is not a status"),
        ({"expected_status": [700]}, "within HTTP statuses"),
        ({"ignore_patterns": ["("]}, "not a valid regex"),
        ({"expected_sha256": "abc"}, "64 hex digits"),
        ({"password": "x"}, "a password needs a username"),
        ({"username": "u", "password": "x", "password_env": "HOME"}, "only one of"),
        ({"ca_file": "/nonexistent/ca.pem"}, "does not exist"),
        ({"colour": "blue"}, "Extra inputs are not permitted"),
        ({"headers": {"X Token": "v"}}, "not an HTTP header name"),
        ({"headers": {"X-Token": "s3cr3t\r\nInjected: 1"}}, "holds a control character"),
    ],
)
def test_http_config_refuses(options: dict[str, Any], message: str) -> None:
    raw = {"name": "p", "kind": "http", "address": "http://127.0.0.1/", **options}
    with pytest.raises(ValidationError, match=message):
        HttpTarget.model_validate(raw)


def test_status_ranges() -> None:
    assert parse_status_ranges([200, "301-302", "5xx", "404"]) == (
        (200, 200),
        (301, 302),
        (500, 599),
        (404, 404),
    )


# ----- TCP ---------------------------------------------------------------------------------


def tcp(address: str, **options: Any) -> TcpTarget:
    return TcpTarget(name="port", kind="tcp", address=address, **options)


async def test_tcp_connect_success_and_refused(context: CollectorContext) -> None:
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        v = await poll(TcpProbeCollector(tcp(f"127.0.0.1:{port}"), context))
        assert v["probe_success"] == 1
        assert 0 < v["probe_connect_seconds"] < 1
        v = await poll(TcpProbeCollector(tcp("127.0.0.1", port=port), context))
        assert v["probe_success"] == 1
    finally:
        server.close()
        await server.wait_closed()
    with pytest.raises(TargetUnreachable, match=f"127.0.0.1:{port} refused"):
        await poll(TcpProbeCollector(tcp(f"127.0.0.1:{port}"), context))


async def test_tcp_tries_every_address_of_a_name(context: CollectorContext) -> None:
    # localhost may resolve to ::1 first; the service listens on 127.0.0.1 only.
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        v = await poll(TcpProbeCollector(tcp(f"localhost:{port}"), context))
        assert v["probe_success"] == 1
    finally:
        server.close()
        await server.wait_closed()


async def test_tcp_connect_timeout_on_a_full_backlog(context: CollectorContext) -> None:
    # A listener that never accepts, its queue filled by one connection: Linux then drops
    # further SYNs, so the next connect hears nothing (a loopback stand-in for a firewall DROP).
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=1)
    try:
        probe = TcpProbeCollector(tcp(f"127.0.0.1:{port}", timeout=0.5), context)
        started = time.monotonic()
        with pytest.raises(TargetTimeout, match=f"TCP connect to 127.0.0.1:{port} got no answer"):
            await poll(probe)
        assert 0.4 < time.monotonic() - started < 0.6
    finally:
        filler.close()
        listener.close()


def test_tcp_config() -> None:
    assert split_host_port("[::1]:22") == ("::1", 22)
    assert split_host_port("db1:5432") == ("db1", 5432)
    assert tcp("127.0.0.1", port=22).host_port == ("127.0.0.1", 22)
    for bad in ("127.0.0.1", "127.0.0.1:0", "127.0.0.1:http"):
        with pytest.raises(ValidationError):
            tcp(bad)
    with pytest.raises(ValidationError, match="give one"):
        tcp("127.0.0.1:22", port=23)


# ----- ICMP --------------------------------------------------------------------------------


def test_icmp_codec() -> None:
    # RFC 1071's worked example: the one's complement sum of these words is 0xddf2.
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2
    packet = encode_echo_request(0x1234, 7, b"payload!")
    assert packet[0] == ECHO_REQUEST and checksum(packet) == 0
    # The reply a host sends back: same body, type 0, checksum recomputed; behind an IP header.
    reply = bytearray(packet)
    reply[0], reply[2:4] = ECHO_REPLY, b"\x00\x00"
    reply[2:4] = checksum(bytes(reply)).to_bytes(2, "big")
    ip_header = bytes([0x45]) + bytes(19)
    msg = decode_icmp(ip_header + bytes(reply), with_ip_header=True)
    assert msg is not None
    assert (msg.type, msg.ident, msg.seq, msg.payload) == (ECHO_REPLY, 0x1234, 7, b"payload!")
    assert decode_icmp(bytes(reply), with_ip_header=False) == msg
    assert decode_icmp(packet, with_ip_header=False) is None  # a request is not a reply
    reply[-1] ^= 0xFF
    assert decode_icmp(bytes(reply), with_ip_header=False) is None  # bad checksum
    # "Host unreachable" quoting our request.
    error = bytes([3, 1, 0, 0, 0, 0, 0, 0]) + ip_header + packet[:8]
    err = decode_icmp(error, with_ip_header=False)
    assert err is not None and err.error == "host unreachable" and err.seq == 7


def icmp(**options: Any) -> IcmpTarget:
    return IcmpTarget(name="host", kind="icmp", address="127.0.0.1", **options)


async def test_icmp_echo_to_loopback(context: CollectorContext) -> None:
    probe = IcmpProbeCollector(icmp(count=3, packet_interval=0.05, timeout=1), context)
    readings = Readings({}, time.time())
    await probe.collect(readings)
    if probe.mode == "tcp":
        pytest.fail("this host may not open an ICMP socket: run as root or widen ping_group_range")
    assert probe.mode in ("raw", "dgram")
    assert {s.label("method") for s in readings.samples} == {"icmp"}
    v = values(readings)
    assert v["probe_success"] == 1
    assert v["probe_packet_loss_ratio"] == 0
    assert 0 < v["probe_rtt_seconds"] < 0.1
    # Several targets share the one socket; their replies do not get mixed up.
    many = [IcmpProbeCollector(icmp(count=2, packet_interval=0.01), context) for _ in range(20)]
    results = await asyncio.gather(*(poll(p) for p in many))
    assert all(r["probe_packet_loss_ratio"] == 0 for r in results)


async def test_icmp_burst_of_many_targets_loses_no_reply(context: CollectorContext) -> None:
    # 400 targets x 3 echoes at once: with the default socket buffer (~200 KiB) the kernel
    # dropped replies here, which read as packet loss on healthy hosts.
    many = [
        IcmpProbeCollector(icmp(count=3, packet_interval=0.001, timeout=3), context)
        for _ in range(400)
    ]
    results = await asyncio.gather(*(poll(p) for p in many))
    assert [r["probe_packet_loss_ratio"] for r in results] == [0.0] * 400


async def test_icmp_method_tcp_counts_a_refused_port_as_an_answer(
    context: CollectorContext,
) -> None:
    closed = free_port()
    probe = IcmpProbeCollector(
        icmp(method="tcp", fallback_port=closed, count=2, packet_interval=0.05), context
    )
    readings = Readings({}, time.time())
    await probe.collect(readings)
    assert {s.label("method") for s in readings.samples} == {"tcp"}
    v = values(readings)
    assert v["probe_success"] == 1 and v["probe_packet_loss_ratio"] == 0
    assert v["probe_rtt_seconds"] > 0


def test_icmp_config() -> None:
    with pytest.raises(ValidationError, match="IPv4 only"):
        IcmpTarget(name="h", kind="icmp", address="::1")
    with pytest.raises(ValidationError, match="no port"):
        IcmpTarget(name="h", kind="icmp", address="10.0.0.1:22")
    with pytest.raises(ValidationError, match="needs fallback_port"):
        icmp(method="tcp")
    with pytest.raises(ValidationError, match="do not fit in the timeout"):
        icmp(count=10, packet_interval=1, timeout=5)


# A probe run in a fresh network namespace (its own loopback and ICMP sysctls), optionally as
# `nobody`: the only way to exercise the unprivileged socket, the TCP fallback and total loss
# on a machine where these tests run as root.
_NETNS_PROBE = """
import asyncio, json, os, sys, time
from dutyd.core.errors import CollectError
from dutyd.collectors.base import CollectorContext, Readings
from dutyd.collectors.probe_icmp import IcmpProbeCollector, IcmpTarget
if sys.argv[2] == "nobody":
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
async def main():
    ctx = CollectorContext()
    probe = IcmpProbeCollector(IcmpTarget.model_validate(json.loads(sys.argv[1])), ctx)
    readings = Readings({}, time.time())
    try:
        await probe.collect(readings)
        out = {"mode": probe.mode, "samples": [[s.name, dict(s.labels), s.value]
                                                  for s in readings.samples]}
    except CollectError as exc:
        out = {"mode": probe.mode, "error": type(exc).__name__, "message": exc.message}
    await ctx.close()
    print(json.dumps(out))
asyncio.run(main())
"""


def in_netns(
    config: dict[str, Any], user: str = "root", sysctls: dict[str, str] | None = None
) -> dict[str, Any]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    unshare, ip = require_binary("unshare"), require_binary("ip")
    setup = [f"{ip} link set lo up"]
    for key, value in (sysctls or {}).items():
        setup.append(f"echo '{value}' > /proc/sys/net/ipv4/{key}")
    script = " && ".join([*setup, 'exec "$0" -c "$1" "$2" "$3"'])
    argv = [unshare, "--net", "sh", "-c", script, sys.executable, _NETNS_PROBE]
    argv += [json.dumps({"name": "h", "kind": "icmp", "address": "127.0.0.1", **config}), user]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=30, cwd=REPO, env={**os.environ}
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_icmp_unprivileged_datagram_socket() -> None:
    out = in_netns(
        {"count": 3, "packet_interval": 0.05, "timeout": 1},
        user="nobody",
        sysctls={"ping_group_range": "0 2147483647"},
    )
    assert out["mode"] == "dgram", out
    v = {name: value for name, _labels, value in out["samples"]}
    assert v["probe_success"] == 1 and v["probe_packet_loss_ratio"] == 0
    assert all(labels["method"] == "icmp" for _n, labels, _v in out["samples"])


def test_icmp_falls_back_to_tcp_without_icmp_permission() -> None:
    config = {"fallback_port": free_port(), "count": 2, "packet_interval": 0.05}
    out = in_netns(config, user="nobody", sysctls={"ping_group_range": "1 0"})
    assert out["mode"] == "tcp", out
    assert all(labels["method"] == "tcp" for _n, labels, _v in out["samples"])
    assert {n: v for n, _l, v in out["samples"]}["probe_success"] == 1

    out = in_netns({"count": 2}, user="nobody", sysctls={"ping_group_range": "1 0"})
    assert out["error"] == "CollectError"
    assert "not allowed to open an ICMP socket" in out["message"]
    assert "fallback_port" in out["message"]


def test_icmp_no_reply_at_all_is_target_timeout() -> None:
    out = in_netns(
        {"count": 2, "packet_interval": 0.05, "timeout": 0.5},
        sysctls={"icmp_echo_ignore_all": "1"},
    )
    assert out["error"] == "TargetTimeout", out
    assert "no answer to 2 ICMP echo from 127.0.0.1" in out["message"]


# ----- registry and demo device ------------------------------------------------------------


def test_registered() -> None:
    assert COLLECTORS["tcp"] is TcpProbeCollector
    assert COLLECTORS["http"] is HttpProbeCollector
    assert COLLECTORS["icmp"] is IcmpProbeCollector
    assert WebAppDevice in DEVICES


async def test_demo_portal_fails_then_is_defaced(context: CollectorContext) -> None:
    device = WebAppDevice(speed=10)
    await device.start()
    try:
        (entry,) = device.targets()
        target = HttpTarget.model_validate(entry)
        assert target.labels == {"site": "demo", "role": "application"}
        assert (target.interval, target.timeout) == (2, 1)
        probe = HttpProbeCollector(target, context)
        timeline = []
        for t in (0, 30, 70, 95, 110, 125, 140):  # scenario seconds
            device.advance(t / device.speed)  # wall seconds at speed 10
            v = await poll(probe)
            timeline.append(
                (t, v["http_status_code"], v["probe_success"], v["http_content_changed"])
            )
            await asyncio.sleep(1.05 if t == 95 else 0)  # the page's clock moves on
        assert timeline == [
            (0, 200, 1, 0),
            (30, 200, 1, 0),
            (70, 500, 0, 0),
            (95, 200, 1, 0),  # a new generation time, ignored by the fingerprint
            (110, 200, 1, 1),  # defaced: the text check passes, the fingerprint does not
            (125, 200, 1, 1),
            (140, 200, 1, 0),
        ]
        assert any("defaced" in line for line in device.story())
    finally:
        await device.stop()


# ----- hostile pages (issue 12) -----------------------------------------------------------------


async def test_http_hostile_charset_is_read_as_utf8_without_stalling_the_loop(
    context: CollectorContext,
) -> None:
    """A page naming `charset=punycode` (a Python codec whose decoder is worse than quadratic:
    8.2 s for 256 KB) must be read as UTF-8, and the event loop must keep running."""
    # Punycode inserts each decoded character into a list: quadratic in the part after the
    # last '-'.
    body = "Duty portal OK -" + "a" * 256 * 1024

    async def hostile(_request: web.Request) -> web.Response:
        return web.Response(
            body=body.encode(), headers={"Content-Type": "text/html; charset=punycode"}
        )

    app = web.Application()
    app.router.add_get("/", hostile)
    runner, port = await serve_on_loopback(app)
    try:
        probe = HttpProbeCollector(
            http(f"http://127.0.0.1:{port}/", expected_text="Duty portal OK"), context
        )
        lag = 0.0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal lag
            loop = asyncio.get_running_loop()
            while not done.is_set():
                before = loop.time()
                await asyncio.sleep(0.01)
                lag = max(lag, loop.time() - before - 0.01)

        task = asyncio.create_task(ticker())
        try:
            v = await poll(probe)
        finally:
            done.set()
            await task
        assert lag < 0.5, f"the event loop stalled {lag:.2f}s"
        assert v["http_expected_text_found"] == 1 and v["probe_success"] == 1
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("declared", "codec"),
    [
        ("punycode", "utf-8"),
        ("idna", "utf-8"),
        ("rot13", "utf-8"),
        ("base64", "utf-8"),
        ("zlib", "utf-8"),
        ("uu", "utf-8"),
        ("no-such-charset", "utf-8"),
        ("UTF-8", "utf-8"),
        ("latin1", "iso8859-1"),
        ("windows-1252", "cp1252"),
        ("GBK", "gbk"),
        ("gb18030", "gb18030"),
        ("Big5", "big5"),
        ("Shift_JIS", "shift_jis"),
        ("euc-kr", "euc_kr"),
        ("koi8-r", "koi8-r"),
    ],
)
def test_http_only_real_text_charsets_are_used(declared: str, codec: str) -> None:
    from dutyd.collectors.probe_http.collector import text_charset

    assert text_charset(declared) == codec


async def test_http_configured_headers_do_not_follow_a_redirect_to_another_origin(
    context: CollectorContext,
) -> None:
    # Two real loopback servers on different ports: "/away" on the first redirects to the
    # second (another origin), "/here" to the first's own "/page" (same origin).
    seen: dict[str, list[dict[str, str]]] = {"first": [], "second": []}

    def recorder(name: str) -> Any:
        async def page(request: web.Request) -> web.StreamResponse:
            seen[name].append(dict(request.headers))
            return web.Response(text="page")

        return page

    second = web.Application()
    second.router.add_get("/page", recorder("second"))
    second_runner, second_port = await serve_on_loopback(second)
    first = web.Application()
    first.router.add_get("/page", recorder("first"))

    async def away(_request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"http://127.0.0.1:{second_port}/page")

    async def here(_request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/page")

    first.router.add_get("/away", away)
    first.router.add_get("/here", here)
    first_runner, first_port = await serve_on_loopback(first)
    try:
        secret = {"headers": {"X-Api-Key": "k3y-s3cret"}, "bearer_token": "t0ken"}
        off = HttpProbeCollector(http(f"http://127.0.0.1:{first_port}/away", **secret), context)
        assert (await poll(off))["http_status_code"] == 200
        assert len(seen["second"]) == 1
        assert "X-Api-Key" not in seen["second"][0]
        assert "Authorization" not in seen["second"][0]

        on = HttpProbeCollector(http(f"http://127.0.0.1:{first_port}/here", **secret), context)
        assert (await poll(on))["http_status_code"] == 200
        assert len(seen["first"]) == 1
        assert seen["first"][0]["X-Api-Key"] == "k3y-s3cret"
        assert seen["first"][0]["Authorization"] == "Bearer t0ken"
    finally:
        await first_runner.cleanup()
        await second_runner.cleanup()
