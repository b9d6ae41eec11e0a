"""Sign-ins in flight in the shared database: registered clients, sign-in states, waiting consents; the
transaction helper and the clocks every part of the PostgreSQL people store uses (`signin.postgres`)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mcp.shared.auth import OAuthClientInformationFull

from b24_mcp.postgres.database import Database
from b24_mcp.postgres.schema import SCHEMA
from b24_mcp.secure.sealing import Sealer, digest
from b24_mcp.signin.codec import (
    authorization_from,
    authorization_json,
    consent_from,
    consent_json,
    open_client,
    open_tokens,
    seal_client,
    seal_tokens,
)
from b24_mcp.signin.records import Authorization, AwaitingConsent, SourceFull, StoreFull
from b24_mcp.signin.store import (
    MAX_CLIENTS,
    MAX_CLIENTS_PER_SOURCE,
    MAX_PENDING,
    MAX_PENDING_PER_SOURCE,
    UNUSED_CLIENT_SECONDS,
)

_T = TypeVar("_T")
_S = SCHEMA
# The database's clock in Unix seconds: every expiry is stamped and compared with it (see the module docstring).
_NOW = "extract(epoch FROM now())::double precision"
# The wait a refusal names is counted from the moment the lock was had, not from the transaction's start (`now()`):
# a row committed by a replica that held the lock meanwhile may be younger than this transaction.
_CLOCK = "extract(epoch FROM clock_timestamp())::double precision"
# pg_advisory_xact_lock keys of the caps: "b24mcp" in ASCII (the migrations' key) and one byte for the table.
_CLIENTS_LOCK = 0x6232346D637001
_AUTHORIZATIONS_LOCK = 0x6232346D637002


async def _one_at_a_time(db: Any, lock: int) -> None:
    """Hold the advisory lock `lock` until the transaction ends (the first statements of the transaction).

    READ COMMITTED whatever the server's default: each statement after the lock then sees what the previous holder
    committed (in REPEATABLE READ, the snapshot would be the lock statement's, taken before it waited)."""
    await db.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
    await db.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))


async def _count(db: Any, table: str) -> int:
    cursor = await db.execute(f"SELECT count(*) FROM {_S}.{table}")
    row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


