"""``batch``: up to 50 commands in one request, later ones able to use earlier results (spec §6).

Commands are ``"method?query"`` strings; the query is ``parse_str``-ed, then every value goes through the
substitution of ``CRestUtil::processBatchElement`` [SRC rest/classes/general/rest_util.php]:

* A reference is ``$`` + one of ``result``, ``next``, ``total``, ``time``, ``error`` (the names are matched
  case-insensitively but only lowercase ones resolve), followed by ``[key]`` steps up to the next whitespace:
  ``$result[page0][items][49][id]``, ``$next[page0]``, ``$total[page0]``, ``$error[cmd][error]``. The docs
  document ``$result[cmd][field]`` [DOC settings/how-to-call-rest-api/batch.md].
* Steps descend while the key exists (and its value is not null); at the first missing key the walk stops and the
  value reached so far is used — a reference past the end of a short page yields the whole ``items`` array.
* When a reference is the whole value, the value becomes what it points to (a number, an array, ...). Inside a
  longer value the reference and everything after it up to whitespace is replaced by its text (arrays read
  ``Array``, ``true`` reads ``1``, ``false``/``null`` read as nothing).

Each command is charged to its own method by the operating-time limiter; the outer ``batch`` never is.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from b24_mcp.sandbox.envelope import Outcome, RestError, method_name, operation_time_limit
from b24_mcp.sandbox.methods import required_scopes, run
from b24_mcp.sandbox.php import parse_php_query, php_array, php_bool, php_string
from b24_mcp.sandbox.state import PortalState

if TYPE_CHECKING:
    from b24_mcp.sandbox.users import Caller

__all__ = ["BATCH_MAX_LENGTH", "batch", "substitute"]

BATCH_MAX_LENGTH = 50
_FORBIDDEN = frozenset({"batch", "download", "upload"})
# Internal container name (what references use) -> name in the answer, in the answer's order.
_CONTAINERS = {
    "result": "result",
    "error": "result_error",
    "total": "result_total",
    "next": "result_next",
    "time": "result_time",
}
_REFERENCE = re.compile(r"\$(result|next|total|time|error)(\S*)", re.IGNORECASE)
_STEP = re.compile(r"\[([^\]]+)\]")


def batch(portal: PortalState, caller: Caller, params: dict[str, Any]) -> Outcome:
    top = {str(key).lower(): value for key, value in params.items()}
    halt = php_bool(top.get("halt", False))
    cmd = top.get("cmd")
    commands: list[tuple[Any, Any]]
    if isinstance(cmd, list):
        commands = list(enumerate(cmd))
    elif isinstance(cmd, dict):
        commands = list(cmd.items())
    else:
        commands = []
    containers: dict[str, dict[Any, Any]] = {name: {} for name in _CONTAINERS}
    for index, (key, command) in enumerate(commands):
        method, sub_params = _parse_command(command)
        sub_params = substitute(sub_params, containers)
        started = time.time()
        try:
            if index >= BATCH_MAX_LENGTH:
                raise RestError(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
            if method in _FORBIDDEN:
                raise RestError(405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage")
            needed = required_scopes(method)
            if needed and not needed & caller.scopes:
                raise RestError(403, "insufficient_scope", "")
            if portal.operating.blocked(caller.credential, method):
                raise operation_time_limit()
            outcome = run(portal, method, sub_params, caller)
        except RestError as err:
            containers["error"][key] = err.body()
            portal.log(method, sub_params, caller.user_id, 400, err.code, via_batch=True)
            if halt and index < BATCH_MAX_LENGTH:
                break
            continue
        finished = time.time()
        containers["result"][key] = outcome.result
        if outcome.total is not None:
            containers["total"][key] = outcome.total
        if outcome.next is not None:
            containers["next"][key] = outcome.next
        containers["time"][key] = portal.time_block(started, finished, finished - started, caller.credential, method)
        portal.log(method, sub_params, caller.user_id, 200, None, via_batch=True)
    return Outcome({answer: php_array(containers[name]) for name, answer in _CONTAINERS.items()})


def substitute(value: Any, containers: dict[str, dict[Any, Any]]) -> Any:
    """Replace ``$result[...]``-style references in a parsed command's values (see the module docstring)."""
    if isinstance(value, dict):
        return {key: substitute(child, containers) for key, child in value.items()}
    if isinstance(value, list):
        return [substitute(child, containers) for child in value]
    if not isinstance(value, str) or "$" not in value:
        return value
    text: Any = value
    for match in _REFERENCE.finditer(value):
        steps = _STEP.findall(match.group(2))
        if not steps:
            continue
        resolved = _walk(containers.get(match.group(1)), steps)
        if match.group(0) == text:
            text = resolved
        elif isinstance(text, str):
            text = text.replace(match.group(0), php_string(resolved))
    return text


def _walk(node: Any, steps: list[str]) -> Any:
    for key in steps:
        child = _index(node, key)
        if child is None:
            break
        node = child
    return node


def _index(node: Any, key: str) -> Any:
    if isinstance(node, dict):
        if key in node:
            return node[key]
        if key.isdigit() and int(key) in node:
            return node[int(key)]
        return None
    if isinstance(node, list) and key.isdigit() and int(key) < len(node):
        return node[int(key)]
    return None


def _parse_command(command: Any) -> tuple[str, dict[str, Any]]:
    text = command if isinstance(command, str) else "" if isinstance(command, (list, dict)) else str(command)
    path, _, query = text.partition("?")
    return method_name(path.lstrip("/")), parse_php_query(query)
