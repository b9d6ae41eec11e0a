"""Deleting one item: how it is read (`crm.item.get`), named, deleted and journaled; the rule is the gate's.

Plain async functions over the application object: no MCP here, so every rule is testable on its own.
Anticipated failures come back as `DeleteResult`s with `status: "error"`, never as exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from b24_mcp.deleting.app import App
from b24_mcp.deleting.approval import ApprovalPending, page_facts, show_link
from b24_mcp.deleting.gate import (
    UNFIT_NOTE,
    Answer,
    Consent,
    Declined,
    Question,
    Reach,
    Target,
    mode_hint,
    not_confirmed,
    pass_gate,
)
from b24_mcp.deleting.offer import offer
from b24_mcp.deleting.questions import item_question
from b24_mcp.deleting.results import LOST_ANSWER_NOTE, ToolResult, error_message, iso_utc, settle_lost_answer
from b24_mcp.errors import B24Error, PortalError, Refusal, TransportError
from b24_mcp.journal.record import Attempt, ConfirmedBy, Entry
from b24_mcp.portal.catalog import where_it_goes
from b24_mcp.portal.items import ItemSummary, changed_at, describe, summarize, type_name, version_of, version_time
from b24_mcp.telemetry import metrics

Status = Literal["preview", "deleted", "cancelled", "error"]
_HOW = {
    ConfirmedBy.ELICITATION: "confirmed by the person",
    ConfirmedBy.TOKEN: "confirmed with the preview's token",
    ConfirmedBy.PAGE: "approved by the person on this server's page",
    ConfirmedBy.NONE: "no confirmation: B24_CONFIRM=none",
}


class DeleteResult(ToolResult):
    """The outcome of one `crm_item_delete` call, as the assistant receives it."""

    status: Status = Field(description="preview: nothing deleted yet; deleted; cancelled by the person; error.")
    entityTypeId: int = Field(description="The call's entityTypeId; absent only when its arguments were refused.")
    id: int = Field(description="The call's item id; absent only when its arguments were refused.")
    message: str = Field(description="What happened and what to do next. The portal's text in it is quoted.")
    item: ItemSummary | None = Field(default=None, description="The item as the portal returned it before deletion.")
    confirmationToken: str | None = Field(
        default=None, description="Preview only: pass with dryRun: false to delete exactly this item."
    )
    confirmationExpiresAt: str | None = Field(default=None, description="Preview only: when the token expires (UTC).")
    approvalUrl: str | None = Field(
        default=None,
        description="When the person approves deletions on this server's page: the page to show them (a preview, "
        "and APPROVAL_PENDING).",
    )
    recycleBin: bool | None = Field(
        default=None,
        description="Preview and deleted: true if the type sends deleted items to the CRM recycle bin (when the "
        "portal keeps one; restorable there, not through this server), false if the item is deleted permanently; "
        "absent when unknown.",
    )
    confirmation: ConfirmedBy | None = Field(default=None, description="Deleted only: how the deletion was confirmed.")
    error: str | None = Field(default=None, description="Error code: the portal's exactly as sent, or our own.")
    error_description: str | None = None
    retryable: bool | None = Field(default=None, description="Error only: whether retrying later can help.")
    httpStatus: int | None = Field(default=None, description="Error only: the portal's HTTP status, if any.")


@dataclass(frozen=True)
class ItemReading:
    """One item as the portal returned it."""

    item: dict[str, Any]

    @property
    def version(self) -> str:
        return version_of(self.item)


def new_attempt(
    app: App, entity_type_id: int, item_id: int, how: ConfirmedBy, item: Mapping[str, Any] | None
) -> Attempt:
    """What the journal records of one item's deletion by `app`'s caller (its portal credential, its person)."""
    return Attempt(app.portal.host, app.portal.user_id, entity_type_id, item_id, how, item, user_name=app.user_name)


class ItemDeletion:
    """Previews and deletes single items with the application's portal, tokens, journal and guardrails."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.portal = app.portal

    async def fetch(self, entity_type_id: int, item_id: int) -> dict[str, Any]:
        """The item as `crm.item.get` returns it (all fields)."""
        answer = await self.portal.call("crm.item.get", {"entityTypeId": entity_type_id, "id": item_id})
        result = answer.result
        item = result.get("item") if isinstance(result, Mapping) else None
        if not isinstance(item, Mapping) or str(item.get("id", "")) != str(item_id):
            raise TransportError(
                "BAD_PORTAL_RESPONSE",
                "The portal answered crm.item.get without the item asked for.",
                http_status=200,
                retryable=False,
                maybe_sent=False,
            )
        return dict(item)

    async def preview(self, entity_type_id: int, item_id: int, *, reach: Reach | None = None) -> DeleteResult:
        """Read the item and say what a deletion would remove; issue a confirmation token for it."""
        with self.portal.deadline(self.app.call_deadline):
            try:
                self.app.guardrails.check_type(entity_type_id)
                item = await self.fetch(entity_type_id, item_id)
            except B24Error as exc:
                return self._error(entity_type_id, item_id, exc, deleting=False)
            recycle_bin = await self.app.catalog.recycle_bin(entity_type_id)
        token, expires = self.app.tokens.issue(entity_type_id, item_id, version_of(item))
        if self.app.guardrails.read_only:
            next_step = "This server is read-only (B24_READ_ONLY=true): it will not delete it."
        else:
            next_step = mode_hint(self.app.mode, "item", reach)
        question = item_question(self.portal.host, entity_type_id, item_id, item, recycle_bin)
        facts = page_facts(
            host=self.portal.host,
            entity_type_id=entity_type_id,
            type_name=type_name(entity_type_id),
            ids=[item_id],
            recycle_bin=recycle_bin,
            question=question,
            subject=str(item_id),
        )
        url = await offer(self.app, reach, token, facts)
        if url is not None:
            next_step = show_link(url)
        return DeleteResult(
            status="preview",
            entityTypeId=entity_type_id,
            id=item_id,
            item=summarize(item),
            message=f"Preview only, nothing was deleted: {describe(entity_type_id, item_id, item)} would be deleted. "
            f"{where_it_goes(recycle_bin)} {next_step}",
            recycleBin=recycle_bin,
            confirmationToken=token,
            confirmationExpiresAt=iso_utc(expires),
            approvalUrl=url,
        )

    async def question(self, entity_type_id: int, item_id: int) -> Question | None:
        """The question to put to the person before deleting, or None when it cannot be put."""
        with self.portal.deadline(self.app.call_deadline):
            try:
                self.app.guardrails.check_delete(entity_type_id)
                item = await self.fetch(entity_type_id, item_id)
            except B24Error:
                return None
            recycle_bin = await self.app.catalog.recycle_bin(entity_type_id)
        # The version is part of the text: a client that answers in a later round (2026-07-28) is asked again
        # when the item changed in between, since the answer is bound to the exact question.
        text = item_question(self.portal.host, entity_type_id, item_id, item, recycle_bin)
        return Question(text, version_of(item))

    async def delete(self, entity_type_id: int, item_id: int, consent: Consent) -> DeleteResult:
        """Delete the item if the gate lets it through; every refusal is an error result, nothing deleted."""
        with self.portal.deadline(self.app.call_deadline):
            try:
                outcome = await pass_gate(
                    consent,
                    self._target(entity_type_id, item_id),
                    self.app.tokens,
                    self.app.guardrails,
                    self.app.approvals,
                )
                if isinstance(outcome, Declined):
                    return await self._cancelled(entity_type_id, item_id, outcome)
                return await self._delete(entity_type_id, item_id, outcome.reading.item, outcome.by)
            except B24Error as exc:
                return self._error(entity_type_id, item_id, exc, deleting=True)

    def _target(self, entity_type_id: int, item_id: int) -> Target[ItemReading]:
        async def read() -> ItemReading:
            return ItemReading(await self.fetch(entity_type_id, item_id))

        def changed_since_preview(previewed: str, now: ItemReading) -> Refusal:
            before, after = version_time(previewed), changed_at(now.item)
            how = (
                f"updatedTime {before} → {after}"
                if before != after
                else f"a field the preview showed changed within the same second, updatedTime {after}"
            )
            return Refusal(
                "ITEM_CHANGED",
                f"{describe(entity_type_id, item_id, now.item)} was modified on the portal after the preview "
                f"({how}). Preview it again, show the person the current version, and confirm with the new token.",
            )

        def changed_since_asked(now: ItemReading) -> Refusal:
            return Refusal(
                "ITEM_CHANGED",
                f"{describe(entity_type_id, item_id, now.item)} changed on the portal while the person was being "
                "asked, so what they agreed to is not what would be deleted. Nothing was deleted; call again to "
                "ask about the current version.",
            )

        return Target(entity_type_id, str(item_id), "item", read, changed_since_preview, changed_since_asked)

    async def _missing(self, entity_type_id: int, ids: Sequence[int]) -> set[int]:
        try:
            await self.fetch(entity_type_id, ids[0])
        except PortalError as exc:
            if exc.is_code("NOT_FOUND"):
                return {ids[0]}
            raise
        return set()

    async def _delete(self, entity_type_id: int, item_id: int, item: dict[str, Any], how: ConfirmedBy) -> DeleteResult:
        attempt = new_attempt(self.app, entity_type_id, item_id, how, item)
        note = None
        try:
            await self.app.journal.write("intent", attempt)
            await self.portal.call("crm.item.delete", {"entityTypeId": entity_type_id, "id": item_id})
        except Refusal:
            metrics.deletions(not_sent=1)  # the journal, or a block the portal set earlier: nothing was sent
            raise
        except (PortalError, TransportError) as exc:
            # When some attempt may have reached the portal without its answer coming back (a NOT_FOUND on a
            # retry may just mean that attempt worked), only a fresh read can tell what happened.
            gone = await settle_lost_answer(exc, [item_id], lambda ids: self._missing(entity_type_id, ids))
            if not gone:
                metrics.deletions(failed=1)
            if gone is None:
                await self._journal_error(attempt, exc, note="outcome unknown: the item could not be checked")
                return self._unknown(entity_type_id, item_id, exc)
            if not gone:
                await self._journal_error(attempt, exc)
                raise
            note = LOST_ANSWER_NOTE
        metrics.deletions(deleted=1)
        recycle_bin = await self.app.catalog.recycle_bin(entity_type_id)
        message = f"Deleted {describe(entity_type_id, item_id, item)} ({_HOW[how]})."
        if recycle_bin is not None:
            message += (
                " It is in the CRM recycle bin if the portal keeps one (restore it there, not through this server)."
                if recycle_bin
                else " It is gone for good."
            )
        refused = await self.app.journal.write_outcomes([Entry("deleted", attempt, note=note)])
        if refused is not None:
            message += (
                f" Warning: the deletion could not be journaled yet: {refused.description} The server keeps the "
                "outcome and writes it as soon as the journal takes writes again."
            )
        if note:
            message += " " + note
        return DeleteResult(
            status="deleted",
            entityTypeId=entity_type_id,
            id=item_id,
            item=summarize(item),
            message=message,
            recycleBin=recycle_bin,
            confirmation=how,
        )

    async def _journal_error(self, attempt: Attempt, exc: B24Error, note: str | None = None) -> None:
        # The intent line is already there; the error itself is what the caller reports.
        await self.app.journal.write_outcomes([Entry("error", attempt, exc.code, exc.description, note)])

    def _unknown(self, entity_type_id: int, item_id: int, exc: B24Error) -> DeleteResult:
        return DeleteResult.failure(
            exc,
            f"The delete request may have reached the portal, but its answer was lost ({exc.code}) and the item "
            "could not be checked afterwards: it is unknown whether it was deleted. Preview it again: NOT_FOUND "
            "means it is gone.",
            entityTypeId=entity_type_id,
            id=item_id,
        )

    async def _cancelled(self, entity_type_id: int, item_id: int, declined: Declined[ItemReading]) -> DeleteResult:
        item = declined.reading.item if declined.reading is not None else None
        attempt = new_attempt(self.app, entity_type_id, item_id, declined.by, item)
        note = UNFIT_NOTE if declined.answer is Answer.UNFIT else None
        await self.app.journal.write("cancelled", attempt, note=note)
        return DeleteResult(
            status="cancelled",
            entityTypeId=entity_type_id,
            id=item_id,
            item=summarize(item) if item is not None else None,
            message=not_confirmed(declined.answer, describe(entity_type_id, item_id, item)),
        )

    def _error(self, entity_type_id: int, item_id: int, exc: B24Error, *, deleting: bool) -> DeleteResult:
        message = error_message(exc, describe(entity_type_id, item_id), deleting=deleting)
        url = exc.url if isinstance(exc, ApprovalPending) else None
        return DeleteResult.failure(exc, message, entityTypeId=entity_type_id, id=item_id, approvalUrl=url)
