"""Basic auth and TLS on the HTTP endpoint (Prometheus web config format), over real loopback
connections; the last test has a real Prometheus scrape through both."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
import urllib.parse
from pathlib import Path

import aiohttp
import bcrypt
import pytest
import yaml
from prometheus_client import CollectorRegistry

from dutyd.agent.config import load_from_dict
from dutyd.core.errors import ConfigError
from dutyd.core.records import Sample
from dutyd.exporters.instrumentation import Instrumentation
from dutyd.exporters.prometheus import LatestExporter
from dutyd.web.server import HttpServer, load_web_config
from tests.peers import PeerProcess, free_port, require_binary
from tests.tls import self_signed_cert

PASSWORD = "s3cret-scrape"


def make_cert(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA): dutyd.crt, dutyd.key."""
    return self_signed_cert(tmp)


def bcrypt_hash(password: str) -> str:
    # `$2y$` is what `htpasswd -B` writes; Prometheus's docs use it.
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    return "$2y$" + hashed[4:]


def write_web_config(tmp: Path, tls: bool, users: bool) -> Path:
    data: dict = {}
    if tls:
        make_cert(tmp)
        data["tls_server_config"] = {"cert_file": "dutyd.crt", "key_file": "dutyd.key"}
    if users:
        data["basic_auth_users"] = {"prometheus": bcrypt_hash(PASSWORD)}
    path = tmp / "web.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def make_server(web_config: Path | None) -> HttpServer:
    registry = CollectorRegistry(auto_describe=False)
    Instrumentation(registry)
    samples = [
        Sample.of(
            "room_temperature_celsius",
            23.5,
            time.time(),
            {"target": "room-a-sensor", "kind": "modbus", "room": "A"},
        )
    ]
    registry.register(LatestExporter(lambda: samples, list, {}))
    return HttpServer(registry, lambda: (True, "ready"), web_config_file=web_config)


async def fetch(
    url: str, auth: tuple[str, str] | None = None, ssl_ctx: ssl.SSLContext | bool = True
) -> tuple[int, str, dict[str, str]]:
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers, ssl=ssl_ctx) as resp,
    ):
        return resp.status, await resp.text(), dict(resp.headers)


async def test_basic_auth_protects_metrics_but_not_healthz(tmp_path: Path) -> None:
    server = make_server(write_web_config(tmp_path, tls=False, users=True))
    await server.start()
    try:
        status, body, headers = await fetch(server.url + "/metrics")
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Basic realm=")
        assert "room_temperature_celsius" not in body
        wrong = ("prometheus", "guess")
        assert (await fetch(server.url + "/metrics", wrong))[0] == 401
        unknown = ("mallory", PASSWORD)
        assert (await fetch(server.url + "/metrics", unknown))[0] == 401
        assert (await fetch(server.url + "/readyz"))[0] == 401
        good = ("prometheus", PASSWORD)
        for _ in range(2):  # the second time from the cache of successful logins
            status, body, _ = await fetch(server.url + "/metrics", good)
            assert status == 200
            assert 'room_temperature_celsius{kind="modbus",room="A"' in body
        assert (await fetch(server.url + "/metrics", wrong))[0] == 401  # cache keyed on password
        status, body, _ = await fetch(server.url + "/healthz")
        assert (status, body) == (200, "ok\n")
    finally:
        await server.stop()


async def test_tls_serves_metrics_to_a_client_trusting_the_cert(tmp_path: Path) -> None:
    server = make_server(write_web_config(tmp_path, tls=True, users=False))
    await server.start()
    try:
        assert server.url.startswith("https://127.0.0.1:")
        trusting = ssl.create_default_context(cafile=str(tmp_path / "dutyd.crt"))
        status, body, _ = await fetch(server.url + "/metrics", ssl_ctx=trusting)
        assert status == 200 and "room_temperature_celsius" in body
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await fetch(server.url + "/metrics")  # the system CAs do not know this cert
        plain = server.url.replace("https://", "http://")
        with pytest.raises(aiohttp.ClientError):
            await fetch(plain + "/metrics")  # no cleartext on the TLS port
    finally:
        await server.stop()


