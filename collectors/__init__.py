"""Collectors: one module per protocol, registered here in one line each.

`COLLECTORS` maps a target's `kind` (as written in the config file) to its collector class;
the config loader builds the `targets` schema from it, the scheduler instantiates from it.
"""

from __future__ import annotations

from dutyd.collectors.base import Collector, CollectorContext, Readings, TargetConfig
from dutyd.collectors.modbus import ModbusCollector
from dutyd.collectors.nut import NutCollector
from dutyd.collectors.probe_http import HttpProbeCollector
from dutyd.collectors.probe_icmp import IcmpProbeCollector
from dutyd.collectors.probe_tcp import TcpProbeCollector
from dutyd.collectors.snmp.collector import SnmpCollector
from dutyd.collectors.ssh import SshCollector

_CLASSES: list[type[Collector]] = [
    # one line per collector module, e.g. ModbusCollector,
    ModbusCollector,
    NutCollector,
    HttpProbeCollector,
    IcmpProbeCollector,
    TcpProbeCollector,
    SnmpCollector,
    SshCollector,
]

COLLECTORS: dict[str, type[Collector]] = {c.kind: c for c in _CLASSES}

__all__ = ["COLLECTORS", "Collector", "CollectorContext", "Readings", "TargetConfig"]
