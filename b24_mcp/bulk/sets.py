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
The sets are read in `bulk_reading.py`, previews worded in `bulk_preview.py`, the deletes run in `bulk_run.py`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from b24_mcp.bulk.preview import SUBJECT, PreviewedSets, SetPreview
from b24_mcp.bulk.reading import Reading, Selected, SetReader
from b24_mcp.bulk.results import BatchResult, FoundItem, ItemOutcome, SetSummary
from b24_mcp.bulk.run import DeletionRun, Progress
from b24_mcp.bulk.selection import ID_ONLY, PREVIEW_FIELDS, Query
from b24_mcp.deleting.app import App
from b24_mcp.deleting.approval import ApprovalPending, page_facts, show_link
from b24_mcp.deleting.gate import (
    UNFIT_NOTE,
    Answer,
    Consent,
    Declined,
    Question,
    Reach,
    Route,
    Target,
    not_confirmed,
    pass_gate,
)
from b24_mcp.deleting.offer import offer
from b24_mcp.deleting.questions import set_question
from b24_mcp.deleting.results import error_message
from b24_mcp.errors import B24Error, Refusal
from b24_mcp.journal.record import Entry
from b24_mcp.portal.items import counted, type_name

__all__ = [
    "MAX_IDS",
    "PREVIEWED",
    "BatchResult",
    "BulkDeletion",
    "FoundItem",
    "ItemOutcome",
    "PreviewedSets",
    "Progress",
    "Reading",
    "Selected",
    "SetQuestion",
    "SetSummary",
]

MAX_IDS = 500
PREVIEWED = PreviewedSets()  # the ids of this process's filter previews


@dataclass(frozen=True)
class SetQuestion(Question):
    """The question about a set, with the ids it describes (so a yes covers exactly those)."""

    ids: tuple[int, ...] = ()
    more: bool = False


class BulkDeletion:
    """Previews and deletes sets of items of one type with the application's portal, tokens, journal and gate."""

    def __init__(self, app: App, *, batch_max: int | None = None) -> None:
        self.app = app
        self.portal = app.portal
        self.reader = SetReader(app.portal, batch_max or app.batch_max)
        self.previews = SetPreview(app, PREVIEWED)
        self.runner = DeletionRun(app, self.reader)

    # ------------------------------------------------------------------ preview

    async def preview(self, entity_type_id: int, selected: Selected, *, reach: Reach | None = None) -> BatchResult:
        """Read what would be deleted and say so; one token for the whole set."""
        with self.portal.deadline(self.app.call_deadline):
            try:
                self.app.guardrails.check_type(entity_type_id)
                reading = await self.reader.select(entity_type_id, selected, PREVIEW_FIELDS)
            except B24Error as exc:
                return self._error(entity_type_id, exc)
            recycle_bin = await self.app.catalog.recycle_bin(entity_type_id)
        if isinstance(selected, Query):
            result = self.previews.for_filter(entity_type_id, selected, reading, recycle_bin, reach)
        else:
            result = self.previews.for_ids(entity_type_id, selected, reading, recycle_bin, reach)
        if result.confirmationToken is not None:
            await self._offer_page(entity_type_id, selected, reading, recycle_bin, reach, result)
        return result

    async def _offer_page(
        self,
        entity_type_id: int,
        selected: Selected,
        reading: Reading,
        recycle_bin: bool | None,
        reach: Reach | None,
        result: BatchResult,
    ) -> None:
        """Open the page's approval of what the preview showed, when the page is the route; its link in `result`."""
        assert result.confirmationToken is not None
        by_filter = isinstance(selected, Query)
        question = set_question(
            self.portal.host,
            entity_type_id,
            reading.items,
            recycle_bin,
            skipped=0 if by_filter else len(reading.missing),
            more=reading.more,
            conditions=selected.describe() if isinstance(selected, Query) else None,
        )
        facts = page_facts(
            host=self.portal.host,
            entity_type_id=entity_type_id,
            type_name=type_name(entity_type_id),
            ids=list(reading.items),
            recycle_bin=recycle_bin,
            question=question,
            subject=selected.subject if isinstance(selected, Query) else SUBJECT,
            more=reading.more,
        )
        url = await offer(self.app, reach, result.confirmationToken, facts)
        if url is not None:
            result.approvalUrl = url
            result.message += " " + show_link(url)

    # ------------------------------------------------------------------ the question

    async def question(self, entity_type_id: int, selected: Selected) -> SetQuestion | None:
        """The one question for the whole set, or None when it cannot be put."""
        with self.portal.deadline(self.app.call_deadline):
            try:
                self.app.guardrails.check_delete(entity_type_id)
                reading = await self.reader.select(entity_type_id, selected, PREVIEW_FIELDS)
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
                outcome = await pass_gate(consent, target, self.app.tokens, self.app.guardrails, self.app.approvals)
            if isinstance(outcome, Declined):
                return await self._cancelled(entity_type_id, outcome)
            return await self.runner.delete(entity_type_id, selected, outcome.reading, outcome.by, progress)
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
            elif consent.route in (Route.TOKEN, Route.PAGE) and consent.token:
                with contextlib.suppress(Refusal):  # the gate refuses such a token itself, with the same reason
                    known = PREVIEWED.find(self.app.tokens.check(consent.token, entity_type_id, subject).nonce)

        async def read() -> Reading:
            if not isinstance(selected, Query):
                reading = await self.reader.read(entity_type_id, selected)
            else:
                if known is None:
                    listing = await self.reader.select(entity_type_id, selected, ID_ONLY)
                    ids, more = list(listing.items), listing.more
                else:
                    ids, more = known
                reading = await self.reader.read(entity_type_id, ids)
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

    async def _cancelled(self, entity_type_id: int, declined: Declined[Reading]) -> BatchResult:
        items = declined.reading.items if declined.reading is not None else {}
        note = UNFIT_NOTE if declined.answer is Answer.UNFIT else None
        await self.app.journal.write_many(
            [
                Entry("cancelled", self.runner.attempt(entity_type_id, item_id, declined.by, item), note=note)
                for item_id, item in items.items()
            ]
        )
        return BatchResult(
            status="cancelled",
            entityTypeId=entity_type_id,
            message=not_confirmed(declined.answer, counted(entity_type_id, len(items))),
            deleted=0,
            failed=0,
        )

    def _error(self, entity_type_id: int, exc: B24Error, *, deleting: bool = False) -> BatchResult:
        message = error_message(exc, f"{type_name(entity_type_id)} items", deleting=deleting)
        url = exc.url if isinstance(exc, ApprovalPending) else None
        return BatchResult.failure(exc, message, entityTypeId=entity_type_id, approvalUrl=url)
