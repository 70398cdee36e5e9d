"""The alert journal: every alert event, in order, is written down and handed on.

Written down: one console/log line, the alert's row (so a restart resumes it with its start
time and red-line clock) and a duty-log entry. Handed on: to every listener (the notification
service), after it is recorded, so a page never goes out for an event the duty log lacks.

In a cluster, `recording(event)` says whether this node records an event: the rule events of
the active node (or of the node that polls the target, when sharded) and every event a person
caused on this node (an ack through its API). Others are only logged to the console: the
duty log holds each event once, whichever node saw it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from dutyd.core.loglimit import LogLimiter
from dutyd.core.records import AlertChange, AlertEvent, AlertState
from dutyd.duty.rulestate import alert_row
from dutyd.exporters.instrumentation import Instrumentation
from dutyd.rules.engine import RuleEngine
from dutyd.storage import Storage, StorageUnavailable

log = logging.getLogger("dutyd")
alert_log = logging.getLogger("dutyd.alert")

AlertListener = Callable[[AlertEvent], Awaitable[None]]


class AlertJournal:
    def __init__(
        self,
        engine: Callable[[], RuleEngine],
        storage: Storage,
        metrics: Instrumentation,
        recording: Callable[[AlertEvent], bool] = lambda event: True,
        node: str = "",
        limiter: LogLimiter | None = None,
    ) -> None:
        self._engine = engine
        # Console lines of pending/inactive churn (nothing paged) are collapsed by it.
        self.limiter = limiter
        self._storage = storage
        self._metrics = metrics
        self.recording = recording
        self.node = node
        self.listeners: list[AlertListener] = []
        self._queue: asyncio.Queue[AlertEvent] = asyncio.Queue()

    def put(self, event: AlertEvent) -> None:
        """Queue an event from synchronous code (a poll result, a rule tick)."""
        self._queue.put_nowait(event)

    def pending(self) -> int:
        """Events queued and not yet recorded."""
        return self._queue.qsize()

    async def run(self) -> None:
        while True:
            await self.record(await self._queue.get())

    async def drain(self) -> None:
        while not self._queue.empty():
            await self.record(self._queue.get_nowait())

    async def record(self, event: AlertEvent) -> None:
        """Log, persist and hand on one event (acks call this directly, to answer after it)."""
        self._metrics.alert_events.labels(str(event.state)).inc()
        word = str(event.state) if event.change is AlertChange.STATE else str(event.change)
        self._log_line(event, word)
        if not self.recording(event):
            return
        try:
            alert = self._engine().alerts.get(event.fingerprint)
            try:
                if alert is not None and alert.state is not AlertState.INACTIVE:
                    await self._storage.alerts.save(alert_row(alert))
                else:
                    await self._storage.alerts.delete(event.fingerprint)
            except StorageUnavailable:
                # The disk refuses writes (logged once by the store): the row is written
                # when it is back (`rulestate.resync_alerts`); the duty log entry is held
                # in memory by the store and written then, in order.
                pass
            await self._storage.log.append(
                event.timestamp,
                f"alert.{word}",
                event.actor or "dutyd",
                event.fingerprint,
                {
                    "rule": event.rule,
                    "labels": dict(event.labels),
                    "summary": event.summary,
                    "summaries": {lang: event.summary_in(lang) for lang, _ in event.summaries},
                    "value": event.value,
                    "severity": event.severity,
                    "active_since": event.active_since,
                    "state": str(event.state),
                    "notify": event.notify,
                    "muted_reason": event.muted_reason,
                    "note": event.note,
                    "red_line": event.red_line,
                    **self._origin(event),
                },
            )
        except Exception:
            log.exception("recording alert event failed")
        for listener in self.listeners:
            try:
                await listener(event)
            except Exception:
                log.exception("alert listener failed")

    def _origin(self, event: AlertEvent) -> dict[str, object]:
        """For what a person did: the node it was done on and the ack itself, so the other
        nodes of a cluster apply it (see `apply_remote`)."""
        if not self.node or not event.actor:
            return {}
        out: dict[str, object] = {"node": self.node}
        alert = self._engine().alerts.get(event.fingerprint)
        if event.change is AlertChange.ACKNOWLEDGED and alert is not None and alert.ack:
            out["ack"] = alert.ack.to_dict()
        return out

    async def apply_remote(self, event: AlertEvent) -> None:
        """An event another node recorded (an ack made there), applied here: the alert row
        and the listeners, not the duty log (it is there once already)."""
        self._log_line(event, str(event.change))
        try:
            alert = self._engine().alerts.get(event.fingerprint)
            if alert is not None and alert.state is not AlertState.INACTIVE:
                await self._storage.alerts.save(alert_row(alert))
        except StorageUnavailable:
            pass  # written when the disk is back (`rulestate.resync_alerts`)
        except Exception:
            log.exception("recording alert event failed")
        for listener in self.listeners:
            try:
                await listener(event)
            except Exception:
                log.exception("alert listener failed")

    def _log_line(self, event: AlertEvent, word: str) -> None:
        fields = {
            "alert": event.rule,
            "state": str(event.state),
            "severity": event.severity,
            **dict(event.labels),
            "value": event.value,
        }
        if (
            self.limiter is not None
            and event.change is AlertChange.STATE
            and event.state in (AlertState.PENDING, AlertState.INACTIVE)
            and not self.limiter.allow(f"alert {word}", event.fingerprint, fields)
        ):
            return  # a pending alert that went away again: it paged nobody, the duty log has it
        if not event.notify:
            fields["muted"] = event.muted_reason
        if event.actor:
            fields["by"] = event.actor
        level = logging.WARNING if event.state is AlertState.FIRING else logging.INFO
        alert_log.log(
            level, "%s %s: %s", word.upper(), event.rule, event.summary, extra={"fields": fields}
        )
