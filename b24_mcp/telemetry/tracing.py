"""The tool call being served: its request id and, with sign-in, its person's user id.

The MCP layer opens a `call` around each `tools/call`; the journal stamps the request id on the lines that call
writes (`requestId`), and every log line written meanwhile carries `request_id` and `user_id` (`CallFields`), so
a log line leads to its journal record.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Call:
    """One tool call: a random request id (16 hex digits) and the signed-in person's user id, if any."""

    request_id: str
    user_id: int | None = None


_current: ContextVar[Call | None] = ContextVar("b24_call", default=None)


def current() -> Call | None:
    """The tool call being served in this task, if any."""
    return _current.get()


def current_request_id() -> str | None:
    """The request id of the tool call being served, if any."""
    call = _current.get()
    return call.request_id if call is not None else None


@contextmanager
def call(user_id: int | None = None) -> Iterator[Call]:
    """Serve one tool call under a fresh request id."""
    served = Call(secrets.token_hex(8), user_id)
    token = _current.set(served)
    try:
        yield served
    finally:
        _current.reset(token)


class CallFields(logging.Filter):
    """Adds `request_id` and `user_id` of the call being served to each record (absent outside a call)."""

    def filter(self, record: logging.LogRecord) -> bool:
        served = _current.get()
        if served is not None:
            if not hasattr(record, "request_id"):
                record.request_id = served.request_id
            if served.user_id is not None and not hasattr(record, "user_id"):
                record.user_id = served.user_id
        return True
