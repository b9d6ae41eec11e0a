"""How ``crm.item.list`` (and ``crm.type.list``) pick, order, shape and page rows.

Spec §7.2 and docs ``crm-item-list.md``; the controller is ``Item::listAction`` [SRC crm/lib/controller/item.php].

* ``filter``: keys are field names (camelCase or UPPER_SNAKE, user fields ``ufCrm…``/``UF_CRM_…``) of the type's
  fields (``fields.py``; any other name is ``INVALID_ARG_VALUE`` "Invalid filter: field '…' is not allowed in
  filter", before a row is read) with an optional operator prefix: none or ``=`` (equal; a list means IN),
  ``!=``/``!`` (not equal), ``>``, ``>=``, ``<``, ``<=``,
  ``@`` (IN: a list, or a comma-separated string), ``!@`` (NOT IN), ``%`` (contains, case-insensitive), ``=%``/``%=``
  (LIKE with the caller's ``%``/``_`` wildcards), ``!%`` (does not contain), ``!=%``/``!%=`` (NOT LIKE).
  A numeric key whose value is an array is a nested filter; ``logic: "OR"`` joins a level with OR (else AND).
  Numbers compare as numbers, ISO-8601 dates as instants (a date or a time without offset is in the portal's
  time zone), other text case-insensitively (MySQL ``_ci`` collations); a user field of type boolean as its number
  column (1/0) against the value read as a number (``Y`` reads 0). [INFER] As in SQL, an empty field never
  matches ``!@`` or a NOT LIKE; a comparison with a list value matches when it holds for any element.
* ``order``: ``{field: "ASC"|"DESC"}`` in priority order (ties by ``id``); another direction, or a field the type
  does not have, is ``INVALID_ARG_VALUE``. Without ``order`` rows come by ascending ``id``.
* ``select``: see ``Selection``.
* ``start``: page offset; pages hold 50 rows; ``total`` is always given, ``next`` when rows remain;
  ``start=-1`` skips counting: the first page with neither ``total`` nor ``next``.
"""

from __future__ import annotations

import copy
import functools
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from b24_mcp.sandbox.envelope import Outcome, RestError
from b24_mcp.sandbox.fields import Fields, column_number, norm
from b24_mcp.sandbox.php import php_int, php_number, php_string

__all__ = ["PAGE_SIZE", "Selection", "bind_array", "filter_rows", "order_rows", "paged"]

PAGE_SIZE = 50

