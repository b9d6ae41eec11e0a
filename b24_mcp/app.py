"""The application object: everything a deletion needs, built once from the settings, outside any MCP layer.

`build_app` is the one factory: the stdio and HTTP servers, `b24-mcp check` and the tests all get their portal
client, tokens, journal, guardrails and catalog from it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import httpx2

from b24_mcp.auth import make_auth
from b24_mcp.catalog import EntityCatalog
from b24_mcp.confirmation import ConfirmationTokens
from b24_mcp.gate import Guardrails
from b24_mcp.journal import Journal
from b24_mcp.limiter import LeakyBucket
from b24_mcp.portal import PortalClient
from b24_mcp.settings import ConfirmMode, OAuthConfig, Settings, Webhook


@dataclass
class App:
    """One portal, one confirmation policy, one journal: shared by every connection of the process."""

    portal: PortalClient
    tokens: ConfirmationTokens
    journal: Journal
    catalog: EntityCatalog
    guardrails: Guardrails
    mode: ConfirmMode
    call_deadline: float

    async def aclose(self) -> None:
        """Close the portal client's connections."""
        await self.portal.aclose()


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
    portal = PortalClient(
        make_auth(credentials or settings.credentials),
        timeout=settings.timeout,
        ca_bundle=str(settings.ca_bundle) if settings.ca_bundle else None,
        http_transport=http_transport,
        limiter=LeakyBucket(settings.rate_burst, settings.rate_per_second),
        max_retries=settings.max_retries,
        retry_base=retry_base,
    )
    return App(
        portal=portal,
        tokens=ConfirmationTokens(secret, portal=portal.identity, ttl=settings.confirm_ttl),
        journal=Journal(settings.audit_log),
        catalog=EntityCatalog(portal),
        guardrails=Guardrails(read_only=settings.read_only, allowed_types=settings.allowed_entity_types),
        mode=settings.confirm,
        call_deadline=settings.call_deadline,
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
