"""The MCP clients' authorization server, as the SDK's `OAuthAuthorizationServerProvider`.

The SDK serves the endpoints (`/authorize`, `/token`, `/register`, `/revoke`, the metadata) and checks what the
protocol fixes (PKCE S256, redirect URIs, client authentication, code expiry); this provider decides the rest:

- registration: redirect URIs must be https, or http on this machine (loopback), or an application's own scheme,
  without user information; at most `FloodLimits.clients` unused registrations from one source address and
  `MAX_CLIENTS` in all, unused ones forgotten after `UNUSED_CLIENT_SECONDS`;
- `/authorize`: the resource must be this server's MCP endpoint; the request is kept (under a fresh random
  `state`) while the person signs in at the portal (`pages.SignInPages` takes it from there); at most
  `FloodLimits.sign_ins` in flight from one source address and `MAX_PENDING` in all. A source over its share is
  marked refused (`sources`), and `guards.SourceCheck` answers it 429 with `Retry-After`;
- codes and tokens: single use; a code or refresh token presented a second time ends every token descending
  from it (its family); refresh tokens rotate; every token is bound to the person and this resource;
- `load_access_token` is where each request is authenticated: the token must be known, unexpired, and its person
  still signed in (a revocation takes effect at the next request).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    RefreshToken,
    RegistrationError,
    TokenError,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyUrl

from b24_mcp.addresses import LOOPBACK_NAMES
from b24_mcp.secure.sealing import new_token
from b24_mcp.signin.config import SignInConfig
from b24_mcp.signin.records import Authorization, Grant, Person, SourceFull, StoreFull, Taken
from b24_mcp.signin.sources import current_source
from b24_mcp.signin.store import MAX_CLIENTS_PER_SOURCE, MAX_PENDING_PER_SOURCE, PeopleStore

logger = logging.getLogger(__name__)

ACCESS_TOKEN_SECONDS = 3600
REFRESH_TOKEN_SECONDS = 30 * 86_400
CODE_SECONDS = 300
SIGN_IN_SECONDS = 900  # from our /authorize until the portal sends the person back
ACCESS_PREFIX = "b24mcp_at_"
REFRESH_PREFIX = "b24mcp_rt_"
CODE_PREFIX = "b24mcp_code_"
_MAX_TOKEN = 200
MAX_REGISTRATION_BYTES = 16 * 1024  # a client's metadata as stored; real ones are a few hundred bytes
MAX_REDIRECT_URIS = 10
MAX_STATE = 1024
_FORBIDDEN_SCHEMES = frozenset({"javascript", "data", "file", "vbscript", "about", "blob", "ftp", "ws", "wss"})


@dataclass(frozen=True)
class FloodLimits:
    """What one source address may hold at once: registrations not yet used for a sign-in, sign-ins in flight."""

    clients: int = MAX_CLIENTS_PER_SOURCE
    sign_ins: int = MAX_PENDING_PER_SOURCE

    def __post_init__(self) -> None:
        if self.clients < 1 or self.sign_ins < 1:
            raise ValueError("each source address must be allowed at least one of each")


def _source_key() -> str | None:
    """The key the current request's source is counted under; None when no `SourceCheck` saw it (not counted)."""
    source = current_source()
    return source.key if source is not None else None


def _over_share(full: SourceFull, what: str) -> str:
    """Mark the current request refused for `full.retry_after` seconds; the description of the refusal."""
    source = current_source()
    if source is not None:
        source.retry_after = full.retry_after
    logger.info("Refused %s from %s: its share is used", what, source.key if source is not None else "a source")
    return f"Too many {what}s from your address; try again in {full.retry_after} seconds."


class PersonRefreshToken(RefreshToken):
    """A refresh token with the family it belongs to."""

    family: str


class PersonAccessToken(AccessToken):
    """An access token with the family it belongs to and the person's version (see `store.Person`)."""

    family: str
    user_id: int
    user_name: str
    version: int


