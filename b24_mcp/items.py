"""CRM items as the assistant and the person see them: type names, display names and a short summary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

SYSTEM_TYPES: Mapping[int, str] = {1: "lead", 2: "deal", 3: "contact", 4: "company", 7: "quote", 31: "invoice"}


def type_name(entity_type_id: int) -> str:
    """`deal` for 2, `smart-process item (type 1038)` for a smart process."""
    return SYSTEM_TYPES.get(entity_type_id, f"smart-process item (type {entity_type_id})")


def display_name(item: Mapping[str, Any]) -> str | None:
    """The item's title, or a contact's full name; None when it has neither."""
    title = item.get("title")
    if isinstance(title, str) and title.strip():
        return title.strip()
    parts = [item.get(key) for key in ("honorific", "name", "secondName", "lastName")]
    name = " ".join(part.strip() for part in parts if isinstance(part, str) and part.strip())
    return name or None


class ItemSummary(BaseModel):
    """What identifies an item to a person: the fields of `crm.item.get` worth showing before a deletion."""

    id: int
    title: str | None = Field(default=None, description="The title, or a contact's name.")
    stageId: str | None = None
    assignedById: int | None = None
    createdTime: str | None = None
    updatedTime: str | None = None
    opportunity: float | None = Field(default=None, description="Amount, where the type has one.")
    currencyId: str | None = None


def summarize(item: Mapping[str, Any]) -> ItemSummary:
    """Summarize an item as `crm.item.get` returned it, tolerating missing or oddly typed fields."""

    def text(key: str) -> str | None:
        value = item.get(key)
        return str(value) if value is not None and value != "" else None

    def number(key: str) -> float | None:
        try:
            return float(item[key]) if item.get(key) not in (None, "") else None
        except (TypeError, ValueError):
            return None

    assigned = number("assignedById")
    return ItemSummary(
        id=int(item["id"]),
        title=display_name(item),
        stageId=text("stageId"),
        assignedById=None if assigned is None else int(assigned),
        createdTime=text("createdTime"),
        updatedTime=text("updatedTime"),
        opportunity=number("opportunity"),
        currencyId=text("currencyId"),
    )


def describe(entity_type_id: int, item_id: int, item: Mapping[str, Any] | None = None) -> str:
    """`deal #42 «Acme renewal»`: how messages and questions name an item."""
    name = display_name(item) if item is not None else None
    return f"{type_name(entity_type_id)} #{item_id}" + (f" «{name}»" if name else "")
