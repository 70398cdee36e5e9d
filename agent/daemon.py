"""The daemon: wires collectors, scheduler, store, rules, storage and HTTP, and runs them.

Data flow: scheduler -> PollResult -> SampleStore + RuleEngine -> AlertEvents -> duty log,
alert table and every registered alert listener (notifiers). Exporters read the store and
alert table at scrape time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from dutyd.agent.config import Settings, load_config
from dutyd.agent.scheduler import PollResult, Scheduler
from dutyd.agent.traps import retarget_traps, start_traps, stop_traps
from dutyd.collectors import COLLECTORS, Collector, CollectorContext
from dutyd.core.errors import ConfigError
from dutyd.core.latest import SampleStore, TargetStatus
from dutyd.core.records import AlertChange, AlertEvent, AlertState, Labels, Sample, labels_of
from dutyd.exporters.instrumentation import Instrumentation
from dutyd.exporters.prometheus import StoreExporter
from dutyd.notify.service import NotifyService
from dutyd.rules.alerts import Alert
from dutyd.rules.engine import RuleEngine
from dutyd.rules.matchers import compile_matchers
from dutyd.rules.overlays import Silence, Window
from dutyd.rules.packs import effective_rules
from dutyd.storage import Storage, StoredAlert, open_storage
from dutyd.web.api import install_api
from dutyd.web.server import HttpServer

log = logging.getLogger("dutyd")
alert_log = logging.getLogger("dutyd.alert")

AlertListener = Callable[[AlertEvent], Awaitable[None]]

# Resolved alerts stay visible (API, page) this long before they leave memory.
RESOLVED_RETENTION = 15 * 60.0
# Ad hoc maintenance windows that ended this long ago still count for red lines after a
# restart (an outage older than that has long crossed its red line).
WINDOW_LOOKBACK = 7 * 86400.0


def _fields(labels: Labels) -> dict[str, str]:
    return dict(labels)


class Daemon:
    def __init__(self, settings: Settings, config_path: Path | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.registry = CollectorRegistry(auto_describe=False)
        self.metrics = Instrumentation(self.registry, COLLECTORS)
        self.store = SampleStore()
        # As many threads as polls may be in flight, so a blocking poll never queues for a
        # thread while its timeout runs.
        self.context = CollectorContext(
            ThreadPoolExecutor(settings.scheduler.max_in_flight, thread_name_prefix="poll")
        )
        self.scheduler = Scheduler(self._on_poll, settings.scheduler.max_in_flight)
        self.engine = _engine_for(settings)
        self.storage: Storage = open_storage(settings.storage.path)
        self.http = HttpServer(
            self.registry,
            self._readiness,
            settings.http.listen,
            settings.http.port,
            web_config_file=settings.http.web_config_file,
        )
        self.listeners: list[AlertListener] = []
        # Escalation, notifications and the duty API (agent/notify/, agent/api.py).
        self.notify = NotifyService.for_daemon(self)
        self.listeners.append(self.notify)
        self.drills = install_api(self)
        self._events: asyncio.Queue[AlertEvent] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._ready = False
        self._help: dict[str, str] = {}
        self.traps: Any = None  # the SNMP trap listener (agent/traps.py) when configured
        self.registry.register(
            StoreExporter(lambda: self.store.samples(only_up=True), self._alerts, self._help)
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.storage.open()
        restored = [_alert_from_row(r) for r in await self.storage.load_alerts()]
        self.engine.restore(restored)
        await self._restore_overlays()
        if restored:
            log.info("alerts restored", extra={"fields": {"count": len(restored)}})
        await self.http.start()
        self._apply_targets(self.settings)
        self.traps = await start_traps(self)
        await self.notify.start(self.list_alerts(["firing"]))
        self._tasks.append(asyncio.create_task(self._event_loop(), name="alert-events"))
        self._tasks.append(asyncio.create_task(self._tick_loop(), name="rule-tick"))
        await self.storage.append_log(
            time.time(), "daemon.start", "dutyd", "", {"targets": len(self.settings.targets)}
        )
        self._ready = True
        log.info(
            "dutyd started",
            extra={
                "fields": {
                    "targets": len(self.settings.targets),
                    "rules": len(self.engine.rules),
                    "metrics": f"{self.http.url}/metrics",
                }
            },
        )

    async def stop(self) -> None:
        self._ready = False
        await self.scheduler.stop()
        await stop_traps(self.traps)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self._drain_events()
        await self.drills.close()
        await self.notify.stop()
        with contextlib.suppress(Exception):
            await self._save_rule_state()
        await self.http.stop()
        await self.context.close()
        with contextlib.suppress(Exception):
            await self.storage.append_log(time.time(), "daemon.stop", "dutyd", "", {})
        await self.storage.close()
        log.info("dutyd stopped")

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, reload on SIGHUP, stop cleanly."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        await self.start()
        try:
            await self._stopping.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.stop()

    def request_stop(self) -> None:
        self._stopping.set()

    async def reload(self) -> bool:
        """Re-read the config file; an invalid one keeps the running config and says why."""
        if self.config_path is None:
            log.warning("reload asked, but dutyd runs without a config file")
            return False
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            self.metrics.config_reloads.labels("rejected").inc()
            log.error("config reload rejected; keeping the running config\n%s", exc.report())
            await self.storage.append_log(
                time.time(),
                "config.reload_rejected",
                "dutyd",
                str(self.config_path),
                {"problems": exc.problems},
            )
            return False
        await self._apply(new)
        self.metrics.config_reloads.labels("applied").inc()
        await self.storage.append_log(
            time.time(),
            "config.reload",
            "dutyd",
            str(self.config_path),
            {"targets": len(new.targets)},
        )
        log.info("config reloaded", extra={"fields": {"targets": len(new.targets)}})
        return True

    async def _apply(self, new: Settings) -> None:
        old_targets = {t.name: t for t in self.settings.targets}
        new_targets = {t.name: t for t in new.targets}
        for name, cfg in old_targets.items():
            if new_targets.get(name) != cfg:
                await self.scheduler.remove(name)
                self.store.remove_target(name)
        if new.rules != self.settings.rules or new.targets != self.settings.targets:
            engine = _engine_for(new)
            engine.adopt(self.engine)
            self.engine = engine
        if new.http != self.settings.http or new.storage != self.settings.storage:
            log.warning("http and storage settings take effect at the next restart")
        if new.traps != self.settings.traps:
            log.warning("traps settings take effect at the next restart")
        self.settings = new
        self.notify.apply(new.oncall, new.escalation, new.notify)
        self._apply_targets(new)
        await retarget_traps(self.traps, new)

    def _apply_targets(self, settings: Settings) -> None:
        running = self.scheduler.collectors
        counts: dict[str, int] = {}
        for cfg in settings.targets:
            counts[cfg.kind] = counts.get(cfg.kind, 0) + 1
            if cfg.name in running:
                continue
            collector_cls = COLLECTORS[cfg.kind]
            collector: Collector = collector_cls(cfg, self.context)
            self._help.update(collector.metric_help)
            self.store.status.setdefault(cfg.name, TargetStatus(cfg.name, cfg.kind))
            self.scheduler.start(collector)
        for kind in COLLECTORS:
            self.metrics.targets.labels(kind).set(counts.get(kind, 0))

    def _readiness(self) -> tuple[bool, str]:
        if not self._ready:
            return False, "starting or stopping"
        return True, f"ready: {len(self.settings.targets)} targets, {len(self.engine.rules)} rules"

    # -- data path ------------------------------------------------------------------------------

    def _on_poll(self, result: PollResult) -> None:
        m = self.metrics
        m.polls.labels(result.kind).inc()
        m.poll_duration.labels(result.kind).observe(result.duration)
        m.scheduler_lag.observe(result.lag)
        m.samples_ingested.inc(len(result.samples))
        status = self.store.status.setdefault(
            result.target, TargetStatus(result.target, result.kind)
        )
        was_up = status.up if status.last_poll_at is not None else None
        status.last_poll_at = result.started_at
        status.last_duration = result.duration
        if result.ok:
            status.up, status.reason, status.message = True, "", ""
            status.last_success_at = result.started_at
            status.consecutive_failures = 0
            self.store.replace_target(result.target, result.samples)
            if was_up is False:
                log.info("target recovered", extra={"fields": {"target": result.target}})
        else:
            m.poll_errors.labels(result.kind, result.reason).inc()
            status.up, status.reason, status.message = False, result.reason, result.message
            status.consecutive_failures += 1
            status.error_counts[result.reason] = status.error_counts.get(result.reason, 0) + 1
            self.store.update_target(result.target, result.samples)
            # Log once on the way down, not on every failed poll.
            if was_up is not False:
                log.warning(
                    "target down",
                    extra={
                        "fields": {
                            "target": result.target,
                            "reason": result.reason,
                            "detail": result.message,
                        }
                    },
                )
        t0 = time.perf_counter()
        events = self.engine.ingest(result.samples, time.time())
        m.rule_evaluation.observe(time.perf_counter() - t0)
        for event in events:
            self._events.put_nowait(event)

    async def _tick_loop(self) -> None:
        while True:
            # Wake at the next `for` deadline, so a pending alert fires on time, not up to a
            # second late; and at least every second for everything else time changes.
            deadline = self.engine.next_deadline()
            delay = 1.0 if deadline is None else min(1.0, max(0.005, deadline - time.time()))
            await asyncio.sleep(delay)
            now = time.time()
            for event in self.engine.tick(now):
                self._events.put_nowait(event)
            forgotten = self.engine.forget_resolved(now - RESOLVED_RETENTION)
            rows, self.engine.counted = self.engine.counted, []
            try:
                for fp in forgotten:
                    await self.storage.delete_alert(fp)
                if rows:
                    await self.storage.append_rule_events(
                        [(rule, dict(series), ts, inc, v) for rule, series, ts, inc, v in rows]
                    )
            except Exception:
                # A full or broken disk must not stop the rules; the duty log says why.
                log.exception("recording rule state failed")

    async def _event_loop(self) -> None:
        while True:
            event = await self._events.get()
            await self._handle_event(event)

    async def _drain_events(self) -> None:
        while not self._events.empty():
            await self._handle_event(self._events.get_nowait())

    async def _handle_event(self, event: AlertEvent) -> None:
        self.metrics.alert_events.labels(str(event.state)).inc()
        is_state = event.change is AlertChange.STATE
        word = str(event.state) if is_state else str(event.change)
        fields = {
            "alert": event.rule,
            "state": str(event.state),
            "severity": event.severity,
            **_fields(event.labels),
            "value": event.value,
        }
        if not event.notify:
            fields["muted"] = event.muted_reason
        if event.actor:
            fields["by"] = event.actor
        level = logging.WARNING if event.state is AlertState.FIRING else logging.INFO
        alert_log.log(
            level,
            "%s %s: %s",
            word.upper(),
            event.rule,
            event.summary,
            extra={"fields": fields},
        )
        try:
            alert = self.engine.alerts.get(event.fingerprint)
            if alert is not None and alert.state is not AlertState.INACTIVE:
                await self.storage.save_alert(_alert_row(alert))
            else:
                await self.storage.delete_alert(event.fingerprint)
            await self.storage.append_log(
                event.timestamp,
                f"alert.{word}",
                event.actor or "dutyd",
                event.fingerprint,
                {
                    "rule": event.rule,
                    "labels": _fields(event.labels),
                    "summary": event.summary,
                    "value": event.value,
                    "severity": event.severity,
                    "active_since": event.active_since,
                    "state": str(event.state),
                    "notify": event.notify,
                    "muted_reason": event.muted_reason,
                    "note": event.note,
                    "red_line": event.red_line,
                },
            )
        except Exception:
            log.exception("recording alert event failed")
        for listener in self.listeners:
            try:
                await listener(event)
            except Exception:
                log.exception("alert listener failed")

    def _alerts(self) -> list[Alert]:
        return list(self.engine.alerts.values())

    async def _save_rule_state(self) -> None:
        """At a clean stop: every alert as it is now (keep_firing_for clocks, values) and the
        event counts not yet written. A crash loses at most the last second of counts."""
        for alert in list(self.engine.alerts.values()):
            if alert.state is not AlertState.INACTIVE:
                await self.storage.save_alert(_alert_row(alert))
        rows, self.engine.counted = self.engine.counted, []
        if rows:
            await self.storage.append_rule_events(
                [(rule, dict(series), ts, inc, v) for rule, series, ts, inc, v in rows]
            )

    async def _restore_overlays(self) -> None:
        now = time.time()
        for s in await self.storage.load_silences(now):
            self.engine.silences[str(s.id)] = Silence(
                str(s.id), compile_matchers(s.matchers), s.until, s.actor, s.reason, s.created
            )
        for w in await self.storage.load_windows(now - WINDOW_LOOKBACK):
            self.engine.windows[str(w.id)] = Window(
                str(w.id),
                frozenset(w.targets),
                compile_matchers(w.matchers),
                w.start,
                w.end,
                w.reason,
                w.actor,
            )
        spans = [r.config.events.over for r in self.engine.rules.values() if r.config.events]
        if spans:
            rows = await self.storage.load_rule_events(now - max(spans))
            self.engine.restore_events(
                (rule, labels_of(series), ts, inc, v) for rule, series, ts, inc, v in rows
            )

    # -- duty operations: what the API and the CLI call ----------------------------------------

    def list_alerts(self, states: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Alerts (pending, firing, recently resolved) with their overlays: acknowledged,
        silenced_by, maintenance, suppressed (the mute reason), flapping, duration, outage."""
        now = time.time()
        wanted = set(states)
        return [
            self.engine.view(a, now)
            for a in list(self.engine.alerts.values())
            if a.state is not AlertState.INACTIVE and (not wanted or str(a.state) in wanted)
        ]

    async def acknowledge(
        self, fingerprint: str, actor: str, note: str = "", expires_at: float | None = None
    ) -> AlertEvent:
        """Someone takes the alert (escalation stops). Raises `UnknownAlert` when there is no
        pending or firing alert with this fingerprint."""
        if not actor:
            raise ValueError("an acknowledgement needs the name of who takes the alert")
        event = self.engine.acknowledge(fingerprint, actor, note, expires_at, time.time())
        await self._handle_event(event)
        return event

    async def unacknowledge(self, fingerprint: str, actor: str, note: str = "") -> AlertEvent:
        event = self.engine.unacknowledge(fingerprint, actor, note, time.time())
        await self._handle_event(event)
        return event

    async def silence(
        self, matchers: Mapping[str, Any], until: float, actor: str, reason: str
    ) -> int:
        """Mute alerts whose labels match (`{"target": "db1"}`, `{"rule": {"=~": "disk.*"}}`
        style matchers, as in rule `match:`) until `until`. Returns the silence id."""
        now = time.time()
        compiled = compile_matchers(matchers)  # ValueError names a bad regex or operator
        if not compiled:
            raise ValueError("a silence needs at least one label matcher")
        if until <= now:
            raise ValueError("a silence must end in the future")
        if not actor or not reason:
            raise ValueError("a silence needs who sets it and why")
        data = {k: m.to_data() for k, m in compiled}
        sid = await self.storage.add_silence(data, until, actor, reason, now)
        self.engine.silences[str(sid)] = Silence(str(sid), compiled, until, actor, reason, now)
        await self.storage.append_log(
            now,
            "silence.add",
            actor,
            f"silence:{sid}",
            {"matchers": data, "until": until, "reason": reason},
        )
        return sid

    async def remove_silence(self, silence_id: int, actor: str) -> bool:
        now = time.time()
        removed = self.engine.silences.pop(str(silence_id), None)
        ok = await self.storage.end_silence(silence_id, now, actor)
        if removed is None and not ok:
            return False
        await self.storage.append_log(now, "silence.remove", actor, f"silence:{silence_id}", {})
        return True

    def list_silences(self) -> list[dict[str, Any]]:
        now = time.time()
        return [s.to_dict() for s in self.engine.silences.values() if s.until > now]

    async def add_maintenance(
        self,
        start: float,
        end: float,
        actor: str,
        reason: str,
        targets: Iterable[str] = (),
        matchers: Mapping[str, Any] | None = None,
    ) -> int:
        """An ad hoc maintenance window by target names and/or label matchers. Alerts inside
        it are recorded but not sent, and its time does not count toward red lines."""
        now = time.time()
        compiled = compile_matchers(matchers or {})
        names = sorted(set(targets))
        if not names and not compiled:
            raise ValueError("a maintenance window needs targets or label matchers")
        if end <= start:
            raise ValueError("a maintenance window must end after it starts")
        if not actor or not reason:
            raise ValueError("a maintenance window needs who sets it and why")
        data = {k: m.to_data() for k, m in compiled}
        wid = await self.storage.add_window(names, data, start, end, actor, reason, now)
        self.engine.windows[str(wid)] = Window(
            str(wid), frozenset(names), compiled, start, end, reason, actor
        )
        await self.storage.append_log(
            now,
            "maintenance.add",
            actor,
            f"maintenance:{wid}",
            {"targets": names, "matchers": data, "start": start, "end": end, "reason": reason},
        )
        return wid

    async def remove_maintenance(self, window_id: int, actor: str) -> bool:
        """End an ad hoc window now (its past time still counts as excluded)."""
        now = time.time()
        window = self.engine.windows.get(str(window_id))
        ok = await self.storage.end_window(window_id, now, actor)
        if window is None and not ok:
            return False
        if window is not None:
            window.end = min(window.end, now)
        await self.storage.append_log(
            now, "maintenance.remove", actor, f"maintenance:{window_id}", {}
        )
        return True

    def ingest_samples(self, samples: list[Sample]) -> None:
        """Feed samples dutyd itself produces (the drill command's
        `drill_last_timestamp_seconds`, an operator-entered `security_virus_outbreaks_total`)
        to the rules, as if a target had been polled. Give them a `target` label."""
        for event in self.engine.ingest(samples, time.time()):
            self._events.put_nowait(event)

    def list_maintenance(self) -> list[dict[str, Any]]:
        now = time.time()
        return [w.to_dict() for w in self.engine.windows.values() if w.every or w.end > now]


