"""The questions put to the person before a deletion, and the breakdowns previews show.

The fixed facts come first (action, count, type, id, portal, where the items go), then the portal's text, each
title sanitised, quoted and capped, so no title can push the facts out of view or speak for the server. A set
of more than `NAMED` items is described by a breakdown and a sample the server chooses, never the caller's order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from b24_mcp.portal.catalog import where_it_goes
from b24_mcp.portal.items import changed_at, counted, display_name, type_name
from b24_mcp.text import for_display, quoted

NAMED = 10  # up to this many items, every one is named
SAMPLE = 3  # of a larger set: this many of the most recently changed, and of the largest amounts


def item_question(
    host: str, entity_type_id: int, item_id: int, item: Mapping[str, Any], recycle_bin: bool | None
) -> str:
    """The question for one item."""
    updated = changed_at(item)
    changed = f" (last changed {for_display(updated, 40)})" if updated else ""
    name = display_name(item)
    title = f" Title: {quoted(name)}." if name else ""
    return f"Delete {type_name(entity_type_id)} #{item_id} from {host}{changed}? {where_it_goes(recycle_bin)}{title}"


def set_question(
    host: str,
    entity_type_id: int,
    items: Mapping[int, Mapping[str, Any]],
    recycle_bin: bool | None,
    *,
    skipped: int = 0,
    more: bool = False,
    conditions: str | None = None,
) -> str:
    """The one question for a set of items: the ids asked for, or what a filter matched (`conditions`, the
    filter in words, from `Query.describe`; `more` when further items match beyond the server's cap)."""
    count = len(items)
    latest = max((changed_at(item) for item in items.values()), default="")
    facts = f"Delete {counted(entity_type_id, count)} from {host}?"
    facts += f" {where_it_goes(recycle_bin, many=count > 1)}"
    if skipped:
        verb = "does not exist or cannot be read and is" if skipped == 1 else "do not exist or cannot be read and are"
        facts += f" ({skipped} of the requested ids {verb} not included.)"
    if more:
        facts += f" More items match the filter: these are the first {count} by id; the rest stay for a later round."
    if latest:
        facts += f" Latest change among them: {for_display(latest, 40)}."
    if conditions is not None:
        facts += f" Filter: «{conditions}»."
    return f"{facts} {describe_set(entity_type_id, items)}"


def filter_preview(entity_type_id: int, items: Mapping[int, Mapping[str, Any]], conditions: str, more: bool) -> str:
    """What a filter preview says it found, before the breakdown: the count, the filter, and the cap."""
    count = len(items)
    if not count:
        return f"No {type_name(entity_type_id)} matches the filter «{conditions}»: there is nothing to delete."
    text = f"{counted(entity_type_id, count)} match the filter «{conditions}»"
    if more:
        text += (
            f", and more beyond them: this preview covers the first {count} by id, the most one call deletes on this "
            "server (B24_BATCH_MAX). Delete these, then preview the same filter again for the next ones"
        )
    return text + "."


def describe_set(entity_type_id: int, items: Mapping[int, Mapping[str, Any]]) -> str:
    """Every item when there are few; otherwise a breakdown by stage and a sample chosen by the server."""
    if len(items) <= NAMED:
        return "Items: " + ", ".join(_named(item_id, item) for item_id, item in sorted(items.items())) + "."
    stages, assignees = summary(items.values())
    parts = ["By stage: " + ", ".join(f"{for_display(stage, 40)} {n}" for stage, n in stages.items()) + "."]
    if any(item.get("assignedById") not in (None, "") for item in items.values()):
        parts.append("By assignee: " + ", ".join(f"{_assignee(who)} {n}" for who, n in assignees.items()) + ".")
    recent = sorted(items.items(), key=lambda pair: (changed_at(pair[1]), pair[0]), reverse=True)[:SAMPLE]
    parts.append("Most recently changed: " + ", ".join(_named(item_id, item) for item_id, item in recent) + ".")
    with_amount = [(item_id, item) for item_id, item in items.items() if _amount(item) is not None]
    if with_amount:
        largest = sorted(with_amount, key=lambda pair: (_amount(pair[1]) or 0.0, pair[0]), reverse=True)[:SAMPLE]
        parts.append(
            "Largest amounts: " + ", ".join(_named(item_id, item, amount=True) for item_id, item in largest) + "."
        )
    return " ".join(parts)


def summary(items: Iterable[Mapping[str, Any]], limit: int = 10) -> tuple[dict[str, int], dict[str, int]]:
    """Counts by stage and by assignee (user id), the most common first, the rest summed as `other`."""
    rows = list(items)
    return breakdown(rows, "stageId", limit), breakdown(rows, "assignedById", limit)


def breakdown(items: Any, field: str, limit: int = 10) -> dict[str, int]:
    """Counts of `field`'s values, the most common first; the rest summed as `other`."""
    counts = Counter(str(item.get(field) or "—") for item in items)
    common = dict(counts.most_common(limit))
    rest = sum(counts.values()) - sum(common.values())
    return common | ({"other": rest} if rest else {})


def _assignee(who: str) -> str:
    return who if who in ("—", "other") else f"user #{for_display(who, 20)}"


def _named(item_id: int, item: Mapping[str, Any], *, amount: bool = False) -> str:
    name = display_name(item)
    text = f"#{item_id}" + (f" {quoted(name, 60)}" if name else "")
    value = _amount(item)
    if amount and value is not None:
        currency = for_display(str(item.get("currencyId") or ""), 8)
        text += f" ({value:g} {currency})".replace(" )", ")")
    return text


def _amount(item: Mapping[str, Any]) -> float | None:
    try:
        value = float(item.get("opportunity") or 0)
    except (TypeError, ValueError, OverflowError):
        return None
    return value if value > 0 and value != float("inf") else None