def redirect_uri_problem(uri: str) -> str | None:
    """Why a client's redirect URI is refused, or None: https anywhere, http only to this machine, or a
    private-use scheme of a native application (`cursor://`, `vscode://`, `com.example.app:/cb`); never with user
    information (`user@host`), which a page naming the destination could be made to show instead of the host."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return f"{uri[:100]} is not a URL"
    scheme = parts.scheme.lower()
    if parts.fragment:
        return "a redirect URI may not have a fragment"
    if "@" in parts.netloc or "%" in parts.netloc:
        # `https://claude.ai…@evil.example/cb` goes to evil.example: no user information, nor an encoded host
        return "a redirect URI may not carry user information (user@host) or a percent-encoded host"
    if scheme == "https":
        return None if parts.hostname else "an https redirect URI needs a host"
    if scheme == "http":
        if (parts.hostname or "").lower() in LOOPBACK_NAMES:
            return None
        return "an http redirect URI must point to this machine (localhost, 127.0.0.1 or [::1]); use https"
    if not scheme or scheme in _FORBIDDEN_SCHEMES:
        return f"the scheme {scheme or '(none)'}: is not allowed for a redirect URI"
    return None


def same_resource(requested: str, ours: str) -> bool:
    """Whether an RFC 8707 resource indicator names `ours` (as URLs: case of scheme and host, a trailing slash)."""
    try:
        asked, mine = urlsplit(requested), urlsplit(ours)
    except ValueError:
        return False
    return (asked.scheme.lower(), asked.netloc.lower(), asked.path.rstrip("/")) == (
        mine.scheme.lower(),
        mine.netloc.lower(),
        mine.path.rstrip("/"),
    ) and not asked.query


class SignInProvider:
    """`OAuthAuthorizationServerProvider` over the people store (see the module docstring).

    `on_access(grant, person)` runs for every authenticated request; it returns False when the person's Bitrix24
    credential cannot be used (then the request is not authenticated).
    """

    def __init__(
        self,
        config: SignInConfig,
        store: PeopleStore,
        on_access: Callable[[Grant, Person], Awaitable[bool]],
        *,
        clock: Callable[[], float] = time.time,
        limits: FloodLimits | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._on_access = on_access
        self._clock = clock
        self._limits = limits or FloodLimits()

    # -------------------------------------------------------------------------------------------- registration

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        if not client_id or len(client_id) > _MAX_TOKEN:
            return None
        return await self._store.get_client(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        if len(client_info.model_dump_json()) > MAX_REGISTRATION_BYTES:
            raise RegistrationError("invalid_client_metadata", "The client's metadata is too large.")
        if len(client_info.redirect_uris or []) > MAX_REDIRECT_URIS:
            raise RegistrationError("invalid_redirect_uri", f"At most {MAX_REDIRECT_URIS} redirect URIs.")
        for uri in client_info.redirect_uris or []:
            problem = redirect_uri_problem(str(uri))
            if problem is not None:
                raise RegistrationError("invalid_redirect_uri", problem)
        try:
            await self._store.add_client(client_info, _source_key(), self._limits.clients)
        except SourceFull as full:
            raise RegistrationError("invalid_client_metadata", _over_share(full, "registration")) from None
        except StoreFull:
            logger.warning("Refused a client registration: too many registered clients")
            raise RegistrationError(
                "invalid_client_metadata", "This server has too many registered clients; try again later."
            ) from None
        logger.info("Registered an MCP client")

    # ------------------------------------------------------------------------------------------- authorization

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        if len(params.state or "") > MAX_STATE or not 43 <= len(params.code_challenge) <= 128:
            raise AuthorizeError("invalid_request", "The state or the PKCE code challenge has an impossible length.")
        if params.resource is not None and not same_resource(params.resource, self._config.resource):
            raise AuthorizeError("invalid_target", f"This server only grants access to {self._config.resource}.")
        state = new_token("")
        authorization = Authorization(
            client_id=client.client_id,
            redirect_uri=str(params.redirect_uri),
            redirect_uri_explicit=params.redirect_uri_provided_explicitly,
            code_challenge=params.code_challenge,
            state=params.state,
            scopes=tuple(params.scopes or ()),
            resource=self._config.resource,
            expires_at=self._clock() + SIGN_IN_SECONDS,
        )
        try:
            await self._store.add_authorization(state, authorization, _source_key(), self._limits.sign_ins)
        except SourceFull as full:
            raise AuthorizeError("temporarily_unavailable", _over_share(full, "sign-in")) from None
        except StoreFull:
            logger.warning("Refused a sign-in: too many sign-ins in flight")
            raise AuthorizeError("temporarily_unavailable", "Too many sign-ins in progress; try again later.") from None
        return self._config.portal_authorize_url(state)

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        if not authorization_code.startswith(CODE_PREFIX) or len(authorization_code) > _MAX_TOKEN:
            return None
        issued = await self._store.find_code(authorization_code)
        if issued is None or issued.grant.client_id != client.client_id:
            return None
        grant = issued.grant
        return AuthorizationCode(
            code=authorization_code,
            scopes=list(grant.scopes),
            expires_at=grant.expires_at,
            client_id=grant.client_id,
            code_challenge=issued.code_challenge,
            redirect_uri=AnyUrl(issued.redirect_uri),
            redirect_uri_provided_explicitly=issued.redirect_uri_explicit,
            resource=grant.resource,
            subject=str(grant.user_id),
        )

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        return await self._redeem(
            client,
            await self._store.take_code(authorization_code.code),
            authorization_code,
            authorization_code.scopes,
            replayed="An authorization code was presented twice; the tokens issued for it are revoked",
            spent="The authorization code was already used or has expired.",
        )

    # ---------------------------------------------------------------------------------------------- refreshing

    async def load_refresh_token(self, client: OAuthClientInformationFull, refresh_token: str) -> RefreshToken | None:
        if not refresh_token.startswith(REFRESH_PREFIX) or len(refresh_token) > _MAX_TOKEN:
            return None
        grant = await self._store.find_refresh(refresh_token)
        if grant is None or grant.client_id != client.client_id:
            return None
        return PersonRefreshToken(
            token=refresh_token,
            client_id=grant.client_id,
            scopes=list(grant.scopes),
            expires_at=int(grant.expires_at),
            resource=grant.resource,
            subject=str(grant.user_id),
            family=grant.family,
        )

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        return await self._redeem(
            client,
            await self._store.rotate_refresh(refresh_token.token),
            refresh_token,
            scopes,
            replayed="A refresh token was presented twice; every token descending from its sign-in is revoked",
            spent="The refresh token was already used; sign in again.",
        )

    async def _redeem(
        self,
        client: OAuthClientInformationFull,
        taken: Taken,
        presented: AuthorizationCode | RefreshToken,
        scopes: list[str],
        *,
        replayed: str,
        spent: str,
    ) -> OAuthToken:
        """New tokens for the code or refresh token `client` presented, which the store has just `taken` (single
        use): `invalid_grant` (`spent`) unless this request took it; presented a second time, every token of its
        family is revoked first (and `replayed` logged), since one of the two presenters holds a stolen copy."""
        if taken.outcome == "replayed" and taken.family is not None:
            await self._store.revoke_family(taken.family)
            logger.warning("%s", replayed)
        if taken.outcome != "taken" or taken.family is None or presented.subject is None:
            raise TokenError("invalid_grant", spent)
        resource = presented.resource or self._config.resource
        user_id = int(presented.subject)
        return await self._issue(Grant(client.client_id, user_id, tuple(scopes), resource, taken.family, 0))

    async def _issue(self, grant: Grant) -> OAuthToken:
        now = self._clock()
        access, refresh = new_token(ACCESS_PREFIX), new_token(REFRESH_PREFIX)
        issued = Grant(
            grant.client_id, grant.user_id, grant.scopes, grant.resource, grant.family, now + ACCESS_TOKEN_SECONDS
        )
        await self._store.add_tokens(access, refresh, issued, now + REFRESH_TOKEN_SECONDS)
        return OAuthToken(
            access_token=access,
            token_type="Bearer",
            expires_in=ACCESS_TOKEN_SECONDS,
            refresh_token=refresh,
            scope=" ".join(grant.scopes) or None,
        )

    # ---------------------------------------------------------------------------------- requests and revoking

    async def load_access_token(self, token: str) -> AccessToken | None:
        if not token.startswith(ACCESS_PREFIX) or len(token) > _MAX_TOKEN:
            return None
        found = await self._store.find_access(token)
        if found is None:
            return None
        grant, person = found
        if not await self._on_access(grant, person):
            return None
        return PersonAccessToken(
            token=token,
            client_id=grant.client_id,
            scopes=list(grant.scopes),
            expires_at=int(grant.expires_at),
            resource=grant.resource,
            subject=str(person.user_id),
            claims={"iss": self._config.issuer},
            family=grant.family,
            user_id=person.user_id,
            user_name=person.name,
            version=person.version,
        )

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        family = getattr(token, "family", None)
        if isinstance(family, str):
            await self._store.revoke_family(family)
