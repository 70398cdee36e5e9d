"""The read side of the JSON API and its OpenAPI description, on a real in-process daemon
polling a real HTTP application; writes are refused without the token and recorded with it."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from dutyd.web.openapi import document
from tests.api_fixtures import READ, READ_TOKEN, TOKEN, Running


async def test_alerts_filters_history_and_ack_in_the_duty_log(running: Running) -> None:
    alert = await running.firing()
    assert alert["rule"] == "portal_failing"
    assert alert["labels"]["target"] == "portal"
    assert alert["acknowledged"] is None

    # Filters: state, severity, target, rule; unknown states are a 400 with the reason.
    assert (await running.get("/api/v1/alerts?severity=warning"))[1]["alerts"] == []
    assert (
        len((await running.get("/api/v1/alerts?target=portal&rule=portal_failing"))[1]["alerts"])
        == 1
    )
    status, body = await running.get("/api/v1/alerts?state=burning")
    assert status == 400 and "burning" in body["error"]

    # A write without the token is refused and changes nothing.
    status, body = await running.post("/api/v1/ack", {"alert": alert["fingerprint"]}, {})
    assert status == 401 and "X-Dutyd-Token" in body["error"]
    # The read-only token reads, and never writes.
    status, body = await running.post(
        "/api/v1/ack", {"alert": alert["fingerprint"], "actor": "Li Na"}, READ
    )
    assert status == 401
    status, body = await running.post(
        "/api/v1/ack", {"alert": alert["fingerprint"], "actor": "Li Na", "note": "on my way"}
    )
    assert status == 200, body

    status, one = await running.get(f"/api/v1/alerts/{alert['fingerprint'][:8]}")
    assert status == 200
    assert one["alert"]["acknowledged"]["by"] == "Li Na"
    kinds = [e["kind"] for e in one["history"]]
    assert "alert.firing" in kinds and "alert.acknowledged" in kinds
    ack = next(e for e in one["history"] if e["kind"] == "alert.acknowledged")
    assert ack["actor"] == "Li Na"

    _, log = await running.get("/api/v1/log?kind=alert.&limit=50")
    assert any(e["kind"] == "alert.acknowledged" for e in log["entries"])
    status, body = await running.get("/api/v1/log?limit=0")
    assert status == 400
    status, body = await running.get("/api/v1/log?since=yesterday")
    assert status == 400 and "numbers" in body["error"]
    status, body = await running.get("/api/v1/alerts/ffffffffffff")
    assert status == 404


async def test_targets_silences_maintenance_and_oncall(running: Running) -> None:
    await running.firing()
    _, body = await running.get("/api/v1/targets")
    (portal,) = body["targets"]
    assert portal["name"] == "portal" and portal["up"] is True
    assert portal["labels"] == {"site": "hq", "role": "application"}
    assert (await running.get("/api/v1/targets?up=0"))[1]["targets"] == []

    status, body = await running.post(
        "/api/v1/silences",
        {"matchers": {"target": "portal"}, "duration": "1h", "actor": "Zhang Wei", "reason": "fix"},
    )
    assert status == 201, body
    _, silences = await running.get("/api/v1/silences")
    assert [s["actor"] for s in silences["silences"]] == ["Zhang Wei"]
    status, body = await running.post(
        "/api/v1/silences", {"matchers": {"target": "portal"}, "actor": "x", "reason": "y"}
    )
    assert status == 400 and "duration" in body["error"]

    _, windows = await running.get("/api/v1/maintenance")
    assert windows["maintenance"] == []
    _, oncall = await running.get("/api/v1/oncall")
    assert len(oncall["on_duty"]) == 2


async def test_status_data_and_page_assets(running: Running) -> None:
    await running.firing()
    status, data = await running.get("/api/v1/status?lang=zh")
    assert status == 200
    assert data["language"] == "zh"
    assert data["alerts"][0]["rule"] == "portal_failing"
    assert data["targets_total"] == 1 and data["targets_up"] == 1
    assert len(data["oncall"]["now"]) == 2
    assert any(e["kind"] == "alert.firing" for e in data["log"])
    assert (await running.get("/api/v1/status?lang=fr"))[0] == 400
    for path, kind in [
        ("/status", "text/html"),
        ("/status/status.js", "application/javascript"),
        ("/status/status.css", "text/css"),
    ]:
        async with running.http.get(running.base + path) as r:
            assert r.status == 200 and r.content_type == kind
            text = await r.text()
            assert "http://" not in text.replace("http://127.0.0.1", "")  # no CDN
    async with running.http.get(running.base + "/status/other.js") as r:
        assert r.status == 404


async def test_openapi_describes_every_api_route(running: Running) -> None:
    status, served = await running.get("/api/v1/openapi.json")
    assert status == 200 and served == document()
    described = {(path, method.upper()) for path, ops in served["paths"].items() for method in ops}
    routes = {
        (r.resource.canonical, r.method)
        for r in running.daemon.http.app.router.routes()
        if r.resource is not None
        and r.resource.canonical.startswith("/api/")
        and r.method != "HEAD"
    }
    assert routes - described == set()
    assert described - routes == set()


async def test_openapi_says_how_to_authenticate(running: Running) -> None:
    """Clients generated from the description must send X-Dutyd-Token, and expect the 401 a
    read without a credential gets."""
    doc = document()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["token"] == {**schemes["token"], "type": "apiKey", "in": "header"}
    assert schemes["token"]["name"] == "X-Dutyd-Token"
    assert "Bearer" not in doc["info"]["description"].split("X-Dutyd-Token")[0]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if path == "/api/v1/openapi.json":
                continue
            assert {"token": []} in op["security"], (path, method)
            assert "401" in op["responses"], (path, method)
    for path, ops in doc["paths"].items():
        if "get" not in ops:
            continue
        url = path.replace("{fingerprint}", "abcd").replace("{id}", "1")
        status, _ = await running.get(url, headers={})
        expected = 200 if path == "/api/v1/openapi.json" else 401
        assert status == expected, (path, status)
        assert str(status) in ops["get"]["responses"], path


async def test_reads_need_a_credential_even_from_loopback(running: Running) -> None:
    """Every local user and every client of a reverse proxy on this host comes from loopback,
    and so does a DNS-rebinding page: reads need the read token, the API token or a login,
    unless `api.open_loopback_reads` says otherwise."""
    from aiohttp.test_utils import make_mocked_request

    from dutyd.web.api import ApiError, authorize_read

    def request(remote: str, headers: dict[str, str] | None = None):
        return make_mocked_request(
            "GET", "/api/v1/alerts", headers=headers, app=running.daemon.http.app
        ).clone(remote=remote)

    web = running.daemon.web
    for remote in ("127.0.0.1", "::1", "10.20.0.31"):
        with pytest.raises(ApiError) as refused:
            authorize_read(request(remote), web)
        assert refused.value.status == 401
        with pytest.raises(ApiError):
            authorize_read(request(remote, {"X-Dutyd-Token": "wrong"}), web)
        authorize_read(request(remote, {"X-Dutyd-Token": READ_TOKEN}), web)
        authorize_read(request(remote, {"X-Dutyd-Token": TOKEN}), web)
        authorize_read(request(remote, {"Authorization": f"Bearer {TOKEN}"}), web)

    # Over HTTP: no credential, 401 with the header to use; the read token, 200.
    status, body = await running.get("/api/v1/log", headers={})
    assert status == 401 and "X-Dutyd-Token" in body["error"]
    status, _ = await running.get("/api/v1/log", headers=READ)
    assert status == 200

    # The explicit opt-in opens loopback reads, and only those.
    open_reads = dataclasses.replace(web, open_loopback_reads=lambda: True)
    authorize_read(request("127.0.0.1"), open_reads)
    authorize_read(request("127.0.0.1", {"Host": "localhost:8646"}), open_reads)
    with pytest.raises(ApiError):
        authorize_read(request("10.20.0.31"), open_reads)
    # ... and not to a DNS-rebinding page, which comes from loopback with its own Host.
    with pytest.raises(ApiError) as refused:
        authorize_read(request("127.0.0.1", {"Host": "attacker.example"}), open_reads)
    assert refused.value.status == 401

    # With no token configured at all, the refusal says how to configure a credential.
    no_tokens = dataclasses.replace(web, api_token=lambda: "", read_token=lambda: "")
    with pytest.raises(ApiError) as refused:
        authorize_read(request("127.0.0.1"), no_tokens)
    assert refused.value.status == 403 and "api.read_token_env" in refused.value.message


async def test_non_finite_or_negative_times_are_refused_with_a_reason(running: Running) -> None:
    """JSON parsers accept NaN and Infinity; a silence that never ends (or never compares) or an
    acknowledgement that expired before it was given must be a 400, never stored."""
    alert = await running.firing()
    base = {"matchers": {"target": "portal"}, "actor": "Zhang Wei", "reason": "fix"}
    for key, value in [
        ("duration", float("nan")),
        ("duration", float("inf")),
        ("duration", -3600),
        ("until", float("nan")),
        ("until", float("inf")),
    ]:
        status, body = await running.post("/api/v1/silences", {**base, key: value})
        assert status == 400 and key in body["error"], (key, value, status, body)
    _, silences = await running.get("/api/v1/silences")
    assert silences["silences"] == []

    window = {"targets": ["portal"], "actor": "Zhang Wei", "reason": "ups test"}
    for extra in ({"duration": float("nan")}, {"start": float("inf"), "duration": "1h"}):
        status, body = await running.post("/api/v1/maintenance", {**window, **extra})
        assert status == 400, (extra, status, body)
    _, windows = await running.get("/api/v1/maintenance")
    assert windows["maintenance"] == []

    ack = {"alert": alert["fingerprint"], "actor": "Li Na"}
    for value in (float("nan"), -60):
        status, body = await running.post("/api/v1/ack", {**ack, "expires_in": value})
        assert status == 400 and "expires_in" in body["error"], (value, status, body)
    _, one = await running.get(f"/api/v1/alerts/{alert['fingerprint']}")
    assert one["alert"]["acknowledged"] is None


async def test_drill_speed_must_be_a_finite_number(running: Running) -> None:
    for speed in (float("nan"), float("inf"), 0.5):
        status, body = await running.post(
            "/api/v1/drills", {"actor": "Li Na", "wait": "1m", "speed": speed}
        )
        assert status == 400 and "speed" in body["error"], (speed, status, body)
    _, log = await running.get("/api/v1/log?kind=drill.&limit=50")
    assert log["entries"] == []


async def test_a_firing_alert_no_policy_covers_is_logged_not_silent(running: Running) -> None:
    # The fixture's daemon has a rota but no escalation policy.
    alert = await running.firing()
    deadline = asyncio.get_running_loop().time() + 5
    entries: list = []
    while asyncio.get_running_loop().time() < deadline and not entries:
        _, body = await running.get(
            f"/api/v1/log?kind=notify.no_policy&subject={alert['fingerprint']}"
        )
        entries = body["entries"]
        await asyncio.sleep(0.1)
    assert [e["data"]["rule"] for e in entries] == ["portal_failing"]


async def test_a_drill_nobody_answers_does_not_count_as_the_months_drill(running: Running) -> None:
    from dutyd.duty.drill import DRILL_SAMPLE

    ingested: list = []
    feed = running.daemon.operations.ingest_samples

    def recording(samples: list) -> None:
        ingested.extend(samples)
        feed(samples)

    running.daemon.operations.ingest_samples = recording  # type: ignore[method-assign]
    status, run = await running.post(
        "/api/v1/drills", {"actor": "Wang Fang", "wait": "1s", "speed": 1}
    )
    assert status == 201, run
    deadline = asyncio.get_running_loop().time() + 10
    finished = False
    while asyncio.get_running_loop().time() < deadline and not finished:
        _, state = await running.get(f"/api/v1/drills/{run['id']}")
        finished = bool(state["finished"])
        await asyncio.sleep(0.1)
    assert finished
    (end,) = await running.daemon.storage.log.read(kinds=["drill.end"])
    assert end.data["answered"] is False and end.data["started"] > 0
    # Nothing told the rules that a drill happened.
    assert [s for s in ingested if s.name == DRILL_SAMPLE] == []
