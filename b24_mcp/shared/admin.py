"""`b24-mcp db upgrade`: create or upgrade the shared database's schema ahead of the servers (they also do it
themselves on their first use of the database)."""

from __future__ import annotations

import sys

from b24_mcp.shared.database import Database, DatabaseUnavailableError
from b24_mcp.shared.schema import SCHEMA, upgrade
from b24_mcp.text import for_terminal


def upgrade_command(url: str) -> int:
    """Bring the schema to this version of b24-mcp; one line saying what was done. Exit status 1 on failure."""
    import anyio

    async def run() -> tuple[int, int]:
        database = Database(url, manage_schema=False)
        try:
            async with database.connection() as connection:
                return await upgrade(connection)
        finally:
            await database.aclose()

    try:
        before, after = anyio.run(run)
    except DatabaseUnavailableError as exc:
        print(f"b24-mcp: the database schema was not upgraded: {for_terminal(str(exc))}", file=sys.stderr)
        return 1
    if before == after:
        print(f"Schema {SCHEMA} is at version {after}, the current one: nothing to do.")
    else:
        print(f"Schema {SCHEMA} upgraded from version {before} to {after}.")
    return 0
