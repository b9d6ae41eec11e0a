"""The people store: registered MCP clients, sign-ins in flight, MCP tokens, and each person's Bitrix24 tokens.

`PeopleStore` is what the rest of sign-in uses; `SQLiteStore` is the embedded default (stdlib `sqlite3`, one file
under the state directory, mode 0600, no service to run). A PostgreSQL store for replicas implements the same
protocol; its notes are on the protocol's methods.

What is stored how (see `sealing`): MCP access and refresh tokens, authorization codes, sign-in states and consent
ids only as SHA-256 digests; Bitrix24 tokens and minted client secrets sealed with the key file; names and ids in
clear. Every method is atomic; the single-use ones (`take_*`, `rotate_refresh`) let exactly one caller win.

Growth is bounded: expired rows go whenever new ones of their kind are written, and unauthenticated endpoints
(registration, sign-in attempts) stop at a cap (`StoreFull`) rather than fill the disk. Before that cap, each source
address has its share (`SourceFull`, counted in the same transaction as the rows): a flood from one address fills
its own share, not everyone's. A person's consent is to one client returning to one exact redirect URI.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import anyio.to_thread
from mcp.shared.auth import OAuthClientInformationFull

from b24_mcp.signin.sealing import Sealer, digest, make_private_folder, open_private

MAX_CLIENTS = 10_000
MAX_PENDING = 10_000
MAX_CLIENTS_PER_SOURCE = 100  # registrations not yet used for a sign-in, from one source address
MAX_PENDING_PER_SOURCE = 100  # sign-ins in flight begun from one source address
# A registration that never led to a sign-in is forgotten after 30 minutes: longer than a sign-in begun right after
# it may take (15 minutes at the portal, 10 on the consent page), short enough that a flood of them soon goes.
UNUSED_CLIENT_SECONDS = 1800
SCHEMA_VERSION = 2  # 2: consents per redirect URI (those of version 1 are dropped), the source of rows in flight
_T = TypeVar("_T")


class StoreFull(Exception):  # noqa: N818 (a condition, reported to the client as "try later")
    """Too many registrations or sign-ins in flight: refuse the new one."""


class SourceFull(StoreFull):
    """The source address has used its share: refuse it, for `retry_after` seconds (when its oldest row goes)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("this source address has used its share")
        self.retry_after = max(1, math.ceil(retry_after))


class ForeignPortalError(Exception):
    """A person of another portal tried to sign in: the store serves one portal (its `member_id`)."""


@dataclass(frozen=True, repr=False)
class BitrixTokens:
    """A person's Bitrix24 OAuth pair (secret)."""

    access: str
    refresh: str | None

    def __repr__(self) -> str:
        return "BitrixTokens(***)"


# Exchanges a person's refresh token at the OAuth server for the next pair (`PersonAuth`'s own exchange).
Renewal = Callable[[BitrixTokens], Awaitable[BitrixTokens]]


@dataclass(frozen=True)
class Person:
    """Someone who signed in: who they are on the portal, and whether they can use the server now."""

    user_id: int
    name: str
    member_id: str
    signed_in_at: float
    last_used_at: float | None
    version: int  # changes at every sign-in and revocation: a credential cached for another version is stale
    active: bool  # holds Bitrix24 tokens (false once revoked, until they sign in again)


@dataclass(frozen=True, repr=False)
class SignedIn:
    """A person as the portal's OAuth server vouched for them, with their fresh Bitrix24 tokens."""

    member_id: str
    user_id: int
    name: str
    tokens: BitrixTokens

    def __repr__(self) -> str:
        return f"SignedIn(user_id={self.user_id})"


@dataclass(frozen=True)
class Authorization:
    """An MCP client's authorization request, from our `/authorize` until the code is issued."""

    client_id: str
    redirect_uri: str
    redirect_uri_explicit: bool
    code_challenge: str
    state: str | None  # the client's own state, returned to it unchanged
    scopes: tuple[str, ...]
    resource: str
    expires_at: float


@dataclass(frozen=True, repr=False)
class AwaitingConsent:
    """A sign-in that came back from the portal, waiting for the person to allow this client."""

    authorization: Authorization
    person: SignedIn
    expires_at: float

    def __repr__(self) -> str:
        return f"AwaitingConsent(client_id={self.authorization.client_id!r}, user_id={self.person.user_id})"


