"""Sign-in's people store in the shared database, so that replicas behind one address serve the same people.

`PostgresPeopleStore` is `signin.store.PeopleStore` over the `signin_*` tables (migration 2 of `schema`), kept as
`SQLiteStore` keeps them in one file: MCP access and refresh tokens, authorization codes, sign-in states and
consent ids only as SHA-256 digests; Bitrix24 tokens and minted client secrets sealed (AES-256-GCM) under a key
derived (HKDF-SHA256) from `B24_CONFIRM_SECRET`, which every replica shares already, so no key file has to be copied
between them and a copy of the database holds no usable token.

Single use across replicas is the database's: a sign-in state or a waiting consent is taken by `DELETE … RETURNING`,
a code or a refresh token spent by `UPDATE … WHERE NOT used RETURNING`, so of concurrent callers exactly one gets
the row. A person's Bitrix24 tokens are refreshed under their row's lock (`SELECT … FOR UPDATE`, in the transaction
that stores the new pair): the first replica exchanges the refresh token, one that waited finds the rotated pair and
uses it without asking the OAuth server again.

The caps on registered clients and on sign-ins in flight hold across replicas: the clean-up, the count and the insert
run under a transaction-scoped advisory lock of their table (`pg_advisory_xact_lock`), one registration (or
sign-in) at a time, in READ COMMITTED, so the count after the lock sees every row the previous holder committed and
a refused one is `StoreFull`, as when a single replica is over the cap. (A single `INSERT … WHERE (SELECT count(*)
…) < cap` is not race-free: under READ COMMITTED two statements see the same count and both insert.) Both are rare,
short transactions, so waiting for the lock costs nothing worth measuring. Each source address's share
(`SourceFull`) is counted under the same lock, over the same rows (their `source`, migration 3): replicas share it.

Every time is the database's clock (`now()`, as Unix seconds in the `double precision` columns of migration 2), so
replicas whose clocks differ agree on what has expired: an expiry a caller gives on its own clock (the `clock` of
the store, the same as the provider's) is stored as the database's now plus the time left, compared with the
database's now, and given back as the caller's now plus the time left (the MCP SDK checks it against `time.time()`).
Stamps (registered, signed in, last used) are the database's now too. The SQLite store, one process, keeps its own
clock. Every failure to reach the database is `DatabaseUnavailableError`; a refresh that cannot take the lock is
`TransportError` `DATABASE_UNAVAILABLE`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any

from b24_mcp.errors import TransportError
from b24_mcp.postgres.database import DatabaseUnavailableError
from b24_mcp.secure.sealing import digest
from b24_mcp.signin.codec import (
    access_from_row,
    grant_from_row,
    issued_code_from,
    issued_code_json,
    open_tokens,
    person_from_row,
    seal_tokens,
)
from b24_mcp.signin.postgres_pending import _NOW, _S, PendingSignIns
from b24_mcp.signin.records import BitrixTokens, ForeignPortalError, Grant, IssuedCode, Person, Renewal, SignedIn, Taken

logger = logging.getLogger(__name__)


@dataclass
class _Progress:
    renewed: BitrixTokens | None = None


class PostgresPeopleStore(PendingSignIns):
    """`PeopleStore` in the shared database; see the module docstring. Closing it closes its pool."""

    def __repr__(self) -> str:
        return "PostgresPeopleStore(B24_DATABASE_URL)"

    # -------------------------------------------------------------------------------------------------- people

    async def sign_in(self, person: SignedIn, client_id: str, redirect_uri: str) -> Person:
        access, refresh = seal_tokens(self._sealer, person.tokens, f"person:{person.user_id}")

        async def work(db: Any) -> Person:
            await db.execute(
                f"INSERT INTO {_S}.signin_meta (name, value) VALUES ('member_id', %s) ON CONFLICT (name) DO NOTHING",
                (person.member_id,),
            )
            cursor = await db.execute(f"SELECT value FROM {_S}.signin_meta WHERE name = 'member_id'")
            pinned = await cursor.fetchone()
            if pinned is None or pinned[0] != person.member_id:
                raise ForeignPortalError(person.member_id)
            cursor = await db.execute(
                f"INSERT INTO {_S}.signin_people AS p "
                "(user_id, name, member_id, signed_in_at, last_used_at, version, access, refresh) "
                f"VALUES (%s, %s, %s, {_NOW}, {_NOW}, 1, %s, %s) ON CONFLICT (user_id) DO UPDATE SET "
                "name = excluded.name, member_id = excluded.member_id, signed_in_at = excluded.signed_in_at, "
                "last_used_at = excluded.last_used_at, version = p.version + 1, access = excluded.access, "
                "refresh = excluded.refresh RETURNING version, signed_in_at",
                (person.user_id, person.name, person.member_id, access, refresh),
            )
            row = await cursor.fetchone()
            await db.execute(
                f"INSERT INTO {_S}.signin_consents (user_id, client_id, redirect_uri, at) VALUES (%s, %s, %s, {_NOW}) "
                "ON CONFLICT (user_id, client_id, redirect_uri) DO UPDATE SET at = excluded.at",
                (person.user_id, client_id, redirect_uri),
            )
            await db.execute(
                f"UPDATE {_S}.signin_clients SET used_at = {_NOW}, source = NULL WHERE client_id = %s", (client_id,)
            )
            at = float(row[1])
            return Person(person.user_id, person.name, person.member_id, at, at, int(row[0]), True)

        return await self._run(work)

    async def bitrix_tokens(self, user_id: int) -> tuple[int, BitrixTokens] | None:
        async def work(db: Any) -> Any:
            cursor = await db.execute(
                f"SELECT version, access, refresh FROM {_S}.signin_people WHERE user_id = %s", (user_id,)
            )
            return await cursor.fetchone()

        row = await self._run(work)
        if row is None or row[1] is None:
            return None
        tokens = open_tokens(self._sealer, row[1], row[2], f"person:{user_id}")
        return None if tokens is None else (int(row[0]), tokens)

    async def save_bitrix_tokens(self, user_id: int, version: int, tokens: BitrixTokens) -> bool:
        access, refresh = seal_tokens(self._sealer, tokens, f"person:{user_id}")

        async def work(db: Any) -> bool:
            cursor = await db.execute(
                f"UPDATE {_S}.signin_people SET access = %s, refresh = %s "
                "WHERE user_id = %s AND version = %s AND access IS NOT NULL",
                (access, refresh, user_id, version),
            )
            return bool(cursor.rowcount == 1)

        return await self._run(work)

    async def refresh_bitrix_tokens(
        self, user_id: int, version: int, current: BitrixTokens, renew: Renewal
    ) -> BitrixTokens | None:
        progress = _Progress()

        async def work(db: Any) -> BitrixTokens | None:
            cursor = await db.execute(
                f"SELECT version, access, refresh FROM {_S}.signin_people WHERE user_id = %s FOR UPDATE", (user_id,)
            )
            row = await cursor.fetchone()
            if row is None or row[1] is None or int(row[0]) != version:
                return None  # revoked, or signed in again: their new tokens are not ours to renew
            stored = open_tokens(self._sealer, row[1], row[2], f"person:{user_id}")
            if stored is None:
                return None  # sealed under another B24_CONFIRM_SECRET: they sign in again
            if progress.renewed is None:  # not when retrying to store a pair already renewed
                if stored.access != current.access:
                    return stored  # another replica rotated it while this one waited for the lock
                progress.renewed = await renew(stored)
            access, refresh = seal_tokens(self._sealer, progress.renewed, f"person:{user_id}")
            await db.execute(
                f"UPDATE {_S}.signin_people SET access = %s, refresh = %s WHERE user_id = %s",
                (access, refresh, user_id),
            )
            return progress.renewed

        try:
            return await self._run(work)
        except DatabaseUnavailableError as exc:
            if progress.renewed is not None:
                logger.error(
                    "The refreshed Bitrix24 tokens of user %d could not be stored in the shared database (%s): this "
                    "replica uses them, but the other replicas hold a refresh token that no longer works",
                    user_id,
                    exc,
                )
                return progress.renewed
            raise TransportError(
                "DATABASE_UNAVAILABLE",
                f"The person's Bitrix24 access token expired and was not renewed: the replicas renew it one at a time "
                f"through the shared database, which cannot be reached ({exc}).",
                retryable=True,
                maybe_sent=False,
            ) from None

    async def touch(self, user_id: int) -> None:
        async def work(db: Any) -> None:
            await db.execute(
                f"UPDATE {_S}.signin_people SET last_used_at = {_NOW} "
                f"WHERE user_id = %s AND (last_used_at IS NULL OR last_used_at < {_NOW} - 60)",
                (user_id,),
            )

        await self._run(work)

    async def people(self) -> list[Person]:
        async def work(db: Any) -> list[Any]:
            cursor = await db.execute(
                "SELECT user_id, name, member_id, signed_in_at, last_used_at, version, access IS NOT NULL "
                f"FROM {_S}.signin_people ORDER BY user_id"
            )
            return list(await cursor.fetchall())

        rows = await self._run(work)
        return [person_from_row(row) for row in rows]

    async def revoke(self, user_id: int) -> bool:
        async def work(db: Any) -> bool:
            cursor = await db.execute(
                f"UPDATE {_S}.signin_people SET access = NULL, refresh = NULL, version = version + 1 "
                "WHERE user_id = %s",
                (user_id,),
            )
            found = cursor.rowcount == 1
            tables = ("signin_tokens", "signin_codes", "signin_consents", "signin_page_sessions", "signin_approvals")
            for table in tables:
                await db.execute(f"DELETE FROM {_S}.{table} WHERE user_id = %s", (user_id,))
            return bool(found)

        return await self._run(work)

    # ------------------------------------------------------------------------------------ codes and MCP tokens

    async def add_code(self, code: str, issued: IssuedCode) -> None:
        data = issued_code_json(issued)
        time_left = self._time_left(issued.grant.expires_at)

        async def work(db: Any) -> None:
            await db.execute(f"DELETE FROM {_S}.signin_codes WHERE expires_at <= {_NOW}")
            await db.execute(
                f"INSERT INTO {_S}.signin_codes (code, data, user_id, expires_at) VALUES (%s, %s, %s, {_NOW} + %s)",
                (digest(code), data, issued.grant.user_id, time_left),
            )

        await self._run(work)

    async def find_code(self, code: str) -> IssuedCode | None:
        async def work(db: Any) -> Any:
            cursor = await db.execute(
                f"SELECT data, expires_at - {_NOW} FROM {_S}.signin_codes WHERE code = %s AND expires_at > {_NOW}",
                (digest(code),),
            )
            return await cursor.fetchone()

        row = await self._run(work)
        if row is None:
            return None
        issued = issued_code_from(row[0])
        return dataclasses.replace(issued, grant=dataclasses.replace(issued.grant, expires_at=self._ours(row[1])))

    async def take_code(self, code: str) -> Taken:
        async def work(db: Any) -> Taken:
            cursor = await db.execute(
                f"UPDATE {_S}.signin_codes SET used = true WHERE code = %s AND NOT used RETURNING data",
                (digest(code),),
            )
            row = await cursor.fetchone()
            if row is not None:
                return Taken("taken", str(json.loads(row[0])["grant"]["family"]))
            cursor = await db.execute(f"SELECT data FROM {_S}.signin_codes WHERE code = %s", (digest(code),))
            row = await cursor.fetchone()
            if row is None:
                return Taken("unknown")
            return Taken("replayed", str(json.loads(row[0])["grant"]["family"]))

        return await self._run(work)

    async def add_tokens(self, access: str, refresh: str | None, grant: Grant, refresh_expires_at: float) -> None:
        scopes = " ".join(grant.scopes)
        rows = [(digest(access), "access", self._time_left(grant.expires_at))]
        if refresh is not None:
            rows.append((digest(refresh), "refresh", self._time_left(refresh_expires_at)))

        async def work(db: Any) -> None:
            await db.execute(f"DELETE FROM {_S}.signin_tokens WHERE expires_at <= {_NOW}")
            for token, kind, time_left in rows:
                await db.execute(
                    f"INSERT INTO {_S}.signin_tokens "
                    "(token, kind, family, client_id, user_id, scopes, resource, expires_at) "
                    f"VALUES (%s, %s, %s, %s, %s, %s, %s, {_NOW} + %s)",
                    (token, kind, grant.family, grant.client_id, grant.user_id, scopes, grant.resource, time_left),
                )

        await self._run(work)

    async def find_access(self, token: str) -> tuple[Grant, Person] | None:
        async def work(db: Any) -> Any:
            cursor = await db.execute(
                f"SELECT t.family, t.client_id, t.user_id, t.scopes, t.resource, t.expires_at - {_NOW}, p.name, "
                f"p.member_id, p.signed_in_at, p.last_used_at, p.version FROM {_S}.signin_tokens t "
                f"JOIN {_S}.signin_people p ON p.user_id = t.user_id "
                f"WHERE t.token = %s AND t.kind = 'access' AND t.expires_at > {_NOW} AND p.access IS NOT NULL",
                (digest(token),),
            )
            return await cursor.fetchone()

        row = await self._run(work)
        if row is None:
            return None
        grant, person = access_from_row(row)
        return dataclasses.replace(grant, expires_at=self._ours(row[5])), person

    async def find_refresh(self, token: str) -> Grant | None:
        async def work(db: Any) -> Any:
            cursor = await db.execute(
                f"SELECT family, client_id, user_id, scopes, resource, expires_at - {_NOW} FROM {_S}.signin_tokens "
                f"WHERE token = %s AND kind = 'refresh' AND expires_at > {_NOW}",
                (digest(token),),
            )
            return await cursor.fetchone()

        row = await self._run(work)
        return None if row is None else dataclasses.replace(grant_from_row(row), expires_at=self._ours(row[5]))

    async def rotate_refresh(self, token: str) -> Taken:
        async def work(db: Any) -> Taken:
            cursor = await db.execute(
                f"UPDATE {_S}.signin_tokens SET used = true "
                "WHERE token = %s AND kind = 'refresh' AND NOT used RETURNING family",
                (digest(token),),
            )
            row = await cursor.fetchone()
            if row is not None:
                await db.execute(f"DELETE FROM {_S}.signin_tokens WHERE family = %s AND kind = 'access'", (row[0],))
                return Taken("taken", str(row[0]))
            cursor = await db.execute(
                f"SELECT family FROM {_S}.signin_tokens WHERE token = %s AND kind = 'refresh'", (digest(token),)
            )
            row = await cursor.fetchone()
            return Taken("unknown") if row is None else Taken("replayed", str(row[0]))

        return await self._run(work)

    async def revoke_family(self, family: str) -> None:
        async def work(db: Any) -> None:
            await db.execute(f"DELETE FROM {_S}.signin_tokens WHERE family = %s", (family,))

        await self._run(work)
