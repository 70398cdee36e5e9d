"""The cluster tables in PostgreSQL: heartbeats, leases with a fencing epoch, targets'
status, the holds of `across` groups' members. Times are the database server's clock, so the
nodes' clocks may disagree. Every call fails at once when the database is unreachable (no
retry): a node must know now that it could not renew its lease."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from dutyd.storage.postgres.database import PostgresDatabase, check_fence
from dutyd.storage.records import GroupHold, GroupMemberRow, LeaseState, Member, TargetStatusRow
from dutyd.storage.repositories import ClusterRepository
from dutyd.storage.rows import group_hold_rows, group_member

# dutyd_now(): the database server's clock in seconds since the epoch (migration 3).
LEASE = "SELECT holder, epoch, acquired, expires, dutyd_now() FROM cluster_leases WHERE name=$1"
LEASE_FOR_UPDATE = LEASE + " FOR UPDATE"


async def _lease(c: asyncpg.Connection, name: str, lock: bool = False) -> LeaseState | None:
    row = await c.fetchrow(
        LEASE_FOR_UPDATE if lock else LEASE,
        name,
    )
    return None if row is None else LeaseState(name, row[0], row[1], row[2], row[3], row[4])


class PostgresCluster(ClusterRepository):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def heartbeat(
        self,
        node: str,
        address: str,
        shard: str | None,
        started: float,
        stale_after: float = 0.0,
    ) -> float:
        async def upsert(c: asyncpg.Connection) -> float:
            # In ON CONFLICT's SET, cluster_members.* is the row as it was (see the contract
            # for when the epoch is new; the sequence never gives a number twice).
            return float(
                await c.fetchval(
                    "INSERT INTO cluster_members "
                    "(node, address, shard, started, last_seen, epoch, stale_after) "
                    "VALUES ($1,$2,$3,$4,dutyd_now(),nextval('member_epochs'),$5) "
                    "ON CONFLICT (node) DO UPDATE SET "
                    "address=excluded.address, shard=excluded.shard, started=excluded.started, "
                    "last_seen=excluded.last_seen, stale_after=excluded.stale_after, "
                    "epoch=CASE WHEN cluster_members.epoch = 0 "
                    "OR cluster_members.started <> excluded.started "
                    "OR (cluster_members.stale_after > 0 AND excluded.last_seen "
                    "- cluster_members.last_seen >= cluster_members.stale_after) "
                    "THEN excluded.epoch ELSE cluster_members.epoch END "
                    "RETURNING last_seen",
                    node, address, shard, started, stale_after,
                )
            )  # fmt: skip

        return await self.db.run(upsert, retry=False)

    async def members(self) -> tuple[list[Member], float]:
        async def select(c: asyncpg.Connection) -> tuple[list[Member], float]:
            async with c.transaction():
                rows = await c.fetch(
                    "SELECT node, address, shard, started, last_seen, epoch FROM cluster_members "
                    'ORDER BY node COLLATE "C"'
                )
                now = await c.fetchval("SELECT dutyd_now()")
            return [Member(*r) for r in rows], float(now)

        return await self.db.run(select, retry=False)

    async def leave(self, node: str) -> None:
        async def delete(c: asyncpg.Connection) -> None:
            await c.execute("DELETE FROM cluster_members WHERE node=$1", node)

        await self.db.run(delete, retry=False)

    async def acquire_lease(self, name: str, node: str, ttl: float) -> LeaseState:
        async def acquire(c: asyncpg.Connection) -> LeaseState:
            async with c.transaction():
                await c.execute(
                    "INSERT INTO cluster_leases (name, holder, epoch, acquired, expires) "
                    "VALUES ($1, '', 0, 0, 0) ON CONFLICT (name) DO NOTHING",
                    name,
                )
                # The row lock serialises nodes trying at the same moment.
                cur = await _lease(c, name, lock=True)
                assert cur is not None
                if cur.holder == node and cur.expires > cur.now:
                    await c.execute(
                        "UPDATE cluster_leases SET expires=$1 WHERE name=$2", cur.now + ttl, name
                    )
                elif cur.expires <= cur.now:
                    await c.execute(
                        "UPDATE cluster_leases SET holder=$1, epoch=epoch+1, acquired=$2, "
                        "expires=$3 WHERE name=$4",
                        node, cur.now, cur.now + ttl, name,
                    )  # fmt: skip
                    await c.execute(
                        "UPDATE outbox_fence SET epoch=GREATEST(epoch, $1) WHERE id=1",
                        cur.epoch + 1,
                    )
                after = await _lease(c, name)
                assert after is not None
                return LeaseState(
                    name, after.holder, after.epoch, after.acquired, after.expires, cur.now
                )

        return await self.db.run(acquire, retry=False)

    async def release_lease(self, name: str, node: str) -> None:
        async def release(c: asyncpg.Connection) -> None:
            await c.execute(
                "UPDATE cluster_leases SET expires=dutyd_now() "
                "WHERE name=$1 AND holder=$2 AND expires>dutyd_now()",
                name, node,
            )  # fmt: skip

        await self.db.run(release, retry=False)

    async def lease(self, name: str) -> LeaseState | None:
        async def select(c: asyncpg.Connection) -> LeaseState | None:
            return await _lease(c, name)

        return await self.db.run(select, retry=False)

    async def publish_targets(
        self, rows: Sequence[TargetStatusRow], epoch: int | None = None
    ) -> None:
        data = [(r.target, r.node, r.up, r.reason, r.last_poll, r.updated) for r in rows]
        if not data:
            return

        async def upsert(c: asyncpg.Connection) -> None:
            async with c.transaction():
                await check_fence(c, epoch)
                await c.executemany(
                    "INSERT INTO target_status (target, node, up, reason, last_poll, updated) "
                    "VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (target) DO UPDATE SET "
                    "node=excluded.node, up=excluded.up, reason=excluded.reason, "
                    "last_poll=excluded.last_poll, updated=excluded.updated",
                    data,
                )

        await self.db.run(upsert, retry=False)

    async def target_statuses(self) -> list[TargetStatusRow]:
        async def select(c: asyncpg.Connection) -> list[asyncpg.Record]:
            return await c.fetch(
                "SELECT target, node, up, reason, last_poll, updated FROM target_status "
                'ORDER BY target COLLATE "C"'
            )

        return [TargetStatusRow(*r) for r in await self.db.run(select, retry=False)]

    async def publish_group_members(
        self,
        node: str,
        holds: Sequence[GroupHold],
        forget_after: float,
        epoch: int | None = None,
    ) -> None:
        data = group_hold_rows(holds)

        async def upsert(c: asyncpg.Connection) -> None:
            async with c.transaction():
                await check_fence(c, epoch)
                # One now for the whole round (dutyd_now() per row would differ by microseconds).
                now = float(await c.fetchval("SELECT dutyd_now()"))
                await c.executemany(
                    "INSERT INTO group_members (rule, group_key, series_key, holds, node, updated) "
                    "VALUES ($1,$2,$3,$4,$5,$6) "
                    "ON CONFLICT (rule, group_key, series_key) DO UPDATE SET "
                    "holds=excluded.holds, node=excluded.node, updated=excluded.updated",
                    [(r, g, s, h, node, now) for r, g, s, h in data],
                )
                await c.execute("DELETE FROM group_members WHERE updated < $1", now - forget_after)

        await self.db.run(upsert, retry=False)

    async def group_members(self, max_age: float) -> list[GroupMemberRow]:
        async def select(c: asyncpg.Connection) -> list[asyncpg.Record]:
            return await c.fetch(
                "SELECT rule, group_key, series_key, holds, node, updated FROM group_members "
                "WHERE updated >= dutyd_now() - $1 "
                'ORDER BY rule COLLATE "C", group_key COLLATE "C", series_key COLLATE "C"',
                max_age,
            )

        return [group_member(*r) for r in await self.db.run(select, retry=False)]
