"""What every answer of the portal is made of: the error type, a method's outcome, the HTTP answer, the ``time``
block, the localized texts and method-name rules (spec §0, §3.1)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "BASE_HEADERS",
    "Answer",
    "Outcome",
    "RestError",
    "html_answer",
    "json_answer",
    "localized",
    "method_name",
    "operation_time_limit",
    "time_block",
]

BASE_HEADERS = {
    "content-type": "application/json; charset=utf-8",
    "access-control-allow-origin": "*",
    "access-control-allow-headers": "origin, content-type, accept",
    "x-content-type-options": "nosniff",
}

# Texts localized by the portal language; everything else is English on every portal.
_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "item_not_found": "Item was not found.",
        "type_not_found": "Smart Process Automation was not found",
        "access_denied": "Access denied",
        "read_denied": "You don't have permission to view this item.",
    },
    "ru": {
        "item_not_found": "Элемент не найден",
        "type_not_found": "Смарт-процесс не найден",
        "access_denied": "Доступ запрещен",
    },
}


class RestError(Exception):
    """An error answer: ``{"error": code, "error_description": description}`` with an HTTP status."""

    def __init__(self, status: int, code: str | int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "error_description": self.description}


@dataclass
class Outcome:
    """What a method returns: its ``result`` and, for lists, the ``total``/``next`` moved to the top level."""

    result: Any
    total: int | None = None
    next: int | None = None


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, and how to deliver it: after ``delay`` seconds, or cut off mid-body when ``drop``."""

    status: int
    content: bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False


def json_answer(status: int, body: Any) -> Answer:
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Answer(status, content, dict(BASE_HEADERS))


def html_answer(status: int, title: str, text: str, headers: dict[str, str] | None = None) -> Answer:
    page = f"<!DOCTYPE html><html><head><title>{title}</title></head><body><p>{text}</p></body></html>"
    return Answer(status, page.encode("utf-8"), {"content-type": "text/html; charset=utf-8", **(headers or {})})


def localized(language: str, key: str) -> str:
    return _TEXTS.get(language, {}).get(key) or _TEXTS["en"][key]


def operation_time_limit() -> RestError:
    return RestError(429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.")


def method_name(raw: str) -> str:
    """Method names are case-insensitive and may end in ``.json``."""
    return raw.strip().lower().removesuffix(".json")


def time_block(
    start: float, finish: float, processing: float, tz: timezone, operating: float, reset_at: float | None
) -> dict[str, Any]:
    """The ``time`` object of a successful answer (spec §0.1): ``operating_reset_at`` only once the method was
    charged (``reset_at`` not None; spec §10)."""
    block: dict[str, Any] = {
        "start": start,
        "finish": finish,
        "duration": finish - start,
        "processing": processing,
        "date_start": _iso(start, tz),
        "date_finish": _iso(finish, tz),
    }
    if reset_at is not None:
        block["operating_reset_at"] = int(reset_at)
    block["operating"] = operating
    return block


def _iso(timestamp: float, tz: timezone) -> str:
    return datetime.fromtimestamp(timestamp, tz).isoformat(timespec="seconds")
