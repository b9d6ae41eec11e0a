"""The people store: registered MCP clients, sign-ins in flight, MCP tokens, and each person's Bitrix24 tokens.

`PeopleStore` is what the rest of sign-in uses; `sqlite.SQLiteStore` is the embedded default (stdlib `sqlite3`, one
file under the state directory, mode 0600, no service to run). A PostgreSQL store for replicas (`postgres`)
implements the same protocol; its notes are on the protocol's methods.

What is stored how (see `secure.sealing`): MCP access and refresh tokens, authorization codes, sign-in states and
consent ids only as SHA-256 digests; Bitrix24 tokens and minted client secrets sealed with the key file; names and
ids in clear. Every method is atomic; the single-use ones (`take_*`, `rotate_refresh`) let exactly one caller win.

Growth is bounded: expired rows go whenever new ones of their kind are written, and unauthenticated endpoints
(registration, sign-in attempts) stop at a cap (`StoreFull`) rather than fill the disk. Before that cap, each source
address has its share (`SourceFull`, counted in the same transaction as the rows): a flood from one address fills
its own share, not everyone's. A person's consent is to one client returning to one exact redirect URI.
"""

from __future__ import annotations

from typing import Protocol

from mcp.shared.auth import OAuthClientInformationFull

from b24_mcp.signin.records import (
    Authorization,
    AwaitingConsent,
    BitrixTokens,
    Grant,
    IssuedCode,
    Person,
    Renewal,
    SignedIn,
    Taken,
)

MAX_CLIENTS = 10_000
MAX_PENDING = 10_000
MAX_CLIENTS_PER_SOURCE = 100  # registrations not yet used for a sign-in, from one source address
MAX_PENDING_PER_SOURCE = 100  # sign-ins in flight begun from one source address
# A registration that never led to a sign-in is forgotten after 30 minutes: longer than a sign-in begun right after
# it may take (15 minutes at the portal, 10 on the consent page), short enough that a flood of them soon goes.
UNUSED_CLIENT_SECONDS = 1800
SCHEMA_VERSION = 3  # 2: consents per redirect URI (those of version 1 are dropped), the source of rows in flight;
# 3: the approval page (approvals, its browser sessions and sign-ins: `signin.approvals`)


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
