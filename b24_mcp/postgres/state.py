"""Everything the replicas share, over the process's one pool: what `build_app` takes with `B24_DATABASE_URL`."""

from __future__ import annotations

from b24_mcp.portal.auth import GrantStore
from b24_mcp.postgres.database import Database
from b24_mcp.postgres.grants import SharedGrants, application_holder
from b24_mcp.postgres.journal import TableJournal
from b24_mcp.postgres.pacing import SharedBucket
from b24_mcp.postgres.spent import SharedSpentTokens
from b24_mcp.secure.keys import grants_key


class SharedState:
    """The shared stores of one server process: spent tokens, the journal, the portal's bucket, OAuth grants."""

    def __init__(self, database: Database, confirm_secret: bytes) -> None:
        self.database = database
        self._grants_key = grants_key(confirm_secret)
        self.spent = SharedSpentTokens(self.database)
        self.journal = TableJournal(self.database)

    def __repr__(self) -> str:
        return "SharedState(B24_DATABASE_URL)"

    def bucket(self, *, portal: str, credential: str, capacity: int, rate: float) -> SharedBucket:
        """The portal's bucket as every replica fills it; blocks of `credential`'s methods shared too."""
        return SharedBucket(self.database, portal=portal, credential=credential, capacity=capacity, rate=rate)

    def grants(self, *, portal: str, client_id: str | None) -> GrantStore:
        """The application's OAuth grant on `portal`, refreshed by one replica at a time."""
        return SharedGrants(self.database, self._grants_key, portal=portal, holder=application_holder(client_id))

    async def aclose(self) -> None:
        """Close the pool."""
        await self.database.aclose()
