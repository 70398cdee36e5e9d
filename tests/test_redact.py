"""Target addresses never show their user info, query or fragment (issue 12, medium 1), nor
their path past the first segment (issue 24, finding 12: push tokens): not in the API, the
config errors, /metrics, error messages or the daemon's log."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import aiohttp
import pytest

from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.core.errors import ConfigError
from dutyd.core.redact import redact_address
from tests.api_fixtures import READ, Portal, config

SECRETS = ("Pa55word", "TOPSECRET")


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        ("http://monitor:Pa55word@host/?apikey=TOPSECRET", "http://host/"),
        ("https://monitor:Pa55word@host:8443/a/b?apikey=TOPSECRET#x", "https://host:8443/a/…"),
        # A token in the path (push URLs): the first segment shows, the rest is cut.
        ("https://push.example/api/push/TOPSECRET?status=up", "https://push.example/api/…"),
        ("https://hooks.example/services/T0/B1/TOPSECRET", "https://hooks.example/services/…"),
        ("http://host/status", "http://host/status"),
        ("http://host/status/", "http://host/status/"),
        ("https://host/#TOPSECRET", "https://host/"),
        ("http://[::1]:8080/x?apikey=TOPSECRET", "http://[::1]:8080/x"),
        # Malformed: a password holding '/', '?' or a space.
        ("http://monitor:Pa/55word@host/", "http://host/"),
        ("http://monitor:Pa?55word@host/", "http://<address withheld: not host[:port]>"),
        ("http://monitor:Pa55word@ho st/", "http://<address withheld: not host[:port]>"),
        # host:port addresses are left alone.
        ("10.0.0.5:502", "10.0.0.5:502"),
        ("[2001:db8::1]:161", "[2001:db8::1]:161"),
        ("ups.example.net", "ups.example.net"),
    ],
)
def test_redact_address(address: str, shown: str) -> None:
    assert redact_address(address) == shown


@pytest.mark.parametrize(
    "address",
    [
        "http://monitor:Pa55word@host:99999/?apikey=TOPSECRET",
        "http://monitor:Pa55word@[bad/?apikey=TOPSECRET",
        "ftp://monitor:Pa55word@host/?apikey=TOPSECRET",
    ],
)
def test_config_errors_do_not_echo_url_secrets(address: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_from_dict({"targets": [{"name": "p", "kind": "http", "address": address}]}, "<t>")
    report = caught.value.report()
    assert "targets[0].address" in report
    for secret in SECRETS:
        assert secret not in report


async def test_api_metrics_and_log_never_show_url_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    portal = Portal()
    await portal.start()
    port = portal.url.split(":")[2].rstrip("/")
    cfg = config(tmp_path, f"http://monitor:Pa55word@127.0.0.1:{port}/?apikey=TOPSECRET")
    # A second target that is down: its reason (which names the page) reaches API and log.
    dead = {
        **cfg["targets"][0],
        "name": "dead",
        "address": "http://monitor:Pa55word@127.0.0.1:1/api/push/TOPSECRET?apikey=TOPSECRET#x",
    }
    cfg["targets"].append(dead)
    daemon = Daemon(load_from_dict(cfg, "<test>"))
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as http:
            base = daemon.http.url
            deadline = time.monotonic() + 20.0
            targets: list[dict[str, object]] = []
            while time.monotonic() < deadline:
                async with http.get(base + "/api/v1/targets", headers=READ) as r:
                    assert r.status == 200
                    text = await r.text()
                    targets = (await r.json())["targets"]
                polled = {t["name"]: t for t in targets if t["last_poll_at"]}
                if "portal" in polled and polled.get("dead", {}).get("message"):
                    break
                await asyncio.sleep(0.2)
            by_name = {t["name"]: t for t in targets}
            assert by_name["portal"]["address"] == f"http://127.0.0.1:{port}/"
            assert by_name["dead"]["address"] == "http://127.0.0.1:1/api/…"
            assert "http://127.0.0.1:1/api/…" in str(by_name["dead"]["message"])
            pages = [text]
            for path in ("/metrics", "/api/v1/log?limit=200", "/status", "/api/v1/alerts"):
                async with http.get(base + path, headers=READ) as r:
                    assert r.status == 200, path
                    pages.append(await r.text())
    finally:
        await daemon.stop()
        await portal.stop()
    # Messages and their structured fields, as the daemon's log formatter writes them.
    logged = "\n".join(
        f"{record.getMessage()} {getattr(record, 'fields', '')}" for record in caplog.records
    )
    assert "127.0.0.1:1" in logged  # the dead target's failure was logged
    for secret in SECRETS:
        for page in pages:
            assert secret not in page
        assert secret not in logged
