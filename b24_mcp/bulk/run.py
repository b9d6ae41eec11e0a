"""Deleting a confirmed set: runs of 50 `crm.item.delete` commands, one `batch` request each, every item journaled.

Each batch's intents are fsynced before it is sent; only items whose intent line is on disk are sent. A batch
handed to the portal client is finished and journaled even when the call is cancelled; nothing starts after.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel

from b24_mcp.bulk.reading import Reading, Selected, SetReader
from b24_mcp.bulk.results import BatchResult, ItemOutcome
from b24_mcp.bulk.selection import BATCH_SIZE, Query, chunks, split_batch
from b24_mcp.deleting.app import App
from b24_mcp.deleting.item import new_attempt
from b24_mcp.deleting.results import LOST_ANSWER_NOTE, settle_lost_answer
from b24_mcp.errors import B24Error, PortalError
from b24_mcp.journal.record import Attempt, ConfirmedBy, Entry, JournalUnwritable
from b24_mcp.portal.items import counted, type_name
from b24_mcp.telemetry import metrics

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str], Awaitable[None]]


@dataclass
class _Run:
    """What one batch of deletes did."""

    outcomes: dict[int, ItemOutcome]
    untouched: set[int]  # not deleted, and the portal did not act on them: they remain
    stop: B24Error | None = None
    reset_at: int | None = None  # the latest operating_reset_at the portal gave for crm.item.delete


class DeletionRun:
    """Deletes confirmed sets through `batch` with the application's portal and journal, and sums up each."""

    def __init__(self, app: App, reader: SetReader) -> None:
        self.app = app
        self.portal = app.portal
        self.reader = reader

    async def delete(
        self,
        entity_type_id: int,
        selected: Selected,
        reading: Reading,
        how: ConfirmedBy,
        progress: Progress | None,
    ) -> BatchResult:
        """Delete the items of `reading`, 50 to a `batch` request; `selected` orders the results."""
        by_filter = isinstance(selected, Query)
        # An id the confirmation already left out (the token and the question cover the items that exist) is listed
        # as missing, not counted as a failure.
        outcomes: dict[int, ItemOutcome] = {}
        todo = list(reading.items)
        untouched: set[int] = set()
        stop: B24Error | None = None
        reset_at: int | None = None
        done = 0
        try:
            for run in chunks(todo, BATCH_SIZE):
                if stop is not None:
                    outcomes |= {item_id: _not_attempted(item_id, stop) for item_id in run}
                    untouched.update(run)
                    continue
                await anyio.lowlevel.checkpoint()  # a cancelled call starts no further batch
                attempts = {
                    item_id: self.attempt(entity_type_id, item_id, how, reading.items[item_id]) for item_id in run
                }
                sendable, unrecorded = await self._record_intents(attempts)
                try:
                    await anyio.lowlevel.checkpoint()
                except anyio.get_cancelled_exc_class():
                    with anyio.CancelScope(shield=True):
                        await self._journal_not_sent({item_id: attempts[item_id] for item_id in sendable})
                    raise
                if unrecorded is not None:
                    # Only items whose whole intent line is on disk may be sent; the journal stops the rest.
                    stop = unrecorded
                    rest = run[len(sendable) :]
                    outcomes |= {item_id: _not_attempted(item_id, stop) for item_id in rest}
                    untouched.update(rest)
                if sendable:
                    # Once handed to the portal client, a batch is finished and journaled whatever happens to the
                    # call: what the portal did is known and written down before a cancellation takes effect.
                    with anyio.CancelScope(shield=True):
                        with self.portal.deadline(self.app.call_deadline):
                            result = await self._delete_run(entity_type_id, sendable)
                        await self._journal_outcomes({item_id: attempts[item_id] for item_id in sendable}, result)
                    outcomes |= result.outcomes
                    untouched |= result.untouched
                    stop = stop or result.stop
                    reset_at = result.reset_at or reset_at
                done += len(run)
                if progress is not None:
                    deleted_so_far = sum(1 for outcome in outcomes.values() if outcome.status == "deleted")
                    await progress(done, len(todo), f"{deleted_so_far} of {len(todo)} deleted")
        except anyio.get_cancelled_exc_class():
            gone = sum(1 for outcome in outcomes.values() if outcome.status == "deleted")
            logger.info(
                "crm_item_delete_batch cancelled by the client: %d of %d %s deleted, the rest not sent",
                gone,
                len(todo),
                type_name(entity_type_id),
            )
            raise
        if by_filter:
            ordered = [outcomes[item_id] for item_id in todo]
        else:
            asked = list(dict.fromkeys(selected)) if not isinstance(selected, Query) else []
            ordered = [outcomes[item_id] for item_id in asked if item_id in outcomes]
        summary = _summary(entity_type_id, ordered, untouched, how, stop, reset_at, reading.more, by_filter)
        if reading.missing and not by_filter:
            summary.missing = reading.missing
            summary.message += f" Not found at the preview, so not included: {', '.join(map(str, reading.missing))}."
        return summary

    async def _delete_run(self, entity_type_id: int, run: list[int]) -> _Run:
        """Delete one batch; a failure of the batch request itself is global and stops the rest."""
        cmd = {f"d{item_id}": f"crm.item.delete?entityTypeId={entity_type_id}&id={item_id}" for item_id in run}
        outcomes: dict[int, ItemOutcome] = {}

        async def missing(ids: Sequence[int]) -> set[int]:
            return await self.reader.missing(entity_type_id, ids)

        try:
            answer = await self.portal.call("batch", {"halt": 0, "cmd": cmd})
        except B24Error as exc:
            gone = await settle_lost_answer(exc, run, missing)
            unknown = " It is unknown whether it was deleted; preview it again." if gone is None else ""
            for item_id in run:
                if gone is not None and item_id in gone:
                    outcomes[item_id] = ItemOutcome(id=item_id, status="deleted", note=LOST_ANSWER_NOTE)
                else:
                    outcomes[item_id] = ItemOutcome(
                        id=item_id, status="error", error=exc.code, error_description=exc.description + unknown
                    )
            # Items known to be still there remain; when the portal cannot be read, their fate is unknown.
            untouched = set() if gone is None else set(run) - gone
            return _Run(outcomes, untouched, stop=exc)
        ok, failed = split_batch(answer.result)
        times = answer.result.get("result_time") if isinstance(answer.result, Mapping) else None
        run_result = _Run(outcomes, set())
        recheck: list[int] = []
        unanswered: list[int] = []
        for item_id in run:
            key = f"d{item_id}"
            if key in ok:
                outcomes[item_id] = ItemOutcome(id=item_id, status="deleted")
                reset = times.get(key, {}).get("operating_reset_at") if isinstance(times, Mapping) else None
                if isinstance(reset, int) and not isinstance(reset, bool):
                    run_result.reset_at = max(reset, run_result.reset_at or 0)
                continue
            if key not in failed:
                unanswered.append(item_id)  # the answer says nothing of it: only the portal's items can tell
                continue
            code = str(failed[key].get("error", ""))
            description = str(failed[key].get("error_description", ""))
            outcomes[item_id] = ItemOutcome(id=item_id, status="error", error=code, error_description=description)
            if code.upper() == "OPERATION_TIME_LIMIT":
                # The portal refused to run it (its time budget for crm.item.delete is spent): it remains.
                run_result.untouched.add(item_id)
                run_result.stop = run_result.stop or PortalError(code, description, http_status=None)
            elif answer.after_lost_answer and code.upper() == "NOT_FOUND":
                recheck.append(item_id)  # an earlier, lost attempt of this batch may have deleted it
        if recheck:
            with contextlib.suppress(B24Error):
                for item_id in await missing(recheck):
                    outcomes[item_id] = ItemOutcome(id=item_id, status="deleted", note=LOST_ANSWER_NOTE)
        if unanswered:
            await _settle_unanswered(unanswered, missing, run_result)
        return run_result

    async def _record_intents(self, attempts: Mapping[int, Attempt]) -> tuple[list[int], JournalUnwritable | None]:
        """Write the intents; the ids whose intent line is whole on disk, and the failure when not all are."""
        ids = list(attempts)
        try:
            await self.app.journal.write_many([Entry("intent", attempt) for attempt in attempts.values()])
        except JournalUnwritable as exc:
            return ids[: exc.durable], exc
        return ids, None

    async def _journal_outcomes(self, attempts: Mapping[int, Attempt], run: _Run) -> None:
        entries = []
        for item_id, attempt in attempts.items():
            outcome = run.outcomes[item_id]
            if outcome.status == "deleted":
                entries.append(Entry("deleted", attempt, note=outcome.note))
            else:
                entries.append(Entry("error", attempt, outcome.error, outcome.error_description))
        # The intents are on disk already; a failure here must not hide what the portal did (they are kept).
        await self.app.journal.write_outcomes(entries)

    async def _journal_not_sent(self, attempts: Mapping[int, Attempt]) -> None:
        description = "Not sent: the tool call was cancelled before this batch went to the portal."
        await self.app.journal.write_outcomes(
            [Entry("error", attempt, "CANCELLED", description) for attempt in attempts.values()]
        )

    def attempt(self, entity_type_id: int, item_id: int, how: ConfirmedBy, item: Mapping[str, Any] | None) -> Attempt:
        """What the journal records of one item's deletion."""
        return new_attempt(self.app, entity_type_id, item_id, how, item)


