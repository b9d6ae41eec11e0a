"""What a preview of a set says: the items found, a breakdown, where they go, and one token for them all.

A filter preview's token covers exactly the items it lists; `PreviewedSets` keeps their ids with the token.
"""

from __future__ import annotations

import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from b24_mcp.bulk.reading import Reading
from b24_mcp.bulk.results import BatchResult, FoundItem, SetSummary
from b24_mcp.bulk.selection import Query
from b24_mcp.deleting.app import App
from b24_mcp.deleting.gate import Reach, mode_hint
from b24_mcp.deleting.questions import describe_set, filter_preview, summary
from b24_mcp.deleting.results import iso_utc
from b24_mcp.portal.catalog import where_it_goes
from b24_mcp.portal.items import counted, display_name
from b24_mcp.text import bounded

SHOWN = 50  # the items a filter preview lists
SUBJECT = "batch"  # what an ids preview's token names


class PreviewedSets:
    """The ids each filter preview's token covers, kept in this process until the token expires.

    Keyed by the token's nonce, looked up only once the token's signature was checked. The oldest go first when
    `capacity` previews are kept; a token whose ids are gone falls back to listing the filter again.
    """

    def __init__(self, capacity: int = 64, clock: Callable[[], float] = time.time) -> None:
        self._capacity = capacity
        self._clock = clock
        self._sets: OrderedDict[str, tuple[int, array[int], bool]] = OrderedDict()

    def keep(self, nonce: str, expires_at: int, ids: Sequence[int], more: bool) -> None:
        now = self._clock()
        for key in [key for key, (expiry, _, _) in self._sets.items() if expiry <= now]:
            del self._sets[key]
        self._sets[nonce] = (expires_at, array("q", ids), more)
        while len(self._sets) > self._capacity:
            self._sets.popitem(last=False)

    def find(self, nonce: str) -> tuple[list[int], bool] | None:
        kept = self._sets.get(nonce)
        if kept is None or kept[0] <= self._clock():
            return None
        return list(kept[1]), kept[2]


class SetPreview:
    """The preview answers for sets of items, with tokens from the application and `previewed` for filters."""

    def __init__(self, app: App, previewed: PreviewedSets) -> None:
        self.app = app
        self.previewed = previewed

    def for_ids(
        self, entity_type_id: int, ids: Sequence[int], reading: Reading, recycle_bin: bool | None, reach: Reach | None
    ) -> BatchResult:
        """The preview of the ids form: which exist, which do not, and one token for those that do."""
        found = [FoundItem(id=item_id, title=_title(item)) for item_id, item in reading.items.items()]
        parts = [f"Preview only, nothing was deleted: {len(found)} of {len(ids)} ids exist."]
        if reading.missing:
            parts.append(f"Not found or not readable: {', '.join(map(str, reading.missing))}.")
        token = expires = None
        if found:
            token, expires_at = self.app.tokens.issue(entity_type_id, SUBJECT, reading.version)
            expires = iso_utc(expires_at)
            parts.append(
                f"{counted(entity_type_id, len(found))} would be deleted. {describe_set(entity_type_id, reading.items)}"
            )
            parts.append(where_it_goes(recycle_bin, many=len(found) > 1))
            parts.append(self._next_step("ids", reach))
        else:
            parts.append("There is nothing to delete.")
        return BatchResult(
            status="preview",
            entityTypeId=entity_type_id,
            message=" ".join(parts),
            found=found,
            missing=reading.missing,
            recycleBin=recycle_bin,
            confirmationToken=token,
            confirmationExpiresAt=expires,
        )

    def for_filter(
        self, entity_type_id: int, query: Query, reading: Reading, recycle_bin: bool | None, reach: Reach | None
    ) -> BatchResult:
        """The preview of a filter: what it matches, a breakdown, and one token for exactly those items."""
        items = reading.items
        found = [
            FoundItem(
                id=item_id,
                title=_title(item),
                stageId=_field(item, "stageId"),
                updatedTime=_field(item, "updatedTime"),
            )
            for item_id, item in list(items.items())[:SHOWN]
        ]
        stages, assignees = summary(items.values(), limit=20)
        parts = [
            "Preview only, nothing was deleted: "
            + filter_preview(entity_type_id, items, query.describe(), reading.more)
        ]
        token = expires = None
        if items:
            token, expires_at = self.app.tokens.issue(entity_type_id, query.subject, reading.version)
            claim = self.app.tokens.check(token, entity_type_id, query.subject)
            self.previewed.keep(claim.nonce, claim.expires_at, list(items), reading.more)
            expires = iso_utc(expires_at)
            parts.append(describe_set(entity_type_id, items))
            parts.append(where_it_goes(recycle_bin, many=len(items) > 1))
            parts.append(self._next_step("filter", reach))
        return BatchResult(
            status="preview",
            entityTypeId=entity_type_id,
            message=" ".join(parts),
            matched=len(items),
            more=reading.more,
            found=found,
            summary=SetSummary(
                byStage={bounded(key, 200): n for key, n in stages.items()},
                byAssignee={bounded(key, 200): n for key, n in assignees.items()},
            ),
            recycleBin=recycle_bin,
            confirmationToken=token,
            confirmationExpiresAt=expires,
        )

    def _next_step(self, noun: str, reach: Reach | None) -> str:
        if self.app.guardrails.read_only:
            return "This server is read-only (B24_READ_ONLY=true): it will not delete them."
        return mode_hint(self.app.mode, noun, reach)


def _title(item: Mapping[str, Any]) -> str | None:
    name = display_name(item)
    return bounded(name, 2000) if name else None


def _field(item: Mapping[str, Any], key: str) -> str | None:
    value = item.get(key)
    return bounded(str(value), 200) if value not in (None, "") else None
