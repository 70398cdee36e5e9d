"""The demo site: simulated devices speaking real protocols on loopback, monitored by dutyd."""

from __future__ import annotations

from agent.demo.base import DemoDevice
from agent.demo.nut_ups import NutUpsDevice
from agent.demo.room_sensor import RoomSensorDevice
from agent.demo.snmp_devices import SnmpDevices
from agent.demo.ssh_server import LinuxServerDevice
from agent.demo.web_app import WebAppDevice

# One line per simulated device class, e.g. RoomSensorDevice,
DEVICES: list[type[DemoDevice]] = [
    NutUpsDevice,
    RoomSensorDevice,
    WebAppDevice,
    SnmpDevices,
    LinuxServerDevice,
]
