"""The scrape-time view of the latest values and the alerts, in Prometheus exposition format.

Nothing is copied into gauges between scrapes: at scrape time the exporter walks the
latest values (`core/latest.py`) and the alert table. It works two ways:

* as a client_python custom collector (`collect()` yields metric families), so any consumer of
  the registry (`generate_latest(registry)`, tests) sees everything;
* on the daemon's /metrics path (`iter_latest(registry)`), it writes the text format itself,
  straight from the latest values, one family at a time. Building one `Metric` and one `Sample`
  object per series costs about four times as much as writing the line, and a large site has
  100,000 series; writing a chunk of a family at a time keeps about 250 KB of text in memory
  at a time (the whole exposition is ~20 MB at 160,000 series, and a process keeps memory it
  once held) and lets the HTTP server hand the event loop back between chunks.

Both paths give the same families: a sample name ending in `_total` is a counter, everything
else a gauge; HELP comes from the collectors' `metric_help`; a family's series are contiguous.
"""

from __future__ import annotations

import contextvars
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client import generate_latest
from prometheus_client import registry as prometheus_registry
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample as PromSample

from dutyd.core.records import AlertState, Labels, Sample

log = logging.getLogger("dutyd.exporter")

RESERVED_PREFIX = "dutyd_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

BUILTIN_HELP = {
    "target_up": "1 if the target's last poll succeeded, 0 if it failed "
    "(the reason is counted in dutyd_poll_errors_total)",
}

ALERT_STATE = "dutyd_alert_state"
ALERT_STATE_HELP = (
    "Active alerts, like Prometheus's ALERTS: 1 per pending or firing alert, labelled with "
    "alertname, severity, alertstate and the alert's own labels"
)
ALERT_SINCE = "dutyd_alert_active_since_timestamp_seconds"
ALERT_SINCE_HELP = (
    "Unix time since which a pending or firing alert has been active, like Prometheus's "
    "ALERTS_FOR_STATE (time() minus this is how long it has lasted)"
)
_ACTIVE = (AlertState.PENDING, AlertState.FIRING)
# Lines per chunk of /metrics text (about 250 KB): a family is handed over in pieces.
CHUNK_LINES = 2000


class AlertView(Protocol):
    """What the exporter needs of an alert."""

    rule: str
    labels: Labels
    severity: str
    state: AlertState
    active_since: float | None


# Set while `iter_latest` runs: latest exporters then hand themselves over instead of
# yielding families, to be rendered directly afterwards.
_direct: contextvars.ContextVar[list[LatestExporter] | None] = contextvars.ContextVar(
    "dutyd_direct_render", default=None
)


def iter_latest(registry: prometheus_registry.Collector) -> Iterator[bytes]:
    """The registry in text format 0.0.4, in chunks: first every ordinary collector (through
    client_python), then each latest exporter's families, a family or a part of one per chunk."""
    direct: list[LatestExporter] = []
    token = _direct.set(direct)
    try:
        head = generate_latest(registry)  # type: ignore[arg-type]
    finally:
        _direct.reset(token)
    yield head
    for exporter in direct:
        for text in exporter.render_families():
            yield text.encode()


def render_latest(registry: prometheus_registry.Collector) -> bytes:
    """The whole exposition as one body (tests, tools); the server streams `iter_latest`."""
    return b"".join(iter_latest(registry))


def family_type(name: str) -> str:
    return "counter" if name.endswith("_total") else "gauge"


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def escape_value(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


_SPECIAL_FLOATS = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}


def format_value(value: float) -> str:
    text = repr(value)
    return _SPECIAL_FLOATS.get(text, text)


