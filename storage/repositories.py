"""One interface per thing stored. Every method is a coroutine and a unit of work: a method
that writes several rows does so in one transaction, and no method takes or returns SQL,
connections or cursors, so a server database (PostgreSQL with an async driver) can implement
each of them. `tests/test_storage_contract.py` is the behaviour every implementation must show.

Fencing. The writes a cluster node makes as the active notifier (alert rows, duty-log entries,
rule events, outbox claims, reschedules, deliveries, drops) take `epoch`, the notifier lease's
epoch the writer holds. The store keeps a fence, the highest epoch it has seen (raised when
the lease changes hands, `ClusterRepository.acquire_lease`), and checks the epoch against it in
the write's own transaction: a write below the fence raises `FencedOut` and writes nothing. A
write retried after a database outage runs its check again. `epoch` None is a write of no
notifier (a node alone, what a person did, a sharded agent's own targets): not fenced.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from dutyd.storage.records import (
    EnvironmentRange,
    EnvironmentReading,
    EquipmentFacts,
    GroupHold,
    GroupMemberRow,
    LeaseState,
    LogEntry,
    Member,
    NewLogEntry,
    NewRoomEntry,
    OutboxMessage,
    OutboxStats,
    RoomEntry,
    RuleEventRow,
    StoredAlert,
    StoredSilence,
    StoredWindow,
    TargetStatusRow,
)


class AlertRepository(ABC):
    """The rules layer's alerts that are not inactive, restored at start."""

    @abstractmethod
    async def save(self, alert: StoredAlert, epoch: int | None = None) -> float | None:
        """Insert or replace the alert with this fingerprint; the row's `fired_at` as stored.
        The first firing of an outage is recorded once: while the stored row is firing and the
        saved alert is too, the stored `fired_at` and the page key in `extra` (`key_at`) are
        kept (page ids are built from them, so a later writer must not move them: a node that
        loads the row pages under the key the first writer paged under). Fenced by `epoch`
        (see above)."""

    @abstractmethod
    async def delete(self, fingerprint: str, epoch: int | None = None) -> None:
        """Forget the alert; nothing happens when there is none. Fenced by `epoch`."""

    @abstractmethod
    async def record(
        self,
        fingerprint: str,
        alert: StoredAlert | None,
        entry: NewLogEntry,
        epoch: int | None = None,
    ) -> float | None:
        """An alert event written down in one transaction, fenced by `epoch`: the alert saved
        as `save` does (None: the row of `fingerprint` deleted) and `entry` appended to the
        duty log, so a crash never leaves the one without the other. The row's `fired_at` as
        stored (None when deleted)."""

    @abstractmethod
    async def shift_moments(self, seconds: float) -> None:
        """Move every stored alert's `active_since` and `fired_at` by `seconds`: the daemon's
        clock re-anchored onto a stepped system clock (a single node, `duty.clockwatch`).
        `save` keeps an outage's first firing, so only this moves it."""

    @abstractmethod
    async def load_all(self) -> list[StoredAlert]: ...


class OverlayRepository(ABC):
    """Silences and ad hoc maintenance windows. Marked ended, not deleted, so the duty log and
    reports can say who muted what and when; retention deletes those long over (`prune`)."""

    @abstractmethod
    async def add_silence(
        self, matchers: dict[str, Any], until: float, actor: str, reason: str, created: float
    ) -> int:
        """The new silence's id (ids increase)."""

    @abstractmethod
    async def end_silence(self, id: int, at: float, actor: str) -> bool:
        """Mark a silence removed; False when there is no such live silence."""

    @abstractmethod
    async def live_silences(self, now: float) -> list[StoredSilence]:
        """Silences not removed and not yet over at `now`, by id."""

    @abstractmethod
    async def add_window(
        self,
        targets: list[str],
        matchers: dict[str, Any],
        start: float,
        end: float,
        actor: str,
        reason: str,
        created: float,
    ) -> int: ...

    @abstractmethod
    async def end_window(self, id: int, at: float, actor: str) -> bool:
        """Mark a window removed; False when there is no such window not yet removed."""

    @abstractmethod
    async def windows_ending_after(self, since: float) -> list[StoredWindow]:
        """Windows not removed that end after `since` (kept for red-line exclusion), by id."""

    @abstractmethod
    async def prune(self, before: float, limit: int) -> int:
        """Delete up to `limit` silences and windows that were over (or removed) before
        `before`; how many were deleted. Live and future ones are never deleted."""


