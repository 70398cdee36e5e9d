"""This node's place in the cluster: its heartbeat row, the notifier lease (active or
standby) and the targets it polls. `SoloNode` is a node alone (no `cluster:` section)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from dutyd.cluster.config import ClusterConfig
from dutyd.cluster.shards import assign
from dutyd.core.tasks import LoopWatch
from dutyd.storage import ClusterRepository, LeaseState, Member

log = logging.getLogger("dutyd.cluster")

NOTIFIER = "notifier"  # the lease of the node that escalates and sends
# Stop acting this long before the lease runs out by our own clock (scheduling slack).
SAFETY_MARGIN = 0.5

Hook = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


class Node(ABC):
    """What the rest of dutyd asks of the cluster, as plain callables."""

    name: str

    @abstractmethod
    def is_active(self) -> bool:
        """This node holds the notifier lease: it records alert events, escalates, sends."""

    @abstractmethod
    def sender(self) -> tuple[str, int] | None:
        """(node, epoch) to claim outbox messages with; None: do not send."""

    @abstractmethod
    def owns(self, target: str) -> bool:
        """This node polls the target (and records its alerts, when sharded)."""

    @property
    def sharded(self) -> bool:
        return False

    @abstractmethod
    def status(self) -> dict[str, Any]: ...

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class SoloNode(Node):
    """One dutyd alone: always active, polls everything, sends without claims."""

    def __init__(self, name: str = "") -> None:
        self.name = name

    def is_active(self) -> bool:
        return True

    def sender(self) -> tuple[str, int] | None:
        return None

    def owns(self, target: str) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        return {"enabled": False, "node": self.name, "active": True}


class ClusterNode(Node):
    def __init__(
        self,
        config: ClusterConfig,
        repo: ClusterRepository,
        targets: Callable[[], Mapping[str, str | None]] = dict,
        on_active: Hook = _nothing,
        on_standby: Hook = _nothing,
        on_shards: Hook = _nothing,
        monotonic: Callable[[], float] = time.monotonic,
        loops: LoopWatch | None = None,
    ) -> None:
        self.config = config
        self.name = config.node
        self.repo = repo
        self.targets = targets  # target name -> pinned shard
        self.on_active, self.on_standby, self.on_shards = on_active, on_standby, on_shards
        self.monotonic = monotonic
        # Its rounds' loop: one that ends by a fault would leave this node a silent standby.
        self.loops = loops or LoopWatch()
        self.started = time.time()
        self.lease: LeaseState | None = None
        self.members: list[Member] = []
        self.store_now = 0.0
        self.assignment: dict[str, str | None] = {}
        self.takeovers = 0
        self.store_errors = 0
        self._active = False
        self._epoch = 0
        self._member_epoch = 0
        self.rejoins = 0  # times the others counted this node dead and it joined again
        self._valid_until = 0.0
        self._task: asyncio.Task[None] | None = None
        self._promotion: asyncio.Task[None] | None = None
        self._joined = asyncio.Event()

    # -- what the others ask --------------------------------------------------------------------

    def is_active(self) -> bool:
        return self._active and self.monotonic() < self._valid_until

    def sender(self) -> tuple[str, int] | None:
        return (self.name, self._epoch) if self.is_active() else None

    @property
    def epoch(self) -> int:
        """The epoch of the notifier lease this node holds or held last (0: never): what its
        writes as the active node carry, so the store refuses them once another node took
        the lease, even before this node notices."""
        return self._epoch

    @property
    def member_epoch(self) -> int:
        """This node's member epoch as of the shard map it applied last (0: none yet): what
        its writes carry when sharded, so the store refuses them once the others counted it
        dead and took its targets (its heartbeat older than `member_timeout`), and after it
        joined again until it has applied the new shard map (`_read_members`)."""
        return self._member_epoch

    @property
    def sharded(self) -> bool:
        return self.config.shards

    def owns(self, target: str) -> bool:
        if not self.config.shards:
            return True
        return self.assignment.get(target) == self.name

    def live_members(self) -> list[Member]:
        cutoff = self.store_now - self.config.member_timeout
        return [m for m in self.members if m.last_seen >= cutoff]

    def status(self) -> dict[str, Any]:
        lease = self.lease
        live = {m.node for m in self.live_members()}
        counts: dict[str, int] = {}
        for owner in self.assignment.values():
            counts[owner or ""] = counts.get(owner or "", 0) + 1
        return {
            "enabled": True,
            "node": self.name,
            "active": self.is_active(),
            "active_node": lease.holder if lease and lease.expires > lease.now else None,
            "epoch": lease.epoch if lease else 0,
            "lease_age": round(lease.now - lease.acquired, 3) if lease and lease.holder else None,
            "lease_expires_in": round(lease.expires - lease.now, 3) if lease else None,
            "takeover": self.config.takeover,
            "members": [
                {
                    "node": m.node,
                    "address": m.address,
                    "shard": m.shard,
                    "last_seen_age": round(self.store_now - m.last_seen, 3),
                    "live": m.node in live,
                }
                for m in self.members
            ],
            "sharded": self.config.shards,
            "shard_map": dict(sorted(counts.items())) if self.config.shards else {},
        }

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join (heartbeat, members, shard map) before the daemon starts polling, then keep
        at it in the background; the lease is tried in the background from the first round.
        The lease is read here already, so /readyz and the status page name the active node
        from the start, not "none" until the first round."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.config.period * 2):
                await self._heartbeat()
                await self._read_members()
                self.lease = await self.repo.lease(NOTIFIER)
        self._task = self.loops.start(self._run(), "cluster")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._end_promotion()
        was_active, self._active = self._active, False
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                if was_active:
                    await self.repo.release_lease(NOTIFIER, self.name)
                await self.repo.leave(self.name)

    async def _run(self) -> None:
        while True:
            started = self.monotonic()
            await self.round()
            spent = self.monotonic() - started
            await asyncio.sleep(max(0.05, self.config.period - spent))

    async def round(self) -> None:
        """One heartbeat, one try at the lease, one look at the members."""
        try:
            async with asyncio.timeout(self.config.period):
                await self._heartbeat()
        except Exception as exc:
            self._store_failed("heartbeat", exc)
        await self._try_lease()
        try:
            async with asyncio.timeout(self.config.period):
                await self._read_members()
        except Exception as exc:
            self._store_failed("members", exc)

    # -- the pieces -----------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        self.store_now = await self.repo.heartbeat(
            self.name,
            self.config.address,
            self.config.shard,
            self.started,
            stale_after=self.config.member_timeout,
        )

    async def _try_lease(self) -> None:
        asked = self.monotonic()
        try:
            async with asyncio.timeout(self.config.period):
                lease = await self.repo.acquire_lease(NOTIFIER, self.name, self.config.lease_ttl)
        except Exception as exc:
            self._store_failed("lease", exc)
            if self._active and not self.is_active():
                await self._demote("lease ran out: the store did not answer")
            return
        self.lease = lease
        if not lease.held_by(self.name):
            if self._active:
                await self._demote(f"{lease.holder} holds the lease (epoch {lease.epoch})")
            return
        # Valid by our own clock from when we asked, never longer than the store says.
        self._valid_until = asked + (lease.expires - lease.now) - SAFETY_MARGIN
        if self._active and lease.epoch != self._epoch:
            await self._demote("the lease ran out and was taken again")
        if not self._active:
            self._promote(lease)

    def _promote(self, lease: LeaseState) -> None:
        """Active first (the epoch in hand: the store fences the former holder's writes from
        the moment the lease moved), then `on_active` loads the shared state; an event that
        arrives meanwhile is this node's to record, once the state is loaded. The load runs
        beside the rounds, so a slow one does not keep the lease from being renewed."""
        self._epoch = lease.epoch
        self._active = True
        log.warning(
            "this node is now the active notifier",
            extra={"fields": {"node": self.name, "epoch": lease.epoch}},
        )
        self._promotion = asyncio.create_task(self._take_over(), name="promotion")

    async def _take_over(self) -> None:
        try:
            await self.on_active()
        except Exception:
            log.exception("taking over failed; standing by")
            await self._demote("taking over failed")
            return
        self.takeovers += 1

    async def _end_promotion(self) -> None:
        task, self._promotion = self._promotion, None
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _demote(self, why: str) -> None:
        self._active = False
        await self._end_promotion()  # a takeover still loading is abandoned
        log.warning("this node is now a standby", extra={"fields": {"node": self.name, "why": why}})
        try:
            await self.on_standby()
        except Exception:
            log.exception("standing by failed")

    async def _read_members(self) -> None:
        self.members, self.store_now = await self.repo.members()
        # Our row's epoch: new when the heartbeat found the row stale (the others had counted
        # us dead and taken our targets, a frozen or cut-off node that continues).
        epoch = next((m.epoch for m in self.members if m.node == self.name), 0)
        if not self.config.shards or epoch == 0:
            self._member_epoch = epoch or self._member_epoch
            return
        rejoined = self._member_epoch not in (0, epoch)
        if rejoined:
            self.rejoins += 1
            log.warning(
                "this node was counted dead by the others and joins again: its writes of "
                "before are refused, its targets' alerts are read again from the store",
                extra={"fields": {"node": self.name, "epoch": epoch}},
            )
        live = {m.node: m.shard for m in self.live_members()}
        live.setdefault(self.name, self.config.shard)  # we are alive, whatever the row says
        assignment = assign(self.targets(), live)
        if assignment != self.assignment or rejoined:
            moved = sum(1 for t, n in assignment.items() if self.assignment.get(t) != n)
            self.assignment = assignment
            log.info(
                "shard map changed",
                extra={"fields": {"members": len(live), "moved": moved,
                                  "mine": sum(1 for n in assignment.values() if n == self.name)}},
            )  # fmt: skip
            try:
                await self.on_shards()
            except Exception:
                log.exception("applying the shard map failed")
        # Only now: writes made on the old map (the engine's state from before we were
        # counted dead) still carry the old epoch, and are refused.
        self._member_epoch = epoch

    def _store_failed(self, what: str, exc: BaseException) -> None:
        self.store_errors += 1
        log.warning(
            "cluster store call failed",
            extra={"fields": {"call": what, "error": f"{type(exc).__name__}: {exc}"[:300]}},
        )

    def gone_peers(self, after: float) -> list[Member]:
        """Peers whose heartbeat is older than `after` (by the store's clock)."""
        return [
            m for m in self.members if m.node != self.name and self.store_now - m.last_seen > after
        ]


def build_node(
    config: ClusterConfig,
    repo: ClusterRepository,
    **hooks: Any,
) -> Node:
    """A ClusterNode when `cluster.enabled`, else a SoloNode."""
    if not config.enabled:
        return SoloNode(config.node)
    return ClusterNode(config, repo, **hooks)
