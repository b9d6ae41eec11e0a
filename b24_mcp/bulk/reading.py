"""Reading a set of items of one type through `crm.item.list`: by ids or by a filter, with what is missing."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from b24_mcp.bulk.selection import EVERY_FIELD, ID_ONLY, ItemLister, Query
from b24_mcp.portal.client import PortalClient
from b24_mcp.portal.items import version_of

Selected = Sequence[int] | Query


@dataclass
class Reading:
    """The state of a set of items on the portal."""

    items: dict[int, dict[str, Any]] = field(default_factory=dict)  # in the order asked (a filter: by id)
    missing: list[int] = field(default_factory=list)
    more: bool = False  # a filter: further items match beyond the cap

    @property
    def version(self) -> str:
        """A digest of the existing ids and their versions (`updatedTime` and the shown fields): what a bulk token,
        or a yes to the question about the set, is bound to."""
        pairs = sorted((item_id, version_of(item)) for item_id, item in self.items.items())
        digest = hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()


class SetReader:
    """Reads sets of items of one type: by their ids, or the first `batch_max` a filter matches."""

    def __init__(self, portal: PortalClient, batch_max: int) -> None:
        self.lister = ItemLister(portal)
        self.batch_max = batch_max

    async def read(self, entity_type_id: int, ids: Sequence[int], select: Sequence[str] = EVERY_FIELD) -> Reading:
        """The items of `ids`, and the ids the portal does not list."""
        items = await self.lister.read(entity_type_id, ids, select)
        return Reading(items, [item_id for item_id in dict.fromkeys(ids) if item_id not in items])

    async def select(self, entity_type_id: int, selected: Selected, select: Sequence[str]) -> Reading:
        """The items of `selected`: the ids, or what the filter matches (up to `batch_max`, the lowest ids)."""
        if isinstance(selected, Query):
            listing = await self.lister.matches(entity_type_id, selected, self.batch_max, select)
            return Reading(listing.items, more=listing.more)
        return await self.read(entity_type_id, selected, select)

    async def missing(self, entity_type_id: int, ids: Sequence[int]) -> set[int]:
        """The ids of `ids` the portal does not list."""
        return set((await self.read(entity_type_id, ids, ID_ONLY)).missing)
