"""The alert journal: every alert event, in order, is written down and handed on.

Written down: one console/log line, the alert's row (so a restart resumes it with its start
time and red-line clock) and a duty-log entry. Handed on: to every listener (the notification
service), after it is recorded, so a page never goes out for an event the duty log lacks.

In a cluster, `recording(event)` says whether this node records an event: the rule events of
the active node (or of the node that polls the target, when sharded) and every event a person
caused on this node (an ack through its API). Others are only logged to the console: the
duty log holds each event once, whichever node saw it.

Fencing. A rule event's writes carry `fence()`, the epoch of the notifier lease this node holds
(sharded: its member epoch; None alone): a node that lost the lease (sharded: its targets),
even one that does not know it yet (a write stuck behind a database outage), has them
refused by the store, and hands nothing on.
The alert row keeps an outage's first firing time as first recorded (page ids are built from
it): the event handed on carries that time, whichever node fired the alert first.

Promotion. While a node takes over (`hold` ... `release`) events queue and are recorded after
the store's alerts are loaded, by the node that is active by then. `supersede` drops those
queued before the load about alerts the store holds: the store's copy replaced the state
they came from (the engine derives the alert again from the next sample).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Collection

from dutyd.core.loglimit import LogLimiter
from dutyd.core.records import AlertChange, AlertEvent, AlertState
from dutyd.duty.rulestate import alert_row
from dutyd.exporters.instrumentation import Instrumentation
from dutyd.rules.alerts import Alert
from dutyd.rules.engine import RuleEngine
from dutyd.storage import FencedOut, NewLogEntry, Storage, StorageUnavailable

log = logging.getLogger("dutyd")
alert_log = logging.getLogger("dutyd.alert")

AlertListener = Callable[[AlertEvent], Awaitable[None]]

# A cluster node's fenced record that the database did not take is tried again this often,
# doubling up to the max.
RECORD_RETRY = 0.2
RECORD_RETRY_MAX = 1.0


class AlertJournal:
    def __init__(
        self,
        engine: Callable[[], RuleEngine],
        storage: Storage,
        metrics: Instrumentation,
        recording: Callable[[AlertEvent], bool] = lambda event: True,
        node: str = "",
        fence: Callable[[], int | None] = lambda: None,
        limiter: LogLimiter | None = None,
    ) -> None:
        self._engine = engine
        # Console lines of pending/inactive churn (nothing paged) are collapsed by it.
        self.limiter = limiter
        self._storage = storage
        self._metrics = metrics
        self.recording = recording
        self.node = node
        self.fence = fence
        self.listeners: list[AlertListener] = []
        # (generation, event): `supersede` drops events of earlier generations.
        self._queue: asyncio.Queue[tuple[int, AlertEvent]] = asyncio.Queue()
        self._generation = 0
        self._superseded: tuple[int, frozenset[str]] = (0, frozenset())
        self._open = asyncio.Event()
        self._open.set()
        self._queued: dict[str, int] = {}  # fingerprint -> events queued, not yet recorded
        self._fenced_epoch: int | None = None
        self._draining = False

    def put(self, event: AlertEvent) -> None:
        """Queue an event from synchronous code (a poll result, a rule tick)."""
        self._queued[event.fingerprint] = self._queued.get(event.fingerprint, 0) + 1
        self._queue.put_nowait((self._generation, event))

    def pending(self) -> int:
        """Events queued and not yet recorded."""
        return self._queue.qsize()

    def hold(self) -> None:
        """Promotion begins: queue events, record none until `release`."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def queued_fingerprints(self) -> set[str]:
        """The alerts of the events queued and not yet recorded."""
        return set(self._queued)

    def supersede(self, fingerprints: Collection[str]) -> None:
        """The store's copy of these alerts replaced the engine's: events about them queued
        until now describe the state replaced, and are not recorded."""
        self._generation += 1
        self._superseded = (self._generation, frozenset(fingerprints))

    async def run(self) -> None:
        while True:
            generation, event = await self._queue.get()
            await self._open.wait()
            await self._take(generation, event)

    async def drain(self) -> None:
        self._draining = True  # a stop: a record the database does not take is not waited for
        while not self._queue.empty():
            await self._take(*self._queue.get_nowait())

    async def _take(self, generation: int, event: AlertEvent) -> None:
        fp = event.fingerprint
        left = self._queued.get(fp, 1) - 1
        if left > 0:
            self._queued[fp] = left
        else:
            self._queued.pop(fp, None)
        before, fingerprints = self._superseded
        if generation < before and fp in fingerprints:
            self._log_line(event, "superseded")
            return
        await self.record(event)

    async def record(self, event: AlertEvent) -> None:
        """Log, persist and hand on one event (acks call this directly, to answer after it)."""
        self._metrics.alert_events.labels(str(event.state)).inc()
        word = str(event.state) if event.change is AlertChange.STATE else str(event.change)
        self._log_line(event, word)
        if not self.recording(event):
            return
        # What a person did is recorded whatever the lease (a standby's API records acks).
        epoch = None if event.actor else self.fence()
        alert = self._engine().alerts.get(event.fingerprint)
        # A resolve recorded after its alert fired again (the events queue behind a slow
        # write): this episode's row ends here, and the next one's is written by its own
        # events. Saving the alert as it is now would carry the new episode into the row of
        # the old, whose first firing the store keeps: the new pages would take the old ids.
        moved_on = (
            event.change is AlertChange.STATE
            and event.state is AlertState.RESOLVED
            and alert is not None
            and alert.state is not AlertState.RESOLVED
        )
        keep = alert is not None and alert.state is not AlertState.INACTIVE and not moved_on
        entry = NewLogEntry(
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
        try:
            fired_at = await self._write(event.fingerprint, alert if keep else None, entry, epoch)
            if (
                alert is not None
                and event.change is AlertChange.STATE
                and event.state is AlertState.FIRING
                and fired_at is not None
                and fired_at != alert.fired_at
            ):
                # The outage's first firing as the store recorded it (another node's): the
                # page ids of this alert are built from it.
                alert.fired_at = alert.key_at = fired_at
                event = dataclasses.replace(event, timestamp=fired_at)
        except FencedOut as exc:
            self.refused(epoch, exc)
            return  # a newer active node records and pages this alert
        except StorageUnavailable:
            # Stopping while the database does not answer: said, and nothing handed on (the
            # node that takes over derives the alert again from its own polls).
            log.error(
                "stopping with an alert event the database did not take",
                extra={"fields": {"alert": event.rule, "state": str(event.state)}},
            )
            return
        except Exception:
            log.exception("recording alert event failed")
        for listener in self.listeners:
            try:
                await listener(event)
            except Exception:
                log.exception("alert listener failed")

    async def _write(
        self, fingerprint: str, alert: Alert | None, entry: NewLogEntry, epoch: int | None
    ) -> float | None:
        """The alert's row (None: deleted) and its duty-log entry; the row's `fired_at` as
        stored. Fenced (a cluster node): in one transaction, refused when stale, so a crash
        leaves both or neither; tried again until the store answers. Unfenced (alone, what a
        person did): the row, then the entry through the log, which holds it in memory, in
        order, while the disk refuses writes (the row is written when it is back,
        `rulestate.resync_alerts`)."""
        row = alert_row(alert) if alert is not None else None
        if epoch is not None:
            delay = RECORD_RETRY
            while True:
                try:
                    return await self._storage.alerts.record(fingerprint, row, entry, epoch)
                except StorageUnavailable:
                    if self._draining:
                        raise
                    # The database did not answer (logged once by the store). A cluster
                    # node's event is recorded, checked against the fence, before anything
                    # pages for it: it waits for the database (the events behind it queue, in
                    # order), each try on a new connection, and is refused if another node
                    # took over meanwhile. Nothing is handed on before.
                    await asyncio.sleep(delay)
                    delay = min(RECORD_RETRY_MAX, delay * 2)
        fired_at = None
        try:
            if row is not None:
                fired_at = await self._storage.alerts.save(row)
            else:
                await self._storage.alerts.delete(fingerprint)
        except StorageUnavailable:
            pass  # logged once by the store
        await self._storage.log.append(
            entry.timestamp, entry.kind, entry.actor, entry.subject, entry.data
        )
        return fired_at

    def refused(self, epoch: int | None, exc: FencedOut) -> None:
        """Counted each time, logged once per epoch (this node's alert and rule-state writes):
        every write after the first is refused for the same reason."""
        self._metrics.fenced_writes.inc()
        if self._fenced_epoch == epoch:
            return
        self._fenced_epoch = epoch
        log.warning(
            "this node's alert writes are fenced: another node holds the notifier lease "
            "(or, sharded, took this node's targets)",
            extra={"fields": {"node": self.node, "epoch": epoch, "error": str(exc)}},
        )

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
                await self._storage.alerts.save(alert_row(alert), self.fence())
        except FencedOut as exc:
            self.refused(self.fence(), exc)
            return
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
