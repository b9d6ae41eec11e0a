"""Bulk deletion: many items of one type under one confirmation, through the portal's `batch` method.

Items are read and deleted 50 commands to a request (the portal's cap), each request paced by the shared rate
limiter. One confirmation covers the whole set: a question naming the count, the type and the first titles, or
one token bound to the existing ids and their `updatedTime`s. Every item is journaled like a single deletion.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from b24_mcp.app import App
from b24_mcp.catalog import where_it_goes
from b24_mcp.deletion import iso_utc
from b24_mcp.errors import B24Error, PortalError, Refusal, TransportError
from b24_mcp.gate import Answer, ConfirmedBy, Consent, Declined, Question, Reach, Target, mode_hint, pass_gate
from b24_mcp.items import counted, display_name, type_name, version_of
from b24_mcp.journal import Attempt, Entry, JournalUnwritable
from b24_mcp.questions import describe_set, set_question
from b24_mcp.results import LOST_ANSWER_NOTE, ToolResult, error_message, settle_lost_answer

BATCH_SIZE = 50  # the portal runs at most 50 commands of one batch request
MAX_IDS = 500
SUBJECT = "batch"
Progress = Callable[[int, int, str], Awaitable[None]]


class FoundItem(BaseModel):
    """An item that exists, as the preview shows it."""

    id: int
    title: str | None = None


class Unreadable(BaseModel):
    """An id the portal would not read (other than not found)."""

    id: int
    error: str
    error_description: str


class ItemOutcome(BaseModel):
    """What happened to one id of a bulk deletion."""

    id: int
    status: Literal["deleted", "error"]
    error: str | None = None
    error_description: str | None = None
    note: str | None = None


class BatchResult(ToolResult):
    """The outcome of one `crm_item_delete_batch` call."""

    status: Literal["preview", "deleted", "partial", "cancelled", "error"] = Field(
        description="preview: nothing deleted yet; deleted: all found items deleted; partial: some failed; "
        "cancelled by the person; error: nothing deleted."
    )
    entityTypeId: int
    message: str = Field(description="What happened and what to do next.")
    found: list[FoundItem] | None = Field(default=None, description="Preview: the ids that exist, with titles.")
    missing: list[int] | None = Field(default=None, description="Preview: the ids the portal does not find.")
    unreadable: list[Unreadable] | None = Field(default=None, description="Preview: ids the portal would not read.")
    recycleBin: bool | None = Field(default=None, description="Whether deleted items go to the recycle bin.")
    confirmationToken: str | None = Field(default=None, description="Preview: pass with dryRun: false.")
    confirmationExpiresAt: str | None = None
    confirmation: ConfirmedBy | None = None
    results: list[ItemOutcome] | None = Field(default=None, description="Delete: one entry per requested id.")
    deleted: int | None = None
    failed: int | None = None
    error: str | None = None
    error_description: str | None = None
    retryable: bool | None = None
    httpStatus: int | None = None


@dataclass
class Reading:
    """The state of a set of ids on the portal."""

    items: dict[int, dict[str, Any]] = field(default_factory=dict)  # in the order asked
    missing: list[int] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)

    @property
    def version(self) -> str:
        """A digest of the existing ids and their `updatedTime`s: what a bulk token is bound to."""
        pairs = sorted((item_id, version_of(item)) for item_id, item in self.items.items())
        digest = hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()


def chunks(ids: Sequence[int], size: int = BATCH_SIZE) -> Iterator[list[int]]:
    """`ids` in runs of at most `size`."""
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def split_batch(result: Any) -> tuple[dict[str, Any], dict[str, Mapping[str, Any]]]:
    """The successful and the failed commands of a batch answer (empty containers come as `[]`)."""
    if not isinstance(result, Mapping):
        return {}, {}
    ok = result.get("result")
    failed = result.get("result_error")
    return (dict(ok) if isinstance(ok, Mapping) else {}), (dict(failed) if isinstance(failed, Mapping) else {})


def _not_found(item_id: int) -> ItemOutcome:
    return ItemOutcome(id=item_id, status="error", error="NOT_FOUND", error_description="Item was not found.")


class BulkDeletion:
    """Previews and deletes sets of items of one type with the application's portal, tokens, journal and gate."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.portal = app.portal

    async def read(self, entity_type_id: int, ids: Sequence[int]) -> Reading:
        """Read every id with `batch` requests of `crm.item.get`."""
        reading = Reading()
        for run in chunks(ids):
            cmd = {f"g{item_id}": f"crm.item.get?entityTypeId={entity_type_id}&id={item_id}" for item_id in run}
            answer = await self.portal.call("batch", {"halt": 0, "cmd": cmd})
            ok, failed = split_batch(answer.result)
            for item_id in run:
                key = f"g{item_id}"
                item = ok.get(key, {}).get("item") if isinstance(ok.get(key), Mapping) else None
                if isinstance(item, Mapping) and str(item.get("id", "")) == str(item_id):
                    reading.items[item_id] = dict(item)
                elif key in failed and str(failed[key].get("error", "")).upper() == "NOT_FOUND":
                    reading.missing.append(item_id)
                else:
                    error = failed.get(key, {})
                    reading.unreadable.append(
                        Unreadable(
                            id=item_id,
                            error=str(error.get("error", "NOT_EXECUTED")),
                            error_description=str(error.get("error_description", "The portal did not run it.")),
                        )
                    )
        return reading

    async def preview(self, entity_type_id: int, ids: Sequence[int], *, reach: Reach | None = None) -> BatchResult:
        """Read the items and say which would be deleted; one token for the whole set."""
        with self.portal.deadline(self.app.call_deadline):
            try:
                self.app.guardrails.check_type(entity_type_id)
                reading = await self.read(entity_type_id, ids)
            except B24Error as exc:
                return self._error(entity_type_id, exc)
            recycle_bin = await self.app.catalog.recycle_bin(entity_type_id)
        found = [FoundItem(id=item_id, title=display_name(item)) for item_id, item in reading.items.items()]
        parts = [f"Preview only, nothing was deleted: {len(found)} of {len(ids)} ids exist."]
        if reading.missing:
            parts.append(f"Not found: {', '.join(map(str, reading.missing))}.")
        if reading.unreadable:
            parts.append(f"Not readable: {', '.join(str(entry.id) for entry in reading.unreadable)}.")
        token = expires = None
        if found:
            token, expires_at = self.app.tokens.issue(entity_type_id, SUBJECT, reading.version)
            expires = iso_utc(expires_at)
            parts.append(
                f"{counted(entity_type_id, len(found))} would be deleted. {describe_set(entity_type_id, reading.items)}"
            )
            parts.append(where_it_goes(recycle_bin, many=len(found) > 1))
            if self.app.guardrails.read_only:
                parts.append("This server is read-only (B24_READ_ONLY=true): it will not delete them.")
            else:
                parts.append(mode_hint(self.app.mode, "ids", reach))
        else:
            parts.append("There is nothing to delete.")
        return BatchResult(
            status="preview",
            entityTypeId=entity_type_id,
            message=" ".join(parts),
            found=found,
            missing=reading.missing,
            unreadable=reading.unreadable or None,
            recycleBin=recycle_bin,
            confirmationToken=token,
            confirmationExpiresAt=expires,
        )

    async def question(self, entity_type_id: int, ids: Sequence[int]) -> Question | None:
        """The one question for the whole set, or None when it cannot be put."""
        with self.portal.deadline(self.app.call_deadline):
            try:
                self.app.guardrails.check_delete(entity_type_id)
                reading = await self.read(entity_type_id, ids)
            except B24Error:
                return None
            if not reading.items:
                return None
            recycle_bin = await self.app.catalog.recycle_bin(entity_type_id)
        skipped = len(ids) - len(reading.items)
        # The latest change among them is part of the text, so a later-round answer never covers a changed set.
        text = set_question(self.portal.host, entity_type_id, reading.items, recycle_bin, skipped=skipped)
        return Question(text, reading.version)

    async def delete(
        self, entity_type_id: int, ids: Sequence[int], consent: Consent, progress: Progress | None = None
    ) -> BatchResult:
        """Delete the set once the gate lets it through; a failed item never stops the others."""
        with self.portal.deadline(self.app.call_deadline):
            try:
                target = self._target(entity_type_id, ids)
                outcome = await pass_gate(consent, target, self.app.tokens, self.app.guardrails)
                if isinstance(outcome, Declined):
                    return await self._cancelled(entity_type_id, outcome)
                if not outcome.reading.items:
                    raise Refusal("NOT_FOUND", "None of the requested ids exist.")
                return await self._delete_all(entity_type_id, ids, outcome.reading, outcome.by, progress)
            except B24Error as exc:
                return self._error(entity_type_id, exc, deleting=True)

    def _target(self, entity_type_id: int, ids: Sequence[int]) -> Target[Reading]:
        async def read() -> Reading:
            return await self.read(entity_type_id, ids)

        def changed_since_preview(_previewed: str, _now: Reading) -> Refusal:
            return Refusal(
                "ITEM_CHANGED",
                "Some of these items were modified, deleted or created since the preview, or the ids differ "
                "from the preview's. Nothing was deleted. Preview the same ids again and confirm anew.",
            )

        def changed_since_asked(_now: Reading) -> Refusal:
            return Refusal(
                "ITEM_CHANGED",
                f"One of these {type_name(entity_type_id)} items changed on the portal while the person was being "
                "asked, so what they agreed to is not what would be deleted. Nothing was deleted; call again to "
                "ask about the current version.",
            )

        return Target(entity_type_id, SUBJECT, "ids", read, changed_since_preview, changed_since_asked)

    async def _missing(self, entity_type_id: int, ids: Sequence[int]) -> set[int]:
        return set((await self.read(entity_type_id, ids)).missing)

    async def _delete_all(
        self, entity_type_id: int, ids: Sequence[int], reading: Reading, how: ConfirmedBy, progress: Progress | None
    ) -> BatchResult:
        outcomes: dict[int, ItemOutcome] = {item_id: _not_found(item_id) for item_id in reading.missing}
        outcomes |= {
            entry.id: ItemOutcome(
                id=entry.id, status="error", error=entry.error, error_description=entry.error_description
            )
            for entry in reading.unreadable
        }
        todo = list(reading.items)
        done = 0
        stop: B24Error | None = None
        for run in chunks(todo):
            if stop is not None:
                outcomes |= {item_id: self._not_attempted(item_id, stop) for item_id in run}
                continue
            attempts = {item_id: self._attempt(entity_type_id, item_id, how, reading.items[item_id]) for item_id in run}
            sendable, unrecorded = await self._record_intents(attempts)
            if unrecorded is not None:
                # Only items whose whole intent line is on disk may be sent; the journal stops the rest.
                stop = unrecorded
                outcomes |= {item_id: self._not_attempted(item_id, stop) for item_id in run[len(sendable) :]}
            if sendable:
                run_outcomes, failure = await self._delete_run(entity_type_id, sendable)
                stop = stop or failure
                outcomes |= run_outcomes
                await self._journal_outcomes({item_id: attempts[item_id] for item_id in sendable}, run_outcomes)
            done += len(run)
            if progress is not None:
                deleted_so_far = sum(1 for outcome in outcomes.values() if outcome.status == "deleted")
                await progress(done, len(todo), f"{deleted_so_far} of {len(todo)} deleted")
        ordered = [outcomes[item_id] for item_id in dict.fromkeys(ids) if item_id in outcomes]
        return self._summary(entity_type_id, ordered, how, stop)

    async def _delete_run(self, entity_type_id: int, run: list[int]) -> tuple[dict[int, ItemOutcome], B24Error | None]:
        """Delete one batch; a failure of the batch request itself is global and stops the rest."""
        cmd = {f"d{item_id}": f"crm.item.delete?entityTypeId={entity_type_id}&id={item_id}" for item_id in run}
        outcomes: dict[int, ItemOutcome] = {}

        async def missing(ids: Sequence[int]) -> set[int]:
            return await self._missing(entity_type_id, ids)

        try:
            answer = await self.portal.call("batch", {"halt": 0, "cmd": cmd})
        except (PortalError, TransportError) as exc:
            gone = await settle_lost_answer(exc, run, missing)
            unknown = " It is unknown whether it was deleted; preview it again." if gone is None else ""
            for item_id in run:
                if gone is not None and item_id in gone:
                    outcomes[item_id] = ItemOutcome(id=item_id, status="deleted", note=LOST_ANSWER_NOTE)
                else:
                    outcomes[item_id] = ItemOutcome(
                        id=item_id, status="error", error=exc.code, error_description=exc.description + unknown
                    )
            return outcomes, exc
        ok, failed = split_batch(answer.result)
        recheck: list[int] = []
        for item_id in run:
            key = f"d{item_id}"
            if key in ok:
                outcomes[item_id] = ItemOutcome(id=item_id, status="deleted")
                continue
            error = failed.get(key, {"error": "NOT_EXECUTED", "error_description": "The portal did not run it."})
            code = str(error.get("error", ""))
            if answer.after_lost_answer and code.upper() == "NOT_FOUND":
                recheck.append(item_id)  # an earlier, lost attempt of this batch may have deleted it
            outcomes[item_id] = ItemOutcome(
                id=item_id, status="error", error=code, error_description=str(error.get("error_description", ""))
            )
        if recheck:
            with contextlib.suppress(B24Error):
                for item_id in await missing(recheck):
                    outcomes[item_id] = ItemOutcome(id=item_id, status="deleted", note=LOST_ANSWER_NOTE)
        return outcomes, None

    async def _record_intents(self, attempts: Mapping[int, Attempt]) -> tuple[list[int], JournalUnwritable | None]:
        """Write the intents; the ids whose intent line is whole on disk, and the failure when not all are."""
        ids = list(attempts)
        try:
            await self.app.journal.write_many([Entry("intent", attempt) for attempt in attempts.values()])
        except JournalUnwritable as exc:
            return ids[: exc.durable], exc
        return ids, None

    async def _journal_outcomes(self, attempts: Mapping[int, Attempt], outcomes: Mapping[int, ItemOutcome]) -> None:
        entries = []
        for item_id, attempt in attempts.items():
            outcome = outcomes[item_id]
            if outcome.status == "deleted":
                entries.append(Entry("deleted", attempt, note=outcome.note))
            else:
                entries.append(Entry("error", attempt, outcome.error, outcome.error_description))
        # The intents are on disk already; a failure here must not hide what the portal did.
        with contextlib.suppress(Refusal):
            await self.app.journal.write_many(entries)

    async def _cancelled(self, entity_type_id: int, declined: Declined[Reading]) -> BatchResult:
        items = declined.reading.items if declined.reading is not None else {}
        await self.app.journal.write_many(
            [
                Entry("cancelled", self._attempt(entity_type_id, item_id, ConfirmedBy.ELICITATION, item))
                for item_id, item in items.items()
            ]
        )
        verb = "declined" if declined.answer is Answer.DECLINED else "cancelled"
        return BatchResult(
            status="cancelled",
            entityTypeId=entity_type_id,
            message=f"The person {verb} deleting {counted(entity_type_id, len(items))}; nothing was "
            "deleted. Do not ask again unless they say so.",
            deleted=0,
            failed=0,
        )

    def _attempt(self, entity_type_id: int, item_id: int, how: ConfirmedBy, item: Mapping[str, Any] | None) -> Attempt:
        return Attempt(self.portal.host, self.portal.user_id, entity_type_id, item_id, how.value, item)

    @staticmethod
    def _not_attempted(item_id: int, cause: B24Error) -> ItemOutcome:
        return ItemOutcome(
            id=item_id,
            status="error",
            error=cause.code,
            error_description=f"Not attempted: the deletion stopped ({cause.description})",
        )

    def _summary(
        self, entity_type_id: int, outcomes: list[ItemOutcome], how: ConfirmedBy, stop: B24Error | None
    ) -> BatchResult:
        deleted = sum(1 for outcome in outcomes if outcome.status == "deleted")
        failed = len(outcomes) - deleted
        message = f"Deleted {deleted} of {len(outcomes)}"
        if failed:
            codes = sorted({outcome.error or "?" for outcome in outcomes if outcome.status == "error"})
            message += f"; {failed} failed ({', '.join(codes)}); see results for each id"
        message += "."
        if stop is not None:
            message += f" The deletion stopped: {stop.code}: {stop.description}"
            message += f" {stop.hint}" if stop.hint else ""
            message += " Retrying later may help." if stop.retryable else ""
        fields: dict[str, Any] = {
            "entityTypeId": entity_type_id,
            "confirmation": how,
            "results": outcomes,
            "deleted": deleted,
            "failed": failed,
        }
        if deleted == 0:
            first = outcomes[0]
            cause = stop or PortalError(first.error or "ERROR", first.error_description or "", http_status=None)
            return BatchResult.failure(cause, message, **fields)
        return BatchResult(status="deleted" if failed == 0 else "partial", message=message, **fields)

    def _error(self, entity_type_id: int, exc: B24Error, *, deleting: bool = False) -> BatchResult:
        message = error_message(exc, f"{type_name(entity_type_id)} items", deleting=deleting)
        return BatchResult.failure(exc, message, entityTypeId=entity_type_id)
