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

from b24_mcp.catalog import where_it_goes
from b24_mcp.deletion import LOST_ANSWER_NOTE, DeletionService, error_message
from b24_mcp.errors import B24Error, Refusal, PortalError, TransportError, may_have_acted
from b24_mcp.gate import (
    Answer,
    Consent,
    Question,
    Route,
    changed_since_asked,
    confirmation_required,
    elicitation_unsupported,
    not_asked,
)
from b24_mcp.gate import mode_hint as _mode_hint
from b24_mcp.items import display_name, type_name
from b24_mcp.journal import Attempt, Entry

BATCH_SIZE = 50  # the portal runs at most 50 commands of one batch request
MAX_IDS = 500
SUBJECT = "batch"
Progress = Callable[[int, int, str], Awaitable[None]]
How = Literal["elicitation", "token", "none"]


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


class BatchResult(BaseModel):
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
    confirmation: How | None = None
    results: list[ItemOutcome] | None = Field(default=None, description="Delete: one entry per requested id.")
    deleted: int | None = None
    failed: int | None = None
    error: str | None = None
    error_description: str | None = None
    retryable: bool | None = None
    httpStatus: int | None = None

    def wire(self) -> dict[str, Any]:
        """The structured content: unset fields left out, except the error fields an error always has."""
        data = self.model_dump(mode="json", exclude_none=True)
        if self.status == "error":
            data |= {key: getattr(self, key) for key in ("error", "error_description", "retryable", "httpStatus")}
        return data


@dataclass
class Reading:
    """The state of a set of ids on the portal."""

    items: dict[int, dict[str, Any]] = field(default_factory=dict)  # in the order asked
    missing: list[int] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)

    def version(self) -> str:
        """A digest of the existing ids and their `updatedTime`s: what a bulk token is bound to."""
        pairs = sorted((item_id, str(item.get("updatedTime", ""))) for item_id, item in self.items.items())
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


def _plural(entity_type_id: int, count: int) -> str:
    name = type_name(entity_type_id)
    if count == 1:
        return f"1 {name}"
    return f"{count} {name}s" if entity_type_id in (1, 2, 3, 4, 7, 31) else f"{count} items of type {entity_type_id}"


def _titles(reading: Reading, limit: int = 3) -> str:
    names = [f"#{item_id} «{display_name(item) or '?'}»" for item_id, item in list(reading.items.items())[:limit]]
    more = len(reading.items) - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


