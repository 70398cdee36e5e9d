"""End to end: `dutyd run` against a real Modbus TCP server and a real HTTP server."""

from __future__ import annotations

import http.server
import signal
import threading
from collections.abc import Iterator

import pytest
from pyModbusTCP.server import ModbusServer

from tests.daemon_fixtures import DaemonProcess, room_sensor_target
from tests.peers import free_port


class RoomSensor:
    """A pyModbusTCP server holding temperature (x0.1 °C) and humidity (x0.1 %RH)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server = ModbusServer(host="127.0.0.1", port=self.port, no_block=True)
        self.server.start()
        self.set(22.0, 50.0)

    def set(self, celsius: float, humidity: float) -> None:
        self.server.data_bank.set_holding_registers(
            0, [round(celsius * 10) & 0xFFFF, round(humidity * 10)]
        )

    def stop(self) -> None:
        self.server.stop()


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = b"Duty portal OK"
        self.send_response(type(self).status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def room_sensor() -> Iterator[RoomSensor]:
    sensor = RoomSensor()
    yield sensor
    sensor.stop()


@pytest.fixture
def web_app() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def site_config(sensor_port: int, app_url: str) -> dict:
    return {
        "targets": [
            room_sensor_target(sensor_port),
            {
                "name": "portal",
                "kind": "http",
                "address": app_url,
                "interval": "0.5s",
                "timeout": "1s",
                "expected_text": "Duty portal",
                "labels": {"site": "hq", "role": "application"},
            },
        ],
        "rules": {
            "custom": [
                {
                    "name": "room_temperature_out_of_range",
                    "metric": "room_temperature_celsius",
                    "condition": {"outside": [18, 26]},
                    "for": "2s",
                    "severity": "critical",
                }
            ]
        },
    }


def alert_state(daemon: DaemonProcess, state: str) -> float | None:
    return daemon.metric_value(
        "dutyd_alert_state", alertname="room_temperature_out_of_range", alertstate=state
    )


def test_temperature_alert_fires_and_resolves(tmp_path, room_sensor, web_app):
    daemon = DaemonProcess(tmp_path, site_config(room_sensor.port, web_app))
    try:
        daemon.wait_until(
            lambda: daemon.metric_value("room_temperature_celsius", target="room-a-sensor") == 22.0,
            15,
            "the first temperature reading",
        )
        assert daemon.metric_value("room_humidity_percent", room="A") == 50.0
        daemon.wait_until(
            lambda: daemon.metric_value("target_up", target="portal") == 1.0, 5, "the portal probe"
        )
        assert daemon.metric_value("http_status_code", target="portal") == 200.0
        body = daemon.metrics()
        assert "# TYPE room_temperature_celsius gauge" in body
        assert "# TYPE dutyd_poll_duration_seconds histogram" in body
        assert daemon.get("/healthz")[0] == 200
        assert daemon.get("/readyz")[0] == 200

        room_sensor.set(27.5, 50.0)
        daemon.wait_until(
            lambda: alert_state(daemon, "pending") == 1.0, 10, "the alert to go pending"
        )
        daemon.wait_until(lambda: alert_state(daemon, "firing") == 1.0, 10, "the alert to fire")
        assert "FIRING room_temperature_out_of_range" in daemon.peer.log()

        room_sensor.set(22.5, 50.0)
        daemon.wait_until(lambda: alert_state(daemon, "firing") is None, 10, "the alert to resolve")
        daemon.wait_until(
            lambda: "RESOLVED room_temperature_out_of_range" in daemon.peer.log(),
            5,
            "the resolve log line",
        )

        code, took = daemon.terminate()
        assert code == 0, daemon.peer.log()
        assert took < 5.0
        assert "dutyd stopped" in daemon.peer.log()
    finally:
        daemon.stop()


def test_down_sensor_is_marked_down_with_reason_and_others_continue(tmp_path, room_sensor, web_app):
    daemon = DaemonProcess(tmp_path, site_config(room_sensor.port, web_app))
    try:
        daemon.wait_until(
            lambda: daemon.metric_value("target_up", target="room-a-sensor") == 1.0, 15, "sensor up"
        )
        room_sensor.stop()
        daemon.wait_until(
            lambda: daemon.metric_value("target_up", target="room-a-sensor") == 0.0,
            10,
            "sensor down",
        )
        # The down sensor's stale readings are no longer exported; the portal keeps going.
        assert daemon.metric_value("room_temperature_celsius", target="room-a-sensor") is None
        assert daemon.metric_value("target_up", target="portal") == 1.0
        assert daemon.metric_value("dutyd_poll_errors_total", kind="modbus") >= 1.0
        daemon.wait_until(lambda: "target down" in daemon.peer.log(), 5, "the target-down log line")
        log = daemon.peer.log()
        assert "room-a-sensor" in log and "reason=" in log
    finally:
        daemon.stop()


def test_sighup_reload_keeps_old_config_when_new_one_is_invalid(tmp_path, room_sensor, web_app):
    config = site_config(room_sensor.port, web_app)
    daemon = DaemonProcess(tmp_path, config)
    try:
        daemon.wait_until(
            lambda: daemon.metric_value("target_up", target="portal") == 1.0, 15, "portal up"
        )
        good = dict(config)
        daemon.config_path.write_text("targets:\n  - name: broken\n    kind: modbus\n")
        daemon.signal(signal.SIGHUP)
        daemon.wait_until(
            lambda: "config reload rejected" in daemon.peer.log(), 10, "the rejection"
        )
        assert "targets[0].address: required key is missing" in daemon.peer.log()
        assert daemon.metric_value("target_up", target="portal") == 1.0

        good["rules"] = {}  # its custom rule reads the sensor that this reload removes
        good["targets"] = [t for t in config["targets"] if t["name"] == "portal"]
        good["targets"].append({**good["targets"][0], "name": "portal-2"})
        daemon.write_config(good)
        daemon.signal(signal.SIGHUP)
        daemon.wait_until(
            lambda: daemon.metric_value("target_up", target="portal-2") == 1.0, 10, "the new target"
        )
        daemon.wait_until(
            lambda: daemon.metric_value("target_up", target="room-a-sensor") is None,
            5,
            "the removed target gone",
        )
        assert daemon.metric_value("dutyd_config_reloads_total", result="applied") == 1.0
        assert daemon.metric_value("dutyd_config_reloads_total", result="rejected") == 1.0
        code, _ = daemon.terminate()
        assert code == 0
    finally:
        daemon.stop()
