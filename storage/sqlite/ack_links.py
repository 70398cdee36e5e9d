"""Used ack-link nonces in SQLite."""

from __future__ import annotations

import sqlite3

from dutyd.storage.repositories import AckLinkRepository
from dutyd.storage.sqlite.database import SqliteDatabase, transaction

# Nonces of links expired longer ago than this are forgotten.
FORGET_AFTER = 86400.0


class SqliteAckLinks(AckLinkRepository):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def use(self, nonce: str, at: float, expires: float) -> bool:
        def insert(c: sqlite3.Connection) -> bool:
            with transaction(c):
                c.execute("DELETE FROM ack_tokens_used WHERE expires < ?", (at - FORGET_AFTER,))
                cur = c.execute(
                    "INSERT OR IGNORE INTO ack_tokens_used (nonce, used_at, expires) "
                    "VALUES (?,?,?)",
                    (nonce, at, expires),
                )
                return cur.rowcount > 0

        return await self.db.run(insert)
