"""The composition root: everything a server needs, built once from the settings, connecting nothing yet.

`assemble` decides the mode once (stdio or HTTP, the sandbox, a bearer token, sign-in) and builds the server: one
HTTP pool (the portal client's), one database pool (`B24_DATABASE_URL`), one people store (sign-in). The server's
lifespan closes them (`App.aclose`); `App` is frozen. `build_app` and `build_signin_app` are its two builders,
which `b24-mcp check` and the tests use too. With `B24_DATABASE_URL`, the spent tokens, the journal, the portal's
bucket, the OAuth grant and the people are the ones every replica shares (`b24_mcp.postgres`, imported only then).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import httpx2

from b24_mcp.deleting.app import App
from b24_mcp.deleting.confirmation import ConfirmationTokens, SpentTokens
from b24_mcp.deleting.gate import Guardrails
from b24_mcp.journal.file import Journal
from b24_mcp.journal.record import JournalStore
from b24_mcp.portal.auth import GrantStore
from b24_mcp.portal.catalog import EntityCatalog
from b24_mcp.portal.client import PortalClient
from b24_mcp.portal.limiter import LeakyBucket, Pacing
from b24_mcp.portal.oauth import make_auth
from b24_mcp.secure.keys import confirmation_key
from b24_mcp.settings import ConfirmMode, OAuthConfig, Settings, SettingsError, Webhook, for_sandbox

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from b24_mcp.postgres.database import Database
    from b24_mcp.signin.people import People
    from b24_mcp.signin.provider import FloodLimits
    from b24_mcp.signin.store import PeopleStore


@dataclass(frozen=True)
class Assembly:
    """What `assemble` built: the settings the server runs with, its application, the server over it."""

    settings: Settings
    app: App
    server: MCPServer[App]


def build_app(
    settings: Settings,
    credentials: Webhook | OAuthConfig | None = None,
    *,
    http_transport: httpx2.AsyncBaseTransport | None = None,
    retry_base: float = 0.5,
    database: Database | None = None,
) -> App:
    """Assemble the application from the settings; nothing touches the network until the first call.

    `credentials` default to the configured ones; `http_transport` replaces the network (the sandbox portal);
    `database` is the shared database's pool when the caller made it already (one pool per process).
    """
    secret = settings.confirm_secret.get_secret_value().encode() if settings.confirm_secret else secrets.token_bytes(32)
    credentials = credentials or settings.credentials
    grants: GrantStore | None = None
    spent: SpentTokens | None = None
    journal: JournalStore = Journal(settings.audit_log)
    shared = None
    if settings.database_url is not None:
        from b24_mcp.postgres.state import SharedState  # psycopg only now: the stdio cold start does not change

        shared = SharedState(database or _database(settings), secret)
        spent, journal = shared.spent, shared.journal
        if isinstance(credentials, OAuthConfig):
            grants = shared.grants(portal=credentials.host, client_id=credentials.client_id)
    auth = make_auth(credentials, grants=grants)
    limiter: Pacing = (
        LeakyBucket(settings.rate_burst, settings.rate_per_second)
        if shared is None
        else shared.bucket(
            portal=auth.host, credential=auth.identity, capacity=settings.rate_burst, rate=settings.rate_per_second
        )
    )
    portal = PortalClient(
        auth,
        timeout=settings.timeout,
        ca_bundle=str(settings.ca_bundle) if settings.ca_bundle else None,
        http_transport=http_transport,
        limiter=limiter,
        max_retries=settings.max_retries,
        retry_base=retry_base,
    )

    async def closing() -> None:
        """The HTTP pool, then the database's."""
        try:
            await portal.aclose()
        finally:
            if shared is not None:
                await shared.aclose()

    return App(
        portal=portal,
        tokens=ConfirmationTokens(
            confirmation_key(secret),
            portal=portal.identity,
            ttl=settings.confirm_ttl,
            spent=spent,
            lasting=bool(settings.confirm_secret),
        ),
        journal=journal,
        catalog=EntityCatalog(portal),
        guardrails=Guardrails(read_only=settings.read_only, allowed_types=settings.allowed_entity_types),
        mode=settings.confirm,
        call_deadline=settings.call_deadline,
        batch_max=settings.batch_max,
        closing=closing,
    )


