"""ICMP echo (ping) probe: loss and round-trip time of a host. See README.md beside this file."""

from __future__ import annotations

from dutyd.collectors.probe_icmp.collector import (
    ECHO_REPLY,
    ECHO_REQUEST,
    IcmpProbeCollector,
    IcmpTarget,
    checksum,
    decode_icmp,
    encode_echo_request,
)

__all__ = [
    "ECHO_REPLY",
    "ECHO_REQUEST",
    "IcmpProbeCollector",
    "IcmpTarget",
    "checksum",
    "decode_icmp",
    "encode_echo_request",
]
