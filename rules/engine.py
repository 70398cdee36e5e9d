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

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from dutyd.core.records import AlertChange, AlertEvent, AlertState, Labels, Sample
from dutyd.rules.alerts import Ack, Alert, fingerprint
from dutyd.rules.compiled import CompiledRule, SeriesState
from dutyd.rules.config import FlappingConfig, RuleConfig
from dutyd.rules.eventcounts import CountedRow, EventCounts
from dutyd.rules.matchers import label_of
from dutyd.rules.mutes import PARENT_DOWN, WAITING_FOR_PARENT, MutePolicy
from dutyd.rules.overlays import MaintenanceWindow, Silence
from dutyd.rules.summaries import (
    render_text,
    retired_summaries,
    summaries,
    summary_template,
    unwatched_summaries,
)
from dutyd.rules.views import alert_view

TARGET_UP = "target_up"
# The note of an alert ended because its target left the configuration.
REMOVED_TARGET = "removed from the configuration"

__all__ = ["TARGET_UP", "CompiledRule", "RuleEngine", "SeriesState", "UnknownAlert"]


class UnknownAlert(LookupError):
    """No active alert has this fingerprint."""


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
        self._spanning = [r for r in self.rules.values() if r.spans_targets]
        self.flapping = flapping or FlappingConfig()
        self._alerts: dict[str, Alert] = {}
        self.mutes = MutePolicy(parents)
        self.counts = EventCounts()
        self._dirty: set[tuple[CompiledRule, Labels]] = set()
        self._provisional = False  # set by ingest for the batch it evaluates
        # When the poll whose sample is being evaluated ended, or its start where that is not
        # given (None outside `ingest`).
        self._observed_at: float | None = None
        self._poll_ended: float | None = None

    @property
    def metrics(self) -> set[str]:
        return set(self._by_metric)

    @property
    def alerts(self) -> Mapping[str, Alert]:
        """The alerts by fingerprint (read-only: they change through the engine's methods)."""
        return MappingProxyType(self._alerts)

    @property
    def silences(self) -> Mapping[str, Silence]:
        return self.mutes.silences

    @property
    def windows(self) -> Mapping[str, MaintenanceWindow]:
        return self.mutes.windows

    @property
    def counted(self) -> list[CountedRow]:
        """Counter increases of `events` rules not yet persisted (see `take_counted`)."""
        return self.counts.unsaved

    def set_parents(
        self,
        parents: Mapping[str, Iterable[str]],
        answer_within: Mapping[str, float] | None = None,
    ) -> None:
        """The targets' parents, and per parent how long a child's page waits for its answer
        (without, a child's alert does not wait for its parents' answer)."""
        self.mutes.set_parents(parents)
        if answer_within is not None:
            self.mutes.set_answer_within(answer_within)

    # -- overlays: the duty operations change them through these -------------------------------

    def add_silence(self, silence: Silence) -> None:
        self.mutes.add_silence(silence)

    def end_silence(self, silence_id: str) -> Silence | None:
        """Remove a silence; returns it, or None when there is none of this id."""
        return self.mutes.end_silence(silence_id)

    def add_window(self, window: MaintenanceWindow) -> None:
        self.mutes.add_window(window)

    def end_window(self, window_id: str, now: float) -> MaintenanceWindow | None:
        """Close a maintenance window now (its past time still counts as excluded)."""
        return self.mutes.end_window(window_id, now)

    def replace_stored_overlays(
        self, silences: Iterable[Silence], windows: Iterable[MaintenanceWindow]
    ) -> None:
        """The silences and ad hoc windows as stored, in place of the engine's own (the
        config's scheduled windows stay): at start, and in a cluster, what other nodes set."""
        self.mutes.replace_stored(silences, windows)

    def shift(self, seconds: float) -> None:
        """Move every moment the engine keeps by `seconds`, the durations between them and
        to now unchanged: dutyd's clock was re-anchored onto a stepped system clock
        (`duty.clockwatch`). Silences and maintenance windows are not moved: their ends
        are times people set and read on the wall clock."""
        for alert in self._alerts.values():
            alert.shift(seconds)
        for rule in self.rules.values():
            for state in rule.series.values():
                state.shift(seconds)
        self.counts.shift(seconds)
        self.mutes.deps.shift(seconds)
        if self._observed_at is not None:
            self._observed_at += seconds

    def take_counted(self) -> list[CountedRow]:
        """The counter increases not yet persisted, handed over to be written."""
        return self.counts.take_unsaved()

    def put_back_counted(self, rows: list[CountedRow]) -> None:
        """Increases taken by `take_counted` that the store refused, kept for the next write."""
        self.counts.put_back(rows)

    # -- evaluation -----------------------------------------------------------------------------

    def ingest(
        self,
        samples: Iterable[Sample],
        now: float,
        provisional: bool = False,
        observed_at: float | None = None,
    ) -> list[AlertEvent]:
        """Evaluate new samples. `provisional`: they are an SNMP trap's word, which opens an
        alert but holds it only until the next sample that contradicts it (rules.alerts).
        `observed_at`: when the poll that read them ended (default: the samples' own time,
        its start). A child's trouble and a parent's answer are compared by it: a parent poll
        that answered while a child's poll was still waiting out its timeout says nothing of
        the parent after the child's fault."""
        self._provisional = provisional
        self._poll_ended = observed_at
        events: list[AlertEvent] = []
        by_metric = self._by_metric
        # Groups of `across` rules are judged once per batch, after all of its members.
        self._dirty: set[tuple[CompiledRule, Labels]] = set()
        went_down = False
        for sample in samples:
            self._observed_at = sample.timestamp if observed_at is None else observed_at
            if sample.name == TARGET_UP:
                went_down |= self._note_target(sample)
            rules = by_metric.get(sample.name)
            if not rules:
                continue
            for rule in rules:
                if rule.selects(sample):
                    if rule.simple:
                        self._step_series(rule, sample.labels, sample.value, now, events)
                    else:
                        self._stateful(rule, sample, now, events)
        self._observed_at = None
        if self._dirty:
            for rule, group in self._dirty:
                self._eval_group(rule, group, now, events)
            self._dirty = set()
        self._provisional = False
        if went_down:
            # A parent down explains its children's paged alerts now, before a step of
            # theirs comes due (not at the next tick).
            self._explain_all(now, events)
        return events

    def _note_target(self, sample: Sample) -> bool:
        """Note a target's `target_up`; True when it went down (it was not down before)."""
        target = label_of(sample.labels, "target")
        up = sample.value == 1.0
        was_up = self.mutes.deps.up.get(target)
        # A trap's word (provisional) is no parent's answer to a poll.
        answered = sample.timestamp if self._poll_ended is None else self._poll_ended
        self.mutes.note_target(target, up, None if self._provisional else answered)
        if up:
            return False
        # The target's other readings stopped: its alerts keep their state instead of firing
        # or resolving on what was read before it went down (absent rules are about exactly
        # that silence, so they go on).
        for alert in self._alerts.values():
            rule = self.rules.get(alert.rule)
            if (
                rule is not None
                and rule.config.metric != TARGET_UP
                and rule.absent is None
                and alert.label("target") == target
            ):
                alert.last_holds = None
        return was_up is not False

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
            self._alerts[alert.fingerprint] = alert
        if value is not None:
            alert.value = value
        cfg = rule.config
        previous = alert.advance(holds, now, cfg.for_, cfg.keep_firing_for, self._provisional)
        if previous in (AlertState.INACTIVE, AlertState.RESOLVED):
            # Its trouble was seen in the poll that ended then: compared with the end of the
            # parents' polls (`Dependencies.answered`), on the samples' clock whatever the
            # engine's `now` is. Found by time alone (no sample): nothing to wait for.
            alert.observed_at = self._observed_at
        if value is not None and alert.active:
            alert.peak = rule.worse(alert.peak, value)
        if previous is not None:
            self._transition(rule, alert, previous, now, out)

    def _stateful(
        self, rule: CompiledRule, sample: Sample, now: float, out: list[AlertEvent]
    ) -> None:
        cfg = rule.config
        st = rule.series_state(sample.labels)
        raw = sample.value
        prev_raw, prev_ts = st.last_raw, st.last_ts
        st.last_raw, st.last_ts, st.seen = raw, sample.timestamp, now
        if cfg.events is not None:
            self.counts.note(rule, sample.labels, st, prev_raw, raw, now)
            self._eval_events(rule, sample.labels, st, now, out)
            return
        if rule.absent is not None:
            labels = rule.alert_labels(sample.labels)  # a sample came: not absent
            self._step(rule, labels, rule.alerts.get(labels), False, 0.0, now, out)
            return
        value = rule.derive(st, raw, prev_raw, prev_ts, sample.timestamp, now)
        if value is None:
            return
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
        members = rule.members_of(group)
        count = sum(1 for h in members.values() if h)
        if across.mode == "any":
            holds = count >= 1
        elif across.mode == "all":
            holds = bool(members) and count == len(members)
        else:
            holds = count >= across.n
        labels = rule.alert_labels(group)
        self._step(rule, labels, rule.alerts.get(labels), holds, float(count), now, out)

    def _eval_events(
        self, rule: CompiledRule, series: Labels, st: SeriesState, now: float, out: list
    ) -> None:
        count = self.counts.count(rule, st, now)
        labels = rule.alert_labels(series)
        alert = rule.alerts.get(labels)
        assert rule.config.events is not None
        self._step(rule, labels, alert, count > rule.config.events.more_than, count, now, out)

    # -- groups spread over shards ---------------------------------------------------------------

    @property
    def shares_groups(self) -> bool:
        """Some `across` rule groups series of several targets, which shards may split among
        nodes (without one, sharded nodes have no holds to exchange)."""
        return bool(self._spanning)

    def group_holds(self, owns: Callable[[str], bool]) -> list[tuple[str, Labels, Labels, bool]]:
        """(rule, group, series, holds) of the members this node reads, of the groups that may
        span targets, for the series of the targets it owns: what it tells the other nodes."""
        out: list[tuple[str, Labels, Labels, bool]] = []
        for rule in self._spanning:
            for group, members in rule.groups.items():
                for series, holds in members.items():
                    if owns(label_of(series, "target")):
                        out.append((rule.name, group, series, holds))
        return out

    def merge_group_members(
        self, remote: Mapping[str, Mapping[Labels, Mapping[Labels, bool]]], now: float
    ) -> list[AlertEvent]:
        """The holds other nodes published (rule -> group -> series -> holds), in place of the
        ones taken before; each group whose published members changed is judged again on all
        of its series, so its alert fires or resolves without waiting for a local sample.
        This node's own reading of a series wins over a published one."""
        events: list[AlertEvent] = []
        for rule in self._spanning:
            taken = remote.get(rule.name, {})
            new = {group: dict(members) for group, members in taken.items() if members}
            if new == rule.remote:
                continue
            old, rule.remote = rule.remote, new
            changed = [g for g in new.keys() | old.keys() if new.get(g) != old.get(g)]
            for group in sorted(changed):
                self._eval_group(rule, group, now, events)
        return events

    def release_targets(self, targets: Collection[str]) -> None:
        """This node no longer polls these targets (their shard moved): their series leave the
        groups' local members. Their last holds count as published ones until the next
        `merge_group_members` brings what the new owner reads, so the group is not judged on
        fewer members in between (a resolve and a new firing for nothing)."""
        if not targets:
            return
        for rule in self._spanning:
            for group, members in rule.groups.items():
                for series in [s for s in members if label_of(s, "target") in targets]:
                    rule.remote.setdefault(group, {})[series] = members.pop(series)

    def note_target_up(self, target: str, up: bool, at: float | None = None) -> None:
        """Whether a target another node polls is up (its status shared through the store), for
        the `depends_on` of this node's alerts; `at`: when the poll that said so started."""
        self.mutes.note_target(target, up, at)

    # -- dependencies: a child's page waits for its parents, and a parent down explains it --------

    def awaited_parents(self, fp: str, now: float) -> list[str]:
        """The parents the firing of alert `fp` waits for (to be polled out of turn)."""
        alert = self._alerts.get(fp)
        rule = self.rules.get(alert.rule) if alert is not None else None
        if alert is None or rule is None:
            return []
        return self.mutes.awaited_parents(alert, rule.config.depends_on, now)

    def recheck_held(self, now: float) -> list[AlertEvent]:
        """After parents answered: the firing alerts held for them page now unless a parent
        is down (then the parent's page is the one)."""
        events: list[AlertEvent] = []
        for alert in list(self._alerts.values()):
            rule = self.rules.get(alert.rule)
            if rule is not None and alert.state is AlertState.FIRING:
                self._reconcile(rule, alert, now, events)
        return events

    def _explain_all(self, now: float, out: list[AlertEvent]) -> None:
        for alert in list(self._alerts.values()):
            rule = self.rules.get(alert.rule)
            if rule is not None:
                self._explain(rule, alert, now, out)

    def _explain(self, rule: CompiledRule, alert: Alert, now: float, out: list[AlertEvent]) -> None:
        """A paged, firing alert of a child whose parent went down: its escalation and red
        line pause, and those paged are told once which parent explains it; when the parent is
        back and the alert still holds, they are told so and its escalation resumes."""
        if alert.state is not AlertState.FIRING or alert.notified is not AlertState.FIRING:
            return
        parent = self.mutes.deps.down_ancestor(alert.label("target"), rule.config.depends_on)
        if parent and not alert.explained_by:
            alert.explained_by, alert.explained_at = parent, now
            out.append(self._event(rule, alert, now, AlertChange.EXPLAINED, True, "", note=parent))
        elif not parent and alert.explained_by and self._explainer_back(rule, alert):
            was, alert.explained_by, alert.explained_at = alert.explained_by, "", None
            out.append(self._event(rule, alert, now, AlertChange.RESUMED, True, "", note=was))

    def _explainer_back(self, rule: CompiledRule, alert: Alert) -> bool:
        """The parent that explains `alert` answered since this run started (not heard from
        since a restart: not back yet), or is no longer among its ancestors (a reload)."""
        deps, was = self.mutes.deps, alert.explained_by
        if was in deps.up:
            return True
        return was not in deps.ancestors(alert.label("target"), rule.config.depends_on)

    def restore_events(self, rows: Iterable[CountedRow]) -> None:
        """Take back stored counter increases (rule, series, ts, increment, counter value),
        oldest first, so a 365-day count survives restarts."""
        self.counts.restore(self.rules, rows)

    # -- time -----------------------------------------------------------------------------------

    def tick(self, now: float) -> list[AlertEvent]:
        """What time alone changes: `for` elapsed, keep_firing_for over, stale series, ages,
        events leaving their window, red lines, expired acks and silences, flapping settled."""
        events: list[AlertEvent] = []
        for rule in self._timed:
            self._tick_rule(rule, now, events)
        for alert in list(self._alerts.values()):
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
                previous = alert.advance(
                    alert.last_holds, now, cfg.for_, cfg.keep_firing_for, alert.provisional
                )
                if previous is not None:
                    self._transition(rule, alert, previous, now, events)
            self._explain(rule, alert, now, events)
            if alert.state is AlertState.FIRING and alert.notified is not AlertState.FIRING:
                # A firing held back until now (a parent back) is announced before its red line.
                self._reconcile(rule, alert, now, events)
            if (
                cfg.red_line is not None
                and alert.state is AlertState.FIRING
                and not alert.red_line_sent
                and self.outage(alert, now) >= cfg.red_line
                and not self._parent_holds(rule, alert, now)
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
        for alert in self._alerts.values():
            if alert.state is AlertState.PENDING and alert.last_holds and alert.active_since:
                rule = self.rules.get(alert.rule)
                if rule is not None:
                    t = alert.active_since + rule.config.for_
                    best = t if best is None or t < best else best
        return best

    def outage(self, alert: Alert, now: float) -> float:
        """How long the alert has been active, minus time inside maintenance windows."""
        return self.mutes.outage(alert, now)

    # -- events ---------------------------------------------------------------------------------

    def _mute(self, rule: CompiledRule, alert: Alert, now: float) -> str:
        return self.mutes.reason(alert, rule.config.depends_on, now)

    def _parent_holds(self, rule: CompiledRule, alert: Alert, now: float) -> bool:
        """A parent is down (or not yet heard from): the red line waits, and is crossed once
        the parent is back if the alert still holds."""
        return bool(alert.explained_by) or self._mute(rule, alert, now).startswith(
            (PARENT_DOWN, WAITING_FOR_PARENT)
        )

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
                alert.explained_by = ""  # its thread ends here
        else:
            notify = not mute
        alert.muted_reason = mute
        out.append(
            self._event(rule, alert, now, AlertChange.STATE, notify, mute, previous=previous)
        )
        if started_flapping:
            # Flapping under a parent's outage is the parent's story: explained first (its
            # escalation then holds the flapping notice back).
            self._explain(rule, alert, now, out)
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
                out.append(self._event(rule, alert, now, AlertChange.STATE, True, ""))
        elif (
            alert.state in (AlertState.RESOLVED, AlertState.INACTIVE)
            and alert.notified is AlertState.FIRING
            and not alert.flapping
        ):
            was_inactive = alert.resolve_announced(now) is AlertState.INACTIVE
            alert.notified = AlertState.RESOLVED
            alert.muted_reason = ""
            alert.explained_by = ""
            out.append(self._event(rule, alert, now, AlertChange.STATE, True, ""))
            if was_inactive:
                self._drop(rule, alert)

    def _drop(self, rule: CompiledRule, alert: Alert) -> None:
        rule.alerts.pop(alert.labels, None)
        self._alerts.pop(alert.fingerprint, None)

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
            annotations.append(("description", render_text(rule, cfg.description, alert, now)))
        if cfg.reference:
            annotations.append(("reference", cfg.reference.en))
        # English in full for the log and the Alertmanager; per language with the duration
        # left open for the pages (see `AlertEvent.summary_in`).
        alert.summary = render_text(rule, summary_template(rule, alert), alert, now)
        return AlertEvent(
            fingerprint=alert.fingerprint,
            rule=alert.rule,
            labels=alert.labels,
            state=alert.state,
            previous=alert.state if previous is None else previous,
            severity=alert.severity,
            summary=alert.summary,
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
            summaries=summaries(rule, alert, now, keep_duration=alert.active),
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
        alert = self._alerts.get(fp)
        rule = self.rules.get(alert.rule) if alert is not None else None
        if alert is None or rule is None or not alert.active:
            raise UnknownAlert(f"no pending or firing alert {fp}")
        return alert, rule

    def retire_targets(self, targets: Collection[str], now: float) -> list[AlertEvent]:
        """End the alerts of targets removed from the configuration: a firing alert resolves
        with a notice saying why (those paged must not be left with an alert nobody will ever
        clear), a pending one is dropped."""
        ending = [
            (rule, alert, retired_summaries(alert.label("target"), alert.rule), REMOVED_TARGET)
            for rule in self.rules.values()
            for alert in list(rule.alerts.values())
            if alert.label("target") in targets
        ]
        return self._retire(ending, now)

    def retire_unwatched(self, new: RuleEngine, now: float) -> list[AlertEvent]:
        """Before a reload hands this engine's alerts to `new`: end each active alert `new`
        would never evaluate again, with a notice saying why: its rule is gone, or changed
        so that the alert's series is no longer selected (another metric, matchers or
        targets that leave it out, other rule labels). Otherwise it would page reminders
        forever and never resolve."""
        ending = []
        for rule in self.rules.values():
            for alert in list(rule.alerts.values()):
                if not alert.active:
                    continue
                how = _unwatched_by(rule, new.rules.get(rule.name), alert)
                if how:
                    texts = unwatched_summaries(alert.label("target"), alert.rule, how)
                    note = f"no longer watched: rule {how} by reload"
                    ending.append((rule, alert, texts, note))
        return self._retire(ending, now)

    def retire_alerts(
        self, ending: Callable[[Alert], dict[str, str] | None], note: str, now: float
    ) -> list[AlertEvent]:
        """End each active alert `ending` gives a notice for (its texts by language), when its
        cause ended where no sample of its series can say so (a shift that is over: its
        check-in alert ends at the hand-over). A firing one resolves with that notice and
        `note` as the reason, a pending one is dropped."""
        chosen = [
            (rule, alert, texts, note)
            for rule in self.rules.values()
            for alert in list(rule.alerts.values())
            if alert.active and (texts := ending(alert)) is not None
        ]
        return self._retire(chosen, now)

    def _retire(
        self, ending: list[tuple[CompiledRule, Alert, dict[str, str], str]], now: float
    ) -> list[AlertEvent]:
        """A firing alert resolves with `texts` as its notice and `note` as the reason, a
        pending one is dropped."""
        events: list[AlertEvent] = []
        for rule, alert, texts, note in ending:
            previous = alert.retire(now)
            if previous is AlertState.FIRING:
                event = self._event(
                    rule, alert, now, AlertChange.STATE, True, "", previous=previous
                )
                events.append(
                    dataclasses.replace(
                        event,
                        summary=texts["en"],
                        summaries=tuple(texts.items()),
                        note=note,
                    )
                )
            elif previous is AlertState.PENDING:
                self._drop(rule, alert)
        return events

    def forget_resolved(self, older_than: float) -> list[str]:
        """Drop resolved alerts last changed before `older_than` (they stay in the duty log);
        a flapping alert stays until it settles. Returns the dropped fingerprints."""
        dropped = []
        for fp, alert in list(self._alerts.items()):
            if (
                alert.state is AlertState.RESOLVED
                and not alert.flapping
                and (alert.resolved_at or 0) < older_than
            ):
                rule = self.rules.get(alert.rule)
                if rule is not None:
                    rule.alerts.pop(alert.labels, None)
                del self._alerts[fp]
                dropped.append(fp)
        return dropped

    def forget_stale(self, now: float, idle: float) -> tuple[int, int]:
        """Memory that no longer matters: per-series state of stateful rules not fed for
        `idle` seconds (`CompiledRule.forget_series`), expired silences, and windows ended
        before every active alert began. Returns (series, overlays) dropped."""
        series = sum(rule.forget_series(idle, now) for rule in self.rules.values())
        starts = [a.active_since for a in self._alerts.values() if a.active_since is not None]
        overlays = self.mutes.forget_expired(now, min([now, *starts]))
        return series, overlays

    def view(self, alert: Alert, now: float) -> dict[str, Any]:
        """An alert with its overlays, for the API and the CLI."""
        return alert_view(alert, self.rules.get(alert.rule), self.mutes, now)

    # -- restore --------------------------------------------------------------------------------

    def restore(self, alerts: Iterable[Alert]) -> None:
        """Take back alerts saved before a restart; those of rules that no longer exist are
        dropped. They wait for a fresh sample before they move (see `rules.alerts`)."""
        for alert in alerts:
            rule = self.rules.get(alert.rule)
            if rule is None:
                continue
            self._alerts[alert.fingerprint] = alert
            rule.alerts[alert.labels] = alert

    def replace_alerts(self, alerts: Iterable[Alert]) -> None:
        """Put these alerts in place of every alert held now (a standby taking over the
        active node's alerts from the shared store)."""
        self._alerts.clear()
        for rule in self.rules.values():
            rule.alerts.clear()
        self.restore(alerts)

    def replace_alerts_of(self, theirs: Callable[[Alert], bool], alerts: Iterable[Alert]) -> None:
        """Put these alerts in place of those held now for which `theirs` holds, and keep the
        others as they are (a sharded node takes the other nodes' alerts from the shared store
        and keeps its own, which it evaluates and records); given alerts for which `theirs`
        does not hold are left out."""
        for fp, alert in list(self._alerts.items()):
            if theirs(alert):
                self.drop_alert(fp)
        self.restore(a for a in alerts if theirs(a))

    def drop_alert(self, fingerprint: str) -> None:
        """Forget an alert without an event (its target moved to another node's shard)."""
        alert = self._alerts.pop(fingerprint, None)
        rule = self.rules.get(alert.rule) if alert is not None else None
        if alert is not None and rule is not None:
            rule.alerts.pop(alert.labels, None)

    def adopt(self, old: RuleEngine) -> None:
        """After a config reload: keep the alerts, overlays, target states and, for rules
        whose definition did not change, the per-series history (rates, windows, events)."""
        self.mutes.adopt(old.mutes)
        self.counts.adopt(old.counts)
        for name, rule in self.rules.items():
            before = old.rules.get(name)
            if before is not None and before.config == rule.config:
                rule.series = before.series
                rule.groups = before.groups
                rule.remote = before.remote
        self.restore(old._alerts.values())


def _unwatched_by(old: CompiledRule, new: CompiledRule | None, alert: Alert) -> str:
    """How a reload stops the new rule from evaluating `alert`: "removed", "changed" or ""
    (it still watches it). An `across` alert's labels are its group's, so only the rule's own
    identity (metric, grouping, labels) is compared for it, not its matchers."""
    if new is None:
        return "removed"
    old_across, new_across = old.config.across, new.config.across
    if (
        new.config.metric != old.config.metric
        or new.extra_labels != old.extra_labels
        or (new_across is None) != (old_across is None)
    ):
        return "changed"
    if new_across is not None and old_across is not None:
        return "" if new_across.by == old_across.by else "changed"
    series = tuple(kv for kv in alert.labels if kv not in old.extra_labels)
    return "" if new.selects(Sample(new.config.metric, series, 0.0, 0.0)) else "changed"


def alert_fingerprint(rule: str, labels: Mapping[str, str]) -> str:
    """The fingerprint of the alert a rule makes for a label set (for the API and tests)."""
    return fingerprint(rule, tuple(sorted(labels.items())))
