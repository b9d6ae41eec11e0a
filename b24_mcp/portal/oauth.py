"""An application's OAuth grant, refreshed on expiry and saved to the token file (see `portal.auth`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio

from b24_mcp.portal.auth import (
    _REAUTHORISE,
    Auth,
    GrantStore,
    Secrets,
    TokenPair,
    TokenRequest,
    WebhookAuth,
    exchange_refresh_token,
)
from b24_mcp.portal.token_file import read_token_file
from b24_mcp.secure.files import write_private_file
from b24_mcp.settings import OAuthConfig, Webhook

logger = logging.getLogger(__name__)


class OAuthSession(Auth):
    """An application's OAuth grant for one portal, refreshed on expiry and persisted across restarts."""

    def __init__(self, config: OAuthConfig, *, grants: GrantStore | None = None) -> None:
        self._config = config
        self._grants = grants  # shared with other replicas: one refresh at a time among them too
        self._access = config.access_token
        self._refresh = config.refresh_token
        self._user_id: int | None = None
        self._generation = 0
        self._lock = anyio.Lock()
        saved = read_token_file(config.token_file, config.host) if config.token_file else None
        if saved is not None:
            self._access = saved["access_token"]
            self._refresh = saved.get("refresh_token") or self._refresh
            self._user_id = saved.get("user_id")
        # The configured pair stays secret too when the saved one replaced it.
        self._previous: tuple[str | None, ...] = (config.access_token, config.refresh_token)
        self._secrets = Secrets()
        self._remember()

    def __repr__(self) -> str:
        return f"OAuthSession(host={self.host!r})"

    def _remember(self, *also: str | None) -> None:
        self._secrets.set(self._access, self._refresh, *self._previous, *also, self._config.client_secret)

    @property
    def host(self) -> str:
        return self._config.host

    @property
    def user_id(self) -> int | None:
        return self._user_id

    @property
    def identity(self) -> str:
        return f"{self._config.host}/oauth/{self._config.client_id or '-'}"

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def can_refresh(self) -> bool:
        return bool(self._refresh and self._config.client_id and self._config.client_secret)

    @property
    def secrets(self) -> Secrets:
        return self._secrets

    def prepare(self, method: str, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        return self._config.rest_base + method, {**params, "auth": self._access}

    async def refresh(self, request_token: TokenRequest, seen_generation: int) -> None:
        """Exchange the refresh token for a new pair; concurrent callers wait for one exchange. With a grant store,
        replicas too: the one holding the stored grant's lock exchanges, the others take the pair it stored.

        Raises `PortalError` with the OAuth server's own code when it refused, `TransportError` when its answer
        was lost or is not a token answer (or the grant store could not be reached).
        """
        async with self._lock:
            if self._generation != seen_generation:
                return  # another call refreshed while this one waited
            current = TokenPair(self._access, self._refresh, self._user_id)

            async def renew(pair: TokenPair) -> TokenPair:
                return await self._exchange(request_token, pair)

            pair = await (self._grants.refresh(current, renew) if self._grants is not None else renew(current))
            renewed = pair.expires_in is not None  # a pair taken from the store does not say
            self._previous = (self._access, self._refresh)
            self._access = pair.access_token
            self._refresh = pair.refresh_token or self._refresh
            self._user_id = pair.user_id if pair.user_id is not None else self._user_id
            self._generation += 1
            self._remember()
            if renewed:
                logger.info("Refreshed the OAuth access token for %s", self.host)
            else:
                logger.info("Took the OAuth tokens for %s that another replica refreshed", self.host)
            if self._config.token_file is not None:
                await anyio.to_thread.run_sync(self._save, self._config.token_file)

    async def _exchange(self, request_token: TokenRequest, pair: TokenPair) -> TokenPair:
        """One refresh at the OAuth server with `pair`'s refresh token: the next pair."""
        self._remember(pair.access_token, pair.refresh_token)  # a stored pair's tokens are secrets here too
        renewed = await exchange_refresh_token(
            request_token,
            self._config.oauth_url,
            self._config.client_id or "",
            self._config.client_secret or "",
            pair.refresh_token,
            self._secrets,
            lambda code: _REAUTHORISE,
        )
        return renewed if renewed.user_id is not None else replace(renewed, user_id=pair.user_id)

    def _save(self, path: Path) -> None:
        data = {
            "portal": self.host,
            "access_token": self._access,
            "refresh_token": self._refresh,
            "user_id": self._user_id,
        }
        try:
            write_private_file(path, json.dumps(data).encode())
        except OSError as exc:
            logger.error(
                "Could not save the refreshed tokens to B24_TOKEN_FILE (%s); after a restart the application "
                "will need to be re-authorised.",
                exc.strerror or type(exc).__name__,
            )


def make_auth(credentials: Webhook | OAuthConfig, *, grants: GrantStore | None = None) -> WebhookAuth | OAuthSession:
    """The runtime credential for the configured one; an OAuth grant shared through `grants` when given."""
    return WebhookAuth(credentials) if isinstance(credentials, Webhook) else OAuthSession(credentials, grants=grants)
