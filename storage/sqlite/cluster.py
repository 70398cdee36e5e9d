"""The cluster tables in SQLite (nodes sharing one file on one host, and the single node's
own lease). Times are this host's clock."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from dutyd.storage.records import GroupHold, GroupMemberRow, LeaseState, Member, TargetStatusRow
from dutyd.storage.repositories import ClusterRepository
from dutyd.storage.rows import group_hold_rows, group_member
from dutyd.storage.sqlite.database import SqliteDatabase, check_fence, transaction


def _lease(c: sqlite3.Connection, name: str, now: float) -> LeaseState | None:
    row = c.execute(
        "SELECT holder, epoch, acquired, expires FROM cluster_leases WHERE name=?", (name,)
    ).fetchone()
    return None if row is None else LeaseState(name, row[0], row[1], row[2], row[3], now)


class SqliteCluster(ClusterRepository):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def heartbeat(
        self,
        node: str,
        address: str,
        shard: str | None,
        started: float,
        stale_after: float = 0.0,
    ) -> float:
        def upsert(c: sqlite3.Connection) -> float:
            with transaction(c):
                now = time.time()
                row = c.execute(
                    "SELECT started, last_seen, stale_after, epoch FROM cluster_members "
                    "WHERE node=?",
                    (node,),
                ).fetchone()
                epoch = row[3] if row is not None else 0
                if (
                    row is None
                    or epoch == 0
                    or row[0] != started
                    or (row[2] > 0 and now - row[1] >= row[2])
                ):
                    c.execute("UPDATE member_epochs SET last=last+1 WHERE id=1")
                    epoch = c.execute("SELECT last FROM member_epochs WHERE id=1").fetchone()[0]
                c.execute(
                    "INSERT INTO cluster_members "
                    "(node, address, shard, started, last_seen, epoch, stale_after) "
                    "VALUES (?,?,?,?,?,?,?) ON CONFLICT (node) DO UPDATE SET "
                    "address=excluded.address, shard=excluded.shard, started=excluded.started, "
                    "last_seen=excluded.last_seen, epoch=excluded.epoch, "
                    "stale_after=excluded.stale_after",
                    (node, address, shard, started, now, epoch, stale_after),
                )
            return now

        return await self.db.run(upsert)

    async def members(self) -> tuple[list[Member], float]:
        def select(c: sqlite3.Connection) -> tuple[list[Member], float]:
            rows = c.execute(
                "SELECT node, address, shard, started, last_seen, epoch FROM cluster_members "
                "ORDER BY node"
            ).fetchall()
            return [Member(*r) for r in rows], time.time()

        return await self.db.run(select)

    async def leave(self, node: str) -> None:
        await self.db.run(lambda c: c.execute("DELETE FROM cluster_members WHERE node=?", (node,)))

    async def acquire_lease(self, name: str, node: str, ttl: float) -> LeaseState:
        def acquire(c: sqlite3.Connection) -> LeaseState:
            with transaction(c):
                now = time.time()
                c.execute(
                    "INSERT OR IGNORE INTO cluster_leases (name, holder, epoch, acquired, expires) "
                    "VALUES (?, '', 0, 0, 0)",
                    (name,),
                )
                cur = _lease(c, name, now)
                assert cur is not None
                if cur.holder == node and cur.expires > now:
                    c.execute("UPDATE cluster_leases SET expires=? WHERE name=?", (now + ttl, name))
                elif cur.expires <= now:
                    c.execute(
                        "UPDATE cluster_leases SET holder=?, epoch=epoch+1, acquired=?, expires=? "
                        "WHERE name=?",
                        (node, now, now + ttl, name),
                    )
                    c.execute(
                        "UPDATE outbox_fence SET epoch=MAX(epoch, ?) WHERE id=1", (cur.epoch + 1,)
                    )
                after = _lease(c, name, now)
                assert after is not None
                return after

        return await self.db.run(acquire)

    async def release_lease(self, name: str, node: str) -> None:
        await self.db.run(
            lambda c: c.execute(
                "UPDATE cluster_leases SET expires=? WHERE name=? AND holder=? AND expires>?",
                (time.time(), name, node, time.time()),
            )
        )

    async def lease(self, name: str) -> LeaseState | None:
        return await self.db.run(lambda c: _lease(c, name, time.time()))

    async def publish_targets(
        self, rows: Sequence[TargetStatusRow], epoch: int | None = None
    ) -> None:
        data = [(r.target, r.node, int(r.up), r.reason, r.last_poll, r.updated) for r in rows]
        if not data:
            return

        def upsert(c: sqlite3.Connection) -> None:
            with transaction(c):
                check_fence(c, epoch)
                c.executemany(
                    "INSERT OR REPLACE INTO target_status "
                    "(target, node, up, reason, last_poll, updated) VALUES (?,?,?,?,?,?)",
                    data,
                )

        await self.db.run(upsert)

    async def target_statuses(self) -> list[TargetStatusRow]:
        rows = await self.db.run(
            lambda c: c.execute(
                "SELECT target, node, up, reason, last_poll, updated FROM target_status "
                "ORDER BY target"
            ).fetchall()
        )
        return [TargetStatusRow(r[0], r[1], bool(r[2]), r[3], r[4], r[5]) for r in rows]

    async def publish_group_members(
        self,
        node: str,
        holds: Sequence[GroupHold],
        forget_after: float,
        epoch: int | None = None,
    ) -> None:
        data = group_hold_rows(holds)

        def upsert(c: sqlite3.Connection) -> None:
            with transaction(c):
                check_fence(c, epoch)
                now = time.time()
                c.executemany(
                    "INSERT INTO group_members "
                    "(rule, group_key, series_key, holds, node, updated) VALUES (?,?,?,?,?,?) "
                    "ON CONFLICT (rule, group_key, series_key) DO UPDATE SET "
                    "holds=excluded.holds, node=excluded.node, updated=excluded.updated",
                    [(r, g, s, int(h), node, now) for r, g, s, h in data],
                )
                c.execute("DELETE FROM group_members WHERE updated < ?", (now - forget_after,))

        await self.db.run(upsert)

    async def group_members(self, max_age: float) -> list[GroupMemberRow]:
        rows = await self.db.run(
            lambda c: c.execute(
                "SELECT rule, group_key, series_key, holds, node, updated FROM group_members "
                "WHERE updated >= ? ORDER BY rule, group_key, series_key",
                (time.time() - max_age,),
            ).fetchall()
        )
        return [group_member(*r) for r in rows]
