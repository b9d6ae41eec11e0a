"""The application object: everything a deletion needs, built once from the settings, outside any MCP layer.

`build_app` is the one factory: the stdio and HTTP servers, `b24-mcp check` and the tests all get their portal
client, tokens, journal, guardrails and catalog from it. With `B24_DATABASE_URL`, the spent tokens, the journal,
the portal's bucket and the OAuth grant are the ones every replica shares (`b24_mcp.postgres`, imported only then).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

import httpx2

from b24_mcp.deleting.confirmation import ConfirmationTokens, SpentTokens
from b24_mcp.deleting.gate import Guardrails
from b24_mcp.journal.file import Journal
from b24_mcp.journal.record import JournalStore
from b24_mcp.portal.auth import Auth, GrantStore
from b24_mcp.portal.catalog import EntityCatalog
from b24_mcp.portal.client import PortalClient
from b24_mcp.portal.limiter import LeakyBucket, Pacing
from b24_mcp.portal.oauth import make_auth
from b24_mcp.settings import ConfirmMode, OAuthConfig, Settings, Webhook

if TYPE_CHECKING:
    from mcp.server.auth.provider import AccessToken

    from b24_mcp.deleting.approval import ApprovalDesk


class People(Protocol):
    """The people who sign in to a team server (`b24_mcp.signin`), each acting with their own Bitrix24 rights."""

    def app_for(self, access: AccessToken | None) -> App:
        """The application as the person behind this request's access token uses it."""
        ...

    async def aclose(self) -> None: ...


@dataclass
class App:
    """One portal, one confirmation policy, one journal: shared by every connection of the process."""

    portal: PortalClient
    tokens: ConfirmationTokens
    journal: JournalStore
    catalog: EntityCatalog
    guardrails: Guardrails
    mode: ConfirmMode
    call_deadline: float
    batch_max: int = 5000  # B24_BATCH_MAX: how many items one clean-up by filter covers
    close_shared: Callable[[], Awaitable[None]] | None = None  # the shared database's pool, when there is one
    user_name: str | None = None  # the signed-in person the portal client acts as (sign-in), for the journal
    people: People | None = None  # sign-in (B24_PUBLIC_URL): who is signed in; tool calls act as one of them
    approvals: ApprovalDesk | None = None  # sign-in: the page where people approve deletions (B24_CONFIRM=page)

    def as_person(self, access: AccessToken | None) -> App:
        """The application a tool call uses: as the person behind `access` when people sign in, else this one."""
        return self if self.people is None else self.people.app_for(access)

    def acting_as(self, auth: Auth, *, user_name: str | None) -> App:
        """This application acting with another credential of its portal (a signed-in person): their portal
        client (sharing the HTTP pool and the rate limiter), confirmation tokens bound to them, their catalog,
        their name for the journal; the journal, guardrails and mode are shared."""
        portal = self.portal.for_credential(auth)
        return replace(
            self,
            portal=portal,
            tokens=self.tokens.bound_to(portal.identity),
            catalog=EntityCatalog(portal),
            user_name=user_name,
            people=None,
            close_shared=None,
        )

    async def aclose(self) -> None:
        """Close the portal client's connections (and the shared database's, and the people store)."""
        try:
            await self.portal.aclose()
        finally:
            try:
                if self.close_shared is not None:
                    await self.close_shared()
            finally:
                if self.people is not None:
                    await self.people.aclose()


def build_app(
    settings: Settings,
    credentials: Webhook | OAuthConfig | None = None,
    *,
    http_transport: httpx2.AsyncBaseTransport | None = None,
    retry_base: float = 0.5,
) -> App:
    """Assemble the application from the settings; nothing touches the network until the first call.

    `credentials` default to the configured ones; `http_transport` replaces the network (the sandbox portal).
    """
    secret = settings.confirm_secret.get_secret_value().encode() if settings.confirm_secret else secrets.token_bytes(32)
    credentials = credentials or settings.credentials
    grants: GrantStore | None = None
    spent: SpentTokens | None = None
    journal: JournalStore = Journal(settings.audit_log)
    shared = None
    if settings.database_url is not None:
        from b24_mcp.postgres.state import SharedState  # psycopg only now: the stdio cold start does not change

        shared = SharedState(settings.database_url.get_secret_value(), secret)
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
    return App(
        portal=portal,
        tokens=ConfirmationTokens(
            secret, portal=portal.identity, ttl=settings.confirm_ttl, spent=spent, lasting=bool(settings.confirm_secret)
        ),
        journal=journal,
        catalog=EntityCatalog(portal),
        guardrails=Guardrails(read_only=settings.read_only, allowed_types=settings.allowed_entity_types),
        mode=settings.confirm,
        call_deadline=settings.call_deadline,
        batch_max=settings.batch_max,
        close_shared=shared.aclose if shared is not None else None,
    )


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
