"""Used ack-link nonces in PostgreSQL."""

from __future__ import annotations

import asyncpg

from dutyd.storage.postgres.database import PostgresDatabase
from dutyd.storage.repositories import AckLinkRepository

# Nonces of links expired longer ago than this are forgotten.
FORGET_AFTER = 86400.0


class PostgresAckLinks(AckLinkRepository):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def use(self, nonce: str, at: float, expires: float) -> bool:
        async def insert(c: asyncpg.Connection) -> bool:
            async with c.transaction():
                await c.execute("DELETE FROM ack_tokens_used WHERE expires < $1", at - FORGET_AFTER)
                status = await c.execute(
                    "INSERT INTO ack_tokens_used (nonce, used_at, expires) VALUES ($1,$2,$3) "
                    "ON CONFLICT (nonce) DO NOTHING",
                    nonce, at, expires,
                )  # fmt: skip
                return status != "INSERT 0 0"

        return await self.db.run(insert)
