"""`b24-mcp journal reconcile`: settle every unfinished intent of the journal by reading the portal.

An intent without an outcome (the process ended between the two, or an outcome the journal refused was never
written) is settled by what the portal says of its item now, read with `crm.item.get` in `batch` requests of 50
(it tells a missing item, `NOT_FOUND`, from one this user may not see, `ACCESS_DENIED`, where `crm.item.list` leaves
both out alike):
- gone: a `deleted` outcome, noted as confirmed by absence;
- still there: an `error` outcome `NOT_DELETED`, unless the intent is so recent that its deletion may still be under
  way (younger than `B24_CALL_DEADLINE` plus a margin): then it is left for a later run;
- anything else (the read failed, another portal, a line that is not a well-formed intent): left unfinished.
Each outcome carries its intent's attempt id. The file journal and the shared table are handled alike (whichever
`build_app` picks), with the portal and credentials of the settings, as `b24-mcp check` uses them.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from b24_mcp.app import build_app
from b24_mcp.bulk.selection import BATCH_SIZE, chunks, split_batch
from b24_mcp.deleting.app import App
from b24_mcp.errors import B24Error
from b24_mcp.journal.reader import TITLE_WIDTH
from b24_mcp.journal.record import Attempt, ConfirmedBy, Entry, JournalUnwritable
from b24_mcp.portal.items import display_name, type_name
from b24_mcp.settings import Settings
from b24_mcp.text import for_terminal

GONE_NOTE = (
    "Reconciled (b24-mcp journal reconcile): the item is no longer found on the portal, so the deletion is "
    "confirmed by absence."
)
STILL_THERE = "NOT_DELETED"
MARGIN_SECONDS = 30.0  # beyond B24_CALL_DEADLINE: writing the outcome after the portal's answer
_DESCRIPTION = 300

Key = tuple[int, int]  # (entityTypeId, id)


@dataclass(frozen=True)
class Read:
    """What the portal says of one item now: there (with its `updatedTime`), gone, or an error."""

    there: bool = False
    version: str = ""
    error: B24Error | None = None


@dataclass(frozen=True)
class Settled:
    """What reconcile did with one unfinished intent: `deleted`, `not deleted` or `unfinished`, and why."""

    verdict: str
    subject: str
    reason: str
    entry: Entry | None = None  # the outcome to journal

    def line(self) -> str:
        return f"{self.verdict:<12} {self.subject}: {self.reason}"


async def reconcile(app: App, *, recent: float) -> list[Settled]:
    """Settle every unfinished intent of `app`'s journal by reading `app`'s portal, and journal the outcomes.

    `recent` is how many seconds an intent may still have its deletion under way. Returns one `Settled` per intent.
    """
    intents = await app.journal.unfinished()
    attempts: list[tuple[dict[str, Any], Attempt | None, str]] = [
        _attempt(intent, app.portal.host) for intent in intents
    ]
    keys = sorted({(a.entity_type_id, a.item_id) for _, a, _ in attempts if a is not None})
    reads = await _read(app, keys)
    now = datetime.now(UTC)
    settled = [_settle(intent, attempt, problem, reads, now, recent) for intent, attempt, problem in attempts]
    entries = [each.entry for each in settled if each.entry is not None]
    try:
        await app.journal.write_many(entries)
    except JournalUnwritable as exc:
        written = {id(entry) for entry in entries[: exc.durable]}
        reason = f"could not be journaled ({for_terminal(exc.description, 300)}); left unfinished"
        settled = [
            each if each.entry is None or id(each.entry) in written else Settled("unfinished", each.subject, reason)
            for each in settled
        ]
    return settled


def _attempt(intent: Mapping[str, Any], host: str) -> tuple[dict[str, Any], Attempt | None, str]:
    """The attempt an intent line records, or the reason it cannot be settled here. Every field is checked: the
    journal is a file on disk."""
    entity_type_id: Any = intent.get("entityTypeId")
    item_id: Any = intent.get("id")
    attempt_id, portal = intent.get("attempt", ""), intent.get("portal")
    user_id, user_name, item = intent.get("userId"), intent.get("userName"), intent.get("item")
    confirmation = intent.get("confirmation")
    malformed = dict(intent), None, "the intent line is not well-formed; left unfinished"
    if not (_positive(entity_type_id) and _positive(item_id) and isinstance(attempt_id, str)):
        return malformed
    if not (isinstance(portal, str) and confirmation in set(ConfirmedBy)):
        return malformed
    if not ((user_id is None or _positive(user_id)) and isinstance(user_name, str | None)):
        return malformed
    if not isinstance(item, dict | None):
        return malformed
    if portal != host:
        return dict(intent), None, f"recorded for another portal ({portal}); run reconcile with its credentials"
    attempt = Attempt(portal, user_id, entity_type_id, item_id, ConfirmedBy(confirmation), item, attempt_id, user_name)
    return dict(intent), attempt, ""


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


async def _read(app: App, keys: Sequence[Key]) -> dict[Key, Read]:
    """Each item's state, `crm.item.get` 50 to a `batch` request; a failed request is an error for its items."""
    reads: dict[Key, Read] = {}
    for run in chunks(list(range(len(keys))), BATCH_SIZE):
        cmd = {f"g{index}": f"crm.item.get?entityTypeId={keys[index][0]}&id={keys[index][1]}" for index in run}
        try:
            with app.portal.deadline(app.call_deadline):
                answer = await app.portal.call("batch", {"halt": 0, "cmd": cmd})
        except B24Error as exc:
            reads |= {keys[index]: Read(error=exc) for index in run}
            continue
        ok, failed = split_batch(answer.result)
        for index in run:
            reads[keys[index]] = _state(keys[index], ok.get(f"g{index}"), failed.get(f"g{index}"))
    return reads


