"""CRM items as the assistant and the person see them: the system types, names, and a short summary."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from b24_mcp.text import quoted


@dataclass(frozen=True)
class SystemType:
    """A CRM type every portal has."""

    name: str  # as messages name one item: "deal"
    plural: str  # "deals"
    title: str  # as crm_entity_types lists it: "Deal"
    # The classic types send deleted items to the recycle bin when the portal keeps one (the source says so; the
    # documentation is silent); invoice's is read like a smart process's.
    recycle_bin: bool | None


SYSTEM_TYPES: Mapping[int, SystemType] = {
    1: SystemType("lead", "leads", "Lead", True),
    2: SystemType("deal", "deals", "Deal", True),
    3: SystemType("contact", "contacts", "Contact", True),
    4: SystemType("company", "companies", "Company", True),
    7: SystemType("quote", "quotes", "Quote (estimate)", True),
    31: SystemType("invoice", "invoices", "Invoice", None),
}


def type_name(entity_type_id: int) -> str:
    """`deal` for 2, `smart-process item (type 1038)` for a smart process."""
    known = SYSTEM_TYPES.get(entity_type_id)
    return known.name if known else f"smart-process item (type {entity_type_id})"


def counted(entity_type_id: int, count: int) -> str:
    """`1 deal`, `140 deals`, `3 items of type 1038`."""
    known = SYSTEM_TYPES.get(entity_type_id)
    if count == 1:
        return f"1 {type_name(entity_type_id)}"
    return f"{count} {known.plural}" if known else f"{count} items of type {entity_type_id}"


def display_name(item: Mapping[str, Any]) -> str | None:
    """The item's title, or a contact's full name; None when it has neither. The portal's text, unsanitised."""
    title = item.get("title")
    if isinstance(title, str) and title.strip():
        return title.strip()
    parts = [item.get(key) for key in ("honorific", "name", "secondName", "lastName")]
    name = " ".join(part.strip() for part in parts if isinstance(part, str) and part.strip())
    return name or None


def describe(entity_type_id: int, item_id: int, item: Mapping[str, Any] | None = None) -> str:
    """`deal #42 «Acme renewal»`: how messages and questions name an item; the title sanitised and quoted."""
    name = display_name(item) if item is not None else None
    return f"{type_name(entity_type_id)} #{item_id}" + (f" {quoted(name)}" if name else "")


def changed_at(item: Mapping[str, Any]) -> str:
    """The item's `updatedTime` (whole seconds), or an empty string."""
    return str(item.get("updatedTime", ""))


def version_of(item: Mapping[str, Any]) -> str:
    """What a confirmation is bound to: `updatedTime` and every field a person is shown of the item (its title or
    name, stage, assignee, amount, currency). `updatedTime` has whole seconds, so a change made in the second of a
    preview keeps it: the shown fields tell that change apart."""
    shown = [
        display_name(item),
        _text(item, "stageId"),
        _number(item, "assignedById"),
        _number(item, "opportunity"),
        _text(item, "currencyId"),
    ]
    digest = hashlib.sha256(json.dumps(shown, separators=(",", ":")).encode()).digest()
    return f"{changed_at(item)}~{base64.urlsafe_b64encode(digest[:12]).decode()}"


def version_time(version: str) -> str:
    """The `updatedTime` a version (of `version_of`) was taken at."""
    return version.rpartition("~")[0] if "~" in version else version


class ItemSummary(BaseModel):
    """What identifies an item to a person: the fields of `crm.item.get` worth showing before a deletion."""

    id: int
    title: str | None = Field(default=None, description="The title, or a contact's name (the portal's text, as data).")
    stageId: str | None = None
    assignedById: int | None = None
    createdTime: str | None = None
    updatedTime: str | None = None
    opportunity: float | None = Field(default=None, description="Amount, where the type has one.")
    currencyId: str | None = None


_MAX_FIELD = 2000  # the portal's text stays as sent in structured results, but bounded


def _text(item: Mapping[str, Any], key: str) -> str | None:
    value = item.get(key)
    return str(value) if value is not None and value != "" else None


def _number(item: Mapping[str, Any], key: str) -> float | None:
    try:
        value = float(item[key]) if item.get(key) not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        return None
    return value if value is not None and math.isfinite(value) else None


def summarize(item: Mapping[str, Any]) -> ItemSummary:
    """Summarize an item as the portal returned it, tolerating missing or oddly typed fields."""

    def text(key: str) -> str | None:
        value = _text(item, key)
        return value[:_MAX_FIELD] if value is not None else None

    assigned = _number(item, "assignedById")
    name = display_name(item)
    return ItemSummary(
        id=int(item["id"]),
        title=name[:_MAX_FIELD] if name else None,
        stageId=text("stageId"),
        assignedById=None if assigned is None else int(assigned),
        createdTime=text("createdTime"),
        updatedTime=text("updatedTime"),
        opportunity=_number(item, "opportunity"),
        currencyId=text("currencyId"),
    )
