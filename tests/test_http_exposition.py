"""The exporter's direct text rendering against client_python's generic path (pure logic),
and /metrics of the real HttpServer."""

from __future__ import annotations

import asyncio
import gzip
import math
from dataclasses import dataclass

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dutyd.core.records import AlertState, Labels, Sample, labels_of
from dutyd.exporters.instrumentation import Instrumentation
from dutyd.exporters.prometheus import LatestExporter, render_latest
from dutyd.web.server import HttpServer, accepts_gzip


@dataclass
class FakeAlert:
    """An alert record as the rule engine holds it (plain data, not a protocol stand-in)."""

    rule: str
    labels: Labels
    severity: str
    state: AlertState
    active_since: float | None


def _samples() -> list[Sample]:
    base = {"target": "room-a-sensor", "kind": "modbus", "site": "hq", "room": "A"}
    return [
        Sample.of("room_temperature_celsius", 22.5, 1.0, base),
        Sample.of("room_humidity_percent", 48.0, 1.0, base),
        Sample.of("target_up", 1.0, 1.0, base),
        Sample.of("target_up", 0.0, 1.0, {**base, "target": "ups"}),
        Sample.of("if_in_octets_total", 1.5e12, 1.0, {**base, "port": "Gi0/1"}),
        Sample.of("if_oper_up", 1.0, 1.0, {**base, "port": 'odd "name" \\ with\nnewline'}),
        Sample.of("probe_rtt_seconds", math.inf, 1.0, base),
        Sample.of("probe_packet_loss_ratio", -math.inf, 1.0, base),
        Sample.of("http_duration_seconds", math.nan, 1.0, base),
        Sample.of("if_in_octets_total", 7.0, 1.0, {**base, "port": "Gi0/2"}),
    ]


def _alerts() -> list[FakeAlert]:
    labels = labels_of({"target": "room-a-sensor", "room": "A", "site": "hq"})
    return [
        FakeAlert("room_temperature_out_of_range", labels, "critical", AlertState.FIRING, 100.0),
        FakeAlert("target_down", labels, "critical", AlertState.PENDING, 200.0),
        FakeAlert("room_humidity_out_of_range", labels, "warning", AlertState.RESOLVED, 50.0),
    ]


def _families(text: str) -> dict[str, tuple[str, str, list[tuple[str, dict, float]]]]:
    out = {}
    for fam in text_string_to_metric_families(text):
        samples = sorted(
            ((s.name, s.labels, "nan" if math.isnan(s.value) else s.value) for s in fam.samples),
            key=lambda t: (t[0], sorted(t[1].items())),
        )
        out[fam.name] = (fam.type, fam.documentation, samples)
    return out


def test_direct_rendering_equals_the_generic_path() -> None:
    help_for: dict[str, str] = {}
    exporter = LatestExporter(_samples, _alerts, help_for)
    # HELP texts arrive after construction (the daemon adds them as collectors start).
    help_for["room_temperature_celsius"] = "Room temperature\nin degrees \\ Celsius"
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    generic = generate_latest(registry).decode()
    direct = render_latest(registry).decode()
    assert direct != generic  # really two code paths
    assert _families(direct) == _families(generic)
    fams = _families(direct)
    assert fams["room_temperature_celsius"][1] == "Room temperature\nin degrees \\ Celsius"
    assert fams["if_in_octets"][0] == "counter"
    assert fams["target_up"][0] == "gauge"
    assert "# TYPE if_in_octets_total counter" in direct
    # One HELP/TYPE per family and its series contiguous, though they arrive interleaved.
    assert direct.count("# TYPE if_in_octets_total") == 1
    lines = [ln for ln in direct.splitlines() if ln.startswith("if_in_octets_total")]
    assert len(lines) == 2
    assert "if_oper_up{" in direct and r'port="odd \"name\" \\ with\nnewline"' in direct
    assert "probe_rtt_seconds{" in direct and direct.count("+Inf") == 1
    assert " -Inf\n" in direct and " NaN\n" in direct


def test_alert_state_is_like_prometheus_alerts() -> None:
    exporter = LatestExporter(list, _alerts, {})
    fams = _families(exporter.render())
    kind, _, samples = fams["dutyd_alert_state"]
    assert kind == "gauge"
    assert [(s[1]["alertname"], s[1]["alertstate"], s[2]) for s in samples] == [
        ("room_temperature_out_of_range", "firing", 1.0),
        ("target_down", "pending", 1.0),
    ]
    assert samples[0][1] == {
        "alertname": "room_temperature_out_of_range",
        "alertstate": "firing",
        "severity": "critical",
        "target": "room-a-sensor",
        "room": "A",
        "site": "hq",
    }
    since = fams["dutyd_alert_active_since_timestamp_seconds"][2]
    assert sorted((s[1]["alertname"], s[2]) for s in since) == [
        ("room_temperature_out_of_range", 100.0),
        ("target_down", 200.0),
    ]
    assert all("alertstate" not in s[1] for s in since)


