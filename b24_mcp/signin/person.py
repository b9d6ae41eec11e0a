"""A signed-in person's Bitrix24 credential: the portal client's `Auth` for calls made as that person.

The access token lasts an hour. On `expired_token` the portal client asks `refresh`: one refresh at a time per
person (concurrent calls wait for it and reuse its result), the rotated pair saved to the people store before the
call is repeated (`PeopleStore.refresh_bitrix_tokens`). A pair rotated meanwhile by another process is read from
the store instead of refreshing again; with the shared (PostgreSQL) store, the exchange happens under the person's
row lock, so one replica at a time refreshes and the others use its pair. When the OAuth server refuses the
refresh token (`invalid_grant`), the person's sign-in is over: their access is revoked, so their MCP client gets a
401 at its next request and signs them in again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import anyio

from b24_mcp.errors import PortalError, Refusal
from b24_mcp.portal.auth import Auth, Secrets, TokenRequest, exchange_refresh_token
from b24_mcp.signin.config import SignInConfig
from b24_mcp.signin.records import BitrixTokens
from b24_mcp.signin.store import PeopleStore

logger = logging.getLogger(__name__)

SIGN_IN_AGAIN = (
    "The portal no longer accepts this person's sign-in; it has ended here too. Their MCP client asks them to sign "
    "in again at its next request."
)


class PersonAuth(Auth):
    """Calls as one person with their Bitrix24 tokens (a token in the body, never in a URL)."""

    def __init__(
        self,
        config: SignInConfig,
        *,
        user_id: int,
        name: str,
        version: int,
        tokens: BitrixTokens,
        store: PeopleStore | None,
    ) -> None:
        self._config = config
        self._user_id = user_id
        self.name = name
        self._version = version
        self._tokens = tokens
        self._store = store  # None: a credential of a sign-in in progress, not yet stored (never refreshed)
        self._generation = 0
        self._lock = anyio.Lock()
        self._previous: tuple[str | None, ...] = ()
        self._secrets = Secrets()
        self._remember()

    def __repr__(self) -> str:
        return f"PersonAuth(host={self.host!r}, user_id={self._user_id})"

    def _remember(self) -> None:
        self._secrets.set(self._tokens.access, self._tokens.refresh, *self._previous, self._config.client_secret)

    @property
    def host(self) -> str:
        return self._config.portal_host

    @property
    def user_id(self) -> int | None:
        return self._user_id

    @property
    def identity(self) -> str:
        return f"{self._config.portal_host}/person/{self._user_id}"

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def can_refresh(self) -> bool:
        return self._store is not None and self._tokens.refresh is not None

    @property
    def secrets(self) -> Secrets:
        return self._secrets

    def prepare(self, method: str, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        return self._config.rest_base + method, {**params, "auth": self._tokens.access}

    def _adopt(self, tokens: BitrixTokens) -> None:
        self._previous = (self._tokens.access, self._tokens.refresh)
        self._tokens = tokens
        self._generation += 1
        self._remember()

    async def refresh(self, request_token: TokenRequest, seen_generation: int) -> None:
        """Renew the person's tokens, unless another call did since `seen_generation` (see the module docstring).

        Raises `PortalError` with the OAuth server's code when it refused, `TransportError` when its answer was
        lost or is not a token answer, `Refusal` (`SIGNED_OUT`) when the person's sign-in ended meanwhile.
        """
        store = self._store
        if store is None or self._tokens.refresh is None:
            raise RuntimeError("this credential cannot be refreshed")
        async with self._lock:
            if self._generation != seen_generation:
                return
            renewed: list[BitrixTokens] = []

            async def renew(stored: BitrixTokens) -> BitrixTokens:
                renewed.append(await self._exchange(request_token, stored))
                return renewed[-1]

            try:
                tokens = await store.refresh_bitrix_tokens(self._user_id, self._version, self._tokens, renew)
            except PortalError as error:
                if error.is_code("invalid_grant"):
                    if await self._rotated_elsewhere(store):
                        return  # another process rotated the pair while this one asked: use theirs
                    await store.revoke(self._user_id)
                    logger.warning(
                        "The portal refused to renew the sign-in of user %d; their access ended", self._user_id
                    )
                raise
            if tokens is None:
                raise _signed_out()
            if tokens.access != self._tokens.access:
                self._adopt(tokens)  # ours, or the pair another process rotated meanwhile
            if renewed:
                logger.info("Refreshed the Bitrix24 tokens of user %d", self._user_id)

    async def _exchange(self, request_token: TokenRequest, stored: BitrixTokens) -> BitrixTokens:
        """One exchange of `stored`'s refresh token at the OAuth server: the next pair."""
        if stored.refresh is None:
            raise RuntimeError("this credential cannot be refreshed")
        renewed = await exchange_refresh_token(
            request_token,
            self._config.oauth_url,
            self._config.client_id,
            self._config.client_secret,
            stored.refresh,
            self._secrets,
            _refusal_hint,
        )
        return BitrixTokens(renewed.access_token, renewed.refresh_token)

    async def _rotated_elsewhere(self, store: PeopleStore) -> bool:
        """Adopt the pair another process saved since ours was read; whether there was one."""
        stored = await store.bitrix_tokens(self._user_id)
        if stored is None or stored[0] != self._version:
            raise _signed_out()
        if stored[1].access == self._tokens.access:
            return False
        self._adopt(stored[1])
        return True


def _refusal_hint(code: str) -> str | None:
    return SIGN_IN_AGAIN if code.lower() == "invalid_grant" else None


def _signed_out() -> Refusal:
    return Refusal(
        "SIGNED_OUT",
        "This person's sign-in has ended (revoked, or they signed in again).",
        hint="Call again; the MCP client asks the person to sign in when needed.",
    )
