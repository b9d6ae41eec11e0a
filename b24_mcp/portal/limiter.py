"""A client-side leaky bucket that mirrors the portal's, so bursts of calls are paced instead of refused.

The portal adds one to a counter per HTTP request and drains it at `rate` per second, refusing requests while
the counter would pass `capacity` (`QUERY_LIMIT_EXCEEDED`). One bucket per process paces every call to it; with
several replicas, `postgres.pacing.SharedBucket` is the one bucket they all fill (the `Pacing` protocol).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import anyio


class Pacing(Protocol):
    """What the portal client needs to pace its requests: `LeakyBucket`, or a bucket shared by replicas."""

    async def acquire(self, method: str = "") -> int | None:
        """Wait until a request of `method` fits in the portal's bucket and return None; or, without taking a
        place, return until when (unix time) the portal blocked `method`, as another replica learnt."""
        ...

    def saturate(self) -> None:
        """The portal said the bucket is full: pace the next requests as if it were."""
        ...

    async def block(self, method: str, until: int) -> None:
        """The portal blocked `method` until `until` (its operating_reset_at): tell whoever shares the bucket."""
        ...


class LeakyBucket:
    """Waits just long enough before each request for the portal's bucket to have room for it."""

    def __init__(
        self, capacity: int, rate: float, *, margin: int = 2, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = capacity
        self.rate = rate
        # Requests reach the portal in a slightly different order and timing than they leave here; keeping a
        # couple of places free absorbs that instead of earning a QUERY_LIMIT_EXCEEDED.
        self._room = max(1, capacity - margin)
        self._clock = clock
        self._level = 0.0
        self._at = clock()

    def _drain(self) -> float:
        now = self._clock()
        self._level = max(0.0, self._level - (now - self._at) * self.rate)
        self._at = now
        return self._level

    def reserve(self) -> float:
        """Take a place in the bucket; return how many seconds to wait before sending."""
        level = self._drain()
        self._level = level + 1  # reserved now, so concurrent callers queue behind it
        return max(0.0, (level + 1 - self._room) / self.rate)

    async def acquire(self, method: str = "") -> int | None:
        """Wait until a request fits in the portal's bucket (a process knows no other's blocks: always None)."""
        wait = self.reserve()
        if wait > 0:
            await anyio.sleep(wait)
        return None

    def saturate(self) -> None:
        """The portal said the bucket is full: pace the next requests as if it were."""
        self._drain()
        self._level = max(self._level, float(self._room))

    async def block(self, method: str, until: int) -> None:
        """Nothing to tell: the portal client remembers the blocks it met itself."""
