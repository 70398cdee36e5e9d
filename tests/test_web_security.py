"""The HTTP face against a hostile browser or client (issue: nothing leaks from the API):
DNS rebinding (Host check), security headers, the token beside basic auth, deep JSON and
out-of-range times. Against the real daemon on a loopback port."""

from __future__ import annotations

import asyncio
import base64
import socket
import time

import aiohttp
import bcrypt

from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.web.server import HttpServer
from tests.api_fixtures import READ, READ_TOKEN, TOKEN, Portal, Running, config


async def test_an_unexpected_host_header_is_refused(running: Running) -> None:
    """A page on attacker.example that rebinds its name to 127.0.0.1 sends its own Host."""
    for host in ("attacker.example", "attacker.example:8646", "192.0.2.7"):
        for path in ("/api/v1/log", "/metrics", "/status"):
            async with running.http.get(running.base + path, headers={**READ, "Host": host}) as r:
                assert r.status == 421, (host, path)
                assert "allowed_hosts" in await r.text()
    for host in ("localhost", f"127.0.0.1:{running.daemon.http.port}", "[::1]:8646"):
        status, _ = await running.get("/api/v1/log", headers={**READ, "Host": host})
        assert status == 200, host


async def test_a_wildcard_listener_refuses_a_rebound_host_even_with_open_loopback_reads(
    tmp_path,
) -> None:
    """On 0.0.0.0 a rebinding page still reaches dutyd on 127.0.0.1 (and sends its own Host):
    the open loopback reads and /metrics must not answer it. IP literals and this host's own
    names cannot be rebound and are served."""
    portal = Portal()
    await portal.start()
    settings = config(
        tmp_path,
        portal.url,
        http={"listen": "0.0.0.0", "port": 0},
        api={"token": TOKEN, "read_token": READ_TOKEN, "open_loopback_reads": True},
    )
    daemon = Daemon(load_from_dict(settings, "<test>"))
    await daemon.start()
    try:
        port = daemon.http.port
        base = f"http://127.0.0.1:{port}"  # only ever contacted on loopback
        async with aiohttp.ClientSession() as http:
            for host in ("attacker.example", f"attacker.example:{port}", "attacker.example."):
                for path in ("/api/v1/log", "/metrics", "/api/v1/status"):
                    async with http.get(base + path, headers={"Host": host}) as r:
                        assert r.status == 421, (host, path, r.status)
                        assert "allowed_hosts" in await r.text()
            served = [f"127.0.0.1:{port}", "localhost", "192.0.2.7", "[2001:db8::7]:8646"]
            served.append(socket.gethostname())
            for host in served:
                for path in ("/api/v1/log", "/metrics"):
                    async with http.get(base + path, headers={"Host": host}) as r:
                        assert r.status == 200, (host, path, r.status)
    finally:
        await daemon.stop()
        await portal.stop()


async def test_allowed_hosts_name_a_reverse_proxy(tmp_path) -> None:
    server = HttpServer(
        registry=None,  # type: ignore[arg-type]
        ready=lambda: (True, ""),
        listen="127.0.0.1",
        allowed_hosts=["duty.example.org"],
    )
    assert server.host_allowed("duty.example.org")
    assert server.host_allowed("DUTY.example.org:443")
    assert server.host_allowed("localhost:8646")
    assert not server.host_allowed("evil.example.org")
    # A public listener is no longer open to any Host: a rebinding page reaches it on
    # loopback as well. Its IP literals and the machine's own name are served; an alias has
    # to be named.
    wildcard = HttpServer(None, lambda: (True, ""), listen="0.0.0.0")  # type: ignore[arg-type]
    assert not wildcard.host_allowed("monitor-7.corp")
    assert wildcard.host_allowed("10.20.0.5:8646")
    assert wildcard.host_allowed(socket.gethostname())
    aliased = HttpServer(
        None,  # type: ignore[arg-type]
        lambda: (True, ""),
        listen="::",
        allowed_hosts=["monitor-7.corp"],
    )
    assert aliased.host_allowed("monitor-7.corp:8646")
    assert aliased.host_allowed("[fd00::5]:8646")
    assert not aliased.host_allowed("attacker.example")


async def test_a_slow_resolver_does_not_hold_up_start_up(monkeypatch, caplog) -> None:
    """The FQDN may need DNS; a broken resolver must not keep the daemon from starting."""
    from dutyd.web import server as server_module

    monkeypatch.setattr(server_module, "_FQDN_TIMEOUT", 0.05)
    monkeypatch.setattr(server_module.socket, "getfqdn", lambda: time.sleep(0.5) or "late")
    server = HttpServer(None, lambda: (True, ""), listen="0.0.0.0")  # type: ignore[arg-type]
    started = time.monotonic()
    await server.start()
    try:
        assert time.monotonic() - started < 0.4
        assert "no FQDN" in caplog.text
        assert server.host_allowed(socket.gethostname())
        assert not server.host_allowed("late")
    finally:
        await server.stop()


