"""The CRM data of a portal: entity types (system types and smart processes) with their fields, their items, the
recycle bin."""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from b24_mcp.sandbox.envelope import RestError, localized
from b24_mcp.sandbox.fields import Fields

__all__ = ["SYSTEM_TYPES", "CrmStore", "EntityType"]

_TYPE_EPOCH = "2026-01-12T09:00:00+03:00"

# entityTypeId -> title of the types that have a factory without a crm.type row of their own.
SYSTEM_TYPES: dict[int, str] = {1: "Lead", 2: "Deal", 3: "Contact", 4: "Company", 7: "Quote", 31: "Invoice"}


@dataclass
class EntityType:
    """A CRM entity type: a system type (lead, deal, ...) or a smart process with its crm.type row."""

    entity_type_id: int
    title: str
    recycle_bin: bool = True
    id: int = 0
    code: str = ""
    system: bool = False
    categories: bool = True
    stages: bool = True
    automation: bool = True
    created_by: int = 1
    updated_by: int = 1
    created_time: str = _TYPE_EPOCH
    updated_time: str = _TYPE_EPOCH
    custom_section_id: int | None = None
    fields: Fields = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.fields = Fields.of_type(self.entity_type_id, system=self.system)

    def to_rest(self) -> dict[str, Any]:
        """Render as one row of ``crm.type.list``."""
        return {
            "id": self.id,
            "title": self.title,
            "code": self.code,
            "createdBy": self.created_by,
            "entityTypeId": self.entity_type_id,
            "customSectionId": self.custom_section_id,
            "isCategoriesEnabled": _yn(self.categories),
            "isStagesEnabled": _yn(self.stages),
            "isRecyclebinEnabled": _yn(self.recycle_bin),
            "isAutomationEnabled": _yn(self.automation),
            "createdTime": self.created_time,
            "updatedTime": self.updated_time,
            "updatedBy": self.updated_by,
        }


class CrmStore:
    """Types and items. Items are plain dicts in their REST (camelCase) shape, user fields included."""

    def __init__(self, tz: timezone) -> None:
        self.tz = tz
        self.types: dict[int, EntityType] = {}
        self.items: dict[int, dict[int, dict[str, Any]]] = {}
        self.recycle_bin: list[dict[str, Any]] = []
        # (entityTypeId, id) -> (code, description): the delete operation itself fails for that item, as when
        # workflows still run on it (spec §1.4, last row).
        self.undeletable: dict[tuple[int, int], tuple[str, str]] = {}
        self._last_id: dict[int, int] = {}
        self._last_type_row = 0
        for entity_type_id, title in SYSTEM_TYPES.items():
            self._register(EntityType(entity_type_id, title, system=True))

    def add_type(self, entity_type_id: int, title: str, *, recycle_bin: bool = True) -> EntityType:
        """Register a smart process with its own crm.type row."""
        if entity_type_id in self.types:
            raise ValueError(f"entity type {entity_type_id} already exists")
        self._last_type_row += 1
        return self._register(EntityType(entity_type_id, title, recycle_bin=recycle_bin, id=self._last_type_row))

    def add_user_field(self, entity_type_id: int, name: str, user_type: str) -> None:
        """Declare a user field (``ufCrm…``) of a type, as ``userfieldconfig.add`` would."""
        self.types[entity_type_id].fields.declare(name, user_type)

    def add_item(self, entity_type_id: int, fields: dict[str, Any]) -> dict[str, Any]:
        """Store an item (assigning id and timestamps when missing) and return the stored dict.

        A user field not declared yet is declared with the type its value suggests (a JSON boolean: ``boolean``);
        user booleans are kept as ``Y``/``N``.
        """
        if entity_type_id not in self.types:
            raise ValueError(f"unknown entity type {entity_type_id}")
        fields = self.types[entity_type_id].fields.store(copy.deepcopy(fields))
        item_id = int(fields.pop("id", 0) or 0)
        if item_id <= 0:
            item_id = self._last_id[entity_type_id] + 1
        self._last_id[entity_type_id] = max(self._last_id[entity_type_id], item_id)
        now = datetime.fromtimestamp(time.time(), self.tz).isoformat(timespec="seconds")
        item: dict[str, Any] = {"id": item_id}
        item.update(fields)
        item.setdefault("createdTime", now)
        item.setdefault("updatedTime", item["createdTime"])
        item["entityTypeId"] = entity_type_id
        self.items[entity_type_id][item_id] = item
        return item

    def touch(self, entity_type_id: int, item_id: int, *, same_second: bool = False, **changes: Any) -> None:
        """Apply changes to an item and move its updatedTime strictly forward (by at least one second); with
        `same_second`, leave it: the change falls in the second it names (dates have whole seconds)."""
        item = self.items[entity_type_id][item_id]
        item.update(self.types[entity_type_id].fields.store(changes))
        if same_second:
            return
        now = datetime.now(self.tz).replace(microsecond=0)
        previous = item.get("updatedTime")
        if isinstance(previous, str):
            with contextlib.suppress(ValueError):
                now = max(now, datetime.fromisoformat(previous) + timedelta(seconds=1))
        item["updatedTime"] = now.astimezone(self.tz).isoformat(timespec="seconds")

    def factory(self, entity_type_id: int, language: str) -> EntityType:
        """The type, as ``getFactory`` finds it: unknown types are ``NOT_FOUND`` (the smart-process text)."""
        entity_type = self.types.get(entity_type_id)
        if entity_type is None:
            raise RestError(400, "NOT_FOUND", localized(language, "type_not_found"))
        return entity_type

    def item(self, entity_type_id: int, item_id: int, language: str) -> dict[str, Any]:
        """The stored item, as ``getItem`` finds it: deleted, binned or absent items are ``NOT_FOUND``."""
        item = self.items[entity_type_id].get(item_id)
        if item is None:
            raise RestError(400, "NOT_FOUND", localized(language, "item_not_found"))
        return item

    def remove(self, entity_type: EntityType, item_id: int) -> None:
        """Delete an item: into the recycle bin when its type keeps one, else outright."""
        item = self.items[entity_type.entity_type_id].pop(item_id)
        if entity_type.recycle_bin:
            self.recycle_bin.append({**item, "entityTypeId": entity_type.entity_type_id})

    def _register(self, entity_type: EntityType) -> EntityType:
        self.types[entity_type.entity_type_id] = entity_type
        self.items.setdefault(entity_type.entity_type_id, {})
        self._last_id.setdefault(entity_type.entity_type_id, 0)
        return entity_type


def _yn(flag: bool) -> str:
    return "Y" if flag else "N"