class PendingSignIns:
    """The part of `PostgresPeopleStore` before a person has signed in (see `signin.postgres`)."""

    def __init__(self, database: Database, key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        self._database = database
        self._sealer = Sealer(key)
        self._clock = clock

    async def _run(self, work: Callable[[Any], Awaitable[_T]]) -> _T:
        """`work` in one transaction (repeated once when the connection was stale: every `work` here may be)."""

        async def transaction(connection: Any) -> _T:
            async with connection.transaction():
                return await work(connection)

        return await self._database.run(transaction)

    async def aclose(self) -> None:
        await self._database.aclose()

    def _time_left(self, expires_at: float) -> float:
        """The seconds until `expires_at`, a time on the caller's clock (stored as the database's now plus this)."""
        return expires_at - self._clock()

    def _ours(self, time_left: float) -> float:
        """When something the database says has `time_left` seconds to go expires, on the caller's clock."""
        return self._clock() + float(time_left)

    # ------------------------------------------------------------------------------------------------- clients

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        async def work(db: Any) -> Any:
            cursor = await db.execute(
                f"SELECT info, secret FROM {_S}.signin_clients WHERE client_id = %s", (client_id,)
            )
            return await cursor.fetchone()

        row = await self._run(work)
        return None if row is None else open_client(self._sealer, client_id, row[0], row[1])

    async def add_client(
        self, client: OAuthClientInformationFull, source: str | None = None, share: int = MAX_CLIENTS_PER_SOURCE
    ) -> None:
        info, sealed = seal_client(self._sealer, client)

        async def work(db: Any) -> None:
            await _one_at_a_time(db, _CLIENTS_LOCK)  # the count and the insert, one replica at a time
            await db.execute(
                f"DELETE FROM {_S}.signin_clients WHERE used_at IS NULL AND created_at < {_NOW} - %s",
                (UNUSED_CLIENT_SECONDS,),
            )
            if source is not None:
                cursor = await db.execute(
                    f"SELECT count(*), min(created_at) + %s - {_CLOCK} FROM {_S}.signin_clients "
                    "WHERE source = %s AND used_at IS NULL",
                    (UNUSED_CLIENT_SECONDS, source),
                )
                count, time_left = await cursor.fetchone()
                if count >= share:
                    raise SourceFull(time_left or 1)
            if await _count(db, "signin_clients") >= MAX_CLIENTS:
                raise StoreFull("too many registered clients")
            await db.execute(
                f"INSERT INTO {_S}.signin_clients (client_id, info, secret, created_at, source) "
                f"VALUES (%s, %s, %s, {_NOW}, %s)",
                (client.client_id, info, sealed, source),
            )

        await self._run(work)

    # -------------------------------------------------------------------------------------- sign-ins in flight

    async def add_authorization(
        self, state: str, authorization: Authorization, source: str | None = None, share: int = MAX_PENDING_PER_SOURCE
    ) -> None:
        time_left = self._time_left(authorization.expires_at)

        async def work(db: Any) -> None:
            await _one_at_a_time(db, _AUTHORIZATIONS_LOCK)  # the count and the insert, one replica at a time
            await db.execute(f"DELETE FROM {_S}.signin_authorizations WHERE expires_at <= {_NOW}")
            await db.execute(f"DELETE FROM {_S}.signin_consent_waits WHERE expires_at <= {_NOW}")
            if source is not None:
                cursor = await db.execute(
                    f"SELECT count(*), min(expires_at) - {_CLOCK} FROM {_S}.signin_authorizations WHERE source = %s",
                    (source,),
                )
                count, soonest = await cursor.fetchone()
                if count >= share:
                    raise SourceFull(soonest or 1)
            if await _count(db, "signin_authorizations") >= MAX_PENDING:
                raise StoreFull("too many sign-ins in flight")
            await db.execute(
                f"INSERT INTO {_S}.signin_authorizations (state, data, expires_at, source) "
                f"VALUES (%s, %s, {_NOW} + %s, %s)",
                (digest(state), authorization_json(authorization), time_left, source),
            )

        await self._run(work)

    async def take_authorization(self, state: str) -> Authorization | None:
        async def work(db: Any) -> Any:
            cursor = await db.execute(
                f"DELETE FROM {_S}.signin_authorizations WHERE state = %s RETURNING data, expires_at - {_NOW}",
                (digest(state),),
            )
            return await cursor.fetchone()

        row = await self._run(work)
        if row is None or row[1] <= 0:
            return None
        return dataclasses.replace(authorization_from(json.loads(row[0])), expires_at=self._ours(row[1]))

    async def await_consent(self, consent_id: str, waiting: AwaitingConsent) -> None:
        key = digest(consent_id)
        data = consent_json(waiting)
        access, refresh = seal_tokens(self._sealer, waiting.person.tokens, f"consent:{key}")
        time_left = self._time_left(waiting.expires_at)

        async def work(db: Any) -> None:
            await db.execute(
                f"INSERT INTO {_S}.signin_consent_waits (consent, data, access, refresh, expires_at) "
                f"VALUES (%s, %s, %s, %s, {_NOW} + %s)",
                (key, data, access, refresh, time_left),
            )

        await self._run(work)

    async def take_consent(self, consent_id: str) -> AwaitingConsent | None:
        key = digest(consent_id)

        async def work(db: Any) -> Any:
            cursor = await db.execute(
                f"DELETE FROM {_S}.signin_consent_waits WHERE consent = %s "
                f"RETURNING data, access, refresh, expires_at - {_NOW}",
                (key,),
            )
            return await cursor.fetchone()

        row = await self._run(work)
        if row is None or row[3] <= 0:
            return None
        tokens = open_tokens(self._sealer, row[1], row[2], f"consent:{key}")
        return None if tokens is None else consent_from(row[0], tokens, self._ours(row[3]))

    async def has_consented(self, user_id: int, client_id: str, redirect_uri: str) -> bool:
        async def work(db: Any) -> bool:
            cursor = await db.execute(
                f"SELECT 1 FROM {_S}.signin_consents WHERE user_id = %s AND client_id = %s AND redirect_uri = %s",
                (user_id, client_id, redirect_uri),
            )
            return await cursor.fetchone() is not None

        return await self._run(work)
