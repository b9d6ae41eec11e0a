"""Spent confirmation tokens in the shared database: a token works once across every replica.

One statement per spend: `INSERT … ON CONFLICT DO UPDATE … WHERE spender = ours RETURNING`. A new nonce is
inserted and returned (spent now); a nonce spent before returns nothing (already used), unless the earlier row is
this very call's own, written by a first try whose answer was lost. Rows are kept a day past their token's expiry
(a replica whose clock runs behind must still find them), then purged now and then by whichever replica spends.

When the database cannot be written, the token cannot be spent, so nothing is deleted: the refusal is
`JOURNAL_UNWRITABLE` (the database that would record the deletion is the one that failed), and the token stays
unspent for a later try.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from b24_mcp.journal.record import JournalUnwritable
from b24_mcp.postgres.database import Database, DatabaseUnavailableError
from b24_mcp.postgres.schema import SCHEMA

KEEP_AFTER_EXPIRY = 86_400
PURGE_EVERY = 600.0

_SPEND = f"""
INSERT INTO {SCHEMA}.spent_tokens AS spent (nonce, expires_at, spender) VALUES (%s, %s, %s)
ON CONFLICT (nonce) DO UPDATE SET spender = excluded.spender WHERE spent.spender = excluded.spender
RETURNING 1
"""
_PURGE = f"DELETE FROM {SCHEMA}.spent_tokens WHERE expires_at < extract(epoch FROM clock_timestamp()) - %s"


def unrecordable(reason: str) -> JournalUnwritable:
    """The refusal of a deletion when the shared database fails it."""
    return JournalUnwritable(
        f"The shared database cannot be written ({reason}); a deletion that cannot be recorded is not performed.",
        hint="Check that the database of B24_DATABASE_URL is up and reachable; previews still work meanwhile.",
    )


class SharedSpentTokens:
    """The `SpentTokens` of every replica sharing the database."""

    def __init__(self, database: Database, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._database = database
        self._monotonic = monotonic
        self._purged_at: float | None = None

    async def spend(self, nonce: str, expires_at: int) -> bool:
        """Record `nonce` as spent; False when it already was. `JournalUnwritable` when the database fails."""
        spender = secrets.token_hex(8)

        async def insert(connection: Any) -> bool:
            cursor = await connection.execute(_SPEND, (nonce, expires_at, spender))
            return await cursor.fetchone() is not None

        try:
            spent = await self._database.run(insert)
        except DatabaseUnavailableError as exc:
            raise unrecordable(str(exc)) from None
        await self._purge_now_and_then()
        return spent

    async def _purge_now_and_then(self) -> None:
        now = self._monotonic()
        if self._purged_at is not None and now - self._purged_at < PURGE_EVERY:
            return
        self._purged_at = now

        async def purge(connection: Any) -> None:
            await connection.execute(_PURGE, (KEEP_AFTER_EXPIRY,))

        try:
            await self._database.run(purge)
        except DatabaseUnavailableError:
            self._purged_at = None  # next time, then
