"""PHP semantics the portal inherits: ``parse_str`` bracket arrays, array-to-JSON shapes, and the Binder's ints.

Everything here is what PHP (and Bitrix's ``Engine\\AutoWire\\Binder``) does to request values before a method
sees them [SRC rest_util.php ``getRequestData``; main/lib/engine/autowire/binder.php].
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote_plus

from b24_mcp.sandbox.envelope import RestError

__all__ = [
    "bind_int",
    "parse_php_query",
    "php_array",
    "php_assign",
    "php_bool",
    "php_int",
    "php_keys",
    "php_listify",
    "php_number",
    "php_string",
]

_PHP_NUMERIC = re.compile(r"^[ \t\n\r\v\f]*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?[ \t\n\r\v\f]*$")


def parse_php_query(query: str) -> dict[str, Any]:
    """``parse_str``: a urlencoded query with PHP bracket syntax (``a[b]=x``, ``a[]=x``) into nested values.

    PHP arrays with keys 0..n-1 become lists, other arrays dicts with string keys.
    """
    root: dict[str, Any] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition("=")
        keys = php_keys(unquote_plus(raw_name))
        if keys[0]:
            php_assign(root, keys, unquote_plus(raw_value))
    return {key: php_listify(value) for key, value in root.items()}


def php_keys(name: str) -> list[str]:
    """The path a PHP variable name addresses: ``a[b][]`` is ``["a", "b", ""]``."""
    base, bracket, rest = name.partition("[")
    keys = [base]
    rest = bracket + rest
    if rest and "]" not in rest:
        # PHP turns an unclosed first bracket into an underscore and keeps the rest in the name.
        return [base + "_" + rest[1:]]
    while rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            break
        keys.append(rest[1:end])
        rest = rest[end + 1 :]
    return keys


def php_assign(root: dict[str, Any], keys: list[str], value: Any) -> None:
    """Store ``value`` at ``keys`` the way PHP does (``[]`` appends after the largest integer key)."""
    node = root
    for position, key in enumerate(keys):
        if key == "":
            indices = [int(k) for k in node if k.isdigit() and str(int(k)) == k]
            key = str(max(indices) + 1 if indices else 0)
        if position == len(keys) - 1:
            node[key] = value
            return
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child


def php_listify(value: Any) -> Any:
    """Nested dicts with keys "0".."n-1" in order become lists (a JSON list is such a PHP array)."""
    if not isinstance(value, dict):
        return value
    converted = {key: php_listify(child) for key, child in value.items()}
    if converted and list(converted) == [str(i) for i in range(len(converted))]:
        return list(converted.values())
    return converted


def php_array(container: dict[Any, Any]) -> Any:
    """JSON shape of a PHP array: ``[]`` when empty, a list for keys 0..n-1 in order, else an object."""
    if not container:
        return []
    if [str(key) for key in container] == [str(i) for i in range(len(container))]:
        return list(container.values())
    return {str(key): value for key, value in container.items()}


def php_bool(value: Any) -> bool:
    """``(bool)$value``: ``""`` and ``"0"`` are false, any other string (even ``"false"``) is true."""
    if isinstance(value, str):
        return value not in ("", "0")
    if isinstance(value, (list, dict)):
        return len(value) > 0
    return bool(value)


def php_string(value: Any) -> str:
    """How PHP interpolates a value into a string (the Binder's ``{...}``, ``str_replace``)."""
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    if isinstance(value, (list, dict)):
        return "Array"
    return str(value)


def php_number(value: Any) -> float | None:
    """The value as a number when PHP's ``is_numeric`` accepts it (booleans count as 0/1)."""
    if isinstance(value, (bool, int, float)):
        return float(value)
    if isinstance(value, str) and _PHP_NUMERIC.match(value):
        return float(value)
    return None


def php_int(value: Any) -> int | None:
    """``(int)`` of a value accepted by ``is_numeric``; None when PHP would refuse to bind it to an int."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _clamp_int(value) if math.isfinite(value) else 0
    if isinstance(value, str) and _PHP_NUMERIC.match(value):
        try:
            number = Decimal(value.strip(" \t\n\r\v\f"))
        except InvalidOperation:
            return None
        if number.adjusted() > 18:
            return 0
        return int(number)
    return None


def _clamp_int(value: float) -> int:
    return int(value) if abs(value) < 2**63 else 0


def bind_int(params: dict[str, Any], name: str) -> int:
    """The Binder for an ``int $name`` parameter: error 100 when it is missing or not int-like."""
    if name not in params:
        raise RestError(400, 100, f"Could not find value for parameter {{{name}}}")
    value = php_int(params[name])
    if value is None:
        shown = php_string(params[name])
        raise RestError(
            400, 100, f"Invalid value {{{shown}}} to match with parameter {{{name}}}. Should be value of type int."
        )
    return value
