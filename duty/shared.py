"""The duty state the nodes of a cluster share through the store, kept in step.

The active node owns the alerts (it records their events), a standby polls and evaluates but
records nothing of its own. What a person does on either node goes to the store (acks into
the duty log with the node's name, silences and maintenance windows into their tables), and
every node reads what the others wrote every `sync_every` seconds:

- both nodes take the stored silences and ad hoc maintenance windows;
- the active node applies acks and un-acks made on another node (escalation stops there);
- a standby shows the stored alerts (its API and status page match the active node's).

Sharded, every node records and escalates the alerts of its own targets (`records`), and the
lease holder those of no target. Each node keeps the alerts it records as it evaluates them
(the store's copy, written a moment later, must not restart a pending alert's `for` or make
it wait for a fresh sample), applies to them the acks and un-acks made on another node (its
escalation stops), and shows the store's copy of every other alert (any node's API can
acknowledge any alert).

When a standby takes over, the stored alerts replace its own (start times, red-line clocks,
acks and escalation progress as the former active left them) before it sends anything. It
holds the lease (its epoch fences the former active's writes) before it loads them, and the
journal holds the events that arrive meanwhile: an alert this node raised that the store does
not have is kept and its events recorded after the load; events about alerts the store has
describe the state the load replaced, and are dropped (`AlertJournal.supersede`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from dutyd.core.clock import Clock
from dutyd.core.records import Labels
from dutyd.duty import rulestate
from dutyd.duty.journal import AlertJournal
from dutyd.duty.operations import DutyOperations
from dutyd.notify.service import NotifyService
from dutyd.rules.engine import RuleEngine, UnknownAlert
from dutyd.storage import LogEntry, Storage

log = logging.getLogger("dutyd.duty")

ACK_KINDS = ("alert.acknowledged", "alert.unacknowledged")


class SharedDutyState:
    def __init__(
        self,
        engine: Callable[[], RuleEngine],
        storage: Storage,
        journal: AlertJournal,
        operations: DutyOperations,
        notify: NotifyService,
        node: str,
        is_active: Callable[[], bool],
        clock: Clock,
        every: float = 2.0,
        records: Callable[[Labels], bool] | None = None,
        after_load: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`records`: sharded, whether this node records the alert with these labels (its
        own); None in a pair (the active node records every alert)."""
        self._engine = engine
        self.storage = storage
        self.journal = journal
        self.operations = operations
        self.notify = notify
        self.node = node
        self.is_active = is_active
        self.clock = clock
        self.every = every
        self.records = records
        self.after_load = after_load  # tests: a slow takeover, to fire a rule meanwhile
        self._last_log_id = 0
        self._turn = 0  # takeovers so far (a standby's read from before one is stale)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._last_log_id = await self._newest_log_id()
        self._task = asyncio.create_task(self._run(), name="duty-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def take_over(self) -> None:
        """This node becomes the active notifier: the store's alerts and overlays in place of
        its own, then escalation taken up where the former active left it."""
        self._turn += 1
        now = self.clock.time()
        stored = [rulestate.alert_from_row(r) for r in await self.storage.alerts.load_all()]
        engine = self._engine()
        known = {a.fingerprint for a in stored}
        # Raised here while the journal was held, and unknown to the store: kept as evaluated
        # here (their events are recorded once the journal is released).
        raised = self.journal.queued_fingerprints() - known
        own = [engine.alerts[fp] for fp in raised if fp in engine.alerts]
        engine.replace_alerts([*stored, *own])
        self.journal.supersede(known)
        if self.after_load is not None:
            await self.after_load()
        await rulestate.load_overlays(self._engine(), self.storage, now)
        self._last_log_id = await self._newest_log_id()  # acks before now are in the rows
        self.notify.take_over(self.operations.list_alerts(["firing"]))
        log.info("took over the alerts", extra={"fields": {"alerts": len(stored)}})

    async def stand_by(self) -> None:
        self.notify.stand_by()

    async def _run(self) -> None:
        while True:
            await self.clock.sleep(self.every)
            try:
                await self.sync()
            except Exception as exc:
                log.warning(
                    "reading the shared duty state failed",
                    extra={"fields": {"error": f"{type(exc).__name__}: {exc}"[:300]}},
                )

    async def sync(self) -> None:
        now = self.clock.time()
        engine = self._engine()
        await rulestate.load_overlays(engine, self.storage, now)
        if self.records is not None:
            await self._sync_shard(self.records)
        elif self.is_active():
            await self._apply_remote_acks()
        else:
            turn = self._turn
            stored = [rulestate.alert_from_row(r) for r in await self.storage.alerts.load_all()]
            if self.is_active() or turn != self._turn:
                # This node took over while the read waited (a database outage): what it
                # read is older than the takeover's load and must not replace the alerts
                # it records now.
                return
            self._engine().replace_alerts(stored)
            self._last_log_id = await self._newest_log_id()

    async def _sync_shard(self, records: Callable[[Labels], bool]) -> None:
        """Sharded: the store's copy of the alerts other nodes record in place of this node's
        copy of them; this node's own alerts kept, and acks made elsewhere applied to them."""
        stored = [rulestate.alert_from_row(r) for r in await self.storage.alerts.load_all()]
        # Asked after the await: a reload may have replaced the engine meanwhile.
        engine = self._engine()
        engine.replace_alerts_of(lambda alert: not records(alert.labels), stored)
        # An alert of one of this node's targets that it does not hold was recorded by another
        # node that held the target too for a moment (while the members' views of the shard
        # map converge): taken from the store with its escalation, not raised again as new.
        adopted = [
            a
            for a in stored
            if a.active and records(a.labels) and a.fingerprint not in engine.alerts
        ]
        if adopted:
            engine.restore(adopted)
            taken = {a.fingerprint for a in adopted}
            self.notify.resume(
                [v for v in self.operations.list_alerts(["firing"]) if v["fingerprint"] in taken]
            )
        await self._apply_remote_acks(records)

    async def _newest_log_id(self) -> int:
        newest = await self.storage.log.read(limit=1, newest_first=True)
        return newest[0].id if newest else 0

    async def _apply_remote_acks(self, records: Callable[[Labels], bool] | None = None) -> None:
        """Acks and un-acks made on other nodes since the last call, applied to the alerts this
        node records (all it holds, unless `records` says which)."""
        entries = await self.storage.log.read(kinds=ACK_KINDS, limit=200, newest_first=True)
        fresh = sorted((e for e in entries if e.id > self._last_log_id), key=lambda e: e.id)
        for entry in fresh:
            self._last_log_id = entry.id
            if entry.data.get("node") in (None, self.node):
                continue
            await self._apply(entry, records)

    async def _apply(self, entry: LogEntry, records: Callable[[Labels], bool] | None) -> None:
        engine = self._engine()
        alert = engine.alerts.get(entry.subject)
        if alert is None or not alert.active:
            return
        if records is not None and not records(alert.labels):
            return  # another node's alert: its owner applies the ack, the store's copy shows it
        try:
            if entry.kind == "alert.acknowledged":
                ack = entry.data.get("ack") or {}
                if alert.ack is not None:
                    return
                event = engine.acknowledge(
                    entry.subject,
                    entry.actor,
                    str(ack.get("note", entry.data.get("note", ""))),
                    ack.get("expires_at"),
                    float(ack.get("at", entry.timestamp)),
                )
            else:
                if alert.ack is None:
                    return
                event = engine.unacknowledge(
                    entry.subject, entry.actor, str(entry.data.get("note", "")), entry.timestamp
                )
        except (UnknownAlert, ValueError):
            return
        await self.journal.apply_remote(event)
