"""The audit journal: one JSON line per deletion event, with a full snapshot of what was deleted.

An `intent` line is written and fsynced before the portal is asked to delete, so a deletion that could not be
recorded never happens. The file is created with mode 0600; no secret is ever written to it.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread

from b24_mcp.errors import Refusal

Event = Literal["intent", "deleted", "error", "cancelled"]


@dataclass(frozen=True)
class Attempt:
    """One deletion attempt as the journal records it: what, how confirmed, and the full item snapshot."""

    portal: str
    user_id: int | None
    entity_type_id: int
    item_id: int
    confirmation: Literal["elicitation", "token", "none"]
    item: Mapping[str, Any] | None


@dataclass(frozen=True)
class Entry:
    """One line of the journal: an event of an attempt, with the error or a note where there is one."""

    event: Event
    attempt: Attempt
    error: str | None = None
    error_description: str | None = None
    note: str | None = None


def _line(entry: Entry) -> str:
    attempt = entry.attempt
    record: dict[str, Any] = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "event": entry.event,
        "portal": attempt.portal,
        "userId": attempt.user_id,
        "entityTypeId": attempt.entity_type_id,
        "id": attempt.item_id,
        "confirmation": attempt.confirmation,
        "item": dict(attempt.item) if attempt.item is not None else None,
    }
    if entry.error is not None:
        record["error"] = entry.error
        record["error_description"] = entry.error_description
    if entry.note is not None:
        record["note"] = entry.note
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


class Journal:
    """Appends deletion events to a JSON Lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def write(
        self,
        event: Event,
        attempt: Attempt,
        *,
        error: str | None = None,
        error_description: str | None = None,
        note: str | None = None,
    ) -> None:
        """Append one event durably; `Refusal` `JOURNAL_UNWRITABLE` when the file cannot be written."""
        await self.write_many([Entry(event, attempt, error, error_description, note)])

    async def write_many(self, entries: Sequence[Entry]) -> None:
        """Append several events with one write and one fsync (a batch's intents go to disk together)."""
        data = "".join(_line(entry) for entry in entries).encode()
        try:
            await anyio.to_thread.run_sync(self._append, data)
        except OSError as exc:
            raise Refusal(
                "JOURNAL_UNWRITABLE",
                f"The audit journal {self.path} cannot be written ({exc.strerror or type(exc).__name__}); "
                "a deletion that cannot be recorded is not performed. Fix B24_AUDIT_LOG or its permissions.",
            ) from None

    def _append(self, data: bytes) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def read_recent(path: Path, limit: int) -> list[dict[str, Any]]:
    """The last `limit` parseable entries of a journal, oldest first; empty when there is no journal."""
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as lines:
        tail = deque(lines, maxlen=limit)
    entries = []
    for line in tail:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def print_journal(path: Path, *, limit: int, as_json: bool) -> int:
    """Print the journal's recent entries to stdout: a table, or the raw lines with `as_json`."""
    entries = read_recent(path, limit)
    if as_json:
        for entry in entries:
            print(json.dumps(entry, ensure_ascii=False))
        return 0
    if not entries:
        print(f"No journal entries in {path}.")
        return 0
    from b24_mcp.items import display_name

    rows = [("TIME (UTC)", "EVENT", "TYPE", "ID", "TITLE")]
    for entry in entries:
        item = entry.get("item")
        title = (display_name(item) if isinstance(item, dict) else None) or ""
        if entry.get("error"):
            title = f"{title} [{entry['error']}]".strip()
        rows.append(
            (
                str(entry.get("ts", "")),
                str(entry.get("event", "")),
                str(entry.get("entityTypeId", "")),
                str(entry.get("id", "")),
                title,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4])
    return 0
