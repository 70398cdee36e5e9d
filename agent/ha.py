"""The daemon's cluster wiring, kept out of daemon.py: the node (lease, members, shards), the
shared duty state, the dead man's switch, the peer watch and the event-loop lag monitor,
connected to the daemon's parts through plain callables.

Roles. Alone (no `cluster.enabled`): always active, every target, no claims. In a pair: every
node polls every target (warm standby), the lease holder records rule events, escalates and
sends; a standby only shows the store's state and records what a person does through it.
Sharded (`cluster.shards`): each node polls its share of the targets and records their
alerts; the lease holder alone sends (the outbox is shared) and records the alerts that belong
to no target. Every `sync_every` each node publishes through the store the status of the
targets it owns and, for each `across` rule whose groups may span targets, whether each member
series of those targets holds; it reads back the others'. Targets' status feeds `depends_on`
(dependencies work across shards); the holds are merged into the engine's groups, so a group
alert (recorded by the lease holder) is judged on every series of its group, whichever node
polls them. Every node merges, not only the lease holder: a node that takes the lease over
already judges the groups on the whole fleet, as its predecessor did. A published hold counts
for twice `member_timeout`: long enough for a dead agent's targets to move and be published
by their new owner, so the group does not resolve and fire again in between.
Alone or unsharded none of this runs; sharded without such a rule, the holds are not exchanged.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from dutyd.agent.config import Settings
from dutyd.agent.scheduler import Scheduler
from dutyd.cluster import ClusterNode, build_node
from dutyd.cluster.deadman import DeadMansSwitch, PeerWatch
from dutyd.cluster.looplag import LoopLag
from dutyd.core.clock import Clock
from dutyd.core.latest import LatestSamples, TargetStatus
from dutyd.core.records import AlertEvent, Labels
from dutyd.core.tasks import LoopWatch
from dutyd.duty import rulestate
from dutyd.duty.journal import AlertJournal
from dutyd.duty.operations import DutyOperations
from dutyd.duty.shared import SharedDutyState
from dutyd.exporters.instrumentation import Instrumentation
from dutyd.notify.service import NotifyService
from dutyd.rules.engine import RuleEngine
from dutyd.storage import FencedOut, GroupHold, Storage, TargetStatusRow

log = logging.getLogger("dutyd.cluster")

# A published hold of a group member counts for this many `member_timeout`s (see above).
GROUP_HOLD_TTL = 2.0
# Tests only: seconds a takeover waits after loading the store's alerts (a rule fired then must
# be recorded once, by this node, after the load). Unset in production.
TAKEOVER_PAUSE_ENV = "DUTYD_TEST_TAKEOVER_PAUSE"


class HighAvailability:
    def __init__(
        self,
        settings: Callable[[], Settings],
        storage: Storage,
        metrics: Instrumentation,
        clock: Clock,
        loops: LoopWatch | None = None,
    ) -> None:
        self.settings = settings
        self.loops = loops or LoopWatch()
        self.storage = storage
        self.metrics = metrics
        self.clock = clock
        cfg = settings().cluster
        self.config = cfg
        self.node = build_node(
            cfg,
            storage.cluster,
            targets=lambda: {t.name: t.shard for t in self.settings().targets},
            on_active=self._on_active,
            on_standby=self._on_standby,
            on_shards=self._on_shards,
            loops=self.loops,
        )
        self.enabled = isinstance(self.node, ClusterNode)
        self.lag = LoopLag(cfg.deadman.stall_after, on_stall=lambda lag: metrics.loop_stalls.inc())
        self.deadman = DeadMansSwitch(
            cfg.deadman,
            cfg.node,
            on_result=lambda ok: metrics.deadman_pings.labels("ok" if ok else "failed").inc(),
        )
        self.shared: SharedDutyState | None = None
        self.peers: PeerWatch | None = None
        self._engine: Callable[[], RuleEngine] | None = None
        self._notify: NotifyService | None = None
        self._journal: AlertJournal | None = None
        self._operations: DutyOperations | None = None
        self._apply_targets: Callable[[], None] | None = None
        self._scheduler: Scheduler | None = None
        self._latest: LatestSamples | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # The targets this node owned by the last shard map applied (None before the first).
        self._owned: set[str] | None = None
        self._rejoins = 0  # the node's rejoins already applied (`_on_shards`)
        metrics.ha_active.set_function(lambda: 1.0 if self.node.is_active() else 0.0)
        metrics.loop_lag.set_function(lambda: self.lag.lag)
        if isinstance(self.node, ClusterNode):
            node = self.node
            metrics.ha_epoch.set_function(lambda: float(node.lease.epoch if node.lease else 0))
            metrics.cluster_members.set_function(lambda: float(len(node.live_members())))

    # -- what the daemon hands to the layers ----------------------------------------------------

    def recording(self, event: AlertEvent) -> bool:
        """Whether this node writes the event down (see the module docstring)."""
        if event.actor:
            return True
        return self.records(event.labels)

    def records(self, labels: Labels) -> bool:
        """Whether this node records the rule events of the alert with these labels: when
        sharded, those of the targets it owns, and the lease holder those of no (configured)
        target; in a pair, the active node every alert's."""
        if self.node.sharded:
            target = dict(labels).get("target")
            configured = {t.name for t in self.settings().targets}
            if target in configured:
                return self.node.owns(target)
        return self.node.is_active()

    def records_as_now(self) -> Callable[[Labels], bool]:
        """`records` as it answers now, kept: the daemon's stop asks it after the node has
        left the cluster (its lease and its share of the targets gone with it)."""
        if not self.node.sharded:
            return lambda labels: True  # a pair: the active node writes all, a standby none
        configured = {t.name for t in self.settings().targets}
        owned = {name for name in configured if self.node.owns(name)}
        active = self.node.is_active()

        def records(labels: Labels) -> bool:
            target = dict(labels).get("target")
            return target in owned if target in configured else active

        return records

    def fence(self) -> int | None:
        """The epoch this node's writes carry (see `AlertJournal`): in a pair, the notifier
        lease's epoch it holds or last held; sharded, its member epoch (an agent records its
        own targets' alerts, which no lease covers: the store refuses them once the others
        counted it dead and took its targets); None alone (and sharded before it joined)."""
        if not isinstance(self.node, ClusterNode):
            return None
        if self.node.sharded:
            return self.node.member_epoch or None
        return self.node.epoch

    def escalating(self) -> bool:
        return self.node.sharded or self.node.is_active()

    @property
    def sender(self) -> Callable[[], tuple[str, int] | None] | None:
        return self.node.sender if self.enabled else None

    def owns(self, target: str) -> bool:
        return self.node.owns(target)

    def readiness(self) -> str:
        if not self.enabled:
            return ""
        status = self.node.status()
        role = "active" if status["active"] else "standby"
        return f"; node {self.node.name} {role}, active node: {status['active_node'] or 'none'}"

    def status(self) -> dict[str, Any]:
        return self.node.status()

    # -- wiring and lifecycle -------------------------------------------------------------------

    def connect(
        self,
        engine: Callable[[], RuleEngine],
        journal: AlertJournal,
        operations: DutyOperations,
        notify: NotifyService,
        scheduler: Scheduler,
        latest: LatestSamples,
        apply_targets: Callable[[], None],
    ) -> None:
        self._engine = engine
        self._journal = journal
        self._notify = notify
        self._operations = operations
        self._scheduler = scheduler
        self._latest = latest
        self._apply_targets = apply_targets
        journal.recording = self.recording
        journal.node = self.node.name if self.enabled else ""
        journal.fence = self.fence
        notify.sender = self.sender
        notify.fence = self.fence
        notify.escalating = self.escalating
        if isinstance(self.node, ClusterNode):
            self.shared = SharedDutyState(
                engine,
                self.storage,
                journal,
                operations,
                notify,
                self.node.name,
                self.node.is_active,
                self.clock,
                self.config.sync_every,
                records=self.records if self.node.sharded else None,
                after_load=_takeover_pause(),
            )
            if self.config.deadman.peer_gone_after is not None:
                self.peers = PeerWatch(self.node, self.config.deadman.peer_gone_after, journal.put)

    async def start(self) -> None:
        """After the store is open and the alerts restored, before the targets start."""
        self.lag.start()
        self.deadman.start()
        await self.node.start()
        if self.shared is not None:
            await self.shared.start()
        if self.peers is not None:
            self.peers.start()
        if self.node.sharded:
            self._tasks.append(self.loops.start(self._share_targets(), "target-status"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.peers is not None:
            await self.peers.stop()
        if self.shared is not None:
            await self.shared.stop()
        await self.node.stop()
        await self.deadman.stop()
        await self.lag.stop()

    # -- role and shard changes -----------------------------------------------------------------

    async def _on_active(self) -> None:
        """The node holds the lease (its epoch) already; events that arrive while it loads the
        store's alerts are recorded after the load (see `SharedDutyState.take_over`)."""
        self.metrics.ha_takeovers.inc()
        if self.shared is not None and not self.node.sharded:
            journal = self.shared.journal
            journal.hold()
            try:
                await self.shared.take_over()
            finally:
                journal.release()

    async def _on_standby(self) -> None:
        if self.shared is not None and not self.node.sharded:
            await self.shared.stand_by()

    async def _on_shards(self) -> None:
        """Poll exactly the targets of this node's shard; alerts of targets gained are taken
        from the store (start times, red-line clocks, acks), in place of the copy this node
        showed of them, and their escalation taken up; those of targets lost are dropped."""
        if self._scheduler is None or self._latest is None or self._apply_targets is None:
            return
        owned = {name for name in self._scheduler_targets() if self.node.owns(name)}
        rejoined = isinstance(self.node, ClusterNode) and self.node.rejoins != self._rejoins
        if rejoined:
            # Counted dead and joined again: another node had our targets meanwhile, and its
            # state of their alerts (fired, paged, acked) is the store's. Taken as gained.
            assert isinstance(self.node, ClusterNode)
            self._rejoins = self.node.rejoins
            self._owned = set()
        gained = owned - self._owned if self._owned is not None else set()
        self._owned = owned
        lost = [name for name in self._scheduler.collectors if not self.node.owns(name)]
        for name in lost:
            await self._scheduler.remove(name)
            self._latest.remove_target(name)
        self._apply_targets()
        self.metrics.targets_owned.set(len(self._scheduler.collectors))
        if self._engine is None:
            return
        engine = self._engine()
        engine.release_targets(lost)
        stored = [rulestate.alert_from_row(r) for r in await self.storage.alerts.load_all()]
        mine = [
            a
            for a in stored
            if self.node.owns(a.label("target"))
            and (a.fingerprint not in engine.alerts or a.label("target") in gained)
        ]
        engine.restore(mine)
        gone = []
        if rejoined:
            # Our copies of the alerts the store no longer has (ended by the other node) go;
            # events queued from the state before are about alerts the store's copy replaced,
            # and are not recorded (`AlertJournal.supersede`; refused anyway, by our old
            # member epoch): the engine derives each alert again from the next sample.
            kept = {a.fingerprint for a in stored}
            for fp, alert in list(engine.alerts.items()):
                if alert.label("target") in gained and fp not in kept:
                    engine.drop_alert(fp)
                    gone.append(fp)
            if self._journal is not None:
                self._journal.supersede(
                    [*gone, *(a.fingerprint for a in mine if a.label("target") in gained)]
                )
        for fp, alert in list(engine.alerts.items()):
            target = alert.label("target")
            if target and target in self._scheduler_targets() and not self.node.owns(target):
                engine.drop_alert(fp)
                gone.append(fp)
        if self._notify is not None and self._operations is not None:
            self._notify.hand_over(gone)
            # Escalation of the alerts taken over goes on here; steps already sent or queued
            # by the former owner are recognised by their page ids.
            taken = {a.fingerprint for a in mine}
            self._notify.resume(
                [v for v in self._operations.list_alerts(["firing"]) if v["fingerprint"] in taken]
            )

    def _scheduler_targets(self) -> set[str]:
        return {t.name for t in self.settings().targets}

    async def _share_targets(self) -> None:
        """Publish the status of the targets this node polls and the holds of their series in
        `across` groups; take the others' (the status page, `depends_on` and group rules
        across shards). One failing does not hold the other back."""
        while True:
            await self.clock.sleep(self.config.sync_every)
            for what, exchange in (
                ("targets' status", self._exchange_status),
                ("group members", self._exchange_groups),
            ):
                try:
                    await exchange()
                except FencedOut as exc:
                    if self._journal is not None:
                        self._journal.refused(self.fence(), exc)
                except Exception as exc:
                    log.warning(
                        f"sharing {what} failed",
                        extra={"fields": {"error": f"{type(exc).__name__}: {exc}"[:300]}},
                    )

    async def _exchange_status(self) -> None:
        assert self._latest is not None
        now = self.clock.time()
        mine = [
            TargetStatusRow(s.name, self.node.name, s.up, s.reason, s.last_poll_at, now)
            for s in list(self._latest.status.values())
            if self.node.owns(s.name) and s.last_poll_at is not None
        ]
        await self.storage.cluster.publish_targets(mine, self.fence())
        engine = self._engine() if self._engine else None
        for row in await self.storage.cluster.target_statuses():
            if self.node.owns(row.target) or row.target not in self._scheduler_targets():
                continue
            status = self._latest.status.setdefault(row.target, TargetStatus(row.target, ""))
            if row.last_poll is None or (status.last_poll_at or 0.0) > row.last_poll:
                # This node knows newer (a parent's reachability checked from here when a
                # child failed): an older "up" from the store must not unmute the child.
                continue
            status.up, status.reason, status.last_poll_at = row.up, row.reason, row.last_poll
            if engine is not None:
                engine.note_target_up(row.target, row.up, row.last_poll)

    async def _exchange_groups(self) -> None:
        """Publish whether each member series of this node's targets holds, for the `across`
        rules whose groups may span targets; merge the holds published by every node into the
        engine's groups, which fire or resolve on the whole group."""
        if self._engine is None or self._journal is None or not self._engine().shares_groups:
            return
        ttl = self.config.member_timeout * GROUP_HOLD_TTL
        holds = [
            GroupHold(rule, dict(group), dict(series), held)
            for rule, group, series, held in self._engine().group_holds(self.node.owns)
        ]
        await self.storage.cluster.publish_group_members(
            self.node.name, holds, forget_after=ttl, epoch=self.fence()
        )
        rows = await self.storage.cluster.group_members(max_age=ttl)
        configured = self._scheduler_targets()
        published: dict[str, dict[Labels, dict[Labels, bool]]] = {}
        for row in rows:
            # A target removed from the config: its last hold no longer counts anywhere.
            if row.series.get("target") not in configured:
                continue
            group = tuple(sorted(row.group.items()))
            series = tuple(sorted(row.series.items()))
            published.setdefault(row.rule, {}).setdefault(group, {})[series] = row.holds
        # The engine of now: a reload may have replaced it during the awaits (it adopts the
        # published holds of the one before, so nothing is lost either way).
        for event in self._engine().merge_group_members(published, self.clock.time()):
            self._journal.put(event)


def _takeover_pause() -> Callable[[], Awaitable[None]] | None:
    seconds = float(os.environ.get(TAKEOVER_PAUSE_ENV, "") or 0)
    if seconds <= 0:
        return None

    async def pause() -> None:
        log.warning("takeover paused (test hook)", extra={"fields": {"seconds": seconds}})
        await asyncio.sleep(seconds)

    return pause
