"""The records of sign-in: a person, their Bitrix24 tokens, a grant, a sign-in in flight, an issued code."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal


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