@dataclass(frozen=True)
class Grant:
    """What an authorization code or an MCP token stands for: a client acting as a person, within a family.

    A family is every token descending from one authorization code; a replayed code or refresh token ends it.
    """

    client_id: str
    user_id: int
    scopes: tuple[str, ...]
    resource: str
    family: str
    expires_at: float


@dataclass(frozen=True)
class IssuedCode:
    """An authorization code as issued: the grant it will give, and what the token request must match."""

    grant: Grant
    code_challenge: str
    redirect_uri: str
    redirect_uri_explicit: bool


@dataclass(frozen=True)
class Taken:
    """The outcome of redeeming a single-use code or refresh token."""

    outcome: Literal["taken", "replayed", "unknown"]
    family: str | None = None  # the family a replay revokes


class PeopleStore(Protocol):
    """Everything sign-in keeps. All methods are atomic; times are Unix seconds.

    For a shared (PostgreSQL) implementation: `take_*` and `rotate_refresh` must let exactly one of concurrent
    callers win (a conditional UPDATE/DELETE ... RETURNING); `save_bitrix_tokens` must write only when the version
    is unchanged; `sign_in` pins the portal's member_id on first use.
    """

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None: ...

    async def add_client(
        self, client: OAuthClientInformationFull, source: str | None = None, share: int = MAX_CLIENTS_PER_SOURCE
    ) -> None:
        """Register a client from `source` (an address; None: not counted); `SourceFull` when `share` of the
        source's registrations are unused yet, `StoreFull` past `MAX_CLIENTS` (unused ones expire after
        `UNUSED_CLIENT_SECONDS`)."""
        ...

    async def add_authorization(
        self, state: str, authorization: Authorization, source: str | None = None, share: int = MAX_PENDING_PER_SOURCE
    ) -> None:
        """Remember a request sent to the portal under `state`; `SourceFull` when `share` of `source`'s are in
        flight, `StoreFull` past `MAX_PENDING` in flight."""
        ...

    async def take_authorization(self, state: str) -> Authorization | None:
        """The unexpired request sent under `state`, once."""
        ...

    async def await_consent(self, consent_id: str, waiting: AwaitingConsent) -> None: ...

    async def take_consent(self, consent_id: str) -> AwaitingConsent | None:
        """The unexpired sign-in waiting under `consent_id`, once."""
        ...

    async def has_consented(self, user_id: int, client_id: str, redirect_uri: str) -> bool:
        """Whether the person allowed `client_id` to receive their codes at exactly `redirect_uri`."""
        ...

    async def sign_in(self, person: SignedIn, client_id: str, redirect_uri: str) -> Person:
        """Store the person's fresh tokens (a new version) and their consent to `client_id` at `redirect_uri`.

        `ForeignPortalError` when the store already serves another portal.
        """
        ...

    async def add_code(self, code: str, issued: IssuedCode) -> None: ...

    async def find_code(self, code: str) -> IssuedCode | None:
        """The unexpired code, used or not (not spending it: `take_code` tells a replay)."""
        ...

    async def take_code(self, code: str) -> Taken:
        """Spend a code: `taken` once; `replayed` (with its family) when it was spent before."""
        ...

    async def add_tokens(self, access: str, refresh: str | None, grant: Grant, refresh_expires_at: float) -> None:
        """Store a new access token (expiring with `grant`) and its refresh token, in the grant's family."""
        ...

    async def find_access(self, token: str) -> tuple[Grant, Person] | None:
        """The unexpired access token's grant and its active person."""
        ...

    async def find_refresh(self, token: str) -> Grant | None:
        """The unexpired refresh token's grant, used or not (`rotate_refresh` tells a replay); its `expires_at` is
        the refresh token's."""
        ...

    async def rotate_refresh(self, token: str) -> Taken:
        """Spend a refresh token and drop its family's access tokens; `replayed` when it was spent before."""
        ...

    async def revoke_family(self, family: str) -> None: ...

    async def bitrix_tokens(self, user_id: int) -> tuple[int, BitrixTokens] | None:
        """The active person's version and Bitrix24 tokens; None when revoked, unknown, or sealed with another key."""
        ...

    async def save_bitrix_tokens(self, user_id: int, version: int, tokens: BitrixTokens) -> bool:
        """Replace the tokens of that version (a refresh); False when the person signed in again or was revoked."""
        ...

    async def refresh_bitrix_tokens(
        self, user_id: int, version: int, current: BitrixTokens, renew: Renewal
    ) -> BitrixTokens | None:
        """The person's pair after a refresh: the stored one when another process rotated it since `current`, else
        `renew(stored)`, saved. None when the person signed in again or was revoked. `renew`'s errors pass through
        (nothing saved). A shared store does this under the person's row lock, so only one replica at a time asks
        the OAuth server and a rotated refresh token is never sent twice.
        """
        ...

    async def touch(self, user_id: int) -> None:
        """Record a use (at most one write a minute per person)."""
        ...

    async def people(self) -> list[Person]: ...

    async def revoke(self, user_id: int) -> bool:
        """End the person's access now: their MCP tokens, codes, consents and Bitrix24 tokens go. False if unknown."""
        ...

    async def aclose(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY, info TEXT NOT NULL, secret TEXT, created_at REAL NOT NULL, used_at REAL, source TEXT);
