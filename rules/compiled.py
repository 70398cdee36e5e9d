"""A rule prepared for evaluation: its selector compiled for the hot path, the label set of
its alerts, and what it remembers per series and per group between samples."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from dutyd.core.records import Labels, Sample
from dutyd.rules.alerts import Alert
from dutyd.rules.config import RuleConfig
from dutyd.rules.matchers import compile_matchers, label_of


@dataclass(slots=True)
class SeriesState:
    """What a stateful rule remembers of one series between samples."""

    last_raw: float | None = None
    last_ts: float | None = None
    seen: float = 0.0  # arrival time of the last sample (for `absent`)
    value: float | None = None  # the last derived value
    window: deque[tuple[float, float]] = field(default_factory=deque)
    events: deque[tuple[float, float]] = field(default_factory=deque)
    holds: bool = False

    def shift(self, seconds: float) -> None:
        """Move every moment kept by `seconds` (the clock re-anchored after a step)."""
        if self.last_ts is not None:
            self.last_ts += seconds
        if self.seen:
            self.seen += seconds
        self.window = deque((t + seconds, v) for t, v in self.window)
        self.events = deque((t + seconds, v) for t, v in self.events)


class CompiledRule:
    """A rule with its selector prepared for the hot path, and its per-series state."""

    def __init__(self, config: RuleConfig) -> None:
        self.config = config
        self.name = config.name
        self.matchers = compile_matchers(config.match)
        self.targets = frozenset(config.targets)
        self.extra_labels = tuple(sorted(config.labels.items()))
        c = config.condition
        self.changed = bool(c is not None and c.changed)
        self.absent = c.absent if c is not None else None
        self.simple = (
            config.value == "raw"
            and config.scale == 1.0
            and config.window is None
            and config.across is None
            and config.events is None
            and not self.changed
            and self.absent is None
        )
        # Rules whose truth changes with time alone are re-evaluated on every tick.
        self.timed = config.value == "age" or config.events is not None or self.absent is not None
        self.series: dict[Labels, SeriesState] = {}
        # across: group labels -> member series -> holds, of the series this node reads
        self.groups: dict[Labels, dict[Labels, bool]] = defaultdict(dict)
        # ... and of the series other nodes poll (sharded; see `RuleEngine.merge_group_members`)
        self.remote: dict[Labels, dict[Labels, bool]] = {}
        # A group may span targets, so under shards its series may be polled by several nodes;
        # grouped by `target` it never does.
        self.spans_targets = config.across is not None and "target" not in config.across.by
        self.alerts: dict[Labels, Alert] = {}  # by alert labels
        self._label_cache: dict[Labels, Labels] = {}

    def selects(self, sample: Sample) -> bool:
        labels = sample.labels
        if self.targets and label_of(labels, "target") not in self.targets:
            return False
        # A plain loop: this is the hot path, and all() with a generator costs more.
        for key, m in self.matchers:  # noqa: SIM110
            if not m.matches(label_of(labels, key)):
                return False
        return True

    def alert_labels(self, series: Labels) -> Labels:
        """The alert's label set: the series' (or group's) labels plus the rule's own."""
        if not self.extra_labels:
            return series
        cached = self._label_cache.get(series)
        if cached is None:
            cached = tuple(sorted({**dict(series), **dict(self.extra_labels)}.items()))
            self._label_cache[series] = cached
        return cached

    def group_of(self, series: Labels) -> Labels:
        assert self.config.across is not None
        return tuple(sorted((k, label_of(series, k)) for k in self.config.across.by))

    def members_of(self, group: Labels) -> Mapping[Labels, bool]:
        """A group's member series and whether each holds: this node's own, and the other
        nodes' for the series it does not read itself (its own are the freshest)."""
        local = self.groups.get(group)
        remote = self.remote.get(group)
        if not remote:
            return local or {}
        if not local:
            return remote
        return {**remote, **local}

    def group_size(self, alert: Alert) -> int:
        """How many series the group of an `across` alert has (0 for other rules)."""
        return len(self.members_of(alert.labels)) if self.config.across else 0

    def worse(self, peak: float | None, value: float) -> float:
        """The worse of an outage's peak so far and a new value: the lowest for `below`, the
        furthest from the range for `outside`, else the highest."""
        if peak is None:
            return value
        c = self.config.condition
        if c is not None and c.below is not None:
            return min(peak, value)
        if c is not None and c.outside is not None:
            low, high = c.outside

            def past(v: float) -> float:
                return max(low - v, v - high)

            return value if past(value) > past(peak) else peak
        return max(peak, value)

    def forget_series(self, idle: float, now: float) -> int:
        """Drop what is remembered of series not fed for `idle` seconds (and at least this
        rule's own window), whose alert is not active: their label sets no longer exist (a
        port removed, a sensor renamed). `absent` rules keep theirs: a series that stops
        coming is what they are for. Returns how many were dropped."""
        if self.absent is not None:
            return 0
        cfg = self.config
        spans = [idle]
        if cfg.window is not None:
            spans.append(cfg.window.over)
        if cfg.events is not None:
            spans.append(cfg.events.over)
        cutoff = now - max(spans)
        stale = []
        for series, st in self.series.items():
            if st.seen >= cutoff:
                continue
            alert = self.alerts.get(self.alert_labels(series))
            if alert is not None and alert.active:
                continue
            stale.append(series)
        for series in stale:
            del self.series[series]
            if cfg.across is not None:
                group = self.group_of(series)
                members = self.groups.get(group)
                if members is not None:
                    members.pop(series, None)
                    if not members:
                        del self.groups[group]
        return len(stale)

    def series_state(self, series: Labels) -> SeriesState:
        st = self.series.get(series)
        if st is None:
            st = self.series[series] = SeriesState()
        return st

    def derive(
        self,
        st: SeriesState,
        raw: float,
        prev_raw: float | None,
        prev_ts: float | None,
        ts: float,
        now: float,
    ) -> float | None:
        """The value the rule tests: raw, age, rate or counter rate, scaled, then aggregated
        over the rule's window. None while a rate has only one sample."""
        cfg = self.config
        value: float
        if cfg.value == "raw":
            value = raw
        elif cfg.value == "age":
            value = now - raw
        elif prev_raw is None or prev_ts is None or ts <= prev_ts:
            return None  # a rate needs two samples
        else:
            delta = raw - prev_raw
            if cfg.value == "counter_rate" and delta < 0:
                delta = raw  # the counter reset (device reboot): it counted up from 0
            value = delta / (ts - prev_ts)
        value *= cfg.scale
        if cfg.window is not None:
            st.window.append((now, value))
            cutoff = now - cfg.window.over
            while st.window and st.window[0][0] < cutoff:
                st.window.popleft()
            vals = [v for _, v in st.window]
            fn = cfg.window.function
            if fn == "min":
                value = min(vals)
            elif fn == "max":
                value = max(vals)
            elif fn == "avg":
                value = sum(vals) / len(vals)
        return value