def _database(settings: Settings) -> Database:
    from b24_mcp.postgres.database import Database

    assert settings.database_url is not None
    return Database(settings.database_url.get_secret_value())


def build_signin_app(
    settings: Settings,
    *,
    http_transport: httpx2.AsyncBaseTransport | None = None,
    retry_base: float = 0.5,
    limits: FloodLimits | None = None,
) -> tuple[App, People]:
    """The application of a sign-in server and its people (`SettingsError` when the configuration is incomplete
    or the people store cannot be used), `limits` the share of each source address. Serve it with
    `people.server_options()` and `people.add_routes`.

    With `B24_DATABASE_URL`, the shared state and the people store use one pool (one idea of "down")."""
    import sqlite3

    from b24_mcp.secure.sealing import UnusableFileError
    from b24_mcp.signin.config import SignInConfig
    from b24_mcp.signin.people import People, open_approvals, open_store, shared_store

    config = SignInConfig.from_settings(settings)
    database = _database(settings) if settings.database_url is not None else None
    store: PeopleStore
    if database is not None:
        store = shared_store(settings, database)
    else:
        try:
            store = open_store(config)
        except (UnusableFileError, OSError, sqlite3.Error, RuntimeError) as exc:
            reason = str(exc) if isinstance(exc, UnusableFileError | RuntimeError) else f"{config.database}: {exc}"
            raise SettingsError([f"B24_STATE_DIR: the people store cannot be used: {reason}"]) from None
    base = build_app(settings, config.no_one(), http_transport=http_transport, retry_base=retry_base, database=database)
    page = None
    if settings.confirm in (ConfirmMode.PAGE, ConfirmMode.AUTO):  # the page where people approve deletions
        approvals, page = open_approvals(config, store, base.portal)
        base = replace(base, approvals=approvals)  # before `People`: each person's view of it has the page too
    people = People(config, store, base, limits=limits)
    if page is not None:
        people.serve_page(page)

    async def closing() -> None:
        """The HTTP and database pools, then the people store."""
        try:
            await base.aclose()
        finally:
            await people.aclose()

    return replace(base, people=people, closing=closing), people


def assemble(settings: Settings, *, sandbox: bool, transport: str, host: str, port: int) -> Assembly:
    """The server for this mode, its application, and the settings it runs with (the sandbox's own journal);
    `SettingsError` for a combination that cannot work. Nothing connects before the first request."""
    from b24_mcp.serving.tools import build_server

    signing_in = settings.public_url is not None
    if signing_in and sandbox:
        raise SettingsError(["B24_PUBLIC_URL is set: people sign in to a real portal; unset it to serve the sandbox"])
    if signing_in and transport != "http":
        raise SettingsError(["B24_PUBLIC_URL is set: people sign in over HTTP only; serve with --transport http"])
    options: dict[str, Any] = {}
    if transport == "http":
        from b24_mcp.serving.transport import http_options

        options = http_options(settings, host, port)
    people = None
    if sandbox:
        from b24_mcp.sandbox.link import sandbox_http, sandbox_webhook

        settings = for_sandbox(settings)
        app = build_app(settings, sandbox_webhook(), http_transport=LazyTransport(sandbox_http))
    elif signing_in:  # each person signs in; this server is their MCP clients' authorization server
        app, people = build_signin_app(settings)
        options |= people.server_options()
    else:
        app = build_app(settings)
    server = build_server(app, server_options=options)
    if people is not None:
        people.add_routes(server)
    return Assembly(settings, app, server)


class LazyTransport(httpx2.AsyncBaseTransport):
    """An HTTP transport built on the first request: the sandbox portal is imported only when first called."""

    def __init__(self, build: Callable[[], httpx2.AsyncBaseTransport]) -> None:
        self._build = build
        self._inner: httpx2.AsyncBaseTransport | None = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._inner is None:
            self._inner = self._build()
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()