class RuleEventRepository(ABC):
    """Counter increases seen by `events` rules."""

    @abstractmethod
    async def append(self, rows: Sequence[RuleEventRow], epoch: int | None = None) -> None:
        """Fenced by `epoch`."""

    @abstractmethod
    async def load(self, since: float) -> list[RuleEventRow]:
        """Increases from `since` on, plus each series' latest row (its last counter value),
        in the order they were appended."""

    @abstractmethod
    async def prune(self, before: float, limit: int) -> int:
        """Delete up to `limit` rows older than `before`, except each series' latest (its last
        counter value); how many were deleted."""


class DutyLogRepository(ABC):
    """The append-only duty log."""

    @abstractmethod
    async def append(
        self,
        timestamp: float,
        kind: str,
        actor: str,
        subject: str,
        data: dict[str, Any],
        epoch: int | None = None,
    ) -> int:
        """The new entry's id (ids increase in writing order). Fenced by `epoch`."""

    async def append_entry(self, entry: NewLogEntry, epoch: int | None = None) -> int:
        """`append` of an entry made beforehand (its `key` kept, where the store keeps it)."""
        return await self.append(
            entry.timestamp, entry.kind, entry.actor, entry.subject, entry.data, epoch
        )

    @abstractmethod
    async def append_many(self, entries: Sequence[NewLogEntry], epoch: int | None = None) -> None:
        """Write a burst of entries in one transaction, in order. Fenced by `epoch`."""

    @abstractmethod
    async def read(
        self,
        since: float | None = None,
        until: float | None = None,
        kinds: Sequence[str] = (),
        subject: str | None = None,
        limit: int | None = 1000,
        newest_first: bool = False,
        subject_prefix: str | None = None,
    ) -> list[LogEntry]:
        """Entries with since <= timestamp < until, in the order they were written;
        `newest_first` for a tail (the newest `limit` entries, newest first); `limit` None for
        all. A kind ending in "." is a prefix ("alert." matches alert.firing, alert.resolved);
        `subject_prefix` matches subjects starting with it."""

    @abstractmethod
    async def first_timestamp(self) -> float | None:
        """When the log began (the installation's first entry); None when empty."""

    @abstractmethod
    async def prune(self, before: float, limit: int) -> int:
        """Delete up to `limit` of the oldest entries written before `before`; how many."""


class DrillRepository(ABC):
    """What the drills left behind (their runs are recorded as duty log entries)."""

    @abstractmethod
    async def last_answered_start(self) -> float | None:
        """The start time of the latest drill that someone answered (a `drill.end` entry with
        `answered` true; its `started`, else the entry's time); None before any."""


