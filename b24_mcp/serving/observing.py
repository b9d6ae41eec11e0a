"""What an operator sees of each tool call: one log line, a request id shared with the journal, the call's metrics.

`CallObserver` is the outermost MCP server middleware (the SDK's public `middleware=` hook). Around every
`tools/call` it opens a `tracing.call` (a fresh request id; with sign-in, the person's user id), and when the call
is answered writes its one log line (`tool`, `status`, `error`, `duration_ms` as fields of the record, so a JSON
line carries them) and counts it in `b24mcp_tool_calls_total`. The line names the item by ids only: no CRM text,
no filter value, no token. A 2026-07-28 round that asks the person is logged at DEBUG and not counted: the call
is counted when it is answered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from typing import Any

import anyio
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.types import CallToolResult

from b24_mcp.deleting.results import INVALID_ARGUMENTS
from b24_mcp.telemetry import metrics, tracing

logger = logging.getLogger("b24_mcp.serving.tools")  # where the per-call line has always come from


class CallObserver:
    """Server middleware: the request id, log line and metrics of every call to one of `tools`."""

    def __init__(self, tools: Collection[str]) -> None:
        self._tools = frozenset(tools)

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        name = params.get("name")
        tool = name if isinstance(name, str) and name in self._tools else "other"
        arguments = params.get("arguments")
        arguments = arguments if isinstance(arguments, Mapping) else {}
        user_id = _user_id()
        with tracing.call(user_id):
            started = time.perf_counter()
            try:
                result = await call_next(ctx)
            except BaseException as exc:
                # Cancelled (the client went away, the server stops) or a protocol error the SDK raises.
                code = "CANCELLED" if isinstance(exc, anyio.get_cancelled_exc_class()) else "INTERNAL_ERROR"
                self._answered(tool, arguments, "error", code, started, user_id)
                raise
            outcome = _outcome(result)
            if outcome is None:
                logger.debug("%s %s -> asking the person", tool, describe(arguments), extra={"tool": tool})
            else:
                self._answered(tool, arguments, *outcome, started, user_id)
        return result

    def _answered(
        self,
        tool: str,
        arguments: Mapping[str, Any],
        status: str,
        error: str | None,
        started: float,
        user_id: int | None,
    ) -> None:
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        metrics.tool_call(tool, status, user_id)
        if error == INVALID_ARGUMENTS:
            metrics.refused(INVALID_ARGUMENTS)  # the other refusals are counted where they are made
        fields: dict[str, Any] = {"tool": tool, "status": status, "error": error, "duration_ms": elapsed}
        entity_type_id, dry_run = arguments.get("entityTypeId"), arguments.get("dryRun", True)
        if isinstance(entity_type_id, int) and not isinstance(entity_type_id, bool):
            fields["entity_type_id"] = entity_type_id
        if isinstance(dry_run, bool) and "entityTypeId" in arguments:
            fields["dry_run"] = dry_run
        shown_error = f" {error}" if error else ""
        logger.info("%s %s-> %s%s in %.0f ms", tool, describe(arguments), status, shown_error, elapsed, extra=fields)


def _user_id() -> int | None:
    """The signed-in person behind this request (sign-in), if any."""
    user_id = getattr(get_access_token(), "user_id", None)
    return user_id if isinstance(user_id, int) else None


def _outcome(result: HandlerResult) -> tuple[str, str | None] | None:
    """The answered call's status and error code; None for a round that asks the person (2026-07-28)."""
    if isinstance(result, CallToolResult):
        structured, is_error = result.structured_content, result.is_error
    elif isinstance(result, Mapping):
        if result.get("resultType", "complete") != "complete":
            return None
        structured, is_error = result.get("structuredContent"), bool(result.get("isError"))
    else:
        return "error", None
    structured = structured if isinstance(structured, Mapping) else {}
    status = structured.get("status")
    error = structured.get("error")
    error = error if isinstance(error, str) else None
    if isinstance(status, str) and status in metrics.TOOL_STATUSES:
        return status, error
    return ("error" if is_error else "ok"), error


def describe(arguments: Mapping[str, Any]) -> str:
    """The call's target by numbers only, with a trailing space: `entityTypeId=2 id=42 dryRun=False `."""
    parts = []
    for key in ("entityTypeId", "id"):
        value = arguments.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            parts.append(f"{key}={value}")
    ids, conditions = arguments.get("ids"), arguments.get("filter")
    if isinstance(ids, list):
        parts.append(f"ids={len(ids)}")
    if isinstance(conditions, Mapping):
        parts.append(f"filter={len(conditions)} conditions")
    dry_run = arguments.get("dryRun", True)
    if "entityTypeId" in arguments and isinstance(dry_run, bool):
        parts.append(f"dryRun={dry_run}")
    return "".join(f"{part} " for part in parts)
