"""`b24-mcp db upgrade`: create or upgrade the shared database's schema ahead of the servers (they also do it
themselves on their first use of the database); and what `b24-mcp check` says of the database."""

from __future__ import annotations

import sys

from b24_mcp.postgres.database import Database, DatabaseUnavailableError
from b24_mcp.postgres.schema import LATEST, SCHEMA, upgrade
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


def check_database(url: str) -> str | None:
    """Why deletions could not be journaled in the database now, or None when they could (for `b24-mcp check`):
    it must answer, and its schema must not be newer than this b24-mcp knows (none yet is fine: the servers make
    it). Nothing is created or changed."""
    import psycopg

    database = Database(url, manage_schema=False)  # for its safe wording of errors only; no pool is opened
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as connection:
            row = connection.execute(
                "SELECT CASE WHEN to_regclass('b24mcp.schema_version') IS NULL THEN 0 "
                "ELSE (SELECT max(version) FROM b24mcp.schema_version) END"
            ).fetchone()
    except psycopg.Error as exc:
        return database.reason(exc)
    found = int(row[0]) if row is not None and row[0] is not None else 0
    if found > LATEST:
        return f"its schema is version {found}, newer than this b24-mcp knows ({LATEST}); upgrade b24-mcp"
    return None
