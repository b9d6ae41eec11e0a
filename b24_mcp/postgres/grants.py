"""OAuth token pairs in the shared database, refreshed by one replica at a time.

Bitrix24 rotates the refresh token at every refresh: two replicas refreshing the same grant at once would leave
one of them with a dead refresh token (`invalid_grant`). So a refresh happens inside a transaction holding the
grant's row lock (`SELECT … FOR UPDATE`): the first replica to get it exchanges the refresh token and stores the
new pair; a replica that waited finds a pair other than the one it holds and uses that, without asking the OAuth
server again, unless its access token has expired too (by the database's clock, from the OAuth answer's
`expires_in`), when it refreshes with the stored refresh token. A grant not yet in the table is seeded with the
pair the replica holds (the configured one, or its token file's); from then on the table's pair wins, as a token
file's does.

A row is `(portal, holder)`: `app:<client_id>` for the server's own grant. (Signed-in people's pairs live in the
people store's own table, `signin_people`, refreshed under that row's lock: see `people`.)

Tokens are never stored in clear text: each is sealed with AES-256-GCM (`signin.sealing.Sealer`) under a key
derived (HKDF-SHA256) from `B24_CONFIRM_SECRET`, which every replica shares already, and bound to its row and
column, so a copy of the database (a backup, a dump) holds no usable token and no second secret is needed. A row
that does not open with this secret (the secret changed) is treated as absent and overwritten by the next refresh.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from b24_mcp.errors import TransportError
from b24_mcp.portal.auth import Renew, TokenPair
from b24_mcp.postgres.database import Database, DatabaseUnavailableError
from b24_mcp.postgres.schema import SCHEMA
from b24_mcp.secure.sealing import Sealer

logger = logging.getLogger(__name__)

# An access token with less life left than this is refreshed rather than adopted.
FRESH_MARGIN_SECONDS = 60

_SEED = f"""
INSERT INTO {SCHEMA}.grants (portal, holder, access_token, refresh_token, user_id) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (portal, holder) DO NOTHING
"""
_LOCK = f"""
SELECT access_token, refresh_token, user_id,
       access_expires_at IS NULL OR access_expires_at > clock_timestamp() + make_interval(secs => %s)
FROM {SCHEMA}.grants WHERE portal = %s AND holder = %s FOR UPDATE
"""
_STORE = f"""
UPDATE {SCHEMA}.grants SET access_token = %s, refresh_token = %s, user_id = %s,
    access_expires_at = clock_timestamp() + make_interval(secs => %s), generation = generation + 1,
    updated_at = clock_timestamp()
WHERE portal = %s AND holder = %s
"""


def application_holder(client_id: str | None) -> str:
    """The `holder` of the server's own grant."""
    return f"app:{client_id or '-'}"


@dataclass
class _Progress:
    renewed: TokenPair | None = None


class SharedGrants:
    """The `auth.GrantStore` of one grant (portal and holder) shared by every replica."""

    def __init__(self, database: Database, key: bytes, *, portal: str, holder: str) -> None:
        self._database = database
        self._sealer = Sealer(key)
        self._portal = portal
        self._holder = holder

    def __repr__(self) -> str:
        return f"SharedGrants(portal={self._portal!r}, holder={self._holder!r})"

    def _context(self, column: str) -> str:
        return f"b24-mcp grants\n{self._portal}\n{self._holder}\n{column}"

    def _seal(self, text: str | None, column: str) -> str | None:
        return None if text is None else self._sealer.seal(text, self._context(column))

    def _open(self, sealed: str | None, column: str) -> str | None:
        return None if sealed is None else self._sealer.open(sealed, self._context(column))

    async def refresh(self, current: TokenPair, renew: Renew) -> TokenPair:
        """The pair to use from now on: the stored one when another replica rotated it since `current` and its
        access token is still fresh, else `renew(stored)` (one exchange at the OAuth server), stored.

        `renew`'s own errors pass through (nothing stored). `TransportError` `DATABASE_UNAVAILABLE` when the
        grant cannot be locked: refreshing without the lock could leave the other replicas with a dead token.
        """
        progress = _Progress()

        async def exchange(connection: Any) -> TokenPair:
            async with connection.transaction():
                await connection.execute(
                    _SEED,
                    (
                        self._portal,
                        self._holder,
                        self._seal(current.access_token, "access_token"),
                        self._seal(current.refresh_token, "refresh_token"),
                        current.user_id,
                    ),
                )
                cursor = await connection.execute(_LOCK, (FRESH_MARGIN_SECONDS, self._portal, self._holder))
                row = await cursor.fetchone()
                stored = self._stored(row)
                if progress.renewed is None:  # not when retrying to store a pair already renewed
                    if stored is not None and stored.access_token != current.access_token and row[3]:
                        return stored
                    progress.renewed = await renew(stored or current)
                renewed = progress.renewed
                await connection.execute(
                    _STORE,
                    (
                        self._seal(renewed.access_token, "access_token"),
                        self._seal(renewed.refresh_token, "refresh_token"),
                        renewed.user_id,
                        renewed.expires_in if renewed.expires_in is not None else 3600,
                        self._portal,
                        self._holder,
                    ),
                )
                return renewed

        try:
            return await self._database.run(exchange)
        except DatabaseUnavailableError as exc:
            if progress.renewed is not None:
                logger.error(
                    "The refreshed OAuth tokens for %s could not be stored in the shared database (%s): this replica "
                    "uses them, but the other replicas hold a refresh token that no longer works",
                    self._portal,
                    exc,
                )
                return progress.renewed
            raise TransportError(
                "DATABASE_UNAVAILABLE",
                f"The OAuth access token expired and was not renewed: the replicas renew it one at a time through "
                f"the shared database, which cannot be reached ({exc}).",
                retryable=True,
                maybe_sent=False,
            ) from None

    def _stored(self, row: Any) -> TokenPair | None:
        if row is None:
            return None
        access = self._open(row[0], "access_token")
        if access is None:
            logger.warning(
                "The stored OAuth tokens for %s do not open with this B24_CONFIRM_SECRET; using this replica's",
                self._portal,
            )
            return None
        refresh = self._open(row[1], "refresh_token")
        return TokenPair(access, refresh, int(row[2]) if row[2] is not None else None)
