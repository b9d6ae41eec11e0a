"""A journal entry: the attempt, its events, the record written; and the store every journal backend is."""

from __future__ import annotations

import logging
import secrets
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

import anyio

from b24_mcp.errors import Refusal
from b24_mcp.telemetry.tracing import current_request_id

logger = logging.getLogger(__name__)

Event = Literal["intent", "deleted", "error", "cancelled"]

OUTCOMES = frozenset({"deleted", "error"})
MAX_KEPT = 10_000  # refused outcomes kept in memory (each holds its item's snapshot)
RETRY_SECONDS = 5.0
# A line longer than this is skipped unread by the reader (a snapshot is far smaller; the file may not be ours).


class ConfirmedBy(StrEnum):
    """How a deletion was confirmed, as results and the journal record it."""

    ELICITATION = "elicitation"
    TOKEN = "token"
    PAGE = "page"  # approved by the signed-in person on this server's own page
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
    ts: str | None = None  # when it happened, for an entry written late (kept while the journal refused it)


class JournalUnwritable(Refusal):
    """`JOURNAL_UNWRITABLE`: the journal did not take every line asked for.

    `durable` counts the entries, from the first one passed to `write_many`, whose whole lines are written and
    fsynced; the others are not in the file at all (no cut-off line is left). The deletion code may send exactly
    the items whose intent is among the first `durable` entries, and must report `JOURNAL_UNWRITABLE` for the rest.
    """

    def __init__(self, description: str, *, durable: int = 0, hint: str | None = None) -> None:
        super().__init__("JOURNAL_UNWRITABLE", description, hint=hint)
        self.durable = durable


def now() -> str:
    """The journal's timestamp for this moment: UTC, milliseconds, `Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def entry_record(entry: Entry) -> dict[str, Any]:
    """The JSON object the journal keeps of `entry`: a line of the file, the `entry` of a table row."""
    attempt = entry.attempt
    record: dict[str, Any] = {
        "ts": entry.ts or now(),
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
    (`postgres.journal.TableJournal`). Both take every entry durably before returning, or raise `JournalUnwritable`
    with `durable` counting the entries, from the first, that were taken.

    An outcome the journal refuses (its intent is written, the portal acted: a full disk, a database outage) is not
    lost: `write_outcomes` keeps it in memory (at most `MAX_KEPT`, the oldest dropped first), and it is written
    before the next entries and every `retry_every` seconds while `tend` runs (the server's lifetime), with the time
    it happened. Only a process that ends first loses it: `b24-mcp journal reconcile` then settles its intent.
    """

    retry_every: float = RETRY_SECONDS

    def __init__(self) -> None:
        self._kept: deque[Entry] = deque()
        self._writing = 0  # kept outcomes being written right now

    @property
    def kept(self) -> int:
        """How many refused outcomes wait to be written (or are being written)."""
        return len(self._kept) + self._writing

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

    async def write_many(self, entries: Sequence[Entry]) -> None:
        """Record `entries` in order, durably (kept outcomes first); see the class docstring for a failure."""
        if self._kept:
            await self.write_kept()
        await self._take(entries)

    async def write_outcomes(self, entries: Sequence[Entry]) -> JournalUnwritable | None:
        """Record the outcomes of attempts whose intents are written; what the journal refuses is kept and written
        later (see the class docstring). Returns the refusal, or None when all were written now."""
        try:
            await self.write_many(entries)
        except JournalUnwritable as exc:
            self._keep([replace(entry, ts=entry.ts or now()) for entry in entries[exc.durable :]])
            return exc
        return None

    async def write_kept(self) -> bool:
        """Write the kept outcomes now; True when none is left."""
        if not self._kept:
            return True
        entries = list(self._kept)
        self._kept.clear()  # a concurrent call writes only what is kept after this point
        self._writing += len(entries)
        try:
            with anyio.CancelScope(shield=True):  # taken out of the deque: written, or put back
                await self._take(entries)
        except JournalUnwritable as exc:
            self._kept.extendleft(reversed(entries[exc.durable :]))
            self._bound()
            return False
        finally:
            self._writing -= len(entries)
        logger.warning("The journal takes writes again: %d outcome(s) kept meanwhile are written", len(entries))
        return True

    async def tend(self) -> None:
        """For the server's lifetime: say once in the log when unfinished intents wait, then write kept outcomes as
        soon as the journal takes them. Never raises."""
        try:
            unfinished = len(await self.unfinished())
        except Exception as exc:  # a journal that cannot be read now says so at the first deletion
            logger.debug("The journal's unfinished intents could not be counted: %s", exc)
            unfinished = 0
        if unfinished:
            logger.warning(
                "The journal has %d deletion attempt(s) with an intent but no outcome (a crash or an outage left "
                "them open, or another replica is deleting right now): `b24-mcp journal reconcile` settles them by "
                "reading the portal",
                unfinished,
            )
        while True:
            await anyio.sleep(self.retry_every)
            if self._kept:
                try:
                    await self.write_kept()
                except Exception as exc:  # the next round tries again
                    logger.debug("Writing the kept outcomes failed: %s", exc)

    async def last_try(self) -> None:
        """When the server stops: write the kept outcomes once more; the log says how many are lost otherwise."""
        if self._kept and not await self.write_kept():
            logger.error(
                "%d outcome(s) the journal refused are lost as this server stops: `b24-mcp journal reconcile` settles "
                "their intents by reading the portal",
                self.kept,
            )

    def _keep(self, entries: Sequence[Entry]) -> None:
        if entries:
            logger.error(
                "The journal refused %d outcome(s) of deletion attempts whose intents it holds; they are kept in "
                "memory and written as soon as it takes writes again",
                len(entries),
            )
        self._kept.extend(entries)
        self._bound()

    def _bound(self) -> None:
        dropped = [self._kept.popleft().attempt.attempt_id for _ in range(len(self._kept) - MAX_KEPT)]
        if dropped:
            logger.error(
                "%d outcome(s) the journal refused were dropped (more than %d kept): their intents stay unfinished "
                "until `b24-mcp journal reconcile` settles them",
                len(dropped),
                MAX_KEPT,
            )

    @abstractmethod
    async def _take(self, entries: Sequence[Entry]) -> None:
        """Record `entries` in order, durably; see the class docstring for a failure."""

    @abstractmethod
    async def unfinished(self) -> list[dict[str, Any]]:
        """The intents without an outcome, oldest first, as the journal keeps them (JSON objects)."""
