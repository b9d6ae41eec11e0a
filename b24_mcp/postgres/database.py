"""The connection pool every shared store uses, and the one exception they raise when the database fails them.

The pool (psycopg_pool's `AsyncConnectionPool`, autocommit connections) is created on first use, inside the running
event loop, and makes the schema current before anything else runs (`schema.ensure_schema`). Each statement of a
store is its own transaction unless the store opens one.

When the database goes away, idle connections die with it: an operation that fails on such a stale connection is
tried once more after the pool has checked its idle connections, so the first operations after a database restart
work instead of failing. Once an operation failed to reach the database, the next ones first try a connection of
their own (a refused one fails at once), instead of each waiting `timeout` seconds for the pool; the pool keeps
reconnecting in the background (each try at most `RECONNECT_SECONDS`, then afresh on the next use), so the
replicas recover when it is back, without a restart.

Every failure becomes `DatabaseUnavailableError`, whose text names the kind of failure and never the URL or password.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from b24_mcp.postgres.schema import SchemaTooNewError, ensure_schema
from b24_mcp.telemetry import metrics

logger = logging.getLogger(__name__)
# The pool logs every failed reconnection (several a second during an outage); our own line says it once.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

POOL_MIN = 1
POOL_MAX = 10
TIMEOUT_SECONDS = 5.0  # waiting for a connection (a down database)
RECONNECT_SECONDS = 10.0
CONNECT_SECONDS = 5  # libpq's connect_timeout for one connection attempt
# After the first use failed, callers that queued behind it fail at once for this long instead of each waiting.
_FAILED_RECENTLY = 1.0
_MAX_REASON = 300

T = TypeVar("T")


class DatabaseUnavailableError(Exception):
    """The shared database could not do what was asked; `str()` says why, without the URL or the password."""


def replica_name() -> str:
    """This process, as journal rows name the replica that wrote them: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Database:
    """One pool of connections to the shared database, opened on first use (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = TIMEOUT_SECONDS,
        max_size: int = POOL_MAX,
        manage_schema: bool = True,
        role: str = "shared",
    ) -> None:
        self._url = url
        self._manage_schema = manage_schema  # False: a reader, which creates nothing
        self._timeout = timeout
        self._max_size = max_size
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._ready = not manage_schema
        self._failed: tuple[float, str] | None = None  # when and why making the schema current last failed
        self._down = True  # the last operation could not reach the database (or there was none yet)
        self._lock = anyio.Lock()
        self._password = _password(url)
        self.replica = replica_name()
        self.role = role  # how /metrics names its pool: shared (the replicas' state) or people (sign-in)
        metrics.watch_pool(self)

    def __repr__(self) -> str:
        return "Database(B24_DATABASE_URL)"

    def reason(self, exc: BaseException) -> str:
        """What went wrong, in one line fit for a log or an error: the URL and password masked."""
        if isinstance(exc, SchemaTooNewError):
            return str(exc)
        first = (str(exc).strip().splitlines() or [""])[0]
        for secret in (self._url, self._password):
            if secret:
                first = first.replace(secret, "***")
        text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        return text if len(text) <= _MAX_REASON else text[:_MAX_REASON] + "…"

    async def _open(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        if self._down:
            # Is it back? A refused connection says no at once, where the pool would wait `timeout` seconds.
            try:
                probe = await psycopg.AsyncConnection.connect(self._url, connect_timeout=CONNECT_SECONDS)
            except psycopg.Error as exc:
                raise DatabaseUnavailableError(self.reason(exc)) from None
            await probe.close()
        async with self._lock:
            if self._pool is None:
                pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
                    self._url,
                    min_size=POOL_MIN,
                    max_size=self._max_size,
                    open=False,
                    timeout=self._timeout,
                    reconnect_timeout=RECONNECT_SECONDS,
                    kwargs={"autocommit": True, "connect_timeout": CONNECT_SECONDS, "application_name": "b24-mcp"},
                    name="b24-mcp",
                )
                await pool.open(wait=False)
                self._pool = pool
            if not self._ready:
                if self._failed is not None and time.monotonic() - self._failed[0] < _FAILED_RECENTLY:
                    raise DatabaseUnavailableError(self._failed[1])
                try:
                    async with self._pool.connection() as connection:
                        await ensure_schema(connection)
                except (psycopg.Error, SchemaTooNewError) as exc:
                    self._failed = (time.monotonic(), self.reason(exc))
                    self._down = isinstance(exc, psycopg.OperationalError)
                    raise DatabaseUnavailableError(self._failed[1]) from None
                self._ready = True
            return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection (autocommit); any failure, inside the block too, is `DatabaseUnavailableError`."""
        try:
            pool = await self._open()
            async with pool.connection() as connection:
                yield connection
        except (psycopg.Error, SchemaTooNewError) as exc:
            self._down = isinstance(exc, psycopg.OperationalError)
            raise DatabaseUnavailableError(self.reason(exc)) from None
        self._down = False

    async def run(self, operation: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """`operation` on a pooled connection; once more on a fresh one when the first was stale (the database
        restarted since it was opened). `operation` must be safe to repeat when its first try failed."""
        for attempt in range(2):
            stale = False
            try:
                pool = await self._open()
                async with pool.connection() as connection:
                    try:
                        result = await operation(connection)
                    except psycopg.OperationalError:
                        stale = connection.broken
                        raise
                self._down = False
                return result
            except (psycopg.Error, SchemaTooNewError) as exc:
                if attempt == 0 and stale and self._pool is not None:
                    with contextlib.suppress(psycopg.Error):
                        await self._pool.check()
                    self._down = True  # restarted, or down: the retry asks the server before waiting for the pool
                    continue
                self._down = isinstance(exc, psycopg.OperationalError)
                raise DatabaseUnavailableError(self.reason(exc)) from None
        raise AssertionError("unreachable")

    def pool_stats(self) -> dict[str, int] | None:
        """The pool's use (psycopg_pool's `get_stats()`), or None while it is not open."""
        return self._pool.get_stats() if self._pool is not None else None

    async def aclose(self) -> None:
        """Close every connection."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            self._ready = not self._manage_schema
            await pool.close()


def _password(url: str) -> str | None:
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.Error:
        return None
    return str(password) if password else None
