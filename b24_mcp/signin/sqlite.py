"""The embedded people store: stdlib `sqlite3`, one file under the state directory, mode 0600, no service."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import anyio.to_thread
from mcp.shared.auth import OAuthClientInformationFull

from b24_mcp.secure.files import make_private_folder
from b24_mcp.secure.sealing import Sealer, digest, open_private
from b24_mcp.signin.codec import (
    access_from_row,
    authorization_from,
    authorization_json,
    consent_from,
    consent_json,
    grant_from_row,
    issued_code_from,
    issued_code_json,
    open_client,
    open_tokens,
    person_from_row,
    seal_client,
    seal_tokens,
)
from b24_mcp.signin.records import (
    Authorization,
    AwaitingConsent,
    BitrixTokens,
    ForeignPortalError,
    Grant,
    IssuedCode,
    Person,
    Renewal,
    SignedIn,
    SourceFull,
    StoreFull,
    Taken,
)
from b24_mcp.signin.sqlite_schema import _SCHEMA, _UPGRADE_FROM_1
from b24_mcp.signin.store import (
    MAX_CLIENTS,
    MAX_CLIENTS_PER_SOURCE,
    MAX_PENDING,
    MAX_PENDING_PER_SOURCE,
    SCHEMA_VERSION,
    UNUSED_CLIENT_SECONDS,
)

_T = TypeVar("_T")


class SQLiteStore:
    """`PeopleStore` in one SQLite file (WAL mode), private to this user; see the module docstring.

    The file is created with mode 0600 in a folder created with mode 0700, never opened through a symbolic link,
    and refused when group or others may read or write it (`sealing.UnusableFileError`). Calls run in a worker
    thread, one at a time, on one connection.
    """

    def __init__(self, path: Path, sealer: Sealer, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._sealer = sealer
        self._clock = clock
        self._lock = threading.Lock()
        make_private_folder(path.parent)
        os.close(open_private(path, os.O_RDWR | os.O_CREAT))  # created 0600 before SQLite sees it
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._lock, self._transaction():
                self._create_schema()
        except BaseException:
            self._db.close()
            raise

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _create_schema(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} was written by a newer b24-mcp (schema {version})")
        if version == 1:
            for statement in _UPGRADE_FROM_1:
                self._db.execute(statement)
        for statement in filter(str.strip, _SCHEMA.split(";")):
            self._db.execute(statement)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        def locked() -> _T:
            with self._lock, self._transaction() as db:
                return work(db)

        return await anyio.to_thread.run_sync(locked)

    async def aclose(self) -> None:
        def close() -> None:
            with self._lock:
                self._db.close()

        await anyio.to_thread.run_sync(close)

    # ------------------------------------------------------------------------------------------------- clients

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        def work(db: sqlite3.Connection) -> tuple[str, str | None] | None:
            row = db.execute("SELECT info, secret FROM clients WHERE client_id = ?", (client_id,)).fetchone()
            return None if row is None else (row[0], row[1])

        row = await self._run(work)
        return None if row is None else open_client(self._sealer, client_id, *row)

    async def add_client(
        self, client: OAuthClientInformationFull, source: str | None = None, share: int = MAX_CLIENTS_PER_SOURCE
    ) -> None:
        info, sealed = seal_client(self._sealer, client)

        def work(db: sqlite3.Connection) -> None:
            now = self._clock()  # under the lock: no row of another call is younger (a refusal's wait is exact)
            db.execute("DELETE FROM clients WHERE used_at IS NULL AND created_at < ?", (now - UNUSED_CLIENT_SECONDS,))
            if source is not None:
                count, oldest = db.execute(
                    "SELECT count(*), min(created_at) FROM clients WHERE source = ? AND used_at IS NULL", (source,)
                ).fetchone()
                if count >= share:
                    raise SourceFull((oldest or now) + UNUSED_CLIENT_SECONDS - now)
            if db.execute("SELECT count(*) FROM clients").fetchone()[0] >= MAX_CLIENTS:
                raise StoreFull("too many registered clients")
            db.execute(
                "INSERT INTO clients (client_id, info, secret, created_at, source) VALUES (?, ?, ?, ?, ?)",
                (client.client_id, info, sealed, now, source),
            )

        await self._run(work)

    # -------------------------------------------------------------------------------------- sign-ins in flight

    async def add_authorization(
        self, state: str, authorization: Authorization, source: str | None = None, share: int = MAX_PENDING_PER_SOURCE
    ) -> None:
        def work(db: sqlite3.Connection) -> None:
            now = self._clock()  # under the lock, as in add_client
            db.execute("DELETE FROM authorizations WHERE expires_at <= ?", (now,))
            db.execute("DELETE FROM consent_waits WHERE expires_at <= ?", (now,))
            if source is not None:
                count, soonest = db.execute(
                    "SELECT count(*), min(expires_at) FROM authorizations WHERE source = ?", (source,)
                ).fetchone()
                if count >= share:
                    raise SourceFull((soonest or now) - now)
            if db.execute("SELECT count(*) FROM authorizations").fetchone()[0] >= MAX_PENDING:
                raise StoreFull("too many sign-ins in flight")
            db.execute(
                "INSERT INTO authorizations (state, data, expires_at, source) VALUES (?, ?, ?, ?)",
                (digest(state), authorization_json(authorization), authorization.expires_at, source),
            )

        await self._run(work)

    async def take_authorization(self, state: str) -> Authorization | None:
        now = self._clock()

        def work(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "DELETE FROM authorizations WHERE state = ? RETURNING data, expires_at", (digest(state),)
            ).fetchone()
            return None if row is None or row[1] <= now else str(row[0])

        data = await self._run(work)
        return None if data is None else authorization_from(json.loads(data))

    async def await_consent(self, consent_id: str, waiting: AwaitingConsent) -> None:
        key = digest(consent_id)
        data = consent_json(waiting)
        access, refresh = seal_tokens(self._sealer, waiting.person.tokens, f"consent:{key}")

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO consent_waits (consent, data, access, refresh, expires_at) VALUES (?, ?, ?, ?, ?)",
                (key, data, access, refresh, waiting.expires_at),
            )

        await self._run(work)

    async def take_consent(self, consent_id: str) -> AwaitingConsent | None:
        key = digest(consent_id)
        now = self._clock()

        def work(db: sqlite3.Connection) -> tuple[str, str, str | None, float] | None:
            row = db.execute(
                "DELETE FROM consent_waits WHERE consent = ? RETURNING data, access, refresh, expires_at", (key,)
            ).fetchone()
            return None if row is None or row[3] <= now else (row[0], row[1], row[2], row[3])

        row = await self._run(work)
        if row is None:
            return None
        tokens = open_tokens(self._sealer, row[1], row[2], f"consent:{key}")
        return None if tokens is None else consent_from(row[0], tokens, row[3])

    async def has_consented(self, user_id: int, client_id: str, redirect_uri: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT 1 FROM consents WHERE user_id = ? AND client_id = ? AND redirect_uri = ?",
                (user_id, client_id, redirect_uri),
            ).fetchone()
            return row is not None

        return await self._run(work)

    # -------------------------------------------------------------------------------------------------- people

    async def sign_in(self, person: SignedIn, client_id: str, redirect_uri: str) -> Person:
        now = self._clock()
        access, refresh = seal_tokens(self._sealer, person.tokens, f"person:{person.user_id}")

        def work(db: sqlite3.Connection) -> Person:
            pinned = db.execute("SELECT value FROM meta WHERE name = 'member_id'").fetchone()
            if pinned is None:
                db.execute("INSERT INTO meta (name, value) VALUES ('member_id', ?)", (person.member_id,))
            elif pinned[0] != person.member_id:
                raise ForeignPortalError(person.member_id)
            row = db.execute("SELECT version FROM people WHERE user_id = ?", (person.user_id,)).fetchone()
            version = 1 if row is None else int(row[0]) + 1
            db.execute(
                "INSERT INTO people (user_id, name, member_id, signed_in_at, last_used_at, version, access, refresh) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET name = excluded.name, "
                "member_id = excluded.member_id, signed_in_at = excluded.signed_in_at, "
                "last_used_at = excluded.last_used_at, version = excluded.version, access = excluded.access, "
                "refresh = excluded.refresh",
                (person.user_id, person.name, person.member_id, now, now, version, access, refresh),
            )
            db.execute(
                "INSERT INTO consents (user_id, client_id, redirect_uri, at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (user_id, client_id, redirect_uri) DO UPDATE SET at = excluded.at",
                (person.user_id, client_id, redirect_uri, now),
            )
            db.execute("UPDATE clients SET used_at = ?, source = NULL WHERE client_id = ?", (now, client_id))
            return Person(person.user_id, person.name, person.member_id, now, now, version, True)

        return await self._run(work)

    async def bitrix_tokens(self, user_id: int) -> tuple[int, BitrixTokens] | None:
        def work(db: sqlite3.Connection) -> tuple[int, str, str | None] | None:
            row = db.execute("SELECT version, access, refresh FROM people WHERE user_id = ?", (user_id,)).fetchone()
            return None if row is None or row[1] is None else (int(row[0]), row[1], row[2])

        row = await self._run(work)
        if row is None:
            return None
        version, sealed_access, sealed_refresh = row
        tokens = open_tokens(self._sealer, sealed_access, sealed_refresh, f"person:{user_id}")
        return None if tokens is None else (version, tokens)

    async def save_bitrix_tokens(self, user_id: int, version: int, tokens: BitrixTokens) -> bool:
        access, refresh = seal_tokens(self._sealer, tokens, f"person:{user_id}")

        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE people SET access = ?, refresh = ? WHERE user_id = ? AND version = ? AND access IS NOT NULL",
                (access, refresh, user_id, version),
            )
            return cursor.rowcount == 1

        return await self._run(work)

    async def refresh_bitrix_tokens(
        self, user_id: int, version: int, current: BitrixTokens, renew: Renewal
    ) -> BitrixTokens | None:
        # One server per file: its one refresh at a time per person is `PersonAuth`'s lock; no lock across the
        # exchange here (SQLite takes one writer at a time, and the exchange is a network call).
        stored = await self.bitrix_tokens(user_id)
        if stored is None or stored[0] != version:
            return None
        if stored[1].access != current.access:
            return stored[1]
        renewed = await renew(stored[1])
        return renewed if await self.save_bitrix_tokens(user_id, version, renewed) else None

    async def touch(self, user_id: int) -> None:
        now = self._clock()

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE people SET last_used_at = ? WHERE user_id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
                (now, user_id, now - 60),
            )

        await self._run(work)

    async def people(self) -> list[Person]:
        def work(db: sqlite3.Connection) -> list[Person]:
            rows = db.execute(
                "SELECT user_id, name, member_id, signed_in_at, last_used_at, version, access IS NOT NULL "
                "FROM people ORDER BY user_id"
            ).fetchall()
            return [person_from_row(row) for row in rows]

        return await self._run(work)

    async def revoke(self, user_id: int) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE people SET access = NULL, refresh = NULL, version = version + 1 WHERE user_id = ?", (user_id,)
            )
            db.execute("DELETE FROM tokens WHERE user_id = ?", (user_id,))
            db.execute("DELETE FROM codes WHERE user_id = ?", (user_id,))
            db.execute("DELETE FROM consents WHERE user_id = ?", (user_id,))
            db.execute("DELETE FROM page_sessions WHERE user_id = ?", (user_id,))  # the approval page's
            db.execute("DELETE FROM approvals WHERE user_id = ?", (user_id,))
            return cursor.rowcount == 1

        return await self._run(work)

    # ------------------------------------------------------------------------------------ codes and MCP tokens

    async def add_code(self, code: str, issued: IssuedCode) -> None:
        now = self._clock()
        data = issued_code_json(issued)

        def work(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM codes WHERE expires_at <= ?", (now,))
            db.execute(
                "INSERT INTO codes (code, data, user_id, expires_at) VALUES (?, ?, ?, ?)",
                (digest(code), data, issued.grant.user_id, issued.grant.expires_at),
            )

        await self._run(work)

    async def find_code(self, code: str) -> IssuedCode | None:
        now = self._clock()

        def work(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT data FROM codes WHERE code = ? AND expires_at > ?", (digest(code), now)).fetchone()
            return None if row is None else str(row[0])

        data = await self._run(work)
        return None if data is None else issued_code_from(data)

    async def take_code(self, code: str) -> Taken:
        def work(db: sqlite3.Connection) -> Taken:
            row = db.execute("SELECT data, used FROM codes WHERE code = ?", (digest(code),)).fetchone()
            if row is None:
                return Taken("unknown")
            family = str(json.loads(row[0])["grant"]["family"])
            if row[1]:
                return Taken("replayed", family)
            db.execute("UPDATE codes SET used = 1 WHERE code = ?", (digest(code),))
            return Taken("taken", family)

        return await self._run(work)

    async def add_tokens(self, access: str, refresh: str | None, grant: Grant, refresh_expires_at: float) -> None:
        now = self._clock()
        scopes = " ".join(grant.scopes)

        def work(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM tokens WHERE expires_at <= ?", (now,))
            rows = [(digest(access), "access", grant.expires_at)]
            if refresh is not None:
                rows.append((digest(refresh), "refresh", refresh_expires_at))
            for token, kind, expires_at in rows:
                db.execute(
                    "INSERT INTO tokens (token, kind, family, client_id, user_id, scopes, resource, expires_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (token, kind, grant.family, grant.client_id, grant.user_id, scopes, grant.resource, expires_at),
                )

        await self._run(work)

    async def find_access(self, token: str) -> tuple[Grant, Person] | None:
        now = self._clock()

        def work(db: sqlite3.Connection) -> tuple[Grant, Person] | None:
            row = db.execute(
                "SELECT t.family, t.client_id, t.user_id, t.scopes, t.resource, t.expires_at, p.name, p.member_id, "
                "p.signed_in_at, p.last_used_at, p.version FROM tokens t JOIN people p ON p.user_id = t.user_id "
                "WHERE t.token = ? AND t.kind = 'access' AND t.expires_at > ? AND p.access IS NOT NULL",
                (digest(token), now),
            ).fetchone()
            return None if row is None else access_from_row(row)

        return await self._run(work)

    async def find_refresh(self, token: str) -> Grant | None:
        now = self._clock()

        def work(db: sqlite3.Connection) -> Grant | None:
            row = db.execute(
                "SELECT family, client_id, user_id, scopes, resource, expires_at FROM tokens "
                "WHERE token = ? AND kind = 'refresh' AND expires_at > ?",
                (digest(token), now),
            ).fetchone()
            return None if row is None else grant_from_row(row)

        return await self._run(work)

    async def rotate_refresh(self, token: str) -> Taken:
        def work(db: sqlite3.Connection) -> Taken:
            row = db.execute(
                "SELECT family, used FROM tokens WHERE token = ? AND kind = 'refresh'", (digest(token),)
            ).fetchone()
            if row is None:
                return Taken("unknown")
            if row[1]:
                return Taken("replayed", row[0])
            db.execute("UPDATE tokens SET used = 1 WHERE token = ?", (digest(token),))
            db.execute("DELETE FROM tokens WHERE family = ? AND kind = 'access'", (row[0],))
            return Taken("taken", row[0])

        return await self._run(work)

    async def revoke_family(self, family: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM tokens WHERE family = ?", (family,))

        await self._run(work)