CREATE TABLE IF NOT EXISTS authorizations (
    state TEXT PRIMARY KEY, data TEXT NOT NULL, expires_at REAL NOT NULL, source TEXT);
CREATE TABLE IF NOT EXISTS consent_waits (
    consent TEXT PRIMARY KEY, data TEXT NOT NULL, access TEXT NOT NULL, refresh TEXT, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS people (
    user_id INTEGER PRIMARY KEY, name TEXT NOT NULL, member_id TEXT NOT NULL, signed_in_at REAL NOT NULL,
    last_used_at REAL, version INTEGER NOT NULL, access TEXT, refresh TEXT);
CREATE TABLE IF NOT EXISTS consents (
    user_id INTEGER NOT NULL, client_id TEXT NOT NULL, redirect_uri TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (user_id, client_id, redirect_uri));
CREATE TABLE IF NOT EXISTS codes (
    code TEXT PRIMARY KEY, data TEXT NOT NULL, user_id INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0,
    expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    token TEXT PRIMARY KEY, kind TEXT NOT NULL, family TEXT NOT NULL, client_id TEXT NOT NULL,
    user_id INTEGER NOT NULL, scopes TEXT NOT NULL, resource TEXT NOT NULL, expires_at REAL NOT NULL,
    used INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS tokens_family ON tokens (family);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens (user_id);
CREATE INDEX IF NOT EXISTS tokens_expiry ON tokens (expires_at);
CREATE INDEX IF NOT EXISTS clients_source ON clients (source);
CREATE INDEX IF NOT EXISTS authorizations_source ON authorizations (source);
"""
# From schema 1: its consents were per client, whatever the redirect URI; they no longer count (the person is asked
# once more), and the rows in flight get their source (none for those already there).
_UPGRADE_FROM_1 = (
    "DROP TABLE consents",
    "ALTER TABLE clients ADD COLUMN source TEXT",
    "ALTER TABLE authorizations ADD COLUMN source TEXT",
)


def _grant_json(grant: Grant) -> dict[str, Any]:
    return {
        "client_id": grant.client_id,
        "user_id": grant.user_id,
        "scopes": list(grant.scopes),
        "resource": grant.resource,
        "family": grant.family,
        "expires_at": grant.expires_at,
    }


def _grant_from(data: dict[str, Any]) -> Grant:
    return Grant(
        client_id=str(data["client_id"]),
        user_id=int(data["user_id"]),
        scopes=tuple(str(scope) for scope in data["scopes"]),
        resource=str(data["resource"]),
        family=str(data["family"]),
        expires_at=float(data["expires_at"]),
    )


def authorization_json(authorization: Authorization) -> str:
    """`authorization` as the stores keep it (`authorization_from` reads it back)."""
    return json.dumps(
        {
            "client_id": authorization.client_id,
            "redirect_uri": authorization.redirect_uri,
            "redirect_uri_explicit": authorization.redirect_uri_explicit,
            "code_challenge": authorization.code_challenge,
            "state": authorization.state,
            "scopes": list(authorization.scopes),
            "resource": authorization.resource,
            "expires_at": authorization.expires_at,
        }
    )


def authorization_from(data: dict[str, Any]) -> Authorization:
    """The authorization `authorization_json` wrote, from its parsed object."""
    return Authorization(
        client_id=str(data["client_id"]),
        redirect_uri=str(data["redirect_uri"]),
        redirect_uri_explicit=bool(data["redirect_uri_explicit"]),
        code_challenge=str(data["code_challenge"]),
        state=None if data["state"] is None else str(data["state"]),
        scopes=tuple(str(scope) for scope in data["scopes"]),
        resource=str(data["resource"]),
        expires_at=float(data["expires_at"]),
    )


def issued_code_json(issued: IssuedCode) -> str:
    """`issued` as the stores keep it (`issued_code_from` reads it back)."""
    return json.dumps(
        {
            "grant": _grant_json(issued.grant),
            "code_challenge": issued.code_challenge,
            "redirect_uri": issued.redirect_uri,
            "redirect_uri_explicit": issued.redirect_uri_explicit,
        }
    )


def issued_code_from(data: str) -> IssuedCode:
    """The issued code in `issued_code_json`'s text."""
    raw = json.loads(data)
    return IssuedCode(
        _grant_from(raw["grant"]),
        str(raw["code_challenge"]),
        str(raw["redirect_uri"]),
        raw["redirect_uri_explicit"],
    )


def grant_from_row(row: Sequence[Any]) -> Grant:
    """The grant of a tokens row selected as `family, client_id, user_id, scopes, resource, expires_at`."""
    return Grant(row[1], int(row[2]), tuple(row[3].split()), row[4], row[0], float(row[5]))


def access_from_row(row: Sequence[Any]) -> tuple[Grant, Person]:
    """The grant and active person of an access token's row: `grant_from_row`'s columns, then the person's
    `name, member_id, signed_in_at, last_used_at, version`."""
    return grant_from_row(row), Person(int(row[2]), row[6], row[7], float(row[8]), row[9], int(row[10]), True)


def person_from_row(row: Sequence[Any]) -> Person:
    """A person from a people row selected as
    `user_id, name, member_id, signed_in_at, last_used_at, version, access IS NOT NULL`."""
    return Person(int(row[0]), str(row[1]), str(row[2]), float(row[3]), row[4], int(row[5]), bool(row[6]))


def seal_client(sealer: Sealer, client: OAuthClientInformationFull) -> tuple[str, str | None]:
    """What the stores keep of a registered client: its information without the secret, and the secret sealed."""
    info = client.model_dump_json(exclude={"client_secret"}, exclude_none=True)
    sealed = sealer.seal(client.client_secret, f"client:{client.client_id}") if client.client_secret else None
    return info, sealed


def open_client(sealer: Sealer, client_id: str, info: str, sealed: str | None) -> OAuthClientInformationFull | None:
    """The client `seal_client` kept; None when its secret was sealed with another key (it registers again)."""
    client = OAuthClientInformationFull.model_validate_json(info)
    if sealed is not None:
        secret = sealer.open(sealed, f"client:{client_id}")
        if secret is None:
            return None
        client = client.model_copy(update={"client_secret": secret})
    return client


def seal_tokens(sealer: Sealer, tokens: BitrixTokens, where: str) -> tuple[str, str | None]:
    """`tokens` sealed for the row `where` (`person:<user id>`, `consent:<digest>`): access, refresh or None."""
    access = sealer.seal(tokens.access, f"{where}:access")
    refresh = sealer.seal(tokens.refresh, f"{where}:refresh") if tokens.refresh else None
    return access, refresh


def open_tokens(sealer: Sealer, access: str, refresh: str | None, where: str) -> BitrixTokens | None:
    """The tokens sealed for the row `where`; None when either cannot be opened (another key, another row)."""
    opened = sealer.open(access, f"{where}:access")
    opened_refresh = sealer.open(refresh, f"{where}:refresh") if refresh is not None else None
    if opened is None or (refresh is not None and opened_refresh is None):
        return None
    return BitrixTokens(opened, opened_refresh)


def consent_json(waiting: AwaitingConsent) -> str:
    """What a waiting consent keeps besides its sealed tokens and expiry."""
    person = waiting.person
    return json.dumps(
        {
            "authorization": json.loads(authorization_json(waiting.authorization)),
            "member_id": person.member_id,
            "user_id": person.user_id,
            "name": person.name,
        }
    )


def consent_from(data: str, tokens: BitrixTokens, expires_at: float) -> AwaitingConsent:
    """A waiting consent from `consent_json`'s text and its opened tokens."""
    fields = json.loads(data)
    person = SignedIn(str(fields["member_id"]), int(fields["user_id"]), str(fields["name"]), tokens)
    return AwaitingConsent(authorization_from(fields["authorization"]), person, expires_at)


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
        now = self._clock()
        info, sealed = seal_client(self._sealer, client)

        def work(db: sqlite3.Connection) -> None:
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
        now = self._clock()

        def work(db: sqlite3.Connection) -> None:
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