class BulkDeletion:
    """Previews and deletes sets of items with the deletion service's portal, tokens, journal and guardrails."""

    def __init__(self, service: DeletionService) -> None:
        self.service = service
        self.portal = service.portal

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
                if isinstance(item, Mapping):
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

    async def preview(self, entity_type_id: int, ids: Sequence[int], *, can_ask: bool | None = None) -> BatchResult:
        """Read the items and say which would be deleted; one token for the whole set."""
        with self.portal.deadline(self.service.call_deadline):
            try:
                self.service.guardrails.check_type(entity_type_id)
                reading = await self.read(entity_type_id, ids)
            except B24Error as exc:
                return self._error(entity_type_id, exc)
            recycle_bin = await self.service.catalog.recycle_bin(entity_type_id)
        found = [FoundItem(id=item_id, title=display_name(item)) for item_id, item in reading.items.items()]
        parts = [f"Preview only, nothing was deleted: {len(found)} of {len(ids)} ids exist."]
        if reading.missing:
            parts.append(f"Not found: {', '.join(map(str, reading.missing))}.")
        if reading.unreadable:
            parts.append(f"Not readable: {', '.join(str(entry.id) for entry in reading.unreadable)}.")
        token = expires = None
        if found:
            token, expires_at = self.service.tokens.issue(entity_type_id, SUBJECT, reading.version())
            expires = expires_at.isoformat().replace("+00:00", "Z")
            parts.append(f"{_plural(entity_type_id, len(found))} would be deleted: {_titles(reading)}.")
            parts.append(where_it_goes(recycle_bin, many=len(found) > 1))
            if self.service.guardrails.read_only:
                parts.append("This server is read-only (B24_READ_ONLY=true): it will not delete them.")
            else:
                parts.append(_mode_hint(self.service.mode, can_ask=can_ask).replace("same item", "same ids"))
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
        with self.portal.deadline(self.service.call_deadline):
            try:
                self.service.guardrails.check_delete(entity_type_id)
                reading = await self.read(entity_type_id, ids)
            except B24Error:
                return None
            if not reading.items:
                return None
            recycle_bin = await self.service.catalog.recycle_bin(entity_type_id)
        skipped = len(ids) - len(reading.items)
        # The latest change among them is part of the text, so a later-round answer never covers a changed set.
        latest = max(str(item.get("updatedTime", "")) for item in reading.items.values())
        text = (
            f"Delete {_plural(entity_type_id, len(reading.items))} from {self.portal.host}: {_titles(reading)}?"
            + (f" ({skipped} of the requested ids do not exist or cannot be read.)" if skipped else "")
            + (f" Latest change among them: {latest}." if latest else "")
            + f" {where_it_goes(recycle_bin, many=len(reading.items) > 1)}"
        )
        return Question(text, reading.version())

    async def delete(
        self, entity_type_id: int, ids: Sequence[int], consent: Consent, progress: Progress | None = None
    ) -> BatchResult:
        """Delete the set once the gate lets it through; a failed item never stops the others."""
        with self.portal.deadline(self.service.call_deadline):
            try:
                self.service.guardrails.check_delete(entity_type_id)
                reading, how = await self._confirmed(entity_type_id, ids, consent)
                if how is None:
                    return await self._cancelled(entity_type_id, reading, consent)
                if not reading.items:
                    raise PortalError("NOT_FOUND", "None of the requested ids exist.", http_status=None)
                return await self._delete_all(entity_type_id, ids, reading, how, progress)
            except B24Error as exc:
                return self._error(entity_type_id, exc, deleting=True)

    async def _confirmed(self, entity_type_id: int, ids: Sequence[int], consent: Consent) -> tuple[Reading, How | None]:
        """The items as they are now and how their deletion was confirmed (None: the person said no)."""
        if consent.route is Route.UNSUPPORTED:
            raise elicitation_unsupported()
        if consent.route is Route.TOKEN:
            if not consent.token:
                raise confirmation_required()
            claim = self.service.tokens.check(consent.token, entity_type_id, SUBJECT)
            reading = await self.read(entity_type_id, ids)
            if reading.version() != claim.version:
                raise Refusal(
                    "ITEM_CHANGED",
                    "Some of these items were modified, deleted or created since the preview, or the ids differ "
                    "from the preview's. Nothing was deleted. Preview the same ids again and confirm anew.",
                )
            self.service.tokens.consume(claim)
            return reading, "token"
        reading = await self.read(entity_type_id, ids)
        if consent.route is Route.NONE:
            return reading, "none"
        if consent.answer is Answer.ACCEPTED:
            if consent.shown is None:
                raise not_asked()
            if reading.version() != consent.shown:
                raise changed_since_asked(f"One of these {type_name(entity_type_id)} items")
            return reading, "elicitation"
        if consent.answer in (Answer.DECLINED, Answer.CANCELLED):
            return reading, None
        raise not_asked()

    async def _delete_all(
        self, entity_type_id: int, ids: Sequence[int], reading: Reading, how: How, progress: Progress | None
    ) -> BatchResult:
        outcomes: dict[int, ItemOutcome] = {
            item_id: ItemOutcome(id=item_id, status="error", error="NOT_FOUND", error_description="Item was not found.")
            for item_id in reading.missing
        }
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
                for item_id in run:
                    outcomes[item_id] = self._not_attempted(item_id, stop)
                continue
            attempts = {item_id: self._attempt(entity_type_id, item_id, how, reading.items[item_id]) for item_id in run}
            await self.service.journal.write_many([Entry("intent", attempt) for attempt in attempts.values()])
            run_outcomes, stop = await self._delete_run(entity_type_id, run)
            outcomes |= run_outcomes
            await self._journal_outcomes(attempts, run_outcomes)
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
        try:
            answer = await self.portal.call("batch", {"halt": 0, "cmd": cmd})
        except (PortalError, TransportError) as exc:
            uncertain = exc.after_lost_answer or may_have_acted(exc)
            gone = await self._gone(entity_type_id, run) if uncertain else set()
            for item_id in run:
                if gone is not None and item_id in gone:
                    outcomes[item_id] = ItemOutcome(id=item_id, status="deleted", note=LOST_ANSWER_NOTE)
                else:
                    unknown = " It is unknown whether it was deleted; preview it again." if gone is None else ""
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
            gone = await self._gone(entity_type_id, recheck) or set()
            for item_id in gone:
                outcomes[item_id] = ItemOutcome(id=item_id, status="deleted", note=LOST_ANSWER_NOTE)
        return outcomes, None

    async def _gone(self, entity_type_id: int, ids: list[int]) -> set[int] | None:
        """The ids the portal now does not find; None when that cannot be told."""
        try:
            return set((await self.read(entity_type_id, ids)).missing)
        except B24Error:
            return None

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
            await self.service.journal.write_many(entries)

    async def _cancelled(self, entity_type_id: int, reading: Reading, consent: Consent) -> BatchResult:
        await self.service.journal.write_many(
            [
                Entry("cancelled", self._attempt(entity_type_id, item_id, "elicitation", item))
                for item_id, item in reading.items.items()
            ]
        )
        verb = "declined" if consent.answer is Answer.DECLINED else "cancelled"
        return BatchResult(
            status="cancelled",
            entityTypeId=entity_type_id,
            message=f"The person {verb} deleting {_plural(entity_type_id, len(reading.items))}; nothing was "
            "deleted. Do not ask again unless they say so.",
            deleted=0,
            failed=0,
        )

    def _attempt(self, entity_type_id: int, item_id: int, how: How, item: Mapping[str, Any] | None) -> Attempt:
        return Attempt(self.portal.host, self.portal.user_id, entity_type_id, item_id, how, item)

    @staticmethod
    def _not_attempted(item_id: int, cause: B24Error) -> ItemOutcome:
        return ItemOutcome(
            id=item_id,
            status="error",
            error=cause.code,
            error_description=f"Not attempted: an earlier batch failed as a whole ({cause.description})",
        )

    def _summary(
        self, entity_type_id: int, outcomes: list[ItemOutcome], how: How, stop: B24Error | None
    ) -> BatchResult:
        deleted = sum(1 for outcome in outcomes if outcome.status == "deleted")
        failed = len(outcomes) - deleted
        status: Literal["deleted", "partial", "error"] = "deleted" if failed == 0 else "partial" if deleted else "error"
        message = f"Deleted {deleted} of {len(outcomes)}"
        if failed:
            codes = sorted({outcome.error or "?" for outcome in outcomes if outcome.status == "error"})
            message += f"; {failed} failed ({', '.join(codes)}); see results for each id"
        message += "."
        if stop is not None:
            message += f" The deletion stopped: {stop.code}: {stop.description}"
            message += f" {stop.hint}" if stop.hint else ""
            message += " Retrying later may help." if stop.retryable else ""
        result = BatchResult(
            status=status,
            entityTypeId=entity_type_id,
            message=message,
            confirmation=how,
            results=outcomes,
            deleted=deleted,
            failed=failed,
        )
        if status == "error":
            cause = stop or PortalError(
                outcomes[0].error or "ERROR", outcomes[0].error_description or "", http_status=None
            )
            result.error, result.error_description = cause.code, cause.description
            result.retryable, result.httpStatus = cause.retryable, cause.http_status
        return result

    def _error(self, entity_type_id: int, exc: B24Error, *, deleting: bool = False) -> BatchResult:
        subject = f"{type_name(entity_type_id)} items"
        return BatchResult(
            status="error",
            entityTypeId=entity_type_id,
            message=error_message(exc, subject, deleting=deleting),
            error=exc.code,
            error_description=exc.description,
            retryable=exc.retryable,
            httpStatus=exc.http_status,
        )