def _engine_for(settings: Settings) -> RuleEngine:
    rules = settings.rules
    engine = RuleEngine(
        effective_rules(rules), rules.flapping, {t.name: t.depends_on for t in settings.targets}
    )
    for m in rules.maintenance:
        wid = f"config:{m.name}"
        engine.windows[wid] = Window(
            wid,
            frozenset(m.targets),
            compile_matchers(m.match),
            m.start.timestamp(),
            m.end.timestamp(),
            m.reason,
            "config",
            m.every,
            m.name,
        )
    return engine


def _alert_row(alert: Alert) -> StoredAlert:
    return StoredAlert(
        alert.fingerprint,
        alert.rule,
        dict(alert.labels),
        alert.severity,
        str(alert.state),
        alert.active_since,
        alert.fired_at,
        alert.resolved_at,
        alert.value,
        alert.summary,
        alert.extra(),
    )


def _alert_from_row(row: StoredAlert) -> Alert:
    alert = Alert(
        rule=row.rule,
        labels=tuple(sorted(row.labels.items())),
        severity=row.severity,
        state=AlertState(row.state),
        active_since=row.active_since,
        fired_at=row.fired_at,
        resolved_at=row.resolved_at,
        value=row.value,
        summary=row.summary,
        fingerprint=row.fingerprint,
    )
    alert.load_extra(row.extra)
    return alert
