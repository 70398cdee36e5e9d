"""The demo site: simulated devices speaking real protocols on loopback, monitored by dutyd."""

from __future__ import annotations

from dutyd.agent.demo.base import DemoDevice
from dutyd.agent.demo.nut_ups import NutUpsDevice
from dutyd.agent.demo.room_sensor import RoomSensorDevice
from dutyd.agent.demo.snmp_devices import SnmpDevices
from dutyd.agent.demo.ssh_server import LinuxServerDevice
from dutyd.agent.demo.web_app import WebAppDevice

# One line per simulated device class, e.g. RoomSensorDevice,
DEVICES: list[type[DemoDevice]] = [
    NutUpsDevice,
    RoomSensorDevice,
    WebAppDevice,
    SnmpDevices,
    LinuxServerDevice,
]