class OutboxRepository(ABC):
    """Notifications written before they are sent and removed once accepted, plus the ids
    delivered lately, so a message regenerated after a restart is not sent twice.

    Several nodes may share one outbox (an HA pair). A node claims a message before sending
    it: the claim names the node and its fencing epoch and lasts until a deadline. While a
    claim lasts nobody else gets the message (`due` leaves it out, `claim` refuses it); when
    it runs out (the claimer died mid-send) another node takes it over. The outbox keeps the
    highest epoch it has seen (the fence): a claim with a lower epoch, from a node that lost
    the lease and does not know it yet (hung, then continued), is refused.
    """

    @abstractmethod
    async def enqueue(self, messages: Sequence[OutboxMessage]) -> list[str]:
        """Queue the messages in one transaction; the ids actually added. A message whose id
        is queued already or was delivered (and not yet forgotten) is skipped."""

    @abstractmethod
    async def due(
        self, now: float, limit: int, exclude: Collection[str] = ()
    ) -> list[OutboxMessage]:
        """Up to `limit` queued messages with next_at <= now, not in `exclude` (those being
        sent) and not under a live claim, by next_at then creation. A claim is live while it
        lasts past `now` and was made at the fence's epoch: a claim of an older epoch is void
        (its node lost the lease), so the new active sends the message at once."""

    @abstractmethod
    async def claim(self, message_id: str, node: str, epoch: int, now: float, until: float) -> bool:
        """Claim a queued message for sending until `until`. True when it is now this node's:
        it was unclaimed, its claim ran out by `now` or was made at an older epoch (void), or
        it is this node's at this epoch already. False when it is gone (delivered, dropped),
        claimed by someone else, or `epoch` is below the fence (a newer active exists);
        otherwise the fence rises to `epoch`."""

    @abstractmethod
    async def queued_among(self, page_ids: Collection[str]) -> set[str]:
        """Which of `page_ids` are pages (`payload["pages"]`) of a queued message, not yet
        delivered. With `sent_among` (asked after this, so a message delivered in between is
        found by one of the two) it keeps a page regenerated after a restart, or by a node that
        takes over, from being queued again in another grouping."""

    @abstractmethod
    async def raise_fence(self, epoch: int) -> None:
        """Refuse claims below `epoch` from now on (a new active took the lease)."""

    @abstractmethod
    async def mark_delivered(
        self,
        message_id: str,
        at: float,
        also_sent: Sequence[str] = (),
        log: NewLogEntry | None = None,
        epoch: int | None = None,
    ) -> None:
        """Fenced by `epoch`; in one transaction: remove the message, remember its id and
        `also_sent` (its pages' ids) as delivered at `at`, and append `log` to the duty log.
        Returns once that is written; a store may write deliveries that end together in one
        transaction (SQLite does: group commit), never part of one."""

    @abstractmethod
    async def sent_among(self, ids: Collection[str]) -> set[str]:
        """Which of `ids` were delivered (and not yet forgotten)."""

    @abstractmethod
    async def drop(self, message_id: str, epoch: int | None = None) -> None:
        """Remove a queued message without marking it delivered. Fenced by `epoch`."""

    @abstractmethod
    async def shift_moments(self, seconds: float, ids: Sequence[str]) -> None:
        """Move these queued messages' `next_at` and `created` by `seconds` (the daemon's
        clock re-anchored onto a stepped system clock): each retry as far from now as it was,
        the queue in the same order."""

    @abstractmethod
    async def reschedule(self, message: OutboxMessage, epoch: int | None = None) -> None:
        """Save a queued message's channel, fallbacks, counters, next_at and last error, and
        release its claim. Fenced by `epoch`."""

    @abstractmethod
    async def stats(self, now: float) -> OutboxStats: ...

    @abstractmethod
    async def forget_sent(self, before: float) -> None:
        """Forget delivered ids marked before `before`."""


class AckLinkRepository(ABC):
    """The nonces of acknowledge links already used: a link works once."""

    @abstractmethod
    async def use(self, nonce: str, at: float, expires: float) -> bool:
        """Record the nonce as used; False when it was used before. Nonces of links that
        expired more than a day before `at` are forgotten (they no longer verify anyway)."""


class EnvironmentRepository(ABC):
    """The hourly lowest, highest and last reading of each room sensor series."""

    @abstractmethod
    async def record(self, readings: Sequence[EnvironmentReading]) -> None:
        """Fold the readings into their hours' rows, in one transaction."""

    @abstractmethod
    async def ranges(self, start: float, end: float) -> list[EnvironmentRange]:
        """Per series, the min and max over the hours that overlap [start, end), ordered by
        the series' labels (canonical JSON) then name."""

    @abstractmethod
    async def prune(self, before: float, limit: int) -> int:
        """Delete up to `limit` hourly rows of hours before `before`; how many."""


class BootTimeRepository(ABC):
    """Each target's last known boot time (poll time minus reported uptime), by the uptime
    metric it came from: compared at the first poll after a restart of dutyd."""

    @abstractmethod
    async def load_all(self) -> dict[tuple[str, str], float]:
        """(target, uptime metric) -> boot time, Unix seconds."""

    @abstractmethod
    async def save(self, boot_times: Mapping[tuple[str, str], float]) -> None:
        """Insert or replace these boot times in one transaction."""


class SysNameRepository(ABC):
    """The sysName each device of a `name: "...{sysName}..."` group last told, by its address
    as the config writes it: a restart while the device does not answer keeps its name."""

    @abstractmethod
    async def load_all(self) -> dict[str, str]:
        """Address -> sysName (as made a name: cleaned)."""

    @abstractmethod
    async def save(self, names: Mapping[str, str]) -> None:
        """Insert or replace these in one transaction."""


