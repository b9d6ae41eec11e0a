"""The deletion service: preview, the confirmation gate and the journal around `crm.item.delete`.

Plain async functions over a portal client: no MCP here, so every rule is testable on its own.
Anticipated failures come back as `DeleteResult`s with `status: "error"`, never as exceptions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from b24_mcp.catalog import EntityCatalog, where_it_goes
from b24_mcp.confirmation import ConfirmationTokens
from b24_mcp.errors import B24Error, Refusal, PortalError, TransportError, may_have_acted
from b24_mcp.gate import (
    Answer,
    Consent,
    Guardrails,
    Question,
    Route,
    ShownVersions,
    changed_since_asked,
    confirmation_required,
    elicitation_unsupported,
    not_asked,
)
from b24_mcp.gate import mode_hint as _mode_hint
from b24_mcp.items import ItemSummary, describe, summarize
from b24_mcp.journal import Attempt, Journal
from b24_mcp.portal import PortalClient
from b24_mcp.settings import ConfirmMode

Status = Literal["preview", "deleted", "cancelled", "error"]
LOST_ANSWER_NOTE = (
    "The portal's answer to the delete was lost; crm.item.get now finds no such item, so the deletion is "
    "confirmed by absence."
)


class DeleteResult(BaseModel):
    """The outcome of one `crm_item_delete` call, as the assistant receives it."""

    status: Status = Field(description="preview: nothing deleted yet; deleted; cancelled by the person; error.")
    entityTypeId: int
    id: int
    message: str = Field(description="What happened and what to do next.")
    item: ItemSummary | None = Field(default=None, description="The item as the portal returned it before deletion.")
    confirmationToken: str | None = Field(
        default=None, description="Preview only: pass with dryRun: false to delete exactly this item."
    )
    confirmationExpiresAt: str | None = Field(default=None, description="Preview only: when the token expires (UTC).")
    recycleBin: bool | None = Field(
        default=None,
        description="Preview and deleted: true if the item goes to the recycle bin (restorable), false if it is "
        "deleted permanently; absent when unknown.",
    )
    confirmation: Literal["elicitation", "token", "none"] | None = Field(
        default=None, description="Deleted only: how the deletion was confirmed."
    )
    error: str | None = Field(default=None, description="Error code: the portal's exactly as sent, or our own.")
    error_description: str | None = None
    retryable: bool | None = Field(default=None, description="Error only: whether retrying later can help.")
    httpStatus: int | None = Field(default=None, description="Error only: the portal's HTTP status, if any.")

    def wire(self) -> dict[str, Any]:
        """The structured content: unset fields left out, except the error fields an error always has."""
        data = self.model_dump(mode="json", exclude_none=True)
        if self.status == "error":
            data |= {key: getattr(self, key) for key in ("error", "error_description", "retryable", "httpStatus")}
        return data


def error_message(exc: B24Error, subject: str, *, deleting: bool) -> str:
    """What an error means for the assistant and what to do next; says when nothing was deleted."""
    message = _explain(exc, subject, "Nothing was deleted. " if deleting else "")
    return f"{message} {exc.hint}" if exc.hint else message


def _explain(exc: B24Error, subject: str, nothing: str) -> str:
    code = exc.code.upper()
    if code == "NOT_FOUND":
        return (
            f"{nothing}The portal found no {subject}: {exc.description} Check the entityTypeId (smart-process ids "
            "come from crm_entity_types) and the id; an item already deleted or in the recycle bin is not found "
            "either."
        )
    if code in ("ACCESS_DENIED", "ALLOWED_ONLY_INTRANET_USER", "INSUFFICIENT_SCOPE"):
        return (
            f"{nothing}The portal refused ({exc.code}): {exc.description} The webhook's user lacks the rights "
            "for this; a retry will not help."
        )
    if code in ("INVALID_CREDENTIALS", "NO_AUTH_FOUND", "INVALID_TOKEN", "EXPIRED_TOKEN"):
        return (
            f"{nothing}The portal rejected the credentials ({exc.code}): {exc.description} Check the webhook "
            "(B24_WEBHOOK_URL) or the OAuth tokens; a retry will not help."
        )
    if isinstance(exc, Refusal):
        return f"{nothing}{exc.description}"
    retry = " Retrying later may help." if exc.retryable else " A retry will not help."
    return f"{nothing}{exc.code}: {exc.description}{retry}"


class DeletionService:
    """Previews and deletes CRM items of one portal under one confirmation mode and set of guardrails."""

    def __init__(
        self,
        portal: PortalClient,
        tokens: ConfirmationTokens,
        journal: Journal,
        *,
        mode: ConfirmMode,
        guardrails: Guardrails | None = None,
        call_deadline: float = 60.0,
    ) -> None:
        self.call_deadline = call_deadline
        self.catalog = EntityCatalog(portal)
        self.portal = portal
        self.tokens = tokens
        self.journal = journal
        self.mode = mode
        self.guardrails = guardrails or Guardrails()
        self.shown = ShownVersions()

    async def fetch(self, entity_type_id: int, item_id: int) -> dict[str, Any]:
        """The item as `crm.item.get` returns it (all fields)."""
        answer = await self.portal.call("crm.item.get", {"entityTypeId": entity_type_id, "id": item_id})
        result = answer.result
        item = result.get("item") if isinstance(result, Mapping) else None
        if not isinstance(item, Mapping) or not str(item.get("id", "")).isdigit():
            raise TransportError(
                "BAD_PORTAL_RESPONSE",
                "The portal answered crm.item.get without an item.",
                http_status=200,
                retryable=False,
                maybe_sent=False,
            )
        return dict(item)

    async def preview(self, entity_type_id: int, item_id: int, *, can_ask: bool | None = None) -> DeleteResult:
        """Read the item and say what a deletion would remove; issue a confirmation token for it."""
        with self.portal.deadline(self.call_deadline):
            return await self._preview(entity_type_id, item_id, can_ask)

    async def question(self, entity_type_id: int, item_id: int) -> Question | None:
        """The question to put to the person before deleting, or None when it cannot be put."""
        with self.portal.deadline(self.call_deadline):
            return await self._question(entity_type_id, item_id)

    async def delete(self, entity_type_id: int, item_id: int, consent: Consent) -> DeleteResult:
        """Delete the item if the gate lets it through; every refusal is an error result, nothing deleted."""
        with self.portal.deadline(self.call_deadline):
            return await self._delete_gated(entity_type_id, item_id, consent)

    async def _preview(self, entity_type_id: int, item_id: int, can_ask: bool | None) -> DeleteResult:
        try:
            self.guardrails.check_type(entity_type_id)
            item = await self.fetch(entity_type_id, item_id)
        except B24Error as exc:
            return self._error(entity_type_id, item_id, exc, deleting=False)
        token, expires = self.tokens.issue(entity_type_id, item_id, str(item.get("updatedTime", "")))
        subject = describe(entity_type_id, item_id, item)
        recycle_bin = await self.catalog.recycle_bin(entity_type_id)
        if self.guardrails.read_only:
            next_step = "This server is read-only (B24_READ_ONLY=true): it will not delete it."
        else:
            next_step = _mode_hint(self.mode, can_ask=can_ask)
        return DeleteResult(
            status="preview",
            entityTypeId=entity_type_id,
            id=item_id,
            item=summarize(item),
            message=f"Preview only, nothing was deleted: {subject} would be deleted. "
            f"{where_it_goes(recycle_bin)} {next_step}",
            recycleBin=recycle_bin,
            confirmationToken=token,
            confirmationExpiresAt=_iso(expires),
        )

    async def _question(self, entity_type_id: int, item_id: int) -> Question | None:
        try:
            self.guardrails.check_delete(entity_type_id)
            item = await self.fetch(entity_type_id, item_id)
        except B24Error:
            return None
        recycle_bin = await self.catalog.recycle_bin(entity_type_id)
        version = str(item.get("updatedTime", ""))
        # The version is part of the text: a client that answers in a later round (2026-07-28) is asked again
        # when the item changed in between, since the answer is bound to the exact question.
        changed = f" (last changed {version})" if version else ""
        text = f"Delete {describe(entity_type_id, item_id, item)}{changed} from {self.portal.host}?"
        return Question(f"{text} {where_it_goes(recycle_bin)}", version)

    async def _delete_gated(self, entity_type_id: int, item_id: int, consent: Consent) -> DeleteResult:
        try:
            self.guardrails.check_delete(entity_type_id)
            if consent.route is Route.UNSUPPORTED:
                raise elicitation_unsupported()
            if consent.route is Route.TOKEN:
                return await self._delete_with_token(entity_type_id, item_id, consent.token)
            if consent.route is Route.NONE:
                return await self._delete(entity_type_id, item_id, await self.fetch(entity_type_id, item_id), "none")
            if consent.answer is Answer.ACCEPTED:
                item = await self.fetch(entity_type_id, item_id)
                if consent.shown is None:
                    raise not_asked()
                if str(item.get("updatedTime", "")) != consent.shown:
                    raise changed_since_asked(describe(entity_type_id, item_id, item))
                return await self._delete(entity_type_id, item_id, item, "elicitation")
            if consent.answer in (Answer.DECLINED, Answer.CANCELLED):
                return await self._cancelled(entity_type_id, item_id, consent.answer)
            # The question was not put: surface why (the item's own error), or ask for another try.
            await self.fetch(entity_type_id, item_id)
            raise not_asked()
        except B24Error as exc:
            return self._error(entity_type_id, item_id, exc, deleting=True)

    async def _delete_with_token(self, entity_type_id: int, item_id: int, token: str | None) -> DeleteResult:
        if not token:
            raise confirmation_required()
        claim = self.tokens.check(token, entity_type_id, item_id)
        item = await self.fetch(entity_type_id, item_id)
        if str(item.get("updatedTime", "")) != claim.version:
            raise Refusal(
                "ITEM_CHANGED",
                f"{describe(entity_type_id, item_id, item)} was modified on the portal after the preview "
                f"(updatedTime {claim.version} → {item.get('updatedTime')}). Preview it again, show the "
                "person the current version, and confirm with the new token.",
            )
        self.tokens.consume(claim)
        return await self._delete(entity_type_id, item_id, item, "token")

    async def _delete(
        self, entity_type_id: int, item_id: int, item: dict[str, Any], how: Literal["elicitation", "token", "none"]
    ) -> DeleteResult:
        subject = describe(entity_type_id, item_id, item)
        attempt = self._attempt(entity_type_id, item_id, how, item)
        await self.journal.write("intent", attempt)
        note = None
        try:
            await self.portal.call("crm.item.delete", {"entityTypeId": entity_type_id, "id": item_id})
        except (PortalError, TransportError) as exc:
            # When some attempt may have reached the portal without its answer coming back (a NOT_FOUND on a
            # retry may just mean that attempt worked), only a fresh read can tell what happened.
            uncertain = exc.after_lost_answer or may_have_acted(exc)
            gone = await self._gone(entity_type_id, item_id) if uncertain else False
            if gone is None:
                await self._journal_error(attempt, exc, note="outcome unknown: the item could not be checked")
                return self._unknown(entity_type_id, item_id, exc)
            if not gone:
                await self._journal_error(attempt, exc)
                raise
            note = LOST_ANSWER_NOTE
        recycle_bin = await self.catalog.recycle_bin(entity_type_id)
        message = f"Deleted {subject} ({_how(how)})."
        if recycle_bin is not None:
            message += " It is in the portal's recycle bin." if recycle_bin else " It is gone for good."
        try:
            await self.journal.write("deleted", attempt, note=note)
        except Refusal as exc:
            message += f" Warning: the deletion could not be journaled: {exc.description}"
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

    def _attempt(
        self,
        entity_type_id: int,
        item_id: int,
        how: Literal["elicitation", "token", "none"],
        item: dict[str, Any] | None,
    ) -> Attempt:
        return Attempt(self.portal.host, self.portal.user_id, entity_type_id, item_id, how, item)

    async def _gone(self, entity_type_id: int, item_id: int) -> bool | None:
        """After a lost answer: whether the item is gone (`NOT_FOUND` now); None when that cannot be told."""
        try:
            await self.fetch(entity_type_id, item_id)
        except PortalError as exc:
            return True if exc.is_code("NOT_FOUND") else None
        except TransportError:
            return None
        return False

    async def _journal_error(self, attempt: Attempt, exc: B24Error, note: str | None = None) -> None:
        # The intent line is already there; the error itself is what the caller reports.
        with contextlib.suppress(Refusal):
            await self.journal.write("error", attempt, error=exc.code, error_description=exc.description, note=note)

    def _unknown(self, entity_type_id: int, item_id: int, exc: B24Error) -> DeleteResult:
        result = self._error(entity_type_id, item_id, exc, deleting=False)
        result.message = (
            f"The delete request may have reached the portal, but its answer was lost ({exc.code}) and the item "
            "could not be checked afterwards: it is unknown whether it was deleted. Preview it again: NOT_FOUND "
            "means it is gone."
        )
        return result

    async def _cancelled(self, entity_type_id: int, item_id: int, answer: Answer) -> DeleteResult:
        item: dict[str, Any] | None
        try:
            item = await self.fetch(entity_type_id, item_id)
        except B24Error:
            item = None
        await self.journal.write("cancelled", self._attempt(entity_type_id, item_id, "elicitation", item))
        verb = "declined" if answer is Answer.DECLINED else "cancelled"
        return DeleteResult(
            status="cancelled",
            entityTypeId=entity_type_id,
            id=item_id,
            item=summarize(item) if item is not None else None,
            message=f"The person {verb} the deletion of {describe(entity_type_id, item_id, item)}; nothing was "
            "deleted. Do not ask again unless they say so.",
        )

    def _error(self, entity_type_id: int, item_id: int, exc: B24Error, *, deleting: bool) -> DeleteResult:
        subject = describe(entity_type_id, item_id)
        return DeleteResult(
            status="error",
            entityTypeId=entity_type_id,
            id=item_id,
            message=error_message(exc, subject, deleting=deleting),
            error=exc.code,
            error_description=exc.description,
            retryable=exc.retryable,
            httpStatus=exc.http_status,
        )


def _how(how: str) -> str:
    return {
        "elicitation": "confirmed by the person",
        "token": "confirmed with the preview's token",
        "none": "no confirmation: B24_CONFIRM=none",
    }[how]


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
