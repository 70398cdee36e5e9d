"""dutyd in a real Prometheus stack: the shipped integration files pass promtool, dutyd's
exposition passes `promtool check metrics`, a real Prometheus scrapes a running dutyd (polling a
real Modbus TCP server) and answers PromQL about it, and every query of the shipped Grafana
dashboard is valid PromQL for that Prometheus."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from dutyd.agent.demo import DEVICES
from dutyd.agent.demo.base import DemoDevice
from dutyd.agent.demo.site import demo_config
from dutyd.collectors import COLLECTORS
from dutyd.exporters.instrumentation import Instrumentation
from dutyd.exporters.prometheus import ALERT_SINCE, ALERT_STATE
from tests.daemon_fixtures import DaemonProcess, room_sensor_target
from tests.peers import PeerProcess, free_port, require_binary
from tests.test_e2e_daemon import RoomSensor

ROOT = Path(__file__).resolve().parent.parent
INTEGRATIONS = ROOT / "integrations"
PROM_CONFIG = INTEGRATIONS / "prometheus" / "prometheus.yml"
RULE_FILES = sorted((INTEGRATIONS / "prometheus" / "rules").glob("*.yml"))
RULE_TESTS = INTEGRATIONS / "prometheus" / "tests" / "rules.test.yml"
DASHBOARD = INTEGRATIONS / "grafana" / "dutyd-machine-room.json"

BUILTIN_NAMES = (ALERT_STATE, ALERT_SINCE)

# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$site": ".*",
    "$room": ".*",
}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = require_binary("/usr/bin/promtool")
    return subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, timeout=30, check=False
    )


def promtool_metrics_complaints(body: str) -> str:
    """What `promtool check metrics` says about an exposition ("" when it passes)."""
    binary = require_binary("/usr/bin/promtool")
    done = subprocess.run(
        [binary, "check", "metrics"],
        input=body,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    complaints = (done.stdout + done.stderr).strip()
    if done.returncode != 0 and not complaints:
        complaints = f"promtool exited {done.returncode}"
    return complaints


def test_shipped_prometheus_config_and_rules_pass_promtool() -> None:
    assert len(RULE_FILES) == 2
    done = promtool("check", "config", PROM_CONFIG)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 rule files found" in done.stdout
    done = promtool("check", "rules", *RULE_FILES)
    assert done.returncode == 0, done.stdout + done.stderr
    done = promtool("test", "rules", RULE_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr


# ---- a running dutyd, scraped by a running Prometheus ----------------------------------------


@dataclass
class Stack:
    sensor: RoomSensor
    daemon: DaemonProcess
    prometheus: PeerProcess
    prom_port: int

    def query(self, promql: str) -> dict:
        url = f"http://127.0.0.1:{self.prom_port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 400 bad_data carries the parse error
            return json.loads(exc.read())

    def result(self, promql: str) -> list[dict]:
        data = self.query(promql)
        assert data["status"] == "success", data
        return data["data"]["result"]

    def wait_for(self, promql: str, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = self.result(promql)
            except OSError:
                found = []
            if found:
                return found
            time.sleep(0.5)
        raise AssertionError(
            f"Prometheus has nothing for {promql}\n--- prometheus ---\n"
            f"{self.prometheus.log()[-3000:]}\n--- dutyd ---\n{self.daemon.peer.log()[-3000:]}"
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = require_binary("/usr/bin/prometheus")
    tmp = tmp_path_factory.mktemp("prometheus-stack")
    sensor = RoomSensor()
    sensor.set(27.5, 50.0)  # too warm: the alert goes pending, then fires
    config = {
        "targets": [room_sensor_target(sensor.port)],
        "rules": {
            "custom": [
                {
                    "name": "room_temperature_out_of_range",
                    "metric": "room_temperature_celsius",
                    "condition": {"outside": [18, 26]},
                    "for": "1s",
                    "severity": "critical",
                }
            ]
        },
    }
    daemon: DaemonProcess | None = None
    prometheus: PeerProcess | None = None
    try:
        daemon = DaemonProcess(tmp, config)
        prom_port = free_port()
        prom_config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(p) for p in RULE_FILES],
            "scrape_configs": [
                {"job_name": "dutyd", "static_configs": [{"targets": [f"127.0.0.1:{daemon.port}"]}]}
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(prom_config))
        prometheus = PeerProcess(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            tmp,
            log_name="prometheus.log",
        )
        yield Stack(sensor, daemon, prometheus, prom_port)
    finally:
        if prometheus is not None:
            prometheus.stop()
        if daemon is not None:
            daemon.stop()
        sensor.stop()


def test_promtool_check_metrics_passes_on_dutyd_exposition(stack: Stack) -> None:
    stack.daemon.wait_until(
        lambda: stack.daemon.metric_value("dutyd_alert_state", alertstate="firing") == 1.0,
        20,
        "a firing alert in the exposition",
    )
    body = stack.daemon.metrics()
    assert "room_temperature_celsius{" in body and "dutyd_poll_duration_seconds_bucket{" in body
    assert promtool_metrics_complaints(body) == ""  # exit 0 and not one warning
    # Every family has HELP and TYPE, and each only once.
    names = {ln.split()[2] for ln in body.splitlines() if ln.startswith("# TYPE ")}
    helps = [ln.split()[2] for ln in body.splitlines() if ln.startswith("# HELP ")]
    assert sorted(helps) == sorted(names) and len(helps) == len(set(helps))
    for line in body.splitlines():
        if line.startswith("#") or not line:
            continue
        name = line.split("{")[0].split(" ")[0]
        family = next(
            (n for n in (name, name.rsplit("_", 1)[0]) if n in names),
            None,
        )
        assert family is not None, f"{name} has no TYPE"


def test_every_declared_sample_name_passes_promtool_lint() -> None:
    """Names only some sites produce (TLS expiry, off-site backups, commands) are linted too."""
    names: dict[str, str] = {}
    for collector in COLLECTORS.values():
        names.update(collector.metric_help)
    assert {"http_tls_cert_expiry_seconds", "backup_retention_seconds", "if_speed_bytes"} <= set(
        names
    )
    lines: list[str] = []
    for name, text in sorted(names.items()):
        kind = "counter" if name.endswith("_total") else "gauge"
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} 1"]
    assert promtool_metrics_complaints("\n".join(lines) + "\n") == ""


async def test_promtool_check_metrics_passes_on_the_demo_site(tmp_path: Path) -> None:
    """Every collector kind that runs on loopback, polled by a real dutyd: the demo site's
    devices (nut, modbus, http, snmp, ssh) plus a TCP and an ICMP probe of its SSH server."""
    require_binary("/usr/bin/promtool")
    devices: list[DemoDevice] = [cls(speed=4.0) for cls in DEVICES]
    started: list[DemoDevice] = []
    daemon: DaemonProcess | None = None
    try:
        for device in devices:
            await device.start()
            started.append(device)
        config = demo_config(devices, free_port(), tmp_path / "demo.db")
        ssh = next(t for t in config["targets"] if t["kind"] == "ssh")
        config["targets"] += [
            {
                "name": "ssh-port",
                "kind": "tcp",
                "address": f"127.0.0.1:{ssh['port']}",
                "interval": "2s",
            },
            {
                "name": "loopback",
                "kind": "icmp",
                "address": "127.0.0.1",
                "fallback_port": ssh["port"],  # where ICMP is not allowed, TCP connect
                "interval": "2s",
            },
        ]
        kinds = {t["kind"] for t in config["targets"]}
        assert kinds == set(COLLECTORS), f"kinds the demo leaves out: {set(COLLECTORS) - kinds}"
        targets = {t["name"] for t in config["targets"]}
        # The daemon is a subprocess; the devices answer from this event loop, so it must run.
        daemon = await asyncio.to_thread(DaemonProcess, tmp_path, config)
        wanted = ("backup_files{", "backup_retention_seconds{", "node_cpus{", "if_speed_bytes{")
        body = ""
        up: set[str] = set()
        t0 = time.monotonic()
        deadline = t0 + 40
        while time.monotonic() < deadline:
            for device in started:
                device.advance(time.monotonic() - t0)
            body = await asyncio.to_thread(daemon.metrics)
            up = {
                m.group(1)
                for m in re.finditer(r'^target_up\{[^}]*target="([^"]+)"[^}]*\} 1\.0$', body, re.M)
            }
            if up == targets and all(w in body for w in wanted):
                break
            await asyncio.sleep(0.5)
        assert up == targets, f"targets not up: {targets - up}\n{daemon.peer.log()[-4000:]}"
        assert all(w in body for w in wanted), body
        assert promtool_metrics_complaints(body) == ""
    finally:
        if daemon is not None:
            await asyncio.to_thread(daemon.stop)
        for device in reversed(started):
            await device.stop()


def test_prometheus_scrapes_room_temperature_and_alert_state(stack: Stack) -> None:
    temps = stack.wait_for('room_temperature_celsius{target="room-a-sensor"}')
    assert float(temps[0]["value"][1]) == 27.5
    labels = temps[0]["metric"]
    assert labels["room"] == "A" and labels["site"] == "hq" and labels["kind"] == "modbus"
    assert labels["job"] == "dutyd" and labels["instance"] == f"127.0.0.1:{stack.daemon.port}"

    alerts = stack.wait_for(
        'dutyd_alert_state{alertname="room_temperature_out_of_range",alertstate="firing"}'
    )
    alert = alerts[0]["metric"]
    assert alert["severity"] == "critical" and alert["target"] == "room-a-sensor"
    assert float(alerts[0]["value"][1]) == 1.0
    since = stack.wait_for(
        "time() - dutyd_alert_active_since_timestamp_seconds"
        '{alertname="room_temperature_out_of_range"}'
    )
    assert 0 <= float(since[0]["value"][1]) < 120

    up = stack.wait_for('up{job="dutyd"}')
    assert up[0]["value"][1] == "1"
    polls = stack.wait_for('dutyd_polls_total{kind="modbus"} > 0')
    assert float(polls[0]["value"][1]) > 0


# ---- the Grafana dashboard ------------------------------------------------------------------


def dashboard_panels() -> list[dict]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = list(data["panels"])
    for panel in data["panels"]:
        panels.extend(panel.get("panels", []))  # panels nested in collapsed rows
    return panels


def grafana_expand(expr: str) -> str:
    for var in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(var, GRAFANA_VARIABLES[var])
    return expr


def test_dashboard_is_well_formed() -> None:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert data["uid"] and data["title"] and isinstance(data["schemaVersion"], int)
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        where = f"panel {panel['id']} {panel.get('title')!r}"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"}, where
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, where
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{where} overlaps another panel"
                cells.add((x, y))
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["targets"], where
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), where
        for target in panel["targets"]:
            assert target["expr"].strip(), where
            assert target["datasource"] == panel["datasource"], where
    titles = " ".join(p["title"] for p in panels).lower()
    for topic in ("temperature", "humidity", "ups", "ports", "traffic", "disk", "load", "alerts"):
        assert topic in titles, f"the dashboard has no {topic} panel"
    temperature = next(p for p in panels if p["title"].startswith("Room temperature"))
    steps = temperature["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 18, 26]  # the duty band, 18-26 °C
    exprs = " ".join(t["expr"] for p in panels for t in p.get("targets", []))
    for name in (
        "room_temperature_celsius",
        "room_humidity_percent",
        "ups_on_battery",
        "ups_battery_runtime_seconds",
        "if_oper_up",
        "if_in_octets_total",
        "if_out_octets_total",
        "node_filesystem_used_ratio",
        "node_load1",
        "dutyd_alert_state",
    ):
        assert name in exprs, f"no panel reads {name}"


_PROMQL_WORDS = frozenset(
    [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "time",
        "le",
    ]
)


def sample_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (not functions, labels or durations)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"(?<![\w:$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()", expr):
        if m.group(1) not in _PROMQL_WORDS:
            names.add(m.group(1))
    return names


def test_shipped_queries_read_only_names_dutyd_exposes() -> None:
    """A renamed sample in a collector must show up here, not as an empty panel at night."""
    known = {"target_up", "up", *BUILTIN_NAMES}
    for collector in COLLECTORS.values():
        known.update(collector.metric_help)
    # Named by the site's config (Modbus register maps, the SNMP sensor profile).
    known.update({"room_temperature_celsius", "room_humidity_percent"})
    registry = CollectorRegistry(auto_describe=False)
    Instrumentation(registry)
    for family in registry.collect():  # families without a series yet count too
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        known.update(family.name + x for x in suffixes.get(family.type, [""]))
    exprs = [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]
    recorded: set[str] = set()
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                exprs.append(rule["expr"])
                recorded.add(rule.get("record", ""))
    unknown = {
        name: expr
        for expr in exprs
        for name in sample_names(grafana_expand(expr))
        if name not in known and name not in recorded
    }
    assert not unknown, f"names no collector emits: {unknown}"
    assert sample_names('sum by (target) (rate(if_in_octets_total{a="b"}[5m])) * 8') == {
        "if_in_octets_total"
    }


def test_dashboard_queries_are_valid_promql_and_show_the_room(stack: Stack) -> None:
    stack.wait_for('room_temperature_celsius{target="room-a-sensor"}')
    stack.wait_for('dutyd_alert_state{alertstate="firing"}')
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]
    queries += [
        v["query"]["query"].removeprefix("label_values(").rsplit(",", 1)[0]
        for v in data["templating"]["list"]
        if v["type"] == "query"
    ]
    for expr in queries:
        answer = stack.query(grafana_expand(expr))
        assert answer["status"] == "success", f"{expr}\n-> {answer}"
    # The panels a duty engineer looks at first show the room and the alert.
    by_title = {p["title"]: p for p in dashboard_panels()}
    temp_expr = by_title["Temperature now"]["targets"][0]["expr"]
    assert stack.result(grafana_expand(temp_expr))[0]["metric"]["target"] == "room-a-sensor"
    alert_exprs = [t["expr"] for t in by_title["Current alerts"]["targets"]]
    found = [
        r["metric"].get("alertname") for e in alert_exprs for r in stack.result(grafana_expand(e))
    ]
    assert "room_temperature_out_of_range" in found
