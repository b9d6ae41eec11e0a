"""What the portal said: a REST answer read as a result, as the portal's own error, or as no REST answer at all.

The portal's truth is decided by its body, never by the HTTP status alone: an `error` field is the portal's
error whatever the status, and a `result` counts only with a success status. Every text taken from the answer
(codes, descriptions, a redirect's host, a content type) is scrubbed of the credential's secrets and clipped;
a successful answer that echoes a secret is masked too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from b24_mcp.errors import TransportError
from b24_mcp.portal.auth import MAX_CODE, Secrets
from b24_mcp.portal.wire import Answer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PortalResponse:
    """A successful answer: the `result` payload plus the list fields and timing the portal adds."""

    result: Any
    total: int | None = None
    next: int | None = None
    time: Mapping[str, Any] | None = None
    after_lost_answer: bool = False  # an earlier attempt of this call may have reached the portal too


@dataclass(frozen=True)
class ErrorBody:
    """The portal's error as sent (scrubbed and clipped): its code, its description and the HTTP status."""

    code: str
    description: str
    status: int


def read_answer(method: str, answer: Answer, *, host: str, secrets: Secrets) -> PortalResponse | ErrorBody:
    """The answer to `method` as a result or the portal's error; `TransportError` when it is neither."""
    status = answer.status
    if 300 <= status < 400:
        # The portal moved (a new domain); following it silently would send the webhook code elsewhere.
        target = secrets.outside_text(_host_of(answer.location), 100) or "another address"
        raise TransportError(
            "PORTAL_REDIRECT",
            f"The portal {host} redirects to {target} (HTTP {status}); it may have moved to a new domain. "
            "Update B24_WEBHOOK_URL after checking the new address.",
            http_status=status,
            retryable=False,
            maybe_sent=False,
        )
    content = answer.content
    try:
        body = json.loads(content) if content.strip() else None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; RecursionError: deep nesting
        body = None
    if isinstance(body, dict) and secrets.found_in(content):
        logger.warning("The portal's answer to %s contained a secret of the credential; it is masked", method)
        body = _scrubbed(body, secrets.scrub)
    if isinstance(body, dict) and "error" in body:
        description = body.get("error_description")
        return ErrorBody(
            secrets.outside_text(body["error"], MAX_CODE),
            "" if description is None else secrets.outside_text(description),
            status,
        )
    if isinstance(body, dict) and "result" in body and status < 300:
        total, after, timing = body.get("total"), body.get("next"), body.get("time")
        return PortalResponse(
            result=body["result"],
            total=total if _is_int(total) else None,
            next=after if _is_int(after) else None,
            time=timing if isinstance(timing, dict) else None,
        )
    kind = secrets.outside_text(answer.content_type.split(";")[0].strip(), 60) or "no content type"
    what = "an empty body" if not content.strip() else f"a {kind} body that is not a REST answer"
    raise TransportError(
        "BAD_PORTAL_RESPONSE",
        f"The portal answered {method} with HTTP {status} and {what}.",
        http_status=status,
        retryable=status >= 500,
        maybe_sent=True,
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _host_of(location: str) -> str:
    try:
        return urlsplit(location).hostname or ""
    except ValueError:
        return ""


def _scrubbed(body: dict[str, Any], scrub: Callable[[str], str]) -> dict[str, Any] | None:
    """A parsed answer with every string (keys too) scrubbed; None when it is nested too deeply to walk."""
    try:
        return {scrub(key): _scrub_value(item, scrub) for key, item in body.items()}
    except RecursionError:
        return None


def _scrub_value(value: Any, scrub: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(key): _scrub_value(item, scrub) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub_value(item, scrub) for item in value]
    return value