# Longest first, so that "!=%" is not read as "!=" and a "%" field name.
_OPERATORS = ("!=%", "!%=", ">=", "<=", "!@", "=%", "%=", "!%", "!=", ">", "<", "@", "%", "=", "!")
_DATE_LIKE = re.compile(r"^\s*\d{4}-\d{2}-\d{2}")
_ORDERINGS: dict[str, Callable[[Any, Any], Any]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def bind_array(params: dict[str, Any], name: str) -> dict[str, Any] | list[Any] | None:
    """The Binder for an optional ``array $name`` parameter: absent is None, a scalar is error 100."""
    if name not in params or params[name] is None:
        return None
    value = params[name]
    if not isinstance(value, (dict, list)):
        shown = php_string(value)
        raise RestError(
            400, 100, f"Invalid value {{{shown}}} to match with parameter {{{name}}}. Should be value of type array."
        )
    return value


def filter_rows(
    rows: list[dict[str, Any]],
    filter_: dict[str, Any] | list[Any] | None,
    tz: timezone,
    fields: Fields | None = None,
) -> list[Any]:
    """The rows the filter matches; with ``fields``, a filter naming another field is refused first."""
    if not filter_:
        return rows
    if fields is not None:
        _check_filter_fields(filter_, fields)
    return [row for row in rows if _matches(row, filter_, tz, fields)]


def order_rows(
    rows: list[dict[str, Any]],
    order: dict[str, Any] | list[Any] | None,
    tz: timezone,
    fields: Fields | None = None,
) -> list[Any]:
    rows = sorted(rows, key=lambda row: _sort_key(row.get("id"), tz))
    if not isinstance(order, dict):
        return rows
    keys: list[tuple[str, bool]] = []
    for name, direction in order.items():
        if fields is not None and not fields.knows(str(name)):
            raise RestError(400, "INVALID_ARG_VALUE", f"Invalid order: field '{name}' is not allowed in order")
        spelled = php_string(direction).strip().upper()
        if spelled not in ("ASC", "DESC"):
            raise RestError(
                400,
                "INVALID_ARG_VALUE",
                f"Invalid order: allowed sort directions are ASC, DESC. But got '{php_string(direction)}' "
                f"for field '{name}'",
            )
        keys.append((str(name), spelled == "DESC"))
    # Stable sorts from the least significant key up give a multi-key order.
    for name, descending in reversed(keys):
        rows.sort(key=_field_sort_key(name, tz), reverse=descending)
    return rows


@dataclass(frozen=True)
class Selection:
    """Which fields ``select`` returns [SRC item.php ``prepareSelect``].

    * ``select`` absent, or containing ``"*"`` anywhere (``["*"]``, ``["*", "uf_*"]``): **every field**, user
      fields (``ufCrm…``) and multifields (``fm``) included — ``"*"`` alone already returns everything.
    * ``"uf_*"`` (any case) without ``"*"``: every user field, plus the fields named beside it.
    * Named fields (camelCase or UPPER_SNAKE); unknown names are ignored; ``id`` is always returned;
      ``fm`` only comes with ``"*"``.
    """

    names: frozenset[str] | None  # normalized names; None: every field
    user_fields: bool = False

    @classmethod
    def parse(cls, select: dict[str, Any] | list[Any] | None) -> Selection:
        if select is None:
            return cls(None)
        names = {norm(php_string(name)) for name in (select.values() if isinstance(select, dict) else select)}
        if "*" in names:
            return cls(None)
        return cls(frozenset(names | {"id"}), user_fields="uf*" in names)

    def project(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.names is None:
            return copy.deepcopy(row)
        return {
            key: copy.deepcopy(value)
            for key, value in row.items()
            if key != "fm" and (norm(key) in self.names or (self.user_fields and _is_user_field(key)))
        }


def paged(params: dict[str, Any], rows: list[Any], name: str, project: Callable[[Any], Any] | None = None) -> Outcome:
    """The page of `rows` that `start` asks for, each row through `project` (when given)."""
    start = php_int(params.get("start")) or 0
    if start == -1:
        return Outcome({name: _projected(rows[:PAGE_SIZE], project)})
    start = max(start, 0)
    page = rows[start : start + PAGE_SIZE]
    total = len(rows)
    more = start + len(page) < total
    return Outcome({name: _projected(page, project)}, total=total, next=start + PAGE_SIZE if more else None)


def _projected(page: list[Any], project: Callable[[Any], Any] | None) -> list[Any]:
    return page if project is None else [project(row) for row in page]


# ---------------------------------------------------------------------- filter


def _conditions(filter_: dict[str, Any] | list[Any]) -> Iterator[tuple[str, Any, bool]]:
    """(key, value, nested) of each entry of one level of a filter, ``logic`` left out."""
    entries = filter_.items() if isinstance(filter_, dict) else enumerate(filter_)
    for key, expected in entries:
        name = str(key)
        if name.lower() != "logic":
            yield name, expected, name.isdigit() and isinstance(expected, (dict, list))


def _split(key: str) -> tuple[str, str]:
    op = next((candidate for candidate in _OPERATORS if key.startswith(candidate)), "")
    return op, key[len(op) :]


def _check_filter_fields(filter_: dict[str, Any] | list[Any], fields: Fields) -> None:
    for key, expected, nested in _conditions(filter_):
        if nested:
            _check_filter_fields(expected, fields)
            continue
        name = _split(key)[1]
        if not fields.knows(name):
            raise RestError(400, "INVALID_ARG_VALUE", f"Invalid filter: field '{name}' is not allowed in filter")


def _matches(row: dict[str, Any], filter_: dict[str, Any] | list[Any], tz: timezone, fields: Fields | None) -> bool:
    logic_or = any(
        str(key).lower() == "logic" and php_string(value).strip().upper() == "OR"
        for key, value in (filter_.items() if isinstance(filter_, dict) else [])
    )
    results = [
        (not expected or _matches(row, expected, tz, fields)) if nested else _condition(row, key, expected, tz, fields)
        for key, expected, nested in _conditions(filter_)
    ]
    if not results:
        return True
    return any(results) if logic_or else all(results)


def _condition(row: dict[str, Any], key: str, expected: Any, tz: timezone, fields: Fields | None) -> bool:
    op, name = _split(key)
    actual = _field(row, name)
    if fields is not None and fields.is_user_boolean(name):
        # The portal compares the field's number column with the value read as a number.
        actual = None if actual is None else (1.0 if actual == "Y" else 0.0)
        expected = column_number(expected)
    if op in ("", "="):
        return _equal_or_in(actual, expected, tz)
    if op in ("!", "!="):
        return not _equal_or_in(actual, expected, tz)
    if op == "@":
        return _in(actual, _options(expected), tz)
    if op == "!@":
        return actual is not None and not _in(actual, _options(expected), tz)
    if op in ("%", "=%", "%="):
        return _any_like(actual, expected, substring=op == "%")
    if op in ("!%", "!=%", "!%="):
        return actual is not None and not _any_like(actual, expected, substring=op == "!%")
    return _compare(actual, expected, op, tz)


def _equal_or_in(actual: Any, expected: Any, tz: timezone) -> bool:
    if isinstance(expected, (dict, list)):
        return _in(actual, list(expected.values()) if isinstance(expected, dict) else expected, tz)
    return _equal(actual, expected, tz)


def _options(expected: Any) -> list[Any]:
    if isinstance(expected, dict):
        return list(expected.values())
    if isinstance(expected, list):
        return expected
    if isinstance(expected, str):
        return [part.strip() for part in expected.split(",")]
    return [expected]


def _in(actual: Any, options: list[Any], tz: timezone) -> bool:
    if isinstance(actual, int) and not isinstance(actual, bool):
        # An id against an IN list of numbers (``@id`` with 50 ids, row after row): one set lookup gives what
        # comparing with each option as numbers gives, without the list's length in every row's cost.
        try:
            numbers = _numeric_options(tuple(options))
        except TypeError:  # an option that cannot be hashed (a nested array): compare one by one
            numbers = None
        if numbers is not None:
            return float(actual) in numbers
    return any(_equal(actual, option, tz) for option in options)


@functools.lru_cache(maxsize=256)
def _numeric_options(options: tuple[Any, ...]) -> frozenset[float] | None:
    """The options as numbers when PHP reads every one of them as a number, else None."""
    numbers = [php_number(option) for option in options]
    return frozenset(number for number in numbers if number is not None) if None not in numbers else None


def _equal(actual: Any, expected: Any, tz: timezone) -> bool:
    if isinstance(actual, list):
        return any(_equal(element, expected, tz) for element in actual)
    if actual is None or actual == "":
        return expected is None or php_string(expected) == ""
    pair = _comparable(actual, expected, tz)
    return pair is not None and pair[0] == pair[1]


def _compare(actual: Any, expected: Any, op: str, tz: timezone) -> bool:
    if isinstance(actual, list):
        return any(_compare(element, expected, op, tz) for element in actual)
    if isinstance(expected, (dict, list)):
        options = list(expected.values()) if isinstance(expected, dict) else expected
        return any(_compare(actual, option, op, tz) for option in options)
    pair = _comparable(actual, expected, tz)
    if pair is None:
        return False
    left, right = pair
    return bool(_ORDERINGS[op](left, right))


def _comparable(actual: Any, expected: Any, tz: timezone) -> tuple[Any, Any] | None:
    """Both sides as numbers, as instants, or as case-folded text; None when SQL would compare with NULL."""
    if actual is None or expected is None or isinstance(actual, dict) or isinstance(expected, dict):
        return None
    left, right = php_number(actual), php_number(expected)
    if left is not None and right is not None:
        return left, right
    moment, bound = _instant(actual, tz), _instant(expected, tz)
    if moment is not None and bound is not None:
        return moment, bound
    return php_string(actual).casefold(), php_string(expected).casefold()


def _any_like(actual: Any, expected: Any, *, substring: bool) -> bool:
    if actual is None:
        return False
    if isinstance(actual, list):
        return any(_any_like(element, expected, substring=substring) for element in actual)
    patterns = _options(expected) if isinstance(expected, (dict, list)) else [expected]
    text = php_string(actual)
    for pattern in patterns:
        wanted = php_string(pattern)
        if substring:
            if wanted.casefold() in text.casefold():
                return True
        elif _like(text, wanted):
            return True
    return False


def _like(text: str, pattern: str) -> bool:
    regex = "".join(".*" if char == "%" else "." if char == "_" else re.escape(char) for char in pattern)
    return re.fullmatch(regex, text, re.IGNORECASE | re.DOTALL) is not None


def _instant(value: Any, tz: timezone) -> datetime | None:
    if not isinstance(value, str) or not _DATE_LIKE.match(value):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=tz)


# ---------------------------------------------------------------------- fields and order


def _is_user_field(key: str) -> bool:
    return norm(key).startswith("uf")


def _field(row: dict[str, Any], name: str) -> Any:
    if name in row:
        return row[name]
    wanted = norm(name)
    for key, value in row.items():
        if norm(key) == wanted:
            return value
    return None


def _sort_key(value: Any, tz: timezone) -> tuple[int, float, str]:
    if value is None:
        return (0, 0.0, "")
    number = php_number(value)
    if number is not None:
        return (1, number, "")
    moment = _instant(value, tz)
    if moment is not None:
        return (1, moment.timestamp(), "")
    return (2, 0.0, php_string(value).casefold())


def _field_sort_key(name: str, tz: timezone) -> Callable[[dict[str, Any]], tuple[int, float, str]]:
    return lambda row: _sort_key(_field(row, name), tz)
