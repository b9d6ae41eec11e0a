"""People stores on the test database as replicas hold them (each with a pool of its own), and its rows read back."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg

from b24_mcp.postgres.database import Database
from b24_mcp.secure.keys import people_key
from b24_mcp.signin.postgres import PostgresPeopleStore

SECRET = b"shared-confirm-secret-0123456789abcdef"  # the replicas' shared B24_CONFIRM_SECRET
Clock = Callable[[], float]
OpenStore = Callable[..., PostgresPeopleStore]


@asynccontextmanager
async def replica_stores(database_url: str) -> AsyncIterator[OpenStore]:
    """`open_store(clock=time.time)`: a people store on `database_url` with a pool and a clock of its own, as a
    replica has; every one opened is closed at the end."""
    opened: list[PostgresPeopleStore] = []

    def open_store(clock: Clock = time.time) -> PostgresPeopleStore:
        opened.append(PostgresPeopleStore(Database(database_url), people_key(SECRET), clock=clock))
        return opened[-1]

    try:
        yield open_store
    finally:
        for store in opened:
            await store.aclose()


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    """What `query` selects from the database at `url`, read outside any store."""
    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute(query).fetchall()
