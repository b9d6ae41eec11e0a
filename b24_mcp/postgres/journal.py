"""The audit journal as a table of the shared database: every replica's deletions in one place.

Each row is one event of one attempt, with the same JSON object a line of the journal file has (`entry`, written
with `text.safe_json`, so a snapshot's control characters and NULs stay exact), plus the columns to find it by
and the replica that wrote it. Rows are ordered by `seq`.

`write_many` inserts its entries in one transaction, committed before it returns: the intents of a deletion are
in the table before the deletion is sent, or none is and `JournalUnwritable` (`durable=0`) stops it. Writing an
(attempt, event) that is already there does nothing, so a write retried after its answer was lost is harmless.
When the database comes back after an outage, writes work again without a restart (the pool reconnects).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from b24_mcp.journal.reader import Tail, print_tail
from b24_mcp.journal.record import Entry, JournalStore, JournalUnwritable, entry_record
from b24_mcp.postgres.database import Database, DatabaseUnavailableError
from b24_mcp.postgres.schema import LATEST, SCHEMA, schema_version
from b24_mcp.postgres.spent import unrecordable
from b24_mcp.telemetry import metrics
from b24_mcp.text import for_terminal, safe_json

_INSERT = f"""
INSERT INTO {SCHEMA}.journal (event, attempt, portal, entity_type_id, item_id, replica, entry)
VALUES (%s, %s, %s, %s, %s, %s, %s::json)
ON CONFLICT (attempt, event) DO NOTHING
"""
_TAIL = f"SELECT seq, entry FROM {SCHEMA}.journal ORDER BY seq DESC LIMIT %s"
_OPEN_INTENTS = f"""
FROM {SCHEMA}.journal AS intent
WHERE intent.event = 'intent' AND NOT EXISTS (
    SELECT 1 FROM {SCHEMA}.journal AS outcome
    WHERE outcome.attempt = intent.attempt AND outcome.event IN ('deleted', 'error')
)
ORDER BY intent.seq
"""
_UNFINISHED = f"SELECT intent.seq {_OPEN_INTENTS}"
_UNFINISHED_ENTRIES = f"SELECT intent.entry {_OPEN_INTENTS}"
_SINCE = f"SELECT count(*) FROM {SCHEMA}.journal WHERE seq >= %s"


class TableJournal(JournalStore):
    """The `journal.JournalStore` of every replica sharing the database."""

    def __init__(self, database: Database) -> None:
        super().__init__()
        self._database = database

    def __repr__(self) -> str:
        return "TableJournal(B24_DATABASE_URL)"

    async def unfinished(self) -> list[dict[str, Any]]:
        """The table's intents without an outcome, oldest first."""

        async def read(connection: Any) -> list[dict[str, Any]]:
            if await schema_version(connection) == 0:
                return []
            cursor = await connection.execute(_UNFINISHED_ENTRIES)
            return [entry for (entry,) in await cursor.fetchall() if isinstance(entry, dict)]

        return await self._database.run(read)

    async def _take(self, entries: Sequence[Entry]) -> None:
        """Insert `entries` in one transaction: all are committed when it returns, none when it raises
        `JournalUnwritable` (whose `durable` is then 0)."""
        if not entries:
            return
        replica = self._database.replica
        rows = [
            (
                entry.event,
                entry.attempt.attempt_id,
                entry.attempt.portal,
                entry.attempt.entity_type_id,
                entry.attempt.item_id,
                replica,
                safe_json(entry_record(entry)),
            )
            for entry in entries
        ]

        async def insert(connection: Any) -> None:
            async with connection.transaction(), connection.cursor() as cursor:
                await cursor.executemany(_INSERT, rows)

        try:
            with metrics.journal_write("database"):
                await self._database.run(insert)
        except DatabaseUnavailableError as exc:
            raise unrecordable(str(exc)) from None

    async def problem(self) -> str | None:
        """Why a row could not be inserted now (the database does not answer, or its schema is not this
        server's), or None."""
        try:
            version = await self._database.run(schema_version)
        except DatabaseUnavailableError as exc:
            return f"the shared database cannot be used: {exc}"
        if version != LATEST:
            return f"the shared database's schema is at version {version}, this server's is {LATEST}"
        return None


async def read_table_tail(database: Database, limit: int) -> Tail:
    """The table's last `limit` entries and what is unfinished, as `journal.read_tail` reads a file."""

    async def read(connection: Any) -> Tail:
        if await schema_version(connection) == 0:
            return Tail([], frozenset(), 0, 0, 0)  # no server has used this database yet
        cursor = await connection.execute(_TAIL, (max(limit, 0),))
        rows = list(reversed(await cursor.fetchall()))
        cursor = await connection.execute(_UNFINISHED)
        open_intents = [int(row[0]) for row in await cursor.fetchall()]
        reach = 0
        if open_intents:
            cursor = await connection.execute(_SINCE, (open_intents[0],))
            counted = await cursor.fetchone()
            reach = int(counted[0]) if counted is not None else 0
        first = int(rows[0][0]) if rows else None
        position = {int(seq): index for index, (seq, _) in enumerate(rows)}
        unfinished = frozenset(position[seq] for seq in open_intents if seq in position)
        before = sum(1 for seq in open_intents if first is None or seq < first)
        entries = [entry if isinstance(entry, dict) else {} for _, entry in rows]
        return Tail(entries, unfinished, before, reach, 0)

    return await database.run(read)


def print_table_journal(url: str, *, limit: int, as_json: bool) -> int:
    """`b24-mcp journal` when B24_DATABASE_URL is set: the table's recent entries, as `journal.print_journal`
    prints a file's. Returns 1 when the table cannot be read."""
    import anyio

    async def read() -> Tail:
        database = Database(url, manage_schema=False)
        try:
            return await read_table_tail(database, limit)
        finally:
            await database.aclose()

    try:
        tail = anyio.run(read)
    except DatabaseUnavailableError as exc:
        print(f"b24-mcp: the journal in the database cannot be read: {for_terminal(str(exc))}", file=sys.stderr)
        return 1
    return print_tail(tail, as_json=as_json, where="the database (B24_DATABASE_URL)")


__all__ = ["JournalUnwritable", "TableJournal", "print_table_journal", "read_table_tail"]