class ClusterRepository(ABC):
    """What the nodes sharing one store know of each other: heartbeat rows, named leases with
    a fencing epoch, the status of the targets each polls and the holds of the member series
    of `across` groups (a group's series may be polled by several nodes). Times are the store's own
    clock (`now` in the answers), so the nodes' clocks may disagree without harm. Calls fail
    at once when the store is unreachable (a node must know now that it cannot renew)."""

    @abstractmethod
    async def heartbeat(
        self,
        node: str,
        address: str,
        shard: str | None,
        started: float,
        stale_after: float = 0.0,
    ) -> float:
        """Insert or refresh the node's row (last_seen = now); the store's now. The row's member
        epoch (`Member.epoch`, from `MEMBER_EPOCH_BASE` up, never given twice) is new when the
        row is, when `started` changed (a restart), and when the row had not been refreshed
        for its own `stale_after` (the others counted the node dead and took its targets):
        writes fenced by an older epoch are refused from then on. `stale_after` (the member
        timeout; 0: never stale) is kept in the row: a write fenced by the member's epoch is
        also refused once the row is that old."""

    @abstractmethod
    async def members(self) -> tuple[list[Member], float]:
        """Every node's row, by name, and the store's now."""

    @abstractmethod
    async def leave(self, node: str) -> None:
        """Remove the node's row (a clean stop)."""

    @abstractmethod
    async def acquire_lease(self, name: str, node: str, ttl: float) -> LeaseState:
        """Take or renew the lease for `ttl` seconds, in one transaction. The holder renews
        (same epoch) while it lasts; once it ran out anyone takes it (the epoch rises, and the
        outbox fence with it, so the former holder's claims are refused). Otherwise the lease
        is left as it is. Returns the lease as it is after the attempt."""

    @abstractmethod
    async def release_lease(self, name: str, node: str) -> None:
        """End the lease now if `node` holds it (a clean stop: the peer takes over at once)."""

    @abstractmethod
    async def lease(self, name: str) -> LeaseState | None:
        """The lease as it is, None when never taken."""

    @abstractmethod
    async def publish_targets(
        self, rows: Sequence[TargetStatusRow], epoch: int | None = None
    ) -> None:
        """Insert or replace the targets' status rows. Fenced by `epoch`."""

    @abstractmethod
    async def target_statuses(self) -> list[TargetStatusRow]:
        """Every target's latest status row, by target."""

    @abstractmethod
    async def publish_group_members(
        self,
        node: str,
        holds: Sequence[GroupHold],
        forget_after: float,
        epoch: int | None = None,
    ) -> None:
        """In one transaction: insert or replace the row of each (rule, group, series) with its
        hold, `node` as writer and the store's now as `updated` (a row another node wrote
        before the series' target moved here is replaced); then delete every row, whoever
        wrote it, not refreshed for `forget_after` seconds. Fenced by `epoch`."""

    @abstractmethod
    async def group_members(self, max_age: float) -> list[GroupMemberRow]:
        """The rows refreshed within the last `max_age` seconds (the store's clock), by rule,
        then group, then series (their labels as canonical JSON)."""


class RoomEntryRepository(ABC):
    """The machine room's entry register: who went in or out of which room, with whom, why
    and carrying what. Append-only: lines are never changed or removed (both stores refuse
    an UPDATE or DELETE of the table), so the register is evidence."""

    @abstractmethod
    async def append(self, entries: Sequence[NewRoomEntry]) -> list[int]:
        """Write the lines in one transaction, in order; their ids (increasing)."""

    @abstractmethod
    async def read(
        self,
        since: float | None = None,
        until: float | None = None,
        room: str | None = None,
        limit: int | None = None,
    ) -> list[RoomEntry]:
        """Lines with since <= timestamp < until (of `room` when given), in writing order."""

    @abstractmethod
    async def inside(self) -> list[RoomEntry]:
        """Who is in now: for each (room, person) whose latest line is "in", that line, in
        writing order."""


class EquipmentRepository(ABC):
    """The equipment register's history: what each target is (its facts), a row each time
    that was first read or changed. Append-only, as the entry register."""

    @abstractmethod
    async def record(self, timestamp: float, target: str, kind: str, facts: dict[str, str]) -> int:
        """Append a row; its id."""

    @abstractmethod
    async def latest(self, until: float | None = None) -> list[EquipmentFacts]:
        """Each target's latest row (written before `until` when given), by target."""

    @abstractmethod
    async def history(self, since: float, until: float) -> list[EquipmentFacts]:
        """Rows with since <= timestamp < until, in writing order."""