async def test_the_names_dutyd_gives_out_are_served(tmp_path) -> None:
    """The ack links' host and the cluster address (a compose service name, which is not the
    container's hostname) come back as Host: they must not get 421 on a public listener."""
    settings = config(
        tmp_path,
        "http://127.0.0.1:9/",
        http={"listen": "0.0.0.0", "port": 0},
        notify={"ack_secret": "s", "ack_base_url": "https://duty.example.org/dutyd"},
        cluster={"address": "http://dutyd-a:8646"},
    )
    server = Daemon(load_from_dict(settings, "<test>")).http
    assert server.host_allowed("duty.example.org")
    assert server.host_allowed("dutyd-a:8646")
    assert not server.host_allowed("dutyd-b:8646")


async def test_security_headers(running: Running) -> None:
    async with running.http.get(running.base + "/status") as r:
        assert r.status == 200
        assert r.headers["Content-Security-Policy"] == "default-src 'self'; frame-ancestors 'none'"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
    async with running.http.get(running.base + "/api/v1/alerts", headers=READ) as r:
        assert r.headers["Cache-Control"] == "no-store"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    async with running.http.get(running.base + "/ack/not-a-token") as r:
        assert r.headers["Cache-Control"] == "no-store"
        assert "style=" not in await r.text()  # the strict CSP allows no inline style
    async with running.http.get(running.base + "/status/ack.css") as r:
        assert r.status == 200 and r.content_type == "text/css"


async def test_deeply_nested_json_is_a_400_not_a_traceback(running: Running) -> None:
    body = b"[" * 1500 + b"]" * 1500
    async with running.http.post(
        running.base + "/api/v1/ack",
        data=body,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    ) as r:
        assert r.status == 400
        assert "nested" in (await r.json())["error"]


async def test_times_out_of_range_are_refused_with_a_reason(running: Running) -> None:
    alert = await running.firing()
    now = time.time()
    cases = [
        ("/api/v1/silences", {"matchers": {"target": "portal"}, "until": 1e300}, "366 days"),
        ("/api/v1/silences", {"matchers": {"target": "portal"}, "duration": "400d"}, "366"),
        (
            "/api/v1/maintenance",
            {"targets": ["portal"], "start": now, "end": now + 400 * 86400},
            "366 days",
        ),
        ("/api/v1/ack", {"alert": alert["fingerprint"], "expires_in": 1e300}, "31 days"),
        # Zero used to mean "never expires", the opposite of what was asked.
        ("/api/v1/ack", {"alert": alert["fingerprint"], "expires_in": "0s"}, "expires_in"),
        ("/api/v1/ack", {"alert": alert["fingerprint"], "expires_in": 0}, "expires_in"),
        ("/api/v1/drills", {"wait": "0s"}, "wait"),
        ("/api/v1/drills", {"speed": 1e308}, "speed"),
    ]
    for path, body, reason in cases:
        status, answer = await running.post(path, {"actor": "Li Na", "reason": "test", **body})
        assert status == 400, (path, body, answer)
        assert reason in answer["error"], (path, answer)
    # Nothing of it took effect.
    assert running.daemon.operations.list_silences() == []
    assert running.daemon.operations.list_maintenance() == []
    assert running.daemon.drills.runs == {}
    _, one = await running.get(f"/api/v1/alerts/{alert['fingerprint']}")
    assert one["alert"]["acknowledged"] is None


async def test_with_basic_auth_the_token_travels_in_its_own_header(tmp_path) -> None:
    """basic_auth_users and the API token used to share `Authorization`: no write was
    possible. The token goes in X-Dutyd-Token, and the login is the recorded actor."""
    web_config = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    web_config.write_text(f"basic_auth_users:\n  li.na: '{hashed}'\n")
    portal = Portal()
    await portal.start()
    settings = config(tmp_path, portal.url)
    settings["http"] = {"port": 0, "web_config_file": str(web_config)}
    daemon = Daemon(load_from_dict(settings, "<test>"))
    await daemon.start()
    try:
        login = {"Authorization": "Basic " + base64.b64encode(b"li.na:pw").decode()}
        async with aiohttp.ClientSession(headers=login) as http:
            base = daemon.http.url
            for _ in range(150):
                async with http.get(base + "/api/v1/alerts?state=firing") as r:
                    alerts = (await r.json())["alerts"]
                if alerts:
                    break
                await asyncio.sleep(0.1)
            assert alerts
            fp = alerts[0]["fingerprint"]
            async with http.post(base + "/api/v1/ack", json={"alert": fp}) as r:
                assert r.status == 401  # a login alone does not write
            async with http.post(
                base + "/api/v1/ack",
                json={"alert": fp, "actor": "someone.else"},
                headers={"X-Dutyd-Token": TOKEN},
            ) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["acknowledged_by"] == "li.na"
    finally:
        await daemon.stop()
        await portal.stop()
