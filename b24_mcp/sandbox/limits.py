"""The portal's two limits: the request-intensity leaky bucket (spec §4.1) and the per-method operating-time
budget (spec §4.2)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping

from b24_mcp.sandbox.envelope import method_name

__all__ = ["DEFAULT_OPERATING_LIMIT", "MINIMAL_FIX_TIME", "OperatingLimiter", "RequestBucket"]

# Seconds of execution time a method may use per credential within the window on cloud (doc example, SDK default).
DEFAULT_OPERATING_LIMIT = 480.0
# Calls cheaper than this are not recorded ($minimalFixTime in loadlimiter.php).
MINIMAL_FIX_TIME = 0.1
# The outer batch is never charged ($ignoreMethod); its commands are charged to their own methods.
_UNLIMITED_METHODS = frozenset({"batch"})


class RequestBucket:
    """Leaky bucket: each admitted request adds 1, the level drains by ``drain`` per second, and a request that
    would lift it over ``capacity`` is refused (``limit=None``: no limit)."""

    def __init__(self, limit: tuple[int, float] | None) -> None:
        self.limit = limit
        self._level = 0.0
        self._at = time.monotonic()

    def admit(self) -> bool:
        """True (and +1) when the request fits, False (bucket untouched) otherwise."""
        if self.limit is None:
            return True
        capacity, drain_per_second = self.limit
        now = time.monotonic()
        self._level = max(0.0, self._level - (now - self._at) * drain_per_second)
        self._at = now
        if self._level + 1 > capacity:
            return False
        self._level += 1
        return True


class OperatingLimiter:
    """Execution time charged per (credential, method) within a sliding ``window``; over ``limit`` the method is
    blocked for that credential until enough charges expire (``limit=None``: never blocked).

    The emulator does no real work, so the time a successful call costs is configured per method in ``cost``
    (seconds; method names as called, case-insensitive). Methods without a cost are free and never blocked.
    Like loadlimiter.php: the check happens before a call, so the call that crosses the limit completes and the
    next one is refused; only calls that return are charged; calls under 0.1 s are not recorded.
    """

    def __init__(
        self,
        limit: float | None = DEFAULT_OPERATING_LIMIT,
        window: float = 600.0,
        cost: Mapping[str, float] | None = None,
    ) -> None:
        self.limit = limit
        self.window = window
        self.cost: dict[str, float] = {}
        for method, seconds in (cost or {}).items():
            self.set_cost(method, seconds)
        self._charges: dict[tuple[str, str], deque[tuple[float, float]]] = {}

    def set_cost(self, method: str, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a call cannot cost negative time")
        self.cost[method_name(method)] = seconds

    def cost_of(self, method: str) -> float:
        name = method_name(method)
        return next((cost for key, cost in reversed(self.cost.items()) if method_name(key) == name), 0.0)

    def blocked(self, credential: str, method: str) -> bool:
        if self.limit is None or method in _UNLIMITED_METHODS:
            return False
        return self.usage(credential, method)[0] > self.limit

    def charge(self, credential: str, method: str) -> None:
        cost = self.cost_of(method)
        if method in _UNLIMITED_METHODS or cost < MINIMAL_FIX_TIME:
            return
        self._charges.setdefault((credential, method), deque()).append((time.monotonic(), cost))

    def usage(self, credential: str, method: str) -> tuple[float, float | None]:
        """Seconds charged to (credential, method) within the window, and in how many seconds the oldest expires."""
        charges = self._charges.get((credential, method))
        if not charges:
            return 0.0, None
        now = time.monotonic()
        while charges and charges[0][0] + self.window <= now:
            charges.popleft()
        if not charges:
            return 0.0, None
        return sum(cost for _, cost in charges), charges[0][0] + self.window - now

    def reading(self, credential: str, method: str) -> tuple[float, float | None]:
        """``time.operating`` and ``time.operating_reset_at`` (unix time): None until the method has been charged
        within the window (data-types.md#time, limits.md; so never for the outer ``batch``)."""
        operating, expires_in = self.usage(credential, method)
        return operating, None if expires_in is None else time.time() + expires_in

    def reset(self) -> None:
        """Forget every charge."""
        self._charges.clear()
