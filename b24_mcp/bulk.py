"""Bulk deletion: many items of one type under one confirmation, chosen by their ids or by a filter.

Items are read through `crm.item.list` (`selection.py`: 50 ids or one page to a command, 50 commands to a
`batch` request) and deleted 50 `crm.item.delete` commands to a `batch` request, each request paced by the
shared rate limiter. One confirmation covers the whole set: a question naming the count, the type, the portal and
the recycle-bin fact, then a breakdown and a sample the server chooses; or one token bound to exactly the ids and
their `updatedTime`s.

The ids form names its ids in the call. A filter preview lists what matches (at most `B24_BATCH_MAX` items, the
lowest ids first) and its token covers exactly those items: their ids are kept in this process with the token,
so items that start to match later are not deleted with them. A token redeemed where its ids are not kept
(another replica, a restart) lists the filter again and is honoured only when exactly the same items match.

Before any delete, every item is read again in full (`select: ["*"]`, user fields included): a change since the
preview or the question refuses the whole set (`ITEM_CHANGED`), and the full items are the journal's snapshots.
Each batch's intents are fsynced before it is sent; only items whose intent line is on disk are sent. A batch
handed to the portal client is finished and journaled even when the call is cancelled; nothing starts after.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import time
from array import array
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import anyio
import anyio.lowlevel
from pydantic import BaseModel, Field

from b24_mcp.app import App
from b24_mcp.catalog import where_it_goes
from b24_mcp.deletion import iso_utc
from b24_mcp.errors import B24Error, PortalError, Refusal
from b24_mcp.gate import (
    Answer,
    ConfirmedBy,
    Consent,
    Declined,
    Question,
    Reach,
    Route,
    Target,
    mode_hint,
    pass_gate,
)
from b24_mcp.items import counted, display_name, type_name, version_of
from b24_mcp.journal import Attempt, Entry, JournalUnwritable
from b24_mcp.questions import describe_set, filter_preview, set_question, summary
from b24_mcp.results import LOST_ANSWER_NOTE, ToolResult, error_message, settle_lost_answer
from b24_mcp.selection import (
    BATCH_SIZE,
    EVERY_FIELD,
    ID_ONLY,
    PREVIEW_FIELDS,
    ItemLister,
    Query,
    chunks,
    split_batch,
)
from b24_mcp.text import bounded

logger = logging.getLogger(__name__)

MAX_IDS = 500
DEFAULT_BATCH_MAX = 5000  # B24_BATCH_MAX: the most items one filter call previews or deletes
SHOWN = 50  # the items a filter preview lists
SUBJECT = "batch"  # what an ids preview's token names
Progress = Callable[[int, int, str], Awaitable[None]]
Selected = Sequence[int] | Query


class FoundItem(BaseModel):
    """An item that exists, as the preview shows it."""

    id: int
    title: str | None = None
    stageId: str | None = None
    updatedTime: str | None = None


class SetSummary(BaseModel):
    """How the previewed items break down: counts by stage and by assignee (user id), the rest as `other`."""

    byStage: dict[str, int]
    byAssignee: dict[str, int]


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
        description="preview: nothing deleted yet; deleted: all of them deleted; partial: some deleted, some "
        "failed or remain; cancelled by the person; error: nothing deleted."
    )
    entityTypeId: int
    message: str = Field(description="What happened and what to do next.")
    matched: int | None = Field(default=None, description="Filter preview: how many items this preview covers.")
    more: bool | None = Field(
        default=None, description="Filter: true when further items match beyond the cap (B24_BATCH_MAX)."
    )
    found: list[FoundItem] | None = Field(
        default=None, description="Preview: the items that exist (a filter preview: the first 50 by id)."
    )
    missing: list[int] | None = Field(
        default=None, description="Ids preview: the ids the portal does not list (absent, binned, or unreadable)."
    )
    summary: SetSummary | None = Field(default=None, description="Filter preview: counts by stage and assignee.")
    recycleBin: bool | None = Field(default=None, description="Whether deleted items go to the recycle bin.")
    confirmationToken: str | None = Field(default=None, description="Preview: pass with dryRun: false.")
    confirmationExpiresAt: str | None = None
    confirmation: ConfirmedBy | None = None
    results: list[ItemOutcome] | None = Field(
        default=None,
        description="Delete: ids form, one entry per requested id; filter form, the items that failed.",
    )
    deleted: int | None = None
    failed: int | None = Field(default=None, description="Delete: items the portal refused or that could not be told.")
    remaining: int | None = Field(
        default=None, description="Delete: items not deleted because the work stopped (retry later)."
    )
    unblocksAt: str | None = Field(
        default=None, description="When the portal stopped the work for its time limit: when it unblocks (UTC)."
    )
    error: str | None = None
    error_description: str | None = None
    retryable: bool | None = None
    httpStatus: int | None = None


@dataclass
class Reading:
    """The state of a set of items on the portal."""

    items: dict[int, dict[str, Any]] = field(default_factory=dict)  # in the order asked (a filter: by id)
    missing: list[int] = field(default_factory=list)
    more: bool = False  # a filter: further items match beyond the cap

    @property
    def version(self) -> str:
        """A digest of the existing ids and their `updatedTime`s: what a bulk token is bound to."""
        pairs = sorted((item_id, version_of(item)) for item_id, item in self.items.items())
        digest = hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()


@dataclass(frozen=True)
class SetQuestion(Question):
    """The question about a set, with the ids it describes (so a yes covers exactly those)."""

    ids: tuple[int, ...] = ()
    more: bool = False


class PreviewedSets:
    """The ids each filter preview's token covers, kept in this process until the token expires.

    Keyed by the token's nonce, looked up only once the token's signature was checked. The oldest go first when
    `capacity` previews are kept; a token whose ids are gone falls back to listing the filter again.
    """

    def __init__(self, capacity: int = 64, clock: Callable[[], float] = time.time) -> None:
        self._capacity = capacity
        self._clock = clock
        self._sets: OrderedDict[str, tuple[int, array[int], bool]] = OrderedDict()

    def keep(self, nonce: str, expires_at: int, ids: Sequence[int], more: bool) -> None:
        now = self._clock()
        for key in [key for key, (expiry, _, _) in self._sets.items() if expiry <= now]:
            del self._sets[key]
        self._sets[nonce] = (expires_at, array("q", ids), more)
        while len(self._sets) > self._capacity:
            self._sets.popitem(last=False)

    def find(self, nonce: str) -> tuple[list[int], bool] | None:
        kept = self._sets.get(nonce)
        if kept is None or kept[0] <= self._clock():
            return None
        return list(kept[1]), kept[2]


PREVIEWED = PreviewedSets()


@dataclass
class _Run:
    """What one batch of deletes did."""

    outcomes: dict[int, ItemOutcome]
    untouched: set[int]  # not deleted, and the portal did not act on them: they remain
    stop: B24Error | None = None
    reset_at: int | None = None  # the latest operating_reset_at the portal gave for crm.item.delete


def _not_found(item_id: int) -> ItemOutcome:
    return ItemOutcome(
        id=item_id,
        status="error",
        error="NOT_FOUND",
        error_description="Not found: crm.item.list does not return this id (deleted, in the recycle bin, never "
        "existed, or not readable by this user).",
    )


def _batch_max_of(app: App) -> int:
    # The App carries B24_BATCH_MAX once it has the field; until then the default applies.
    value = getattr(app, "batch_max", None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else DEFAULT_BATCH_MAX


class BulkDeletion:
    """Previews and deletes sets of items of one type with the application's portal, tokens, journal and gate."""

    def __init__(self, app: App, *, batch_max: int | None = None) -> None:
        self.app = app
        self.portal = app.portal
        self.lister = ItemLister(app.portal)
        self.batch_max = batch_max or _batch_max_of(app)

    # ------------------------------------------------------------------ reading

    async def read(self, entity_type_id: int, ids: Sequence[int], select: Sequence[str] = EVERY_FIELD) -> Reading:
        """The items of `ids`, and the ids the portal does not list."""
        items = await self.lister.read(entity_type_id, ids, select)
        return Reading(items, [item_id for item_id in dict.fromkeys(ids) if item_id not in items])

    async def _select(self, entity_type_id: int, selected: Selected, select: Sequence[str]) -> Reading:
        if isinstance(selected, Query):
            listing = await self.lister.matches(entity_type_id, selected, self.batch_max, select)
            return Reading(listing.items, more=listing.more)
        return await self.read(entity_type_id, selected, select)

    async def _missing(self, entity_type_id: int, ids: Sequence[int]) -> set[int]:
        return set((await self.read(entity_type_id, ids, ID_ONLY)).missing)

    # ------------------------------------------------------------------ preview

    async def preview(self, entity_type_id: int, selected: Selected, *, reach: Reach | None = None) -> BatchResult:
        """Read what would be deleted and say so; one token for the whole set."""
        with self.portal.deadline(self.app.call_deadline):
            try:
                self.app.guardrails.check_type(entity_type_id)
                reading = await self._select(entity_type_id, selected, PREVIEW_FIELDS)
            except B24Error as exc:
                return self._error(entity_type_id, exc)
            recycle_bin = await self.app.catalog.recycle_bin(entity_type_id)
        if isinstance(selected, Query):
            return self._filter_preview(entity_type_id, selected, reading, recycle_bin, reach)
        return self._ids_preview(entity_type_id, selected, reading, recycle_bin, reach)

    def _ids_preview(
        self, entity_type_id: int, ids: Sequence[int], reading: Reading, recycle_bin: bool | None, reach: Reach | None
    ) -> BatchResult:
        found = [FoundItem(id=item_id, title=_title(item)) for item_id, item in reading.items.items()]
        parts = [f"Preview only, nothing was deleted: {len(found)} of {len(ids)} ids exist."]
        if reading.missing:
            parts.append(f"Not found or not readable: {', '.join(map(str, reading.missing))}.")
        token = expires = None
        if found:
            token, expires_at = self.app.tokens.issue(entity_type_id, SUBJECT, reading.version)
            expires = iso_utc(expires_at)
            parts.append(
                f"{counted(entity_type_id, len(found))} would be deleted. {describe_set(entity_type_id, reading.items)}"
            )
            parts.append(where_it_goes(recycle_bin, many=len(found) > 1))
            parts.append(self._next_step("ids", reach))
        else:
            parts.append("There is nothing to delete.")
        return BatchResult(
            status="preview",
            entityTypeId=entity_type_id,
            message=" ".join(parts),
            found=found,
            missing=reading.missing,
            recycleBin=recycle_bin,
            confirmationToken=token,
            confirmationExpiresAt=expires,
        )

    def _filter_preview(
        self, entity_type_id: int, query: Query, reading: Reading, recycle_bin: bool | None, reach: Reach | None
    ) -> BatchResult:
        items = reading.items
        found = [
            FoundItem(
                id=item_id,
                title=_title(item),
                stageId=_field(item, "stageId"),
                updatedTime=_field(item, "updatedTime"),
            )
            for item_id, item in list(items.items())[:SHOWN]
        ]
        stages, assignees = summary(items.values(), limit=20)
        parts = [
            "Preview only, nothing was deleted: "
            + filter_preview(entity_type_id, items, query.describe(), reading.more)
        ]
        token = expires = None
        if items:
            token, expires_at = self.app.tokens.issue(entity_type_id, query.subject, reading.version)
            claim = self.app.tokens.check(token, entity_type_id, query.subject)
            PREVIEWED.keep(claim.nonce, claim.expires_at, list(items), reading.more)
            expires = iso_utc(expires_at)
            parts.append(describe_set(entity_type_id, items))
            parts.append(where_it_goes(recycle_bin, many=len(items) > 1))
            parts.append(self._next_step("filter", reach))
        return BatchResult(
            status="preview",
            entityTypeId=entity_type_id,
            message=" ".join(parts),
            matched=len(items),
            more=reading.more,
            found=found,
            summary=SetSummary(
                byStage={bounded(key, 200): n for key, n in stages.items()},
                byAssignee={bounded(key, 200): n for key, n in assignees.items()},
            ),
            recycleBin=recycle_bin,
            confirmationToken=token,
            confirmationExpiresAt=expires,
        )

    def _next_step(self, noun: str, reach: Reach | None) -> str:
        if self.app.guardrails.read_only:
            return "This server is read-only (B24_READ_ONLY=true): it will not delete them."
        return mode_hint(self.app.mode, noun, reach)

    # ------------------------------------------------------------------ the question

    async def question(self, entity_type_id: int, selected: Selected) -> SetQuestion | None:
        """The one question for the whole set, or None when it cannot be put."""
        with self.portal.deadline(self.app.call_deadline):
            try:
                self.app.guardrails.check_delete(entity_type_id)
                reading = await self._select(entity_type_id, selected, PREVIEW_FIELDS)
            except B24Error:
                return None
            if not reading.items:
                return None
            recycle_bin = await self.app.catalog.recycle_bin(entity_type_id)
        conditions = selected.describe() if isinstance(selected, Query) else None
        skipped = 0 if isinstance(selected, Query) else len(selected) - len(reading.items)
        # The latest change among them is part of the text, so a later-round answer never covers a changed set.
        text = set_question(
            self.portal.host,
            entity_type_id,
            reading.items,
            recycle_bin,
            skipped=skipped,
            more=reading.more,
            conditions=conditions,
        )
        return SetQuestion(text, reading.version, ids=tuple(reading.items), more=reading.more)

    # ------------------------------------------------------------------ deleting

    async def delete(
        self,
        entity_type_id: int,
        selected: Selected,
        consent: Consent,
        progress: Progress | None = None,
        *,
        shown: Question | None = None,
    ) -> BatchResult:
        """Delete the set once the gate lets it through; a failed item never stops the others.

        `shown` is the question the person answered (its ids are what their yes covers). The call's deadline
        bounds the reading; each delete request then gets a deadline of its own, so a long clean-up is not cut
        off part-way by the time the earlier requests took.
        """
        try:
            with self.portal.deadline(self.app.call_deadline):
                target = self._target(entity_type_id, selected, consent, shown)
                outcome = await pass_gate(consent, target, self.app.tokens, self.app.guardrails)
            if isinstance(outcome, Declined):
                return await self._cancelled(entity_type_id, outcome)
            return await self._delete_all(entity_type_id, selected, outcome.reading, outcome.by, progress)
        except B24Error as exc:
            return self._error(entity_type_id, exc, deleting=True)

    def _target(
        self, entity_type_id: int, selected: Selected, consent: Consent, shown: Question | None
    ) -> Target[Reading]:
        known: tuple[list[int], bool] | None = None
        subject = SUBJECT
        if isinstance(selected, Query):
            subject = selected.subject
            if consent.route is Route.ASK and isinstance(shown, SetQuestion):
                known = list(shown.ids), shown.more
            elif consent.route is Route.TOKEN and consent.token:
                with contextlib.suppress(Refusal):  # the gate refuses such a token itself, with the same reason
                    known = PREVIEWED.find(self.app.tokens.check(consent.token, entity_type_id, subject).nonce)

        async def read() -> Reading:
            if not isinstance(selected, Query):
                reading = await self.read(entity_type_id, selected)
            else:
                if known is None:
                    listing = await self.lister.matches(entity_type_id, selected, self.batch_max, ID_ONLY)
                    ids, more = list(listing.items), listing.more
                else:
                    ids, more = known
                reading = await self.read(entity_type_id, ids)
                reading.more = more
            if not reading.items:
                raise Refusal(
                    "NOT_FOUND",
                    f"No {type_name(entity_type_id)} matches the filter (any more); nothing to delete."
                    if isinstance(selected, Query)
                    else "None of the requested ids exist.",
                )
            return reading

        def changed_since_preview(_previewed: str, _now: Reading) -> Refusal:
            if isinstance(selected, Query):
                return Refusal(
                    "ITEM_CHANGED",
                    "Some of the items the preview matched were modified or deleted since the preview, or the filter "
                    "now matches other items. Nothing was deleted. Preview the same filter again and confirm anew.",
                )
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

        noun = "filter" if isinstance(selected, Query) else "ids"
        return Target(entity_type_id, subject, noun, read, changed_since_preview, changed_since_asked)

    async def _delete_all(
        self,
        entity_type_id: int,
        selected: Selected,
        reading: Reading,
        how: ConfirmedBy,
        progress: Progress | None,
    ) -> BatchResult:
        by_filter = isinstance(selected, Query)
        outcomes: dict[int, ItemOutcome] = {}
        if not by_filter:
            outcomes |= {item_id: _not_found(item_id) for item_id in reading.missing}
        todo = list(reading.items)
        untouched: set[int] = set()
        stop: B24Error | None = None
        reset_at: int | None = None
        done = 0
        try:
            for run in chunks(todo, BATCH_SIZE):
                if stop is not None:
                    outcomes |= {item_id: self._not_attempted(item_id, stop) for item_id in run}
                    untouched.update(run)
                    continue
                await anyio.lowlevel.checkpoint()  # a cancelled call starts no further batch
                attempts = {
                    item_id: self._attempt(entity_type_id, item_id, how, reading.items[item_id]) for item_id in run
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
                    outcomes |= {item_id: self._not_attempted(item_id, stop) for item_id in rest}
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
        return self._summary(entity_type_id, ordered, untouched, how, stop, reset_at, reading.more, by_filter)

    async def _delete_run(self, entity_type_id: int, run: list[int]) -> _Run:
        """Delete one batch; a failure of the batch request itself is global and stops the rest."""
        cmd = {f"d{item_id}": f"crm.item.delete?entityTypeId={entity_type_id}&id={item_id}" for item_id in run}
        outcomes: dict[int, ItemOutcome] = {}

        async def missing(ids: Sequence[int]) -> set[int]:
            return await self._missing(entity_type_id, ids)

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
            await self._settle_unanswered(unanswered, missing, run_result)
        return run_result

    async def _settle_unanswered(
        self, ids: list[int], missing: Callable[[Sequence[int]], Awaitable[set[int]]], run: _Run
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
        # The intents are on disk already; a failure here must not hide what the portal did.
        with contextlib.suppress(Refusal):
            await self.app.journal.write_many(entries)

    async def _journal_not_sent(self, attempts: Mapping[int, Attempt]) -> None:
        description = "Not sent: the tool call was cancelled before this batch went to the portal."
        with contextlib.suppress(Refusal):
            await self.app.journal.write_many(
                [Entry("error", attempt, "CANCELLED", description) for attempt in attempts.values()]
            )

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
        return Attempt(
            self.portal.host,
            self.portal.user_id,
            entity_type_id,
            item_id,
            how,
            item,
            user_name=self.app.user_name,
        )

    @staticmethod
    def _not_attempted(item_id: int, cause: B24Error) -> ItemOutcome:
        return ItemOutcome(
            id=item_id,
            status="error",
            error=cause.code,
            error_description=f"Not attempted: the deletion stopped ({cause.description})",
        )

    def _summary(
        self,
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

    def _error(self, entity_type_id: int, exc: B24Error, *, deleting: bool = False) -> BatchResult:
        message = error_message(exc, f"{type_name(entity_type_id)} items", deleting=deleting)
        return BatchResult.failure(exc, message, entityTypeId=entity_type_id)


def _title(item: Mapping[str, Any]) -> str | None:
    name = display_name(item)
    return bounded(name, 2000) if name else None


def _field(item: Mapping[str, Any], key: str) -> str | None:
    value = item.get(key)
    return bounded(str(value), 200) if value not in (None, "") else None
