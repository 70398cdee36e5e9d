"""TCP port probe: whether host:port accepts a connection, and how fast. See README.md beside
this file."""

from __future__ import annotations

from dutyd.collectors.probe_tcp.collector import TcpProbeCollector, TcpTarget, split_host_port

__all__ = ["TcpProbeCollector", "TcpTarget", "split_host_port"]
