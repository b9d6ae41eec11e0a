"""The portal's CRM types: the system ones, the smart processes of `crm.type.list`, and whether deleting an
item of a type sends it to the CRM recycle bin or removes it for good.

What is known about the recycle bin is little: the documentation states it only for smart processes (their
`isRecyclebinEnabled`); for leads, deals, contacts, companies and quotes it says nothing; whether a portal keeps a
recycle bin at all depends on its plan; and no REST method restores an item. So the words never promise more than
"goes to the CRM recycle bin if the portal keeps one; it can be restored there, not through this server"."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from b24_mcp.errors import B24Error
from b24_mcp.portal.client import PortalClient
from b24_mcp.portal.items import SYSTEM_TYPES

_MAX_PAGES = 20  # 1,000 smart processes is far beyond any real portal


class EntityType(BaseModel):
    """One CRM type an item can belong to."""

    entityTypeId: int
    title: str
    kind: str = Field(description="system or smart-process")
    recycleBin: bool | None = Field(
        description="true: deleted items go to the CRM recycle bin if the portal keeps one (restorable there, not "
        "through this server); false: deleted for good (the type's recycle bin is off); null: unknown."
    )


class EntityCatalog:
    """The types of one portal, read once and kept for `ttl` seconds."""

    def __init__(self, portal: PortalClient, *, ttl: float = 300.0, clock: Callable[[], float] = time.monotonic):
        self._portal = portal
        self._ttl = ttl
        self._clock = clock
        self._smart: dict[int, EntityType] | None = None
        self._read_at = 0.0

    async def smart_processes(self) -> dict[int, EntityType]:
        """The smart processes from `crm.type.list` (every page), cached; raises `B24Error` when unreadable."""
        if self._smart is not None and self._clock() - self._read_at < self._ttl:
            return self._smart
        found: dict[int, EntityType] = {}
        start: int | None = 0
        for _ in range(_MAX_PAGES):
            if start is None:
                break
            answer = await self._portal.call("crm.type.list", {"start": start})
            types = answer.result.get("types", []) if isinstance(answer.result, dict) else []
            for row in types if isinstance(types, list) else []:
                parsed = _parse(row)
                if parsed is not None:
                    found[parsed.entityTypeId] = parsed
            start = answer.next
        self._smart, self._read_at = found, self._clock()
        return found

    async def all(self) -> tuple[list[EntityType], B24Error | None]:
        """System types and smart processes; with the error when the smart processes could not be read."""
        system = [
            EntityType(entityTypeId=type_id, title=known.title, kind="system", recycleBin=known.recycle_bin)
            for type_id, known in SYSTEM_TYPES.items()
        ]
        try:
            smart = await self.smart_processes()
        except B24Error as exc:
            return system, exc
        by_id = {entry.entityTypeId: entry for entry in system} | smart
        for type_id in SYSTEM_TYPES.keys() & smart.keys():  # invoice: a system type built on a smart process
            by_id[type_id] = smart[type_id].model_copy(update={"kind": "system", "title": SYSTEM_TYPES[type_id].title})
        return sorted(by_id.values(), key=lambda entry: entry.entityTypeId), None

    async def recycle_bin(self, entity_type_id: int) -> bool | None:
        """Whether deleting an item of this type sends it to the recycle bin (if the portal keeps one); None when
        unknown."""
        known = SYSTEM_TYPES.get(entity_type_id)
        if known is not None and known.recycle_bin is not None:
            return known.recycle_bin
        try:
            entry = (await self.smart_processes()).get(entity_type_id)
        except B24Error:
            return None
        return entry.recycleBin if entry is not None else None


def _parse(row: Any) -> EntityType | None:
    if not isinstance(row, dict) or not isinstance(row.get("entityTypeId"), int):
        return None
    flag = row.get("isRecyclebinEnabled")
    return EntityType(
        entityTypeId=row["entityTypeId"],
        title=str(row.get("title") or f"Smart process {row['entityTypeId']}"),
        kind="smart-process",
        recycleBin=True if flag == "Y" else False if flag == "N" else None,
    )


def where_it_goes(recycle_bin: bool | None, *, many: bool = False) -> str:
    """The recycle-bin fact in words, for messages and the person's question."""
    it, goes, is_ = ("They", "go", "are") if many else ("It", "goes", "is")
    if recycle_bin is True:
        return (
            f"{it} {goes} to the CRM recycle bin if the portal keeps one; {it.lower()} can be restored there, not "
            "through this server."
        )
    if recycle_bin is False:
        return f"{it} {is_} deleted permanently: this type's recycle bin is off."
    return f"Whether {it.lower()} {goes} to the CRM recycle bin is not known; this server cannot restore {it.lower()}."
