"""What both deletion tools share in their answers: the structured result, error messages, and settling a lost
answer by reading the portal again."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict

from b24_mcp.errors import B24Error, Refusal, may_have_acted
from b24_mcp.telemetry import metrics

INVALID_ARGUMENTS = "INVALID_ARGUMENTS"
LOST_ANSWER_NOTE = (
    "The portal's answer to the delete was lost; the item is no longer found, so the deletion is confirmed by absence."
)
_ERROR_FIELDS = ("error", "error_description", "retryable", "httpStatus")


def _refused_calls_echo_nothing(schema: dict[str, Any]) -> None:
    """A call whose arguments were refused (`INVALID_ARGUMENTS`, before the tool runs) has only `status`, `message`
    and the error fields: every other required field is required of every other result."""
    required = schema.get("required", [])
    echoed = [name for name in required if name not in ("status", "message")]
    if not echoed:
        return
    schema["required"] = [name for name in required if name not in echoed]
    schema["if"] = {"properties": {"error": {"const": INVALID_ARGUMENTS}}, "required": ["error"]}
    schema["else"] = {"required": echoed}


class ToolResult(BaseModel):
    """The base of a tool's result: subclasses declare `status`, `message` and the four error fields.

    The base declares no field itself, so each result's schema keeps its own order. The published schema (the
    tool's `outputSchema`) lets a refused call's result leave out what the call could not supply.
    """

    model_config = ConfigDict(json_schema_extra=_refused_calls_echo_nothing)

    def wire(self) -> dict[str, Any]:
        """The structured content: unset fields left out, except the error fields an error always has."""
        data = self.model_dump(mode="json", exclude_none=True)
        if getattr(self, "status", None) == "error":
            data |= {key: getattr(self, key, None) for key in _ERROR_FIELDS}
        return data

    @classmethod
    def failure(cls, exc: B24Error, message: str, **fields: Any) -> Self:
        """An error result carrying `exc`'s code, description, retryability and HTTP status (a refusal of our own
        is counted in `b24mcp_refusals_total`)."""
        if isinstance(exc, Refusal):
            metrics.refused(exc.code)
        values: dict[str, Any] = {
            "status": "error",
            "message": message,
            "error": exc.code,
            "error_description": exc.description,
            "retryable": exc.retryable,
            "httpStatus": exc.http_status,
        }
        return cls(**values, **fields)


def iso_utc(moment: datetime) -> str:
    """`2026-11-28T22:49:21Z`: how results write a moment."""
    return moment.isoformat().replace("+00:00", "Z")


def error_message(exc: B24Error, subject: str, *, deleting: bool) -> str:
    """What an error means for the assistant and what to do next; says when nothing was deleted."""
    nothing = "Nothing was deleted. " if deleting else ""
    message = nothing + _meaning(exc, subject)
    return f"{message} {exc.hint}" if exc.hint else message


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text[-1] in ".!?" else text + "."


def _meaning(exc: B24Error, subject: str) -> str:
    code = exc.code.upper()
    said = _sentence(exc.description)
    if code == "NOT_FOUND":
        return (
            f"The portal found no {subject}: {said} Check the entityTypeId (smart-process ids come from "
            "crm_entity_types) and the id; an item already deleted or in the recycle bin is not found either."
        )
    if code in ("ACCESS_DENIED", "ALLOWED_ONLY_INTRANET_USER", "INSUFFICIENT_SCOPE"):
        return f"The portal refused ({exc.code}): {said} The user lacks the rights for this; a retry will not help."
    if code in ("INVALID_CREDENTIALS", "NO_AUTH_FOUND", "INVALID_TOKEN", "EXPIRED_TOKEN"):
        return (
            f"The portal rejected the credentials ({exc.code}): {said} Check the webhook (B24_WEBHOOK_URL) or the "
            "OAuth tokens; a retry will not help."
        )
    if isinstance(exc, Refusal):
        return exc.description
    retry = "Retrying later may help." if exc.retryable else "A retry will not help."
    return f"{exc.code}: {said} {retry}"


async def settle_lost_answer(
    exc: B24Error, ids: Sequence[int], missing: Callable[[Sequence[int]], Awaitable[set[int]]]
) -> set[int] | None:
    """After a delete failed: which of `ids` are gone because an attempt whose answer was lost did delete them.

    Empty when no attempt can have acted; None when the portal cannot be read to tell. `missing` reads the ids
    again and returns those the portal does not find.
    """
    if not (exc.after_lost_answer or may_have_acted(exc)):
        return set()
    try:
        return await missing(ids)
    except B24Error:
        return None
