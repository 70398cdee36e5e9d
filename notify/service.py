"""NotifyService: alert events in, pages out, never lost. The daemon starts it, stops it and
registers it as an alert listener.

The pipeline, stage by stage:

    AlertEvent -> Escalator (who, when) -> Grouper (one message per site burst)
      -> templates (language, time zone, ack link) -> outbox (storage, before any send)
      -> delivery order (per person and alert) -> rate limit -> channel.send
      -> delete on accept | retry with backoff+jitter,
         fail over to the person's next contact after N failures -> duty log

Alertmanager forwarders get every firing and resolved alert (not escalations) through the
same outbox, and the firing ones are refreshed while they last (`forwarding`).

In a cluster the outbox is shared: `sender()` gives this node's (name, fencing epoch) while
it is the active notifier, and each message is claimed with them before it is sent, so two
nodes never send the same message and a node that lost the lease sends nothing. A standby
escalates nothing (`escalating()`); `take_over` takes up the alerts where the former active
left them (page ids are stable, so pages it sent or queued are not queued again). Every write
on a message (reschedule, drop, delivered) and every duty-log entry carries the epoch the node
sends under: a node that lost the lease has them refused by the store (logged once;
`epochs`).

Beside the main flow, each in a module of its own: the outbox's writes held in memory while
the disk refuses them (`heldoutbox`), the storage-fault notice to the fallback channel
(`faultnotice`), and the queued rows moved after a step of the system clock (`clockmoves`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import math
import random
from collections.abc import Callable
from typing import Any

from dutyd.core.clock import SYSTEM_CLOCK, Clock
from dutyd.core.records import AlertChange, AlertEvent, AlertState, labels_of
from dutyd.core.tasks import LoopWatch
from dutyd.exporters.instrumentation import Instrumentation
from dutyd.notify.acklink import (
    ACKABLE,
    AckLinks,
    for_links,
    placeholders,
    with_signed_links,
)
from dutyd.notify.channels import Channel, SendResult, build_channel
from dutyd.notify.clockmoves import OutboxMoves, move_back
from dutyd.notify.config import EscalationConfig, NotifyConfig, OncallConfig
from dutyd.notify.epochs import WriteEpochs
from dutyd.notify.escalation import (
    Escalator,
    Page,
    moved_page,
)
from dutyd.notify.faultnotice import StorageFaultNotice
from dutyd.notify.forwarding import AM_REFRESH, AlertmanagerForwarding, forwarder_name
from dutyd.notify.grouping import Grouper, GroupKey, message_id, page_id
from dutyd.notify.heldoutbox import HeldOutbox
from dutyd.notify.oncall import Rota
from dutyd.notify.outbox import SENT_RETENTION, backoff
from dutyd.notify.ratelimit import TokenBucket
from dutyd.notify.sequencing import DeliveryOrder
from dutyd.notify.templates import render
from dutyd.storage import FencedOut, NewLogEntry, OutboxMessage, Storage, StorageUnavailable

log = logging.getLogger("dutyd.notify")

MAX_IN_FLIGHT = 64
READ_AHEAD = 2 * MAX_IN_FLIGHT
# Seconds between attempts to write notifications to an outbox that refused them (a cluster
# node; a single node sends them from memory meanwhile), doubling up to OUTBOX_RETRY_MAX.
OUTBOX_RETRY = 2.0
OUTBOX_RETRY_MAX = 60.0
STATS_EVERY = 0.5  # seconds: outbox depth and age while a backlog drains
# A claim lasts the send timeout plus this: long enough that a live sender always finishes
# under its claim, short enough that a dead sender's messages are taken over soon.
CLAIM_MARGIN = 10.0
# Delivery rounds failing in a row (about a second apart) that end the delivery loop.
DELIVERY_ROUNDS_FAILING = 30


@dataclasses.dataclass
class _DeliverLoop:
    """What the delivery loop carries from one round to the next."""

    # Due rows read ahead: a delivery that ends starts the next without a query (in a burst,
    # two queries per message were most of the loop's work).
    ready: collections.deque[OutboxMessage] = dataclasses.field(default_factory=collections.deque)
    timeout: float = 1.0
    pruned: float = 0.0
    stats_at: float = 0.0
    failed: int = 0  # rounds failed in a row


class NotifyService:
    """Escalates alert events into pages and delivers them through the outbox (see above)."""

    def __init__(
        self,
        oncall: OncallConfig,
        escalation: EscalationConfig,
        notify: NotifyConfig,
        storage: Storage,
        metrics: Instrumentation,
        clock: Clock = SYSTEM_CLOCK,
        generator_url: str = "",
        sender: Callable[[], tuple[str, int] | None] | None = None,
        escalating: Callable[[], bool] = lambda: True,
        loops: LoopWatch | None = None,
    ) -> None:
        self.sender = sender  # None: the outbox is this node's alone, no claims
        # The epoch escalation's duty-log entries carry (a pair: the lease's; None alone and
        # sharded, where every agent escalates its own alerts).
        self.fence: Callable[[], int | None] = lambda: None
        self.escalating = escalating
        self.oncall = oncall
        self.config = notify
        self.storage = storage
        self.metrics = metrics
        # Every time here is this clock's: page times, escalation steps, group windows, retries
        # and timeouts (a FakeClock walks a 30-minute policy in a test without waiting).
        self.clock = clock
        self.rota = Rota(oncall)
        self.escalator = Escalator(escalation, self.rota)
        self.outbox = storage.outbox
        self.grouper = Grouper(notify.group_wait)
        self.channels: dict[str, Channel] = {}
        self.forwarding = AlertmanagerForwarding(generator_url)
        self.buckets: dict[str, TokenBucket] = {}
        self.links: AckLinks | None = None
        self._set_channels(notify, None)
        # The age is computed at scrape time from the oldest row's creation time.
        self._oldest: float | None = None
        metrics.outbox_oldest_age.set_function(
            lambda: max(0.0, self.clock.time() - self._oldest) if self._oldest else 0.0
        )
        self._rng = random.Random()
        self._wake = asyncio.Event()
        self._escalate = asyncio.Event()
        self._inflight: set[str] = set()
        # The delivery and escalation loops: one that ends other than by `stop` is said
        # (and, in the daemon, stops it with a failure status), never a silent end.
        self.loops = loops or LoopWatch()
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[None]] = set()
        # The cancellers of the open group windows' timers.
        self._flush_handles: dict[GroupKey, Callable[[], None]] = {}
        self._ready: list[GroupKey] = []  # groups whose window closed, to be written
        # Groups taken whose outbox write failed (disk full), written again first.
        self._unwritten: list[tuple[GroupKey, list[Page]]] = []
        self._flushing = False
        self._logbuf: list[NewLogEntry] = []
        self.epochs = WriteEpochs(sender, metrics.fenced_writes.inc)
        # While the disk refuses writes, the outbox's record is partly in memory.
        self.held = HeldOutbox(self.outbox, self.epochs.current, hold_reschedules=sender is None)
        self.fault_notice = StorageFaultNotice(
            lambda: self.config, lambda: self.channels, clock, self._rng
        )
        self.order = DeliveryOrder()
        self._last_created = 0.0
        self._order_stale = False
        # Moves of the queued rows in the store still to be written (see `shift`).
        self.moves = OutboxMoves(self.outbox)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, active: list[dict[str, Any]] | None = None, moved: float = 0.0) -> None:
        """Start delivering (the outbox left by the last run first) and take up the
        escalation of `active` alerts (views from `DutyOperations.list_alerts`).
        `moved`: seconds that take the stored times onto this run's clock (see
        `duty.clockwatch`); a queued retry moves back by as much when negative, never later
        (so none waits for a clock that went back)."""
        await self._load_order()
        if moved < 0 and self.sender is None:
            # (A shared outbox is not moved: a reschedule would release the active node's
            # claims, and is fenced; rows are sent by whichever node is active, on its clock.)
            await move_back(self.outbox, -moved, self.clock.time())
        self._tasks = [
            self.loops.start(self._deliver_loop(), "notify-deliver"),
            self.loops.start(self._escalation_loop(), "notify-escalate"),
            self.loops.start(self._refresh_loop(), "notify-am"),
        ]
        depth = (await self.outbox.stats(self.clock.time())).depth
        if depth:
            log.info("outbox has undelivered notifications", extra={"fields": {"count": depth}})
        if active:
            self.resume(active)

    def shift(self, seconds: float) -> None:
        """The daemon's clock was re-anchored onto a stepped system clock (`duty.clockwatch`):
        move every moment kept by `seconds`, in this event-loop turn, so that escalation
        steps, retries and rate limits keep their remaining durations and pages show the
        alerts' times on the system clock. The queued rows in the store are moved by the
        delivery loop before it next reads them; creation stamps move too (a new row is due
        at its stamp, and the queue keeps its order)."""
        self.escalator.shift(seconds)
        for key, pages in self.grouper.groups.items():
            self.grouper.groups[key] = [moved_page(p, seconds) for p in pages]
        self._unwritten = [
            (key, [moved_page(p, seconds) for p in pages]) for key, pages in self._unwritten
        ]
        self.forwarding.shift(seconds)
        self.held.shift(seconds)
        self._last_created += seconds
        if self._oldest is not None:
            self._oldest += seconds
        for bucket in self.buckets.values():
            bucket.at += seconds
        if self.links is not None:
            self.links.shift(seconds)
        self.moves.add(seconds, [i for i in self.order.ids() if i not in self.held.new])
        self._wake.set()

    async def _load_order(self) -> None:
        self.order.load(await self.outbox.due(math.inf, 1 << 30))
        self._last_created = max(self._last_created, self.clock.time())

    def _stamp(self, now: float) -> float:
        """The creation time of a new outbox row: strictly increasing, so the queue order
        (by creation time) is the order the rows were written, after a restart too."""
        self._last_created = max(now, self._last_created + 1e-6)
        return self._last_created

    async def _enqueue(self, rows: list[OutboxMessage]) -> None:
        moved = self.moves.total
        added = set(await self.outbox.enqueue(rows))
        self.moves.catch_up(rows, added, moved)
        for row in rows:
            if row.id in added:
                self.order.add(row)
        self._wake.set()

    def _hold_rows(self, rows: list[OutboxMessage]) -> None:
        """Send from memory what the outbox could not take (see `heldoutbox`)."""
        for row in self.held.hold(rows):
            self.order.add(row)
        self._wake.set()

    async def stop(self) -> None:
        # Open groups are written to the outbox, so they go out at the next start.
        for cancel in self._flush_handles.values():
            cancel()
        self._flush_handles.clear()
        self._ready.extend(k for k in self.grouper.groups if k not in self._ready)
        if self._ready and not self._flushing:
            self._flushing = True
            await self._flush_ready()
        self.fault_notice.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)
        for task in self._pending:
            task.cancel()
        await self.held.close(self._inflight)
        for channel in self.channels.values():
            await channel.close()

    # -- input ----------------------------------------------------------------------------------

    async def __call__(self, event: AlertEvent) -> None:
        """The daemon's alert listener."""
        if not self.escalating():
            return  # a standby: the active node escalates (and took this alert over)
        now = self.clock.time()
        self.add_pages(self.escalator.handle(event, now), now)
        self._escalate.set()
        if (
            event.change is AlertChange.STATE
            and event.state is AlertState.FIRING
            and event.notify
            and self.escalator.config.policy_for(event.severity, dict(event.labels)) is None
        ):
            # A firing alert nobody will be paged for must not pass in silence.
            info = {"rule": event.rule, "severity": event.severity, **dict(event.labels)}
            log.warning("no escalation policy matches a firing alert", extra={"fields": info})
            await self._log(now, "notify.no_policy", "dutyd", event.fingerprint, info, self.fence())
        if self.forwarding.names and event.change is AlertChange.STATE:
            await self._forward(event, now)

    def resume(self, alerts: list[dict[str, Any]]) -> None:
        """After a restart, take up the escalation of alerts still firing (the rules layer
        restores them silently). Steps already sent are recognised by their page ids."""
        now = self.clock.time()
        for a in alerts:
            # A paged alert its parent's outage explains is taken up paused, whatever the
            # parent's state (unknown until polled): it resumes as in a running daemon.
            explained = bool(a.get("explained_by"))
            if a.get("state") != "firing" or a.get("silenced_by"):
                continue
            if a.get("suppressed") and not explained:
                continue
            fired = a.get("fired_at") or a.get("active_since") or now
            event = AlertEvent(
                fingerprint=a["fingerprint"],
                rule=a["rule"],
                labels=labels_of(a.get("labels", {})),
                state=AlertState.FIRING,
                previous=AlertState.PENDING,
                severity=a.get("severity", ""),
                summary=a.get("summary", ""),
                value=a.get("value"),
                active_since=a.get("active_since"),
                timestamp=fired,
            )
            key_at = a.get("key_at")
            if explained:
                at = min(now, a.get("explained_at") or fired)
                self.add_pages(self.escalator.take_up_explained(event, at, key_at), now)
            else:
                self.add_pages(self.escalator.handle(event, now, key_at=key_at), now)
            self.forwarding.keep(event)
            if a.get("acknowledged"):
                self.escalator.handle(
                    dataclasses.replace(event, change=AlertChange.ACKNOWLEDGED), now
                )
        self._escalate.set()

    def storage_fault(self, writable: bool, reason: str) -> None:
        """The store stopped (or resumed) taking writes: the fallback channel is told of a
        fault once (`faultnotice`)."""
        self.fault_notice.storage_fault(writable, reason)

    def wake_escalation(self) -> None:
        self._escalate.set()

    def take_over(self, alerts: list[dict[str, Any]]) -> None:
        """This node became the active notifier: forget any escalation left from an earlier
        turn and take up `alerts` (loaded from the shared store) as after a restart."""
        self._forget()
        self.resume(alerts)
        self._wake.set()

    def stand_by(self) -> None:
        """This node is a standby now: escalate nothing (the active node does); pages still
        in a group window are dropped, the active regenerates them with the same ids."""
        self._forget()

    def hand_over(self, fingerprints: list[str]) -> None:
        """These alerts moved to another node (their targets went to its shard): stop
        escalating them here."""
        for fp in fingerprints:
            self.escalator.tracked.pop(fp, None)
            self.forwarding.firing.pop(fp, None)

    def _forget(self) -> None:
        for cancel in self._flush_handles.values():
            cancel()
        self._flush_handles.clear()
        self.grouper.groups.clear()
        self._ready.clear()
        self.escalator.tracked.clear()
        self.forwarding.firing.clear()

    def apply(
        self,
        oncall: OncallConfig,
        escalation: EscalationConfig,
        notify: NotifyConfig | None = None,
    ) -> None:
        """A config reload: new rota, policies and channels; alerts being escalated keep their
        state, and queued messages for a removed channel move on to the person's next one."""
        self.oncall = oncall
        self.rota = Rota(oncall)
        self.escalator.rota = self.rota
        self.escalator.config = escalation
        if notify is not None and notify != self.config:
            old = self.config
            self.config = notify
            self.grouper.window = notify.group_wait
            self._set_channels(notify, old)
        self._escalate.set()
        self._wake.set()

    def _set_channels(self, notify: NotifyConfig, old: NotifyConfig | None) -> None:
        """Build the channels of `notify`, keeping those unchanged since `old`."""
        previous = self.channels
        channels: dict[str, Channel] = {}
        for name, cfg in notify.channels.items():
            same = old is not None and old.channels.get(name) == cfg and name in previous
            channels[name] = previous[name] if same else build_channel(name, cfg)
            if not same:
                self.buckets[name] = TokenBucket(
                    cfg.rate_limit.count, cfg.rate_limit.per, self.clock.time()
                )
        forwarders = []
        for i, fwd in enumerate(notify.alertmanager):
            name = forwarder_name(i)
            same = old is not None and i < len(old.alertmanager) and old.alertmanager[i] == fwd
            channels[name] = previous[name] if same else build_channel(name, fwd)
            forwarders.append(name)
        for name, channel in previous.items():
            if channels.get(name) is not channel:
                self._spawn(channel.close())
        self.channels, self.forwarding.names = channels, forwarders
        key = notify.ack_key()
        links = AckLinks(key, notify.ack_link_ttl) if key else None
        if links is not None and self.links is not None:
            links.adopt_moves(self.links)  # links made before a reload still read right
        self.links = links
        for name in channels:
            self.metrics.notifications_sent.labels(name)
            self.metrics.notifications_failed.labels(name)

    def add_pages(self, pages: list[Page], now: float) -> None:
        for page in pages:
            if not page.recipients:
                # A step that resolves to nobody (a role left empty by a reload) must be seen.
                self._log_soon(
                    page.at, "notify.no_recipient", page.event.fingerprint, {"kind": page.kind}
                )
                log.error(
                    "an escalation step has nobody to page",
                    extra={"fields": {"alert": page.event.rule, "kind": str(page.kind)}},
                )
            self._log_soon(
                page.at,
                f"escalation.{page.kind}",
                page.event.fingerprint,
                {
                    "step": page.step,
                    "recipients": [str(r) for r in page.recipients],
                    # The duty log line says for which alert (the subject is a fingerprint).
                    "rule": page.event.rule,
                    "target": dict(page.event.labels).get("target", ""),
                },
            )
            self.grouper.add(page, self._open_group)

    def _open_group(self, key: GroupKey) -> None:
        self._flush_handles[key] = self.clock.call_later(
            self.config.group_wait, lambda: self._flush_soon(key)
        )

    def _flush_soon(self, key: GroupKey) -> None:
        self._flush_handles.pop(key, None)
        self._ready.append(key)
        if not self._flushing:
            self._flushing = True
            self._spawn(self._flush_ready())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _log_soon(self, ts: float, kind: str, subject: str, data: dict[str, Any]) -> None:
        """Queue a duty log entry; queued entries are written together (one transaction for a
        burst of a thousand alerts, not a thousand)."""
        self._logbuf.append(NewLogEntry(ts, kind, "dutyd", subject, data))
        if len(self._logbuf) == 1:
            self._spawn(self._write_logs())

    async def _write_logs(self) -> None:
        await asyncio.sleep(0)  # let the rest of this burst queue up first
        entries, self._logbuf = self._logbuf, []
        epoch = self.fence()
        try:
            await self.storage.log.append_many(entries, epoch)
        except FencedOut as exc:
            self.epochs.refused(epoch, exc)
        except Exception:
            log.exception("duty log write failed")

    async def _log(
        self,
        ts: float,
        kind: str,
        actor: str,
        subject: str,
        data: dict[str, Any],
        epoch: int | None,
    ) -> None:
        """One duty-log entry, fenced by `epoch`: the sender's for a delivery's entries,
        `fence()` for escalation's."""
        try:
            await self.storage.log.append(ts, kind, actor, subject, data, epoch)
        except FencedOut as exc:
            self.epochs.refused(epoch, exc)
        except Exception:
            log.exception("duty log write failed")

    async def _log_delivery(self, ts: float, kind: str, subject: str, data: dict[str, Any]) -> None:
        """A delivery's duty-log entry, fenced by the epoch this node sends under."""
        await self._log(ts, kind, "dutyd", subject, data, self.epochs.current())

    # -- rendering into the outbox --------------------------------------------------------------

    def language_of(self, person: str, site: str = "") -> str:
        """The language `person`'s pages are written in: their own, else the site's (as
        `_message` picks it), so what their ack link opens reads like the page they got."""
        found = self.oncall.person(person)
        return (found.language if found else None) or self._site(site)[1]

    def _site(self, site: str) -> tuple[str, str]:
        cfg = self.config.sites.get(site)
        tz = (cfg.timezone if cfg else None) or self.config.timezone
        lang = (cfg.language if cfg else None) or self.config.language
        return tz, lang

    async def _flush_ready(self) -> None:
        """Write every group whose window has closed: one dedup query, one insert."""
        delay = OUTBOX_RETRY
        try:
            while self._ready or self._unwritten:
                keys, self._ready = self._ready, []
                groups = self._unwritten + [(key, self.grouper.take(key)) for key in keys]
                self._unwritten = []
                try:
                    await self._write_groups(groups)
                    delay = OUTBOX_RETRY
                    continue
                except StorageUnavailable:
                    if self.sender is None:
                        # A single node: the pages go out from memory now and are written
                        # when the disk takes writes again.
                        self._hold_rows(await self._rows(groups, ask_store=False))
                        continue
                    # A cluster node sends nothing it could not write (its claim and fence
                    # are in the store): the groups wait, in order, for the store.
                except Exception:
                    log.exception(
                        "writing notifications to the outbox failed; retrying",
                        extra={"fields": {"messages": len(groups), "retry_in": delay}},
                    )
                # Keep the pages, in order; groups closing meanwhile queue behind them, so a
                # resolve is never written before its page.
                self._unwritten = groups
                await self.clock.sleep(delay)
                delay = min(OUTBOX_RETRY_MAX, delay * 2)
        finally:
            self._flushing = False

    async def _write_groups(self, groups: list[tuple[GroupKey, list[Page]]]) -> None:
        """One dedup query, one insert (one transaction: all of them or none)."""
        rows = await self._rows(groups)
        if rows:
            await self._enqueue(rows)

    async def _rows(
        self, groups: list[tuple[GroupKey, list[Page]]], ask_store: bool = True
    ) -> list[OutboxMessage]:
        """The outbox rows of `groups`, without the pages queued or delivered already."""
        ids = [page_id(p, key[0]) for key, pages in groups for p in pages]
        # Queued first, then delivered: a message delivered between the two questions
        # is found by the second. A page still waiting in the outbox (after a restart:
        # the steps taken up again by `resume`) must not go out a second time.
        # (An empty queue, as read at start and kept since, needs no question.)
        # In a cluster the node active before us may have queued them: always ask there.
        sent = self.held.pages()
        if ask_store:
            queued = (self.sender is not None or len(self.order) > 0) and bool(ids)
            sent |= await self.outbox.queued_among(ids) if queued else set()
            sent |= await self.outbox.sent_among(ids)
        else:
            with contextlib.suppress(StorageUnavailable):
                sent |= await self.outbox.sent_among(ids)
        now = self.clock.time()
        rows = []
        for key, pages in groups:
            fresh = [p for p in pages if page_id(p, key[0]) not in sent]
            if fresh:
                row = self._message(key, fresh, now)
                if row is not None:
                    rows.append(row)
        return rows

    def _message(self, key: GroupKey, pages: list[Page], now: float) -> OutboxMessage | None:
        """The outbox row of one group: rendered for its recipient (language, time zone)."""
        recipient = key[0]
        tz, lang = self._site(key[2])
        if recipient.kind == "person":
            person = self.oncall.person(recipient.name)
            contacts = [c for c in (person.contacts if person else []) if c in self.channels]
            lang = (person.language if person else None) or lang
        else:
            contacts = [recipient.name] if recipient.name in self.channels else []
            channel_cfg = self.config.channels.get(recipient.name)
            lang = (channel_cfg.language if channel_cfg else None) or lang
        if not contacts:
            self._log_soon(now, "notify.no_contact", str(recipient), {"kind": key[1]})
            log.error(
                "nobody to send to: no usable contact",
                extra={"fields": {"recipient": str(recipient)}},
            )
            return None
        mid = message_id(pages, recipient)
        links: dict[str, str] = {}
        if (
            self.links is not None
            and self.config.ack_base_url
            and recipient.kind == "person"
            and pages[0].kind in ACKABLE
        ):
            links = placeholders(pages)  # signed when sent (see `acklink`)
        title, body = render(pages, lang, tz, now, mid, links)
        payload = {
            "title": title,
            "body": body,
            "pages": [page_id(p, recipient) for p in pages],
            "fingerprints": sorted({p.event.fingerprint for p in pages}),
            "due": min(p.at for p in pages),
        }
        if links:
            for_links(payload, recipient.name, pages)
        created = self._stamp(now)
        return OutboxMessage(
            mid,
            str(recipient),
            key[1],
            contacts[0],
            payload,
            contacts[1:],
            created=created,
            next_at=created,
        )

    # -- Alertmanager forwarders ----------------------------------------------------------------

    async def _forward(self, event: AlertEvent, now: float) -> None:
        rows = self.forwarding.rows(event, now, self._stamp)
        if not rows:
            return
        try:
            await self._enqueue(rows)
        except StorageUnavailable:
            if self.sender is None:
                self._hold_rows(rows)

    async def _refresh_loop(self) -> None:
        while True:
            await self.clock.sleep(AM_REFRESH)
            try:
                await self.forwarding.refresh(self.channels, self.clock.time())
            except Exception:
                # A refresh is repeated at the next turn; a fault in one is no reason to stop
                # dutyd (its pages go through the outbox, not this loop).
                log.exception("refreshing the alerts at the Alertmanager forwarders failed")

    # -- escalation clock -----------------------------------------------------------------------

    async def _escalation_loop(self) -> None:
        while True:
            self._escalate.clear()
            now = self.clock.time()
            if self.escalating():
                self.add_pages(self.escalator.due(now), now)
            deadline = self.escalator.next_deadline()
            timeout = 1.0 if deadline is None else min(1.0, max(0.001, deadline - now))
            # A timeout (the clock's: asyncio.timeout on the system clock), not wait_for: on
            # Python 3.11, wait_for swallows a cancel that lands as the event is set, and this
            # loop would then outlive the daemon's stop().
            with contextlib.suppress(TimeoutError):
                async with self.clock.timeout(timeout):
                    await self._escalate.wait()

    # -- delivery -------------------------------------------------------------------------------

    async def _deliver_loop(self) -> None:
        loop = _DeliverLoop()
        while True:
            self._wake.clear()
            try:
                await self._deliver_round(loop)
                loop.failed = 0
            except Exception:
                # Never a silent end: a loop that died would leave an active node sending
                # nothing while it looks healthy. Said, and tried again within a second; a
                # round that keeps failing ends the loop, a fault of dutyd's own
                # (`core.tasks.LoopWatch`: the daemon stops, and its supervisor restarts it).
                loop.failed += 1
                if loop.failed >= DELIVERY_ROUNDS_FAILING:
                    raise
                log.exception("the notification delivery loop failed; going on")
                loop.ready.clear()
                loop.timeout = 1.0
            # Rows read ahead wait for a free slot: a delivery that ends wakes the loop.
            wait = 1.0 if loop.ready else loop.timeout
            with contextlib.suppress(TimeoutError):  # a timeout: see _escalation_loop
                async with self.clock.timeout(wait):
                    await self._wake.wait()

    async def _deliver_round(self, loop: _DeliverLoop) -> None:
        """Write what waits to be written, start the deliveries due, read the queue's stats."""
        if self.moves:
            # (While the store refuses it, its rows are read on their old clock below.)
            with contextlib.suppress(StorageUnavailable):
                await self.moves.write()
        now = self.clock.time()
        if now - loop.pruned > 3600:  # forget delivered ids older than the dedup horizon
            loop.pruned = now
            with contextlib.suppress(StorageUnavailable):
                await self.outbox.forget_sent(now - SENT_RETENTION)
        if self.held and self.storage.health.writable:
            try:
                await self.held.write_back(self._inflight)
            except StorageUnavailable:
                pass
            except FencedOut as exc:
                self.epochs.refused(self.epochs.last, exc)
        free = MAX_IN_FLIGHT - len(self._inflight)
        if self.sender is not None and self.sender() is None:
            free = 0  # a standby: the active node sends
        ready = loop.ready
        if free > 0 and not ready:
            # A message waiting for an earlier one about the same alert to the same
            # person is not attempted (`DeliveryOrder`); read ahead rows cannot start
            # waiting (only rows queued later wait, for earlier ones). Rows whose state
            # is in memory (a write the disk refused) are not read from the store.
            busy = self._inflight | self.order.waiting | self.held.ids()
            with contextlib.suppress(StorageUnavailable):
                unmoved = self.moves.unwritten()
                ready.extend(await self.outbox.due(now - unmoved, READ_AHEAD, busy))
            ready.extend(self.held.due(now, self._inflight | self.order.waiting))
        while free > 0 and ready:
            row = ready.popleft()
            self._inflight.add(row.id)
            self._spawn(self._deliver(row))
            free -= 1
        if not ready or now - loop.stats_at >= STATS_EVERY:
            loop.stats_at = now
            try:
                loop.timeout = await self._check_queue(now)
            except StorageUnavailable:
                loop.timeout = 1.0

    async def _check_queue(self, now: float) -> float:
        """Outbox metrics and the order's check; how long the loop may sleep."""
        stats = await self.outbox.stats(now)
        if self.held:
            self._order_stale = False  # the order holds rows the store has not (yet)
        elif stats.depth != len(self.order):
            # Twice in a row, not a write landing between the two reads: the queue changed
            # behind this service's back (another process); read it again.
            if self._order_stale:
                await self._load_order()
            self._order_stale = not self._order_stale
        else:
            self._order_stale = False
        self.metrics.outbox_depth.set(stats.depth)
        self._oldest = stats.oldest_created
        nxt = stats.next_retry_at
        return 1.0 if nxt is None else min(1.0, max(0.001, nxt - now))

    async def _deliver(self, row: OutboxMessage) -> None:
        try:
            await self._attempt(row)
        except FencedOut as exc:
            self.epochs.refused(self.epochs.last, exc)
        except Exception:
            log.exception("notification delivery failed unexpectedly")
        finally:
            self._inflight.discard(row.id)
            self._wake.set()

    async def _claim(self, row: OutboxMessage, now: float, who: tuple[str, int]) -> bool:
        """Claim the message for this node and epoch; False: not ours to send (another node
        has it, or this node is no longer the active one)."""
        assert self.sender is not None
        until = now + self.config.send_timeout + CLAIM_MARGIN
        if not await self.outbox.claim(row.id, who[0], who[1], now, until):
            return False
        # The claim call may have waited (the store, a stalled loop): send only while it is
        # still ours by a wide margin and we are still the active node.
        return self.sender() == who and self.clock.time() < until - CLAIM_MARGIN / 2

    def _contacts(self, recipient: str) -> list[str]:
        if recipient.startswith("#"):
            return [recipient[1:]] if recipient[1:] in self.channels else []
        person = self.oncall.person(recipient)
        return [c for c in (person.contacts if person else []) if c in self.channels]

    async def _attempt(self, row: OutboxMessage) -> None:
        now = self.clock.time()
        # Every write below carries the epoch this node holds when it makes it (`epochs`;
        # None alone): one made after another node took the lease is refused by the store,
        # however long the send took; one after this node took it again is its own.
        who = self.sender() if self.sender is not None else None
        if self.sender is not None and who is None:
            return  # no longer the active node
        channel = self.channels.get(row.channel)
        if channel is None:
            # Removed by a config reload: the remaining contacts, else the recipient's
            # contacts as configured now.
            choices = [c for c in row.fallbacks if c in self.channels] or self._contacts(
                row.recipient
            )
            if choices:
                row.channel, row.fallbacks = choices[0], choices[1:]
                row.channel_failures, row.next_at = 0, now
                await self.held.reschedule(row)
            else:
                await self.held.drop(row)
                self.order.remove(row.id)
                await self._log_delivery(now, "notify.dropped", row.id, {"why": "no channel"})
            return
        bucket = self.buckets.get(row.channel)
        wait = bucket.take(now) if bucket is not None else 0.0
        if wait > 0:
            row.next_at = now + wait
            await self.held.reschedule(row)
            return
        if who is not None and not await self._claim(row, now, who):
            return
        try:
            async with self.clock.timeout(self.config.send_timeout):
                result = await channel.send(
                    row.id,
                    with_signed_links(row.payload, self.links, self.config.ack_base_url, now),
                )
        except TimeoutError:
            result = SendResult(False, True, f"no answer within {self.config.send_timeout:g}s")
        now = self.clock.time()
        info = {
            "channel": row.channel,
            "recipient": row.recipient,
            "kind": row.kind,
            "fingerprints": row.payload.get("fingerprints", []),
            "attempts": row.attempts + 1,
        }
        if result.ok:
            await self.held.delivered(
                row,
                now,
                list(row.payload.get("pages") or ()),
                NewLogEntry(now, "notify.sent", "dutyd", row.id, info),
            )
            self.order.remove(row.id)
            self.metrics.notifications_sent.labels(row.channel).inc()
            due = row.payload.get("due")
            if isinstance(due, int | float):
                self.metrics.notify_latency.observe(max(0.0, now - due))
            return
        self.metrics.notifications_failed.labels(row.channel).inc()
        if bucket is not None:
            bucket.refund()
        row.attempts += 1
        row.channel_failures += 1
        row.last_error = result.error
        info["error"] = result.error
        expired = (
            self.config.give_up_after is not None and now - row.created > self.config.give_up_after
        )
        if expired or (not result.retry and not row.fallbacks):
            await self.held.drop(row)
            self.order.remove(row.id)
            await self._log_delivery(now, "notify.dropped", row.id, info)
            log.error("notification dropped", extra={"fields": info})
            return
        if row.fallbacks and (
            row.channel_failures >= self.config.failover_after or not result.retry
        ):
            # Cycle through the person's contacts: the failed one goes to the back.
            failed = row.channel
            row.channel = row.fallbacks.pop(0)
            row.fallbacks.append(failed)
            row.channel_failures = 0
            await self._log_delivery(now, "notify.failover", row.id, {**info, "to": row.channel})
        row.next_at = now + backoff(
            row.channel_failures or 1, self.config.retry_initial, self.config.retry_max, self._rng
        )
        await self.held.reschedule(row)
        await self._log_delivery(now, "notify.retry", row.id, {**info, "next_at": row.next_at})
        log.warning("notification failed, will retry", extra={"fields": info})
