"""The portal's rate bucket and its operating-time blocks, shared by every replica through the database.

The portal keeps one leaky bucket per portal: three replicas that each paced themselves against their own copy
would send three times its burst. Here the bucket is a row per portal (`rate_buckets`), filled and drained on the
database's clock (`clock_timestamp()`), so replicas agree on it whatever their own clocks say. One statement per
request: it drains the level for the time passed, takes a place, and returns the new level, from which the
replica computes its wait exactly as `LeakyBucket` does (the same room, two places kept free). The same statement
reads `method_blocks`: when a replica saw the portal answer `OPERATION_TIME_LIMIT`, the method stays blocked for
every replica until the portal's `operating_reset_at`, and the statement then takes no place and returns that time.

Concurrent statements queue on the row's lock; a statement whose clock reading precedes the row's is counted as
no time passed, so the level never rises by a clock's order.

When the database cannot be reached, a replica paces itself with its own `LeakyBucket` for `FALLBACK_SECONDS`
before trying again (one warning line per outage), so previews keep working; deletions are refused meanwhile by
the journal and the spent tokens.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import anyio

from b24_mcp.portal.limiter import LeakyBucket
from b24_mcp.postgres.database import Database, DatabaseUnavailableError
from b24_mcp.postgres.schema import SCHEMA

logger = logging.getLogger(__name__)

FALLBACK_SECONDS = 5.0

_ACQUIRE = f"""
WITH now AS (SELECT clock_timestamp() AS at),
blocked AS (
    SELECT extract(epoch FROM block.until) AS until
    FROM {SCHEMA}.method_blocks AS block, now
    WHERE block.credential = %(credential)s AND block.method = %(method)s AND block.until > now.at
),
reserved AS (
    INSERT INTO {SCHEMA}.rate_buckets AS bucket (portal, level, at)
    SELECT %(portal)s, %(floor)s + 1, now.at FROM now
    WHERE NOT EXISTS (SELECT 1 FROM blocked)
    ON CONFLICT (portal) DO UPDATE SET
        level = greatest(
            bucket.level - greatest(0, extract(epoch FROM excluded.at - bucket.at)) * %(rate)s,
            %(floor)s
        ) + 1,
        at = greatest(bucket.at, excluded.at)
    RETURNING level
)
SELECT (SELECT level FROM reserved), (SELECT until FROM blocked)
"""
_BLOCK = f"""
INSERT INTO {SCHEMA}.method_blocks AS block (credential, method, until) VALUES (%s, %s, to_timestamp(%s))
ON CONFLICT (credential, method) DO UPDATE SET until = greatest(block.until, excluded.until)
"""


class SharedBucket:
    """The `limiter.Pacing` of every replica of one portal and credential (see the module docstring)."""

    def __init__(
        self,
        database: Database,
        *,
        portal: str,
        credential: str,
        capacity: int,
        rate: float,
        margin: int = 2,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.rate = rate
        self._database = database
        self._portal = portal
        self._credential = credential
        self._room = max(1, capacity - margin)
        self._monotonic = monotonic
        self._local = LeakyBucket(capacity, rate, margin=margin, clock=monotonic)
        self._saturated = False
        self._local_until: float | None = None  # pacing locally until then: the database failed

    def __repr__(self) -> str:
        return f"SharedBucket(portal={self._portal!r}, capacity={self.capacity}, rate={self.rate})"

    async def acquire(self, method: str = "") -> int | None:
        """Wait until a request fits the portal's bucket as all replicas fill it; or, taking no place, return
        until when (unix time) the portal blocked `method` for this credential."""
        wait: float
        if self._local_until is not None and self._monotonic() < self._local_until:
            wait = self._local.reserve()
        else:
            reserved = await self._reserve(method)
            if reserved is None:
                wait = self._local.reserve()
            else:
                level, until = reserved
                if until is not None:
                    return math.ceil(until)
                wait = max(0.0, (level - self._room) / self.rate)
        if wait > 0:
            await anyio.sleep(wait)
        return None

    async def _reserve(self, method: str) -> tuple[float, float | None] | None:
        saturated, self._saturated = self._saturated, False
        parameters = {
            "credential": self._credential,
            "method": method,
            "portal": self._portal,
            "rate": self.rate,
            "floor": float(self._room) if saturated else 0.0,
        }

        async def reserve(connection: Any) -> tuple[float, float | None]:
            cursor = await connection.execute(_ACQUIRE, parameters)
            row = await cursor.fetchone()
            level, until = row if row is not None else (None, None)
            return (float(level) if level is not None else 0.0), (float(until) if until is not None else None)

        try:
            reserved = await self._database.run(reserve)
        except DatabaseUnavailableError as exc:
            if self._local_until is None:
                logger.warning(
                    "The shared database cannot be reached (%s): this replica paces the portal's requests on its "
                    "own until it can, and deletions are refused meanwhile",
                    exc,
                )
            self._local_until = self._monotonic() + FALLBACK_SECONDS
            self._saturated = self._saturated or saturated
            return None
        if self._local_until is not None:
            logger.warning("The shared database is reachable again: the replicas share the portal's bucket again")
            self._local_until = None
        return reserved

    def saturate(self) -> None:
        """The portal said the bucket is full: the next place this replica takes fills the shared bucket first."""
        self._saturated = True
        self._local.saturate()

    async def block(self, method: str, until: int) -> None:
        """The portal blocked `method` until `until` (its operating_reset_at): tell every replica."""

        async def record(connection: Any) -> None:
            await connection.execute(_BLOCK, (self._credential, method, until))

        try:
            await self._database.run(record)
        except DatabaseUnavailableError as exc:
            logger.warning("Could not share that the portal blocked %s (%s); only this replica knows", method, exc)
