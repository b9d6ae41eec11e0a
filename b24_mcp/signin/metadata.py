"""The authorization server's settings for the SDK, and its metadata as this server serves it.

The SDK builds the metadata (RFC 8414) from `auth_settings`: issuer `B24_PUBLIC_URL`, PKCE `S256`, dynamic client
registration, revocation. The 2026-07-28 revision of the MCP authorization spec adds RFC 9207: an authorization
server names itself (`iss`) in every authorization response, which `pages` does, and says so in its metadata
(`authorization_response_iss_parameter_supported`), so that a client may refuse a response without it (a mix-up
attack). The SDK's metadata route has no such field: `IssuerMetadata` serves the same document with it, in front of
the SDK's application. It also puts `pages.StoreOutage` into that application, so that every sign-in endpoint
answers 503 while the shared database is down, and `guards.SourceCheck` in front of it (each source address's
share, the resource at `/token`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mcp.server.auth.handlers.metadata import MetadataHandler
from mcp.server.auth.routes import build_metadata, cors_middleware
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.shared.auth import OAuthMetadata
from starlette.applications import Starlette

from b24_mcp.signin.config import MCP_PATH
from b24_mcp.signin.guards import SourceCheck
from b24_mcp.signin.pages import StoreOutage
from b24_mcp.signin.sources import Network

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

METADATA_PATH = "/.well-known/oauth-authorization-server"


def auth_settings(issuer: str) -> AuthSettings:
    """The SDK's `AuthSettings` for this server as its own authorization server, at `issuer` (B24_PUBLIC_URL)."""
    return AuthSettings(
        issuer_url=issuer,  # type: ignore[arg-type]  # pydantic parses the URL
        resource_server_url=issuer + MCP_PATH,  # type: ignore[arg-type]
        client_registration_options=ClientRegistrationOptions(enabled=True),
        revocation_options=RevocationOptions(enabled=True),
        validate_token_resource=True,
    )


def authorization_server_metadata(issuer: str) -> OAuthMetadata:
    """The metadata the SDK would serve for `auth_settings(issuer)`, with RFC 9207 support declared."""
    settings = auth_settings(issuer)
    metadata = build_metadata(
        settings.issuer_url,
        settings.service_documentation_url,
        settings.client_registration_options or ClientRegistrationOptions(),
        settings.revocation_options or RevocationOptions(),
    )
    metadata.authorization_response_iss_parameter_supported = True
    return metadata


class IssuerMetadata:
    """ASGI: serves `METADATA_PATH` itself (see the module docstring); everything else, lifespan included, goes on,
    to `app` with `StoreOutage` added: as Starlette's outermost middleware but its error handler, which would
    otherwise answer a failure with 500 before `StoreOutage` saw it; in front of that, `SourceCheck`, believing the
    forwarded address of `trusted_proxies` (B24_TRUSTED_PROXIES)."""

    def __init__(self, app: ASGIApp, issuer: str, trusted_proxies: Sequence[Network] = ()) -> None:
        if isinstance(app, Starlette):
            app.add_middleware(StoreOutage)
        else:
            app = StoreOutage(app)
        self.app = SourceCheck(app, issuer + MCP_PATH, trusted_proxies)
        self._metadata = cors_middleware(
            MetadataHandler(authorization_server_metadata(issuer)).handle, ["GET", "OPTIONS"]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == METADATA_PATH and scope["method"] in ("GET", "OPTIONS"):
            await self._metadata(scope, receive, send)
            return
        await self.app(scope, receive, send)