def format_labels(labels: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{escape_value(v)}"' for k, v in labels)


# prometheus_client's scrape-time collector interface, not dutyd's `collectors.base.Collector`
# (which polls devices). Named for what it exports, the latest values (`LatestSamples`):
# "store" means storage (`dutyd.storage`) only.
class LatestExporter(prometheus_registry.Collector):
    def __init__(
        self,
        samples: Callable[[], Iterable[Sample]],
        alerts: Callable[[], Iterable[AlertView]],
        help_for: Mapping[str, str],
    ) -> None:
        self._samples = samples
        self._alerts = alerts
        # Kept by reference: the daemon adds each new collector's HELP texts as targets start.
        self._help = help_for
        # Rendered label sets, by the id of the (interned, see `intern_labels`) label tuple,
        # kept beside it so the id stays its own. Label tuples repeat from poll to poll, so
        # most scrapes find every one here without hashing a tuple; the cache is rebuilt when
        # it outgrows the latest values. A tuple that is not interned just renders again.
        self._label_text: dict[int, tuple[Labels, str]] = {}
        self._warned: set[str] = set()

    def describe(self) -> list[Metric]:
        # Dynamic families: tell the registry not to call collect() at registration.
        return []

    def _reserved(self, name: str) -> bool:
        """`dutyd_` names are dutyd's own families: a sample of that name (a register map
        naming it so) would give the scrape a second TYPE line and Prometheus would refuse
        the whole scrape. Drop it, and say so once."""
        if not name.startswith(RESERVED_PREFIX):
            return False
        if name not in self._warned:
            self._warned.add(name)
            log.warning(
                "sample name uses dutyd's own prefix; not exported",
                extra={"fields": {"metric": name}},
            )
        return True

    def help_text(self, name: str) -> str:
        return BUILTIN_HELP.get(name) or self._help.get(name) or f"{name} as read by dutyd"

    def collect(self) -> Iterator[Metric]:
        direct = _direct.get()
        if direct is not None:
            direct.append(self)
            return
        families: dict[str, Metric] = {}
        for s in self._samples():
            family = families.get(s.name)
            if family is None:
                kind = family_type(s.name)
                base = s.name[:-6] if kind == "counter" else s.name
                family = Metric(base, self.help_text(s.name), kind)
                families[s.name] = family
            family.samples.append(PromSample(s.name, dict(s.labels), s.value, None))
        yield from (f for name, f in families.items() if not self._reserved(name))
        state, since = self._alert_families()
        yield state
        yield since

    def render(self) -> str:
        """The latest values' families and the alert families as exposition text."""
        return "".join(self.render_families())

    def render_families(self) -> Iterator[str]:
        """The exposition text, a family (or a part of a big one) at a time: the latest values',
        then the alerts'."""
        cache = self._label_text
        # References only, grouped by name: a family's series must be contiguous.
        by_name: dict[str, list[Sample]] = {}
        count = 0
        for s in self._samples():
            count += 1
            family = by_name.get(s.name)
            if family is None:
                family = by_name[s.name] = []
            family.append(s)
        for name, samples in by_name.items():
            if self._reserved(name):
                continue
            # Handed over every CHUNK_LINES lines: a list of a whole family's lines (a big
            # switch room has 20,000 per family) would leave small-object memory behind that
            # the process keeps; a chunk's lines reuse the last chunk's.
            lines = [
                f"# HELP {name} {escape_help(self.help_text(name))}\n"
                f"# TYPE {name} {family_type(name)}\n"
            ]
            append = lines.append
            for n, s in enumerate(samples, 1):
                labels = s.labels
                entry = cache.get(id(labels))
                if entry is not None and entry[0] is labels:
                    text = entry[1]
                else:
                    text = "{" + format_labels(labels) + "} "
                    cache[id(labels)] = (labels, text)
                value = s.value
                # repr() is exact and Prometheus parses it; only inf/nan need Go's spelling.
                val = repr(value) if math.isfinite(value) else format_value(value)
                append(f"{name}{text}{val}\n")
                if not n % CHUNK_LINES:
                    yield "".join(lines)
                    lines.clear()
            yield "".join(lines)
        if len(cache) > 2 * count + 1024:
            self._label_text = {}  # series went away (targets removed, ports gone)
        out: list[str] = []
        for family in self._alert_families():
            out.append(f"# HELP {family.name} {escape_help(family.documentation)}\n")
            out.append(f"# TYPE {family.name} gauge\n")
            for sample in family.samples:
                labels = format_labels(sorted(sample.labels.items()))
                out.append(f"{sample.name}{{{labels}}} {format_value(sample.value)}\n")
        yield "".join(out)

    def _alert_families(self) -> tuple[Metric, Metric]:
        state = Metric(ALERT_STATE, ALERT_STATE_HELP, "gauge")
        since = Metric(ALERT_SINCE, ALERT_SINCE_HELP, "gauge")
        for alert in self._alerts():
            if alert.state not in _ACTIVE:
                continue
            labels = dict(alert.labels)
            labels.update(alertname=alert.rule, severity=alert.severity)
            if alert.active_since is not None:
                since.samples.append(
                    PromSample(ALERT_SINCE, dict(labels), alert.active_since, None)
                )
            labels["alertstate"] = str(alert.state)
            state.samples.append(PromSample(ALERT_STATE, labels, 1.0, None))
        return state, since