def test_samples_named_like_dutyds_own_families_are_not_exported() -> None:
    samples = [
        Sample.of("dutyd_targets", 5.0, 0.0, {"target": "plc"}),
        Sample.of("room_temperature_celsius", 21.0, 0.0, {"target": "plc"}),
    ]
    registry = CollectorRegistry(auto_describe=False)
    Instrumentation(registry)
    registry.register(LatestExporter(lambda: samples, list, {}))
    for body in (render_latest(registry).decode(), generate_latest(registry).decode()):
        assert body.count("# TYPE dutyd_targets gauge") == 1
        assert 'dutyd_targets{target="plc"}' not in body
        assert 'room_temperature_celsius{target="plc"} 21.0' in body


def test_label_cache_does_not_grow_without_bound() -> None:
    rounds: list[list[Sample]] = []
    for r in range(5):
        rounds.append(
            [
                Sample.of("if_oper_up", 1.0, 0.0, {"target": "sw", "port": f"p{r}-{i}"})
                for i in range(500)
            ]
        )
    current: list[Sample] = []
    exporter = LatestExporter(lambda: current, list, {})
    for batch in rounds:
        current[:] = batch
        text = exporter.render()
        assert text.count("\nif_oper_up{") == 500
    assert len(exporter._label_text) <= 2 * 500 + 1024


async def test_metrics_endpoint_serves_self_and_store_metrics() -> None:
    registry = CollectorRegistry(auto_describe=False)
    metrics = Instrumentation(registry)
    metrics.polls.labels("modbus").inc()
    registry.register(LatestExporter(_samples, _alerts, {}))
    server = HttpServer(registry, lambda: (True, "ready"))
    await server.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.url + "/metrics") as resp,
        ):
            body = await resp.text()
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    finally:
        await server.stop()
    fams = _families(body)
    assert fams["dutyd_polls"][0] == "counter"
    assert ("dutyd_polls_total", {"kind": "modbus"}, 1.0) in fams["dutyd_polls"][2]
    assert fams["dutyd_poll_duration_seconds"][0] == "histogram"
    assert "room_temperature_celsius" in fams and "dutyd_alert_state" in fams
    assert "_created" not in body  # switched off: noise for Prometheus 2.x


def test_accept_encoding_parsing() -> None:
    assert accepts_gzip("gzip, deflate")
    assert accepts_gzip("deflate, gzip;q=0.5")
    assert accepts_gzip("*")
    assert not accepts_gzip("")
    assert not accepts_gzip("identity")
    assert not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("br, deflate")


async def test_metrics_are_gzipped_when_asked_and_plain_otherwise() -> None:
    registry = CollectorRegistry(auto_describe=False)
    Instrumentation(registry)
    registry.register(LatestExporter(_samples, _alerts, {}))
    server = HttpServer(registry, lambda: (True, "ready"))
    await server.start()
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            headers = {"Accept-Encoding": "gzip"}
            async with session.get(server.url + "/metrics", headers=headers) as resp:
                assert resp.headers["Content-Encoding"] == "gzip"
                zipped = await resp.read()
            headers = {"Accept-Encoding": "identity"}
            async with session.get(server.url + "/metrics", headers=headers) as resp:
                assert "Content-Encoding" not in resp.headers
                plain = await resp.read()
    finally:
        await server.stop()
    assert gzip.decompress(zipped).split(b"\n")[:20] == plain.split(b"\n")[:20]
    assert b"room_temperature_celsius{" in gzip.decompress(zipped)


async def test_a_big_exposition_gzipped_in_chunks_is_whole_and_in_order() -> None:
    """Six chunks of 2,000 lines, each fed to one gzip stream, for two scrapes at once: each
    unzips to exactly the plain text."""
    ports = [
        Sample.of("if_in_octets_total", float(i), 0.0, {"target": f"sw{i // 48}", "port": str(i)})
        for i in range(12_000)
    ]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LatestExporter(lambda: ports, list, {}))
    server = HttpServer(registry, lambda: (True, "ready"))
    await server.start()

    async def scrape(session: aiohttp.ClientSession, encoding: str) -> bytes:
        headers = {"Accept-Encoding": encoding}
        async with session.get(server.url + "/metrics", headers=headers) as resp:
            assert resp.status == 200
            body = await resp.read()
        return gzip.decompress(body) if encoding == "gzip" else body

    try:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            plain = await scrape(session, "identity")
            first, second = await asyncio.gather(scrape(session, "gzip"), scrape(session, "gzip"))
    finally:
        await server.stop()
    assert first == plain and second == plain
    assert plain.count(b"\nif_in_octets_total{") == 12_000