async def test_client_certificates_when_required(tmp_path: Path) -> None:
    make_cert(tmp_path)  # the server's
    clients = tmp_path / "clients"
    clients.mkdir()
    client_cert, client_key = make_cert(clients)  # self-signed: it is its own CA
    web = tmp_path / "web.yml"
    web.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {
                    "cert_file": "dutyd.crt",
                    "key_file": "dutyd.key",
                    "client_auth_type": "RequireAndVerifyClientCert",
                    "client_ca_file": "clients/dutyd.crt",
                    "min_version": "TLS13",
                }
            }
        )
    )
    server = make_server(web)
    await server.start()
    try:
        anonymous = ssl.create_default_context(cafile=str(tmp_path / "dutyd.crt"))
        with pytest.raises(aiohttp.ClientError):
            await fetch(server.url + "/metrics", ssl_ctx=anonymous)
        known = ssl.create_default_context(cafile=str(tmp_path / "dutyd.crt"))
        known.load_cert_chain(client_cert, client_key)
        status, body, _ = await fetch(server.url + "/metrics", ssl_ctx=known)
        assert status == 200 and "room_temperature_celsius" in body
    finally:
        await server.stop()


def test_web_config_problems_are_named(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": "plain-password"}}))
    with pytest.raises(ValueError, match="not a bcrypt hash") as err:
        load_web_config(path)
    assert "plain-password" not in str(err.value)  # never echo what may be a password
    path.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": "x.crt"}}))
    with pytest.raises(ValueError, match="key_file"):
        load_web_config(path)
    path.write_text(
        yaml.safe_dump({"tls_server_config": {"cert_file": "x.crt", "key_file": "x.key"}})
    )
    with pytest.raises(ValueError, match=r"cert_file .*x\.crt is not a readable file"):
        load_web_config(path)
    path.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {
                    "cert_file": "x.crt",
                    "key_file": "x.key",
                    "client_auth_type": "RequireAndVerifyClientCert",
                }
            }
        )
    )
    with pytest.raises(ValueError, match="needs client_ca_file"):
        load_web_config(path)
    path.write_text(yaml.safe_dump({"basic_auth_user": {}}))
    with pytest.raises(ValueError, match="basic_auth_user"):
        load_web_config(path)
    config, base = load_web_config(write_web_config(tmp_path, tls=True, users=True))
    assert base == tmp_path and config.tls_server_config is not None


def test_dutyd_config_refuses_a_bad_web_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_from_dict({"http": {"web_config_file": str(tmp_path / "missing.yml")}})
    assert "http.web_config_file" in err.value.report()
    assert "cannot read web config" in err.value.report()
    good = write_web_config(tmp_path, tls=False, users=True)
    settings = load_from_dict({"http": {"web_config_file": str(good)}})
    assert settings.http.web_config_file == good


async def _prometheus_query(port: int, query: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        data = json.loads(await resp.text())
    assert data["status"] == "success", data
    return data["data"]["result"]


async def test_prometheus_scrapes_through_tls_and_basic_auth(tmp_path: Path) -> None:
    binary = require_binary("/usr/bin/prometheus")
    server = make_server(write_web_config(tmp_path, tls=True, users=True))
    await server.start()
    (tmp_path / "password").write_text(PASSWORD)
    prom_port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": "dutyd",
                "scheme": "https",
                "tls_config": {"ca_file": str(tmp_path / "dutyd.crt")},
                "basic_auth": {
                    "username": "prometheus",
                    "password_file": str(tmp_path / "password"),
                },
                "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom = PeerProcess(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        tmp_path,
        log_name="prometheus.log",
    )
    try:
        result: list[dict] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not result:
            await asyncio.sleep(0.5)
            try:
                result = await _prometheus_query(prom_port, "room_temperature_celsius")
            except (aiohttp.ClientError, json.JSONDecodeError):
                continue
        assert result, f"no sample scraped\n{prom.log()[-3000:]}"
        assert result[0]["metric"]["target"] == "room-a-sensor"
        assert float(result[0]["value"][1]) == 23.5
        up = await _prometheus_query(prom_port, 'up{job="dutyd"}')
        assert up[0]["value"][1] == "1"
    finally:
        prom.stop()
        await server.stop()
