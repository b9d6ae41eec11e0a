"""Choosing items: the `filter` argument (checked before anything is sent), and reading sets of items through
`crm.item.list` inside `batch` requests.

A filter is the portal's own `crm.item.list` syntax, flat AND conditions only: a key is a field name with an
optional operator prefix, a value a string, number or boolean, or a list of them for `@` / `!@`. Everything else
is refused here, with a message naming the condition, and never reaches the portal.

A boolean goes out in the form the field's kind takes (crm.item.list docs, `filter`): `1`/`0` to a user field
(`ufCrm…`, `UF_CRM_…`), for which `Y`/`N` is not supported (the portal reads `Y` as 0, the opposite of `true`);
`Y`/`N` to the system's own yes/no fields (`opened`, `isManualOpportunity`, `closed`, …). A boolean on any other
field is refused rather than guessed. A text value naming a batch reference (`$result[…]`, `$next[…]`,
`$total[…]`, `$time[…]`, `$error[…]`) is refused too: the listing runs inside `batch`, which would replace it.

Two ways of reading, both `batch` requests of up to 50 `crm.item.list` commands (one HTTP request each):

- `ItemLister.matches`: the items a filter matches, in pages of 50 by ascending id (`order: {id: ASC}`,
  `start: -1` so the portal does not count), each page continuing after the last id of the one before
  (`>id`), chained inside one request through `$result[pN][items][49][id]`. A page shorter than 50 is the last:
  the commands after it in the same request see what the portal makes of a reference past the end of a page,
  and their answers are ignored. It reads one item beyond `limit`, to say whether more match.
- `ItemLister.read`: given ids, 50 ids to a command (`@id`), 50 commands to a request: 2,500 items a request.

`select: ["*"]` makes `crm.item.list` return every field, user fields (`ufCrm…`) and multifields (`fm`)
included: it is what a snapshot for the journal is read with. Previews read only the fields they show.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from b24_mcp.bulk.filters import _MAX_INT, Scalar, Value, _number, boolean_form, check_filter, split_key
from b24_mcp.errors import AnswerTooLarge, B24Error, PortalError, TransportError
from b24_mcp.portal.client import PortalClient
from b24_mcp.text import for_display

logger = logging.getLogger(__name__)

PAGE = 50  # rows of one crm.item.list page, fixed by the portal
BATCH_SIZE = 50  # commands the portal runs of one batch request
FIRST_PAGES = 10  # pages asked for in a listing's first request, unless more are needed anyway (see `matches`)
PREVIEW_FIELDS = (
    "id",
    "title",
    "name",
    "secondName",
    "lastName",
    "honorific",
    "stageId",
    "assignedById",
    "updatedTime",
    "opportunity",
    "currencyId",
)
EVERY_FIELD = ("*",)  # every field, user fields and multifields included
ID_ONLY = ("id",)


@dataclass(frozen=True)
class Query:
    """A checked filter, ready to send.

    `after_id` is where the listing starts: the filter's own `>id` / `>=id` conditions become that starting
    point, since the pages continue with a `>id` condition of their own.
    """

    raw: Mapping[str, Value]
    conditions: tuple[tuple[str, Value], ...]
    after_id: int

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Query:
        """The query of a filter that `check_filter` accepted."""
        check_filter(dict(raw))
        after = 0
        conditions: list[tuple[str, Value]] = []
        for key, value in raw.items():
            operator, field = split_key(key)
            number = _number(value) if operator in (">", ">=") and field.lower() == "id" else None
            if number is None:
                conditions.append((key, value))
                continue
            bound = math.floor(number) if operator == ">" else math.ceil(number) - 1
            after = max(after, min(bound, _MAX_INT))
        return cls(dict(raw), tuple(conditions), after)

    @property
    def subject(self) -> str:
        """What a confirmation token for this filter names: a digest of the filter as given."""
        canonical = json.dumps(self.raw, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        digest = hashlib.sha256(canonical.encode()).digest()
        return "filter " + base64.urlsafe_b64encode(digest[:15]).decode()

    def describe(self) -> str:
        """The conditions in one line of plain text, safe to show as it is: each as `field operator value`, the
        operator in words where a symbol would not read (`in`, `contains`), string values through `for_display`."""
        parts = []
        for key, value in self.raw.items():
            operator, field = split_key(key)
            if isinstance(value, list):
                shown = ", ".join(_literal(element) for element in value[:5])
                shown = f"[{shown}{', …' if len(value) > 5 else ''}]"
            else:
                shown = _literal(value)
            parts.append(f"{field} {_OPERATOR_WORDS[operator]} {shown}")
        return "; ".join(parts)


# Spaced out after the field name, `<` and `>` cannot start markup; `@` and `%` would not read as what they mean.
_OPERATOR_WORDS = {
    "": "=",
    "=": "=",
    "!": "!=",
    "!=": "!=",
    ">=": ">=",
    "<=": "<=",
    ">": ">",
    "<": "<",
    "@": "in",
    "!@": "not in",
    "%": "contains",
    "!%": "does not contain",
    "=%": "like",
    "%=": "like",
}


def _literal(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = for_display(json.dumps(value, ensure_ascii=False), 80)
        return shown.replace("«", "\u2039").replace("»", "\u203a")
    return str(value)


def encode_value(value: Scalar, form: tuple[str, str] | None = None) -> str:
    """A value as it goes into a batch command's query: a boolean in the field's `form` (`boolean_form`), numbers
    as written."""
    if isinstance(value, bool):
        if form is None:
            raise ValueError("a boolean goes out only to a field whose kind is known")
        return form[0] if value else form[1]
    if isinstance(value, float):
        return quote(repr(value), safe="")
    return quote(str(value), safe="")


def list_command(
    entity_type_id: int,
    conditions: Sequence[tuple[str, Value]],
    select: Sequence[str],
    *,
    after: str | None = None,
) -> str:
    """One `crm.item.list` command for a batch: ascending ids, no counting (`start=-1`), and when `after` is
    given a `>id` condition (a number, or a `$result[...]` reference to the previous page's last id)."""
    parts = [f"entityTypeId={entity_type_id}", "order[id]=ASC", "start=-1"]
    parts += [f"select[]={quote(name, safe='')}" for name in select]
    for key, value in conditions:
        # Operators are percent-encoded: PHP's parse_str would split a key at its first "=".
        name = f"filter[{quote(key, safe='')}]"
        form = boolean_form(split_key(key)[1])
        if isinstance(value, list):
            parts += [f"{name}[]={encode_value(element, form)}" for element in value]
        else:
            parts.append(f"{name}={encode_value(value, form)}")
    if after is not None:
        parts.append(f"filter[{quote('>id', safe='')}]={after}")
    return "crm.item.list?" + "&".join(parts)


def chunks(ids: Sequence[int], size: int) -> Iterator[list[int]]:
    """`ids` in runs of at most `size`."""
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def split_batch(result: Any) -> tuple[dict[str, Any], dict[str, Mapping[str, Any]]]:
    """The successful and the failed commands of a batch answer (empty containers come as `[]`)."""
    if not isinstance(result, Mapping):
        return {}, {}
    ok = result.get("result")
    failed = result.get("result_error")
    return (dict(ok) if isinstance(ok, Mapping) else {}), (dict(failed) if isinstance(failed, Mapping) else {})


def first_request_pages(pages: int) -> int:
    """How many pages the first request of a listing asks for.

    As few as possible without costing a request: a small set is then read by a short request, and a large one
    in as many requests as 50 pages to each would take (`pages` = 101 gives 10, 50 and 41).
    """
    requests = math.ceil(pages / BATCH_SIZE)
    least = pages - BATCH_SIZE * (requests - 1)
    return min(pages, max(least, FIRST_PAGES))


@dataclass
class Listing:
    """What a filter matched: up to `limit` items by ascending id, and whether more match."""

    items: dict[int, dict[str, Any]]
    more: bool


def _bad_answer(what: str) -> TransportError:
    return TransportError(
        "BAD_PORTAL_RESPONSE",
        f"The portal answered crm.item.list with {what}; nothing was deleted.",
        http_status=200,
        retryable=False,
        maybe_sent=False,
    )


class ItemLister:
    """Reads sets of items of one portal through `crm.item.list` commands in `batch` requests."""

    def __init__(self, portal: PortalClient) -> None:
        self.portal = portal

    async def matches(
        self, entity_type_id: int, query: Query, limit: int, select: Sequence[str] = PREVIEW_FIELDS
    ) -> Listing:
        """The first `limit` items the filter matches, by ascending id, and whether more match."""
        items: dict[int, dict[str, Any]] = {}
        after = query.after_id
        first = True
        while True:
            pages = math.ceil((limit + 1 - len(items)) / PAGE)
            count = first_request_pages(pages) if first else min(BATCH_SIZE, pages)
            first = False
            cmd = {
                f"p{page}": list_command(
                    entity_type_id,
                    query.conditions,
                    select,
                    after=str(after) if page == 0 else f"$result[p{page - 1}][items][{PAGE - 1}][id]",
                )
                for page in range(count)
            }
            answer = await self.portal.call("batch", {"halt": 0, "cmd": cmd})
            ok, failed = split_batch(answer.result)
            for page in range(count):
                rows = self._rows(ok, failed, f"p{page}")
                for row_id, row in rows:
                    if row_id <= after:
                        raise _bad_answer("items out of the ascending order asked for")
                    items[row_id] = row
                    after = row_id
                if len(items) > limit:
                    return Listing(dict(list(items.items())[:limit]), more=True)
                if len(rows) < PAGE:
                    return Listing(items, more=False)

    async def read(
        self, entity_type_id: int, ids: Sequence[int], select: Sequence[str] = EVERY_FIELD
    ) -> dict[int, dict[str, Any]]:
        """The items of `ids` the portal lists (absent: deleted, in the recycle bin, or not readable), in the
        order of `ids`.

        Whole items with many user fields can make 50 pages outgrow the answer cap: then the same pages are read
        again in requests of half as many (reading is safe to repeat), down to one page a request.
        """
        found: dict[int, dict[str, Any]] = {}
        runs = list(chunks(ids, PAGE))
        size = BATCH_SIZE
        start = 0
        while start < len(runs):
            group = runs[start : start + size]
            cmd = {
                f"r{index}": list_command(entity_type_id, [("@id", list(run))], select)
                for index, run in enumerate(group)
            }
            try:
                answer = await self.portal.call("batch", {"halt": 0, "cmd": cmd})
            except AnswerTooLarge:
                if len(group) == 1:
                    raise
                size = len(group) // 2
                logger.info("%d pages of whole items outgrew the answer cap: reading %d a request", len(group), size)
                continue
            ok, failed = split_batch(answer.result)
            for index, run in enumerate(group):
                asked = set(run)
                for row_id, row in self._rows(ok, failed, f"r{index}"):
                    if row_id not in asked or row_id in found:
                        raise _bad_answer("items that were not asked for")
                    found[row_id] = row
            start += len(group)
        return {item_id: found[item_id] for item_id in ids if item_id in found}

    def _rows(
        self, ok: Mapping[str, Any], failed: Mapping[str, Mapping[str, Any]], key: str
    ) -> list[tuple[int, dict[str, Any]]]:
        """The rows of one command's page, each with its id; the command's own error, passed through."""
        if key not in ok:
            raise self._command_error(failed.get(key))
        page = ok[key]
        rows = page.get("items") if isinstance(page, Mapping) else None
        if not isinstance(rows, list) or len(rows) > PAGE:
            raise _bad_answer("a page that is not a list of at most 50 items")
        parsed = []
        for row in rows:
            row_id = row.get("id") if isinstance(row, Mapping) else None
            if isinstance(row_id, str) and row_id.isdigit():
                row_id = int(row_id)
            if not isinstance(row_id, int) or isinstance(row_id, bool) or row_id < 1:
                raise _bad_answer("an item without a valid id")
            parsed.append((row_id, dict(row)))
        return parsed

    def _command_error(self, error: Mapping[str, Any] | None) -> B24Error:
        if error is None:
            return _bad_answer("a batch answer that lacks one of its commands")
        code = self.portal.scrub(str(error.get("error", "")))[:200]
        description = error.get("error_description")
        text = "" if description is None else self.portal.scrub(str(description))[:2000]
        # A command's HTTP status never leaves the batch; the request itself was answered with 200.
        return PortalError(code, text, http_status=None)
