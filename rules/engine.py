"""The rule engine: evaluates the rules on each new sample and on a clock tick.

Samples arrive per series; a rule selects series by metric name, label matchers and target,
derives a value (raw, rate, counter rate, age; scaled; aggregated over a window), tests it, and
moves one alert per label set (or per group, for rules `across` targets) through the state
machine of `rules.alerts`. The engine owns the alerts and the overlays (acknowledgements,
silences, maintenance windows, dependencies, flapping) and returns the events their changes
produce; persistence and notification happen outside, from those events.

Time is always passed in (`now`), so tests step a fake clock.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dutyd.core.configtypes import format_duration
from dutyd.core.records import AlertChange, AlertEvent, AlertState, Labels, Sample
from dutyd.rules.alerts import Ack, Alert, fingerprint
from dutyd.rules.config import FlappingConfig, RuleConfig
from dutyd.rules.matchers import compile_matchers, label_of
from dutyd.rules.overlays import Dependencies, Silence, Window, excluded_seconds
from dutyd.rules.template import render

TARGET_UP = "target_up"


class UnknownAlert(LookupError):
    """No active alert has this fingerprint."""


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
        # across: group labels -> member series -> holds
        self.groups: dict[Labels, dict[Labels, bool]] = defaultdict(dict)
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

    def threshold(self, total: int = 0) -> str:
        across = self.config.across
        text = self.config.threshold()
        if across is None:
            return text
        mode = {"any": "any", "all": "all", "at_least": f"at least {across.n}"}[across.mode]
        return f"{text} on {mode} of {total} series"

    def _held_note(self, alert: Alert) -> str:
        """Why an active alert's value may read as inside the limits: hysteresis holds it until
        the value is well back (else "40 %RH is outside 40..60" would read as a contradiction)."""
        cfg, c, value = self.config, self.config.condition, alert.value
        if (
            alert.state not in (AlertState.PENDING, AlertState.FIRING)
            or c is None
            or value is None
            or c.holds(value)
        ):
            return ""
        low, high = cfg.clear_above, cfg.clear_below
        if low is not None and high is not None:
            return f" (held until back within {low:g}..{high:g})"
        if high is not None:
            return f" (held until below {high:g})"
        if low is not None:
            return f" (held until above {low:g})"
        return ""

    def render(self, template: str, alert: Alert, now: float) -> str:
        values: dict[str, object] = dict(alert.labels)
        total = len(self.groups.get(alert.labels, ())) if self.config.across else 0
        red_line = self.config.red_line
        values.update(
            rule=self.name,
            value=alert.value if alert.value is not None else "n/a",
            threshold=self.threshold(total) + self._held_note(alert),
            target=alert.label("target") or "(all targets)",
            severity=self.config.severity,
            duration=format_duration(alert.duration(now)),
            red_line=format_duration(red_line) if red_line else "",
            reference=self.config.reference,
            total=total,
            # The value read as people say it: 26h3m for seconds, 87 for a 0..1 ratio.
            value_duration=format_duration(alert.value) if alert.value is not None else "n/a",
            value_percent=f"{alert.value * 100:.0f}" if alert.value is not None else "n/a",
        )
        values["for"] = format_duration(self.config.for_)
        return render(template, values)


class RuleEngine:
    def __init__(
        self,
        rules: Iterable[RuleConfig],
        flapping: FlappingConfig | None = None,
        parents: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.rules: dict[str, CompiledRule] = {r.name: CompiledRule(r) for r in rules}
        self._by_metric: dict[str, list[CompiledRule]] = defaultdict(list)
        for rule in self.rules.values():
            self._by_metric[rule.config.metric].append(rule)
        self._timed = [r for r in self.rules.values() if r.timed]
        self.flapping = flapping or FlappingConfig()
        self.alerts: dict[str, Alert] = {}
        self.deps = Dependencies()
        self.set_parents(parents or {})
        self.silences: dict[str, Silence] = {}
        self.windows: dict[str, Window] = {}
        # Counter increases of `events` rules not yet persisted: (rule, series, ts, inc, value).
        self.counted: list[tuple[str, Labels, float, float, float]] = []
        self._dirty: set[tuple[CompiledRule, Labels]] = set()

    @property
    def metrics(self) -> set[str]:
        return set(self._by_metric)

    def set_parents(self, parents: Mapping[str, Iterable[str]]) -> None:
        self.deps.parents = {t: tuple(p) for t, p in parents.items() if p}

    # -- evaluation -----------------------------------------------------------------------------

    def ingest(self, samples: Iterable[Sample], now: float) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        by_metric = self._by_metric
        # Groups of `across` rules are judged once per batch, after all of its members.
        self._dirty: set[tuple[CompiledRule, Labels]] = set()
        for sample in samples:
            if sample.name == TARGET_UP:
                self._note_target(sample)
            rules = by_metric.get(sample.name)
            if not rules:
                continue
            for rule in rules:
                if rule.selects(sample):
                    if rule.simple:
                        self._step_series(rule, sample.labels, sample.value, now, events)
                    else:
                        self._stateful(rule, sample, now, events)
        if self._dirty:
            for rule, group in self._dirty:
                self._eval_group(rule, group, now, events)
            self._dirty = set()
        return events

    def _note_target(self, sample: Sample) -> None:
        target = label_of(sample.labels, "target")
        up = sample.value == 1.0
        self.deps.up[target] = up
        if up:
            return
        # The target's other readings stopped: its alerts keep their state instead of firing
        # or resolving on what was read before it went down (absent rules are about exactly
        # that silence, so they go on).
        for alert in self.alerts.values():
            rule = self.rules.get(alert.rule)
            if (
                rule is not None
                and rule.config.metric != TARGET_UP
                and rule.absent is None
                and alert.label("target") == target
            ):
                alert.last_holds = None

    def _holds(self, rule: CompiledRule, alert: Alert | None, value: float) -> bool:
        """The condition, widened by hysteresis once the alert is active."""
        assert rule.config.condition is not None
        if rule.config.condition.holds(value):
            return True
        if alert is None or not alert.active:
            return False
        cb, ca = rule.config.clear_below, rule.config.clear_above
        if cb is None and ca is None:
            return False
        cleared = (cb is None or value < cb) and (ca is None or value > ca)
        return not cleared

    def _step_series(
        self, rule: CompiledRule, series: Labels, value: float, now: float, out: list[AlertEvent]
    ) -> None:
        labels = rule.alert_labels(series)
        alert = rule.alerts.get(labels)
        holds = self._holds(rule, alert, value)
        self._step(rule, labels, alert, holds, value, now, out)

    def _step(
        self,
        rule: CompiledRule,
        labels: Labels,
        alert: Alert | None,
        holds: bool,
        value: float | None,
        now: float,
        out: list[AlertEvent],
    ) -> None:
        if alert is None:
            if not holds:
                return
            alert = Alert(rule.name, labels, rule.config.severity)
            rule.alerts[labels] = alert
            self.alerts[alert.fingerprint] = alert
        if value is not None:
            alert.value = value
        cfg = rule.config
        previous = alert.advance(holds, now, cfg.for_, cfg.keep_firing_for)
        if previous is not None:
            self._transition(rule, alert, previous, now, out)

    def _stateful(
        self, rule: CompiledRule, sample: Sample, now: float, out: list[AlertEvent]
    ) -> None:
        cfg = rule.config
        st = rule.series.get(sample.labels)
        if st is None:
            st = rule.series[sample.labels] = SeriesState()
        raw = sample.value
        prev_raw, prev_ts = st.last_raw, st.last_ts
        st.last_raw, st.last_ts, st.seen = raw, sample.timestamp, now
        if cfg.events is not None:
            self._count_event(rule, sample.labels, st, prev_raw, raw, now)
            self._eval_events(rule, sample.labels, st, now, out)
            return
        if rule.absent is not None:
            labels = rule.alert_labels(sample.labels)  # a sample came: not absent
            self._step(rule, labels, rule.alerts.get(labels), False, 0.0, now, out)
            return
        value: float | None
        if cfg.value == "raw":
            value = raw
        elif cfg.value == "age":
            value = now - raw
        elif prev_raw is None or prev_ts is None or sample.timestamp <= prev_ts:
            value = None  # a rate needs two samples
        else:
            delta = raw - prev_raw
            if cfg.value == "counter_rate" and delta < 0:
                delta = raw  # the counter reset (device reboot): it counted up from 0
            value = delta / (sample.timestamp - prev_ts)
        if value is None:
            return
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
        previous_value, st.value = st.value, value
        if rule.changed:
            holds = previous_value is not None and value != previous_value
            if cfg.across is None:
                labels = rule.alert_labels(sample.labels)
                self._step(rule, labels, rule.alerts.get(labels), holds, value, now, out)
                return
        if cfg.across is None:
            self._step_series(rule, sample.labels, value, now, out)
            return
        # Across targets: the member's own holds (no hysteresis per member), then the group.
        if not rule.changed:
            assert cfg.condition is not None
            holds = cfg.condition.holds(value)
        group = rule.group_of(sample.labels)
        members = rule.groups[group]
        members[sample.labels] = holds
        self._dirty.add((rule, group))

    def _eval_group(self, rule: CompiledRule, group: Labels, now: float, out: list) -> None:
        across = rule.config.across
        assert across is not None
        members = rule.groups[group]
        count = sum(1 for h in members.values() if h)
        if across.mode == "any":
            holds = count >= 1
        elif across.mode == "all":
            holds = bool(members) and count == len(members)
        else:
            holds = count >= across.n
        labels = rule.alert_labels(group)
        self._step(rule, labels, rule.alerts.get(labels), holds, float(count), now, out)

    def _count_event(
        self,
        rule: CompiledRule,
        series: Labels,
        st: SeriesState,
        prev: float | None,
        raw: float,
        now: float,
    ) -> None:
        if prev is None:
            # First sight of the counter: its value so far is a baseline, not new events
            # (stored, so the next start compares with it).
            self.counted.append((rule.name, series, now, 0.0, raw))
            return
        if raw == prev:
            return
        inc = raw - prev if raw > prev else raw  # below the last value: the counter reset
        if inc > 0:
            st.events.append((now, inc))
        self.counted.append((rule.name, series, now, max(inc, 0.0), raw))

    def _eval_events(
        self, rule: CompiledRule, series: Labels, st: SeriesState, now: float, out: list
    ) -> None:
        ev = rule.config.events
        assert ev is not None
        cutoff = now - ev.over
        while st.events and st.events[0][0] < cutoff:
            st.events.popleft()
        count = sum(inc for _, inc in st.events)
        labels = rule.alert_labels(series)
        alert = rule.alerts.get(labels)
        self._step(rule, labels, alert, count > ev.more_than, count, now, out)

    def restore_events(self, rows: Iterable[tuple[str, Labels, float, float, float]]) -> None:
        """Take back stored counter increases (rule, series, ts, increment, counter value),
        oldest first, so a 365-day count survives restarts."""
        for name, series, ts, inc, raw in rows:
            rule = self.rules.get(name)
            if rule is None or rule.config.events is None:
                continue
            st = rule.series.get(series)
            if st is None:
                st = rule.series[series] = SeriesState()
            if inc > 0:
                st.events.append((ts, inc))
            st.last_raw = raw

    # -- time -----------------------------------------------------------------------------------

    def tick(self, now: float) -> list[AlertEvent]:
        """What time alone changes: `for` elapsed, keep_firing_for over, stale series, ages,
        events leaving their window, red lines, expired acks and silences, flapping settled."""
        events: list[AlertEvent] = []
        for rule in self._timed:
            self._tick_rule(rule, now, events)
        for alert in list(self.alerts.values()):
            rule = self.rules.get(alert.rule)
            if rule is None:
                continue
            cfg = rule.config
            if alert.ack and alert.ack.expires_at is not None and now >= alert.ack.expires_at:
                ack, alert.ack = alert.ack, None
                events.append(
                    self._event(
                        rule,
                        alert,
                        now,
                        AlertChange.UNACKNOWLEDGED,
                        True,
                        "",
                        ack.by,
                        "acknowledgement expired",
                    )
                )
            if alert.due(now, cfg.for_, cfg.keep_firing_for):
                assert alert.last_holds is not None
                previous = alert.advance(alert.last_holds, now, cfg.for_, cfg.keep_firing_for)
                if previous is not None:
                    self._transition(rule, alert, previous, now, events)
            if (
                cfg.red_line is not None
                and alert.state is AlertState.FIRING
                and not alert.red_line_sent
                and self.outage(alert, now) >= cfg.red_line
            ):
                alert.red_line_sent = True
                mute = self._mute(rule, alert, now)
                events.append(self._event(rule, alert, now, AlertChange.RED_LINE, not mute, mute))
            if alert.flapping and (
                not alert.transitions or now - alert.transitions[-1] >= self.flapping.settle
            ):
                alert.flapping = False
                alert.transitions.clear()
                events.append(self._event(rule, alert, now, AlertChange.SETTLED, True, ""))
            self._reconcile(rule, alert, now, events)
        return events

    def _tick_rule(self, rule: CompiledRule, now: float, out: list[AlertEvent]) -> None:
        cfg = rule.config
        for series, st in rule.series.items():
            if cfg.events is not None:
                self._eval_events(rule, series, st, now, out)
            elif rule.absent is not None:
                labels = rule.alert_labels(series)
                holds = now - st.seen >= rule.absent
                alert = rule.alerts.get(labels)
                value = now - st.seen
                self._step(rule, labels, alert, holds, value, now, out)
            elif cfg.value == "age" and st.last_raw is not None and cfg.across is None:
                self._step_series(rule, series, (now - st.last_raw) * cfg.scale, now, out)

    def next_deadline(self) -> float | None:
        """When the earliest pending alert's `for` runs out: the daemon wakes up then, so the
        firing event does not wait for the next whole-second tick."""
        best: float | None = None
        for alert in self.alerts.values():
            if alert.state is AlertState.PENDING and alert.last_holds and alert.active_since:
                rule = self.rules.get(alert.rule)
                if rule is not None:
                    t = alert.active_since + rule.config.for_
                    best = t if best is None or t < best else best
        return best

    def outage(self, alert: Alert, now: float) -> float:
        """How long the alert has been active, minus time inside maintenance windows."""
        if alert.active_since is None:
            return 0.0
        span = max(0.0, now - alert.active_since)
        if not self.windows:
            return span
        return span - excluded_seconds(self.windows.values(), alert.labels, alert.active_since, now)

    # -- events and overlays --------------------------------------------------------------------

    def _mute(self, rule: CompiledRule, alert: Alert, now: float) -> str:
        """Why this alert's events must not page anyone now ("" when they may)."""
        for window in self.windows.values():
            if window.covers(alert.labels) and window.open_at(now):
                return f"maintenance: {window.reason}"
        parent = self.deps.down_ancestor(alert.label("target"), rule.config.depends_on)
        if parent:
            return f"parent {parent} is down"
        for silence in self.silences.values():
            if silence.applies(alert.labels, now):
                return f"silenced by {silence.actor}: {silence.reason}"
        if alert.flapping:
            return "flapping"
        return ""

    def _transition(
        self,
        rule: CompiledRule,
        alert: Alert,
        previous: AlertState,
        now: float,
        out: list[AlertEvent],
    ) -> None:
        state = alert.state
        started_flapping = False
        if state in (AlertState.FIRING, AlertState.RESOLVED):
            alert.note_transition(now, self.flapping.within)
            if not alert.flapping and len(alert.transitions) >= self.flapping.changes:
                alert.flapping = started_flapping = True
        mute = self._mute(rule, alert, now)
        if state is AlertState.FIRING:
            notify = not mute
            if notify:
                alert.notified = AlertState.FIRING
        elif state is AlertState.RESOLVED:
            if alert.flapping:
                notify, mute = False, "flapping"
            else:
                notify = alert.notified is AlertState.FIRING
                mute = "" if notify else (mute or "its firing was not sent")
            if notify:
                alert.notified = AlertState.RESOLVED
        else:
            notify = not mute
        alert.muted_reason = mute
        alert.summary = rule.render(rule.config.summary, alert, now)
        out.append(
            self._event(rule, alert, now, AlertChange.STATE, notify, mute, previous=previous)
        )
        if started_flapping:
            out.append(self._event(rule, alert, now, AlertChange.FLAPPING, True, ""))
        if (
            state is AlertState.INACTIVE
            and not alert.flapping
            and alert.notified is not AlertState.FIRING
        ):
            self._drop(rule, alert)

    def _reconcile(self, rule: CompiledRule, alert: Alert, now: float, out: list) -> None:
        """Announce what a mute held back, once the mute is over: a firing alert that was never
        sent (parent back up, window closed, silence ended, flapping settled), or the resolve
        of a page that went out."""
        if alert.state is AlertState.FIRING and alert.notified is not AlertState.FIRING:
            mute = self._mute(rule, alert, now)
            if not mute:
                alert.notified = AlertState.FIRING
                alert.muted_reason = ""
                alert.summary = rule.render(rule.config.summary, alert, now)
                out.append(self._event(rule, alert, now, AlertChange.STATE, True, ""))
        elif (
            alert.state in (AlertState.RESOLVED, AlertState.INACTIVE)
            and alert.notified is AlertState.FIRING
            and not alert.flapping
        ):
            was_inactive = alert.state is AlertState.INACTIVE
            alert.state = AlertState.RESOLVED
            alert.resolved_at = alert.resolved_at or now
            alert.notified = AlertState.RESOLVED
            alert.muted_reason = ""
            out.append(self._event(rule, alert, now, AlertChange.STATE, True, ""))
            if was_inactive:
                self._drop(rule, alert)

    def _drop(self, rule: CompiledRule, alert: Alert) -> None:
        rule.alerts.pop(alert.labels, None)
        self.alerts.pop(alert.fingerprint, None)

    def _event(
        self,
        rule: CompiledRule,
        alert: Alert,
        now: float,
        change: AlertChange,
        notify: bool,
        muted_reason: str,
        actor: str = "",
        note: str = "",
        previous: AlertState | None = None,
    ) -> AlertEvent:
        cfg = rule.config
        annotations: list[tuple[str, str]] = []
        if cfg.description:
            annotations.append(("description", rule.render(cfg.description, alert, now)))
        if cfg.reference:
            annotations.append(("reference", cfg.reference))
        return AlertEvent(
            fingerprint=alert.fingerprint,
            rule=alert.rule,
            labels=alert.labels,
            state=alert.state,
            previous=alert.state if previous is None else previous,
            severity=alert.severity,
            summary=alert.summary or rule.render(cfg.summary, alert, now),
            value=alert.value,
            active_since=alert.active_since,
            timestamp=now,
            annotations=tuple(annotations),
            change=change,
            notify=notify,
            muted_reason=muted_reason,
            actor=actor,
            note=note,
            red_line=cfg.red_line,
        )

    def acknowledge(
        self, fp: str, actor: str, note: str, expires_at: float | None, now: float
    ) -> AlertEvent:
        alert, rule = self._active(fp)
        alert.ack = Ack(actor, note, now, expires_at)
        return self._event(rule, alert, now, AlertChange.ACKNOWLEDGED, True, "", actor, note)

    def unacknowledge(self, fp: str, actor: str, note: str, now: float) -> AlertEvent:
        alert, rule = self._active(fp)
        if alert.ack is None:
            raise ValueError(f"alert {fp} is not acknowledged")
        alert.ack = None
        return self._event(rule, alert, now, AlertChange.UNACKNOWLEDGED, True, "", actor, note)

    def _active(self, fp: str) -> tuple[Alert, CompiledRule]:
        alert = self.alerts.get(fp)
        rule = self.rules.get(alert.rule) if alert is not None else None
        if alert is None or rule is None or not alert.active:
            raise UnknownAlert(f"no pending or firing alert {fp}")
        return alert, rule

    def forget_resolved(self, older_than: float) -> list[str]:
        """Drop resolved alerts last changed before `older_than` (they stay in the duty log);
        a flapping alert stays until it settles. Returns the dropped fingerprints."""
        dropped = []
        for fp, alert in list(self.alerts.items()):
            if (
                alert.state is AlertState.RESOLVED
                and not alert.flapping
                and (alert.resolved_at or 0) < older_than
            ):
                rule = self.rules.get(alert.rule)
                if rule is not None:
                    rule.alerts.pop(alert.labels, None)
                del self.alerts[fp]
                dropped.append(fp)
        return dropped

    def view(self, alert: Alert, now: float) -> dict[str, Any]:
        """An alert with its overlays, for the API and the CLI."""
        rule = self.rules.get(alert.rule)
        mute = self._mute(rule, alert, now) if rule is not None else ""
        silenced = [s.id for s in self.silences.values() if s.applies(alert.labels, now)]
        windows = [w.id for w in self.windows.values() if w.covers(alert.labels) and w.open_at(now)]
        cfg = rule.config if rule is not None else None
        return {
            "fingerprint": alert.fingerprint,
            "rule": alert.rule,
            "labels": dict(alert.labels),
            "severity": alert.severity,
            "state": str(alert.state),
            "value": alert.value,
            "summary": alert.summary,
            "active_since": alert.active_since,
            "fired_at": alert.fired_at,
            "resolved_at": alert.resolved_at,
            "duration": alert.duration(now),
            "outage": self.outage(alert, now) if alert.active else None,
            "red_line": cfg.red_line if cfg else None,
            "red_line_crossed": alert.red_line_sent,
            "reference": cfg.reference if cfg else "",
            "acknowledged": alert.ack.to_dict() if alert.ack else None,
            "silenced_by": silenced,
            "maintenance": windows,
            "suppressed": mute,
            "flapping": alert.flapping,
        }

    # -- restore --------------------------------------------------------------------------------

    def restore(self, alerts: Iterable[Alert]) -> None:
        """Take back alerts saved before a restart; those of rules that no longer exist are
        dropped. They wait for a fresh sample before they move (see `rules.alerts`)."""
        for alert in alerts:
            rule = self.rules.get(alert.rule)
            if rule is None:
                continue
            self.alerts[alert.fingerprint] = alert
            rule.alerts[alert.labels] = alert

    def replace_alerts(self, alerts: Iterable[Alert]) -> None:
        """Put these alerts in place of every alert held now (a standby taking over the
        active node's alerts from the shared store)."""
        self.alerts.clear()
        for rule in self.rules.values():
            rule.alerts.clear()
        self.restore(alerts)

    def drop_alert(self, fingerprint: str) -> None:
        """Forget an alert without an event (its target moved to another node's shard)."""
        alert = self.alerts.pop(fingerprint, None)
        rule = self.rules.get(alert.rule) if alert is not None else None
        if alert is not None and rule is not None:
            rule.alerts.pop(alert.labels, None)

    def adopt(self, old: RuleEngine) -> None:
        """After a config reload: keep the alerts, overlays, target states and, for rules
        whose definition did not change, the per-series history (rates, windows, events)."""
        self.deps.up = old.deps.up
        self.silences = old.silences
        self.windows = {k: w for k, w in old.windows.items() if not k.startswith("config:")}
        self.counted = old.counted
        for name, rule in self.rules.items():
            before = old.rules.get(name)
            if before is not None and before.config == rule.config:
                rule.series = before.series
                rule.groups = before.groups
        self.restore(old.alerts.values())


def alert_fingerprint(rule: str, labels: Mapping[str, str]) -> str:
    """The fingerprint of the alert a rule makes for a label set (for the API and tests)."""
    return fingerprint(rule, tuple(sorted(labels.items())))
