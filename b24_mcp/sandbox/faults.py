"""Injected misbehaviour: one-shot faults queued per method, optionally waiting for a matching call (``when=``)."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from b24_mcp.sandbox.envelope import Answer, method_name

__all__ = ["ConnectionDropped", "Fault", "FaultQueue"]


@dataclass
class Fault:
    """A queued, one-shot misbehaviour for the next call of a method."""

    status: int = 500
    json: Any = None
    body: bytes | None = None
    content_type: str = "application/json; charset=utf-8"
    delay: float = 0.0
    perform: bool = False
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers, e.g. Location for a 302
    drop: bool = False  # cut the connection mid-answer: the client gets no complete response

    @property
    def error(self) -> Any:
        """The ``error`` code of a JSON fault body, for the request log."""
        return self.json.get("error") if isinstance(self.json, dict) else None

    def answer(self) -> Answer:
        content = json.dumps(self.json, separators=(",", ":")).encode() if self.json is not None else (self.body or b"")
        headers = {"content-type": self.content_type, **self.headers}
        return Answer(self.status, content, headers, delay=self.delay, drop=self.drop)


class ConnectionDropped(Exception):  # noqa: N818  # an event, not an error of the emulator
    """Raised by the ASGI app after half an answer: the server closes the connection mid-response."""


@dataclass
class _Queued:
    fault: Fault
    when: Callable[[dict[str, Any]], bool] | None


class FaultQueue:
    """FIFO of faults per method name (case-insensitive)."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[_Queued]] = {}

    def inject(self, method: str, fault: Fault, when: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self._queues.setdefault(method_name(method), deque()).append(_Queued(fault, when))

    def pop(self, method: str, params: dict[str, Any]) -> Fault | None:
        """The first fault queued for ``method`` that accepts ``params`` (taken off the queue), if any."""
        queue = self._queues.get(method)
        if not queue:
            return None
        for queued in list(queue):
            if queued.when is None or queued.when(params):
                queue.remove(queued)
                return queued.fault
        return None