def _state(key: Key, result: Any, error: Mapping[str, Any] | None) -> Read:
    if error is not None:
        code = str(error.get("error", "") or "ERROR")
        described = str(error.get("error_description", ""))[:_DESCRIPTION]
        return Read(error=B24Error(code, described))
    item = result.get("item") if isinstance(result, Mapping) else None
    if isinstance(item, Mapping) and str(item.get("id", "")) == str(key[1]):
        return Read(there=True, version=str(item.get("updatedTime", "")))
    return Read(error=B24Error("BAD_PORTAL_RESPONSE", "the batch answer says nothing usable of this item"))


def _settle(
    intent: Mapping[str, Any],
    attempt: Attempt | None,
    problem: str,
    reads: Mapping[Key, Read],
    now: datetime,
    recent: float,
) -> Settled:
    subject = _subject(intent)
    if attempt is None:
        return Settled("unfinished", subject, problem)
    read = reads.get((attempt.entity_type_id, attempt.item_id), Read(error=B24Error("NOT_READ", "not read")))
    if read.error is not None and read.error.is_code("NOT_FOUND"):
        return Settled(
            "deleted",
            subject,
            "not on the portal: journaled as deleted, confirmed by absence",
            Entry("deleted", attempt, note=GONE_NOTE),
        )
    if read.error is not None:
        reason = f"{read.error.code}: {read.error.description}"
        return Settled("unfinished", subject, f"could not be read ({for_terminal(reason, 200)}); left unfinished")
    age = _age(intent.get("ts"), now)
    if age is not None and age < recent:
        return Settled(
            "unfinished",
            subject,
            f"still on the portal, and the intent is {age:.0f} s old: its deletion may be under way; run reconcile "
            f"again after {recent:.0f} s",
        )
    description = (
        "Reconciled (b24-mcp journal reconcile): the item is still on the portal "
        f"(updatedTime {read.version or 'unknown'}), so it was not deleted."
    )
    return Settled(
        "not deleted",
        subject,
        f"still on the portal: journaled as not deleted ({STILL_THERE})",
        Entry("error", attempt, STILL_THERE, description),
    )


def _subject(intent: Mapping[str, Any]) -> str:
    """`deal #42 «Acme» (attempt 1a2b…, 2026-…)`: every part read from the journal escaped for the terminal."""
    entity_type_id, item_id, item = intent.get("entityTypeId"), intent.get("id"), intent.get("item")
    name = type_name(entity_type_id) if isinstance(entity_type_id, int) else f"type {_cell(entity_type_id)}"
    title = display_name(item) if isinstance(item, dict) else None
    quoted_title = f" «{for_terminal(title, TITLE_WIDTH)}»" if title else ""
    return f"{name} #{_cell(item_id)}{quoted_title} (attempt {_cell(intent.get('attempt') or 'none')}, " + (
        f"{_cell(intent.get('ts', '?'))})"
    )


def _cell(value: Any) -> str:
    return for_terminal(value if isinstance(value, str) else str(value), 40)


def _age(ts: Any, now: datetime) -> float | None:
    if not isinstance(ts, str):
        return None
    try:
        moment = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return (now - moment).total_seconds()


def reconcile_command(settings: Settings) -> int:
    """`b24-mcp journal reconcile`: one line per unfinished intent, then a summary. Exit status 0 when every intent
    is settled (or there was none), 1 when some are left unfinished or the journal cannot be read."""
    import anyio

    async def run() -> list[Settled]:
        app = build_app(settings)
        try:
            return await reconcile(app, recent=settings.call_deadline + MARGIN_SECONDS)
        finally:
            await app.aclose()

    failures: tuple[type[Exception], ...] = (OSError, B24Error)
    if settings.database_url is not None:
        from b24_mcp.postgres.database import DatabaseUnavailableError

        failures += (DatabaseUnavailableError,)
    try:
        settled = anyio.run(run)
    except failures as exc:
        print(f"b24-mcp: the journal cannot be reconciled: {for_terminal(str(exc), 300)}", file=sys.stderr)
        return 1
    for each in settled:
        print(each.line())
    left = sum(1 for each in settled if each.verdict == "unfinished")
    if not settled:
        print("Nothing to reconcile: every intent in the journal has an outcome.")
    else:
        print(f"{len(settled) - left} of {len(settled)} unfinished intent(s) settled; {left} left unfinished.")
    return 1 if left else 0
