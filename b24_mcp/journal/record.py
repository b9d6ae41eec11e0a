"""A journal entry: the attempt, its events, the record written; and the store every journal backend is."""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from b24_mcp.errors import Refusal
from b24_mcp.tracing import current_request_id

Event = Literal["intent", "deleted", "error", "cancelled"]

OUTCOMES = frozenset({"deleted", "error"})
# A line longer than this is skipped unread by the reader (a snapshot is far smaller; the file may not be ours).


class ConfirmedBy(StrEnum):
    """How a deletion was confirmed, as results and the journal record it."""

    ELICITATION = "elicitation"
    TOKEN = "token"
    NONE = "none"


def new_attempt_id() -> str:
    """A fresh attempt id: 16 random hex digits."""
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Attempt:
    """One deletion attempt as the journal records it: what, how confirmed, and the full item snapshot.

    `attempt_id` (the `attempt` field of each line) is shared by the attempt's intent and outcome lines;
    `request_id` (`requestId`) is the tool call's that made it, as its log lines carry it.
    """

    portal: str
    user_id: int | None
    entity_type_id: int
    item_id: int
    confirmation: ConfirmedBy
    item: Mapping[str, Any] | None
    attempt_id: str = field(default_factory=new_attempt_id)
    user_name: str | None = None  # the signed-in person who asked (sign-in); `user_id` is theirs then
    request_id: str | None = field(default_factory=current_request_id)


@dataclass(frozen=True)
class Entry:
    """One line of the journal: an event of an attempt, with the error or a note where there is one."""

    event: Event
    attempt: Attempt
    error: str | None = None
    error_description: str | None = None
    note: str | None = None


class JournalUnwritable(Refusal):
    """`JOURNAL_UNWRITABLE`: the journal did not take every line asked for.

    `durable` counts the entries, from the first one passed to `write_many`, whose whole lines are written and
    fsynced; the others are not in the file at all (no cut-off line is left). The deletion code may send exactly
    the items whose intent is among the first `durable` entries, and must report `JOURNAL_UNWRITABLE` for the rest.
    """

    def __init__(self, description: str, *, durable: int = 0, hint: str | None = None) -> None:
        super().__init__("JOURNAL_UNWRITABLE", description, hint=hint)
        self.durable = durable


def entry_record(entry: Entry) -> dict[str, Any]:
    """The JSON object the journal keeps of `entry`: a line of the file, the `entry` of a table row."""
    attempt = entry.attempt
    record: dict[str, Any] = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "event": entry.event,
        "attempt": attempt.attempt_id,
        **({"requestId": attempt.request_id} if attempt.request_id is not None else {}),
        "portal": attempt.portal,
        "userId": attempt.user_id,
        **({"userName": attempt.user_name} if attempt.user_name is not None else {}),
        "entityTypeId": attempt.entity_type_id,
        "id": attempt.item_id,
        "confirmation": attempt.confirmation,
        # The complete snapshot, once per line: it is what recreating the item by hand needs.
        "item": dict(attempt.item) if attempt.item is not None else None,
    }
    if entry.error is not None:
        record["error"] = entry.error
        record["error_description"] = entry.error_description
    if entry.note is not None:
        record["note"] = entry.note
    return record


class JournalStore(ABC):
    """Where deletion events are recorded: a file (`Journal`), or a table shared by replicas
    (`shared.journal.TableJournal`). Both take every entry durably before returning, or raise `JournalUnwritable`
    with `durable` counting the entries, from the first, that were taken."""

    async def write(
        self,
        event: Event,
        attempt: Attempt,
        *,
        error: str | None = None,
        error_description: str | None = None,
        note: str | None = None,
    ) -> None:
        """Record one event durably; `JournalUnwritable` (a `Refusal`, `JOURNAL_UNWRITABLE`) when it is not taken."""
        await self.write_many([Entry(event, attempt, error, error_description, note)])

    async def problem(self) -> str | None:
        """Why an entry could not be recorded now, or None when it could (the readiness probe asks)."""
        return None

    @abstractmethod
    async def write_many(self, entries: Sequence[Entry]) -> None:
        """Record `entries` in order, durably; see the class docstring for a failure."""
