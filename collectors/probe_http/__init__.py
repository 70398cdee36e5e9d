"""HTTP(S) probe: status, latency, content and certificate expiry of a URL. See README.md beside
this file."""

from __future__ import annotations

from dutyd.collectors.probe_http.collector import (
    SESSION_KEY,
    HttpProbeCollector,
    HttpTarget,
    parse_status_ranges,
)

__all__ = ["SESSION_KEY", "HttpProbeCollector", "HttpTarget", "parse_status_ranges"]