async def _settle_unanswered(
    ids: list[int], missing: Callable[[Sequence[int]], Awaitable[set[int]]], run: _Run
) -> None:
    """Items the batch answer does not mention: gone means deleted, present means not run (they remain)."""
    try:
        gone: set[int] | None = await missing(ids)
    except B24Error:
        gone = None
    for item_id in ids:
        if gone is None:
            run.outcomes[item_id] = ItemOutcome(
                id=item_id,
                status="error",
                error="NOT_EXECUTED",
                error_description="The portal's answer does not mention it, and the item could not be checked "
                "afterwards: it is unknown whether it was deleted; preview it again.",
            )
        elif item_id in gone:
            run.outcomes[item_id] = ItemOutcome(id=item_id, status="deleted", note=LOST_ANSWER_NOTE)
        else:
            run.outcomes[item_id] = ItemOutcome(
                id=item_id, status="error", error="NOT_EXECUTED", error_description="The portal did not run it."
            )
            run.untouched.add(item_id)


def _not_attempted(item_id: int, cause: B24Error) -> ItemOutcome:
    return ItemOutcome(
        id=item_id,
        status="error",
        error=cause.code,
        error_description=f"Not attempted: the deletion stopped ({cause.description})",
    )


def _summary(
    entity_type_id: int,
    outcomes: list[ItemOutcome],
    untouched: set[int],
    how: ConfirmedBy,
    stop: B24Error | None,
    reset_at: int | None,
    more: bool,
    by_filter: bool,
) -> BatchResult:
    deleted = sum(1 for outcome in outcomes if outcome.status == "deleted")
    remaining = sum(1 for outcome in outcomes if outcome.id in untouched)
    failures = [outcome for outcome in outcomes if outcome.status == "error" and outcome.id not in untouched]
    metrics.deletions(deleted=deleted, failed=len(failures), not_sent=remaining)
    message = f"Deleted {deleted} of {counted(entity_type_id, len(outcomes))}"
    if failures:
        codes = sorted({outcome.error or "?" for outcome in failures})
        message += f"; {len(failures)} failed ({', '.join(codes)}); see results"
    if remaining:
        message += f"; {remaining} remain, not deleted"
    message += "."
    unblocks = None
    if stop is not None:
        message += f" The deletion stopped: {stop.code}: {stop.description}"
        if stop.is_code("OPERATION_TIME_LIMIT") and reset_at is not None and reset_at > time.time():
            unblocks = datetime.fromtimestamp(reset_at, UTC).isoformat().replace("+00:00", "Z")
            message += f" The portal unblocks crm.item.delete at {unblocks} (operating_reset_at); retry then."
        elif stop.hint:
            message += f" {stop.hint}"
        elif stop.retryable:
            message += " Retrying later may help."
    if by_filter and (remaining or failures):
        message += " Previewing the same filter again lists only what remains."
    if by_filter and more:
        message += (
            " More items match the filter beyond this call's limit (B24_BATCH_MAX): preview the same filter "
            "again for the next ones."
        )
    fields: dict[str, Any] = {
        "entityTypeId": entity_type_id,
        "confirmation": how,
        "results": failures if by_filter else outcomes,
        "deleted": deleted,
        "failed": len(failures),
        "remaining": remaining,
        "unblocksAt": unblocks,
    }
    if by_filter:
        fields["more"] = more
    if deleted == 0:
        first = failures[0] if failures else outcomes[0]
        cause = stop or PortalError(first.error or "ERROR", first.error_description or "", http_status=None)
        return BatchResult.failure(cause, message, **fields)
    return BatchResult(status="deleted" if deleted == len(outcomes) else "partial", message=message, **fields)
