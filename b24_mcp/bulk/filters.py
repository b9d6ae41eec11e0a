"""A filter checked at the edge: the portal's own `crm.item.list` syntax, flat AND conditions only, each value
of a kind the field takes; a boolean in the form its field takes. See `selection` for the rest of a set's reading."""

from __future__ import annotations

import math
import re
from typing import Any

from b24_mcp.text import for_terminal

MAX_CONDITIONS = 20
MAX_VALUES = 500
MAX_TEXT = 1000
# Longest first, so that ">=" is not read as ">" and a field called "=…".
OPERATORS = (">=", "<=", "!@", "=%", "%=", "!%", "!=", ">", "<", "@", "%", "=", "!")
LIST_OPERATORS = frozenset({"@", "!@"})
PATTERN_OPERATORS = frozenset({"%", "=%", "%=", "!%"})
_SHOWN_OPERATORS = ">=, >, <=, <, @, !@, %, =%, %=, !%, =, !=, !"
_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,99}")
_MAX_INT = 2**63 - 1
# The system's own yes/no fields of crm.item (api-reference/crm/universal/object-fields.md): Y/N.
SYSTEM_YES_NO = frozenset(
    {
        *("opened", "isManualOpportunity", "closed", "isConvert", "hasPhone", "hasEmail", "hasImol"),
        *("isReturnCustomer", "isNew", "isRecurring", "isRepeatedApproach", "isWork", "isWon", "isLose"),
        *("hasProducts", "export", "isMyCompany"),
    }
)
YES_NO = ("Y", "N")  # how a true / false goes out to a system yes/no field
ONE_ZERO = ("1", "0")  # ... and to a user field
_YES_NO_KEYS = frozenset(name.lower() for name in SYSTEM_YES_NO)
# What `batch` substitutes inside the parameters of its commands, anywhere in a value (batch.md).
_BATCH_REFERENCE = re.compile(r"\$(result|next|total|time|error)", re.IGNORECASE)

# What a preview shows of each item (a contact has names instead of a title).


Scalar = str | int | float | bool
Value = Scalar | list[Scalar]


def check_filter(raw: Any) -> Any:
    """`raw` unchanged when it is a filter this server sends; `ValueError` saying what is wrong otherwise.

    Used as the `filter` argument's validator, so the message reaches the assistant as `filter: <message>`.
    """
    if not isinstance(raw, dict):
        raise ValueError('must be a JSON object of conditions, e.g. {"stageId": "NEW", ">=createdTime": "…"}')
    if not raw:
        raise ValueError("is empty; an empty filter would match every item: give at least one condition")
    if len(raw) > MAX_CONDITIONS:
        raise ValueError(f"has {len(raw)} conditions; at most {MAX_CONDITIONS} are allowed")
    for key, value in raw.items():
        _check_condition(key, value)
    return raw


def _check_condition(key: Any, value: Any) -> None:
    shown = f"'{for_terminal(str(key), 60)}'"
    if not isinstance(key, str) or not key:
        raise ValueError("a condition needs a field name")
    if key.strip().lower() == "logic":
        raise ValueError("'logic' is not supported: the conditions are all joined with AND (there is no OR)")
    if key.isdigit():
        raise ValueError(f"{shown}: nested conditions are not supported; give flat conditions, all joined with AND")
    operator, field = split_key(key)
    if not _FIELD_NAME.fullmatch(field):
        raise ValueError(
            f"{shown} is not a field name with a known operator prefix; a key is a field name as crm.item.list "
            f"spells it (stageId, createdTime, title, assignedById, ufCrm…), optionally after one of {_SHOWN_OPERATORS}"
        )
    if isinstance(value, dict):
        raise ValueError(f"{shown}: an object is not a value; nested conditions are not supported")
    if isinstance(value, list):
        if operator not in LIST_OPERATORS:
            raise ValueError(f"{shown}: a list of values needs the @ (in) or !@ (not in) operator")
        if not 1 <= len(value) <= MAX_VALUES:
            raise ValueError(f"{shown}: a list needs 1 to {MAX_VALUES} values, not {len(value)}")
        for element in value:
            _check_scalar(shown, field, element, in_list=True)
        return
    if operator in LIST_OPERATORS:
        raise ValueError(f"{shown}: @ and !@ take a list of values")
    _check_scalar(shown, field, value, in_list=False)
    if operator in PATTERN_OPERATORS and value == "":
        raise ValueError(f"{shown}: an empty pattern matches every item")
    if operator in (">", ">=") and field.lower() == "id" and _number(value) is None:
        raise ValueError(f"{shown}: an id is compared with a number")


def _check_scalar(shown: str, field: str, value: Any, *, in_list: bool) -> None:
    where = "the values of " + shown if in_list else shown
    if isinstance(value, bool) and boolean_form(field) is None:
        raise ValueError(
            f"{where}: cannot tell whether this field takes Y/N or 1/0, so true/false is not sent; give the value "
            'itself: "Y" or "N" for one of the system\'s own yes/no fields, 1 or 0 for a user field of type boolean'
        )
    reference = _BATCH_REFERENCE.search(value) if isinstance(value, str) else None
    if reference is not None:
        raise ValueError(
            f"{where}: batch would replace ${reference.group(1).lower()}[…] in the text with another command's "
            "answer, and this server lists items through batch; leave the $ out"
        )
    if value is None:
        raise ValueError(f'{where}: null is not a value (an empty field is "")')
    if isinstance(value, dict | list):
        raise ValueError(f"{where}: values are strings, numbers or booleans" + ("" if in_list else ", or a list"))
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise ValueError(f"{where}: a text value has at most {MAX_TEXT} characters")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: a number must be finite")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_INT:
        raise ValueError(f"{where}: the number is too large")
    if not isinstance(value, str | int | float):
        raise ValueError(f"{where}: values are strings, numbers or booleans")


def boolean_form(field: str) -> tuple[str, str] | None:
    """How true / false go out for a field: `ONE_ZERO` for a user field, `YES_NO` for one of the system's
    yes/no fields, None when the field's kind cannot be told from its name."""
    key = field.replace("_", "").lower()
    if key.startswith("ufcrm"):
        return ONE_ZERO
    return YES_NO if key in _YES_NO_KEYS else None


def split_key(key: str) -> tuple[str, str]:
    """(operator, field name) of a condition's key."""
    operator = next((candidate for candidate in OPERATORS if key.startswith(candidate)), "")
    return operator, key[len(operator) :]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None
