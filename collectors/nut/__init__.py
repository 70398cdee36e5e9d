"""NUT collector: UPS variables from a Network UPS Tools server (upsd). See README.md beside this
file. `protocol.py` speaks the upsd line protocol; `collector.py` holds the target model and the
collector."""

from __future__ import annotations

from dutyd.collectors.nut.collector import (
    STATUS_FLAGS,
    NutCollector,
    NutTarget,
    parse_address,
)
from dutyd.collectors.nut.protocol import MAX_LINE_BYTES, MAX_LIST_LINES, quote_arg, split_line

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_LIST_LINES",
    "STATUS_FLAGS",
    "NutCollector",
    "NutTarget",
    "parse_address",
    "quote_arg",
    "split_line",
]
