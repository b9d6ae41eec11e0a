"""An in-memory Bitrix24 portal behind an ASGI app, faithful to the REST behaviour the client relies on.

The emulator follows the behavioural spec in ``/work/shared/reference/bitrix24-rest.md``: the response
envelope, the webhook/OAuth routes, the order of checks for ``crm.item.*``, the leaky-bucket rate limit,
``batch`` with its PHP-array quirks, the operating-time limit, OAuth tokens with their refresh endpoint, and one-shot
injected faults (including dropped connections) for testing the client's error handling.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote_plus

import anyio
import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

__all__ = [
    "SYSTEM_TYPES",
    "Call",
    "EntityType",
    "Fault",
    "Portal",
    "Webhook",
    "create_app",
    "parse_php_query",
]

PAGE_SIZE = 50
BATCH_MAX_LENGTH = 50
# Calls cheaper than this are not recorded by the operating-time limiter ($minimalFixTime in loadlimiter.php).
_MINIMAL_FIX_TIME = 0.1
_UNLIMITED_METHODS = frozenset({"batch"})
_SECRET_PARAMS = frozenset({"client_secret", "refresh_token", "code"})
# How many more bytes a dropped answer promises than it sends.
_DROP_SHORTFALL = 64
_DEFAULT_TZ = timezone(timedelta(hours=3))
_TYPE_EPOCH = "2026-01-12T09:00:00+03:00"

# entityTypeId -> title of the types that have a factory without a crm.type row of their own.
SYSTEM_TYPES: dict[int, str] = {1: "Lead", 2: "Deal", 3: "Contact", 4: "Company", 7: "Quote", 31: "Invoice"}

_BASE_HEADERS = {
    "content-type": "application/json; charset=utf-8",
    "access-control-allow-origin": "*",
    "access-control-allow-headers": "origin, content-type, accept",
    "x-content-type-options": "nosniff",
}

# Texts localized by the portal language; everything else is English on every portal.
_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "item_not_found": "Item was not found.",
        "type_not_found": "Smart Process Automation was not found",
        "access_denied": "Access denied",
        "read_denied": "You don't have permission to view this item.",
    },
    "ru": {
        "item_not_found": "Элемент не найден",
        "type_not_found": "Смарт-процесс не найден",
        "access_denied": "Доступ запрещен",
    },
}

_BATCH_FORBIDDEN = frozenset({"batch", "download", "upload"})
_BATCH_CONTAINERS = ("result", "result_error", "result_total", "result_next", "result_time")
_PLACEHOLDER = re.compile(r"\$(result_error|result_total|result_next|result_time|result)\[([^\]]*)\]((?:\[[^\]]*\])*)")
_PHP_NUMERIC = re.compile(r"^[ \t\n\r\v\f]*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?[ \t\n\r\v\f]*$")
_FILTER_OPS = ("!@", "!=", ">=", "<=", "=", "!", "@", ">", "<", "%")


@dataclass
class Webhook:
    """One incoming webhook of the portal (the credential is the pair user id + code)."""

    user_id: int
    code: str
    scopes: frozenset[str] = frozenset({"crm"})
    intranet: bool = True
    can_read: bool = True
    can_delete: bool = True
    admin: bool = False
    name: str = ""
    last_name: str = ""


@dataclass
class Fault:
    """A queued, one-shot misbehaviour for the next call of a method."""

    status: int = 500
    json: Any = None
    body: bytes | None = None
    content_type: str = "application/json; charset=utf-8"
    delay: float = 0.0
    perform: bool = False
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers, e.g. Location for a 302
    drop: bool = False  # cut the connection mid-answer: the client gets no complete response


@dataclass
class _Queued:
    fault: Fault
    when: Callable[[dict[str, Any]], bool] | None


@dataclass
class Call:
    """One entry of the request log."""

    method: str
    params: dict[str, Any]
    user_id: int | None
    status: int
    error: str | None
    via_batch: bool = False
    dropped: bool = False


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


class _RestError(Exception):
    """An error answer: ``{"error": code, "error_description": description}`` with an HTTP status."""

    def __init__(self, status: int, code: str | int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "error_description": self.description}


@dataclass
class _Grant:
    """What an OAuth token stands for."""

    client_id: str
    user_id: int
    scopes: frozenset[str]
    expires_at: float = math.inf


@dataclass(frozen=True)
class _Caller:
    """Who is calling: the rights (a webhook's, or those an OAuth grant acts with) and the limiter's credential."""

    webhook: Webhook
    credential: str


@dataclass
class _Outcome:
    result: Any
    total: int | None = None
    next: int | None = None


_Handler = Callable[[_Caller, dict[str, Any]], _Outcome]


class Portal:
    """In-memory state of one emulated portal."""

    def __init__(
        self,
        *,
        host: str = "sandbox.bitrix24.test",
        rate_limit: tuple[int, float] | None = (50, 2.0),
        require_https: bool = True,
        language: str = "en",
        tz: timezone = _DEFAULT_TZ,
        operating_limit: float | None = None,
        operating_window: float = 600.0,
        access_ttl: float = 3600.0,
    ) -> None:
        self.host = host
        self.rate_limit = rate_limit
        self.require_https = require_https
        self.language = language
        self.tz = tz
        self.operating_limit = operating_limit
        self.operating_window = operating_window
        self.method_cost: dict[str, float] = {}
        self.access_ttl = access_ttl
        self.status_overrides: dict[str, int] = {}
        # (entityTypeId, id) -> (code, description): the delete operation itself fails for that item, as when
        # workflows still run on it (spec §1.4, last row).
        self.undeletable: dict[tuple[int, int], tuple[str, str]] = {}
        self.apps: dict[str, str] = {}
        self.token_requests = 0
        self.webhooks: dict[tuple[int, str], Webhook] = {}
        self.types: dict[int, EntityType] = {}
        self.items: dict[int, dict[int, dict[str, Any]]] = {}
        self.recycle_bin: list[dict[str, Any]] = []
        self.calls: list[Call] = []
        self._last_id: dict[int, int] = {}
        self._last_type_row = 0
        self._faults: dict[str, deque[_Queued]] = {}
        self._bucket_level = 0.0
        self._bucket_at = time.monotonic()
        self._charges: dict[tuple[str, str], deque[tuple[float, float]]] = {}
        self._access_tokens: dict[str, _Grant] = {}
        self._refresh_tokens: dict[str, _Grant] = {}
        for entity_type_id, title in SYSTEM_TYPES.items():
            self._register_type(EntityType(entity_type_id, title, system=True))
        self._handlers: dict[str, _Handler] = {
            "crm.item.get": self._crm_item_get,
            "crm.item.delete": self._crm_item_delete,
            "crm.item.list": self._crm_item_list,
            "crm.type.list": self._crm_type_list,
            "scope": self._scope,
            "profile": self._profile,
            "batch": self._batch,
        }

    # ------------------------------------------------------------------ state helpers

    def add_webhook(self, webhook: Webhook) -> None:
        """Register an incoming webhook."""
        self.webhooks[(webhook.user_id, webhook.code)] = webhook

    def add_app(self, client_id: str, client_secret: str) -> None:
        """Register an OAuth application."""
        self.apps[client_id] = client_secret

    def issue_tokens(
        self, client_id: str, user_id: int, scopes: frozenset[str] = frozenset({"crm"})
    ) -> tuple[str, str]:
        """Grant ``client_id`` access as ``user_id``: a fresh (access_token, refresh_token) pair."""
        if client_id not in self.apps:
            raise ValueError(f"unknown OAuth application {client_id}")
        access, refresh, _ = self._issue(_Grant(client_id, user_id, frozenset(scopes)))
        return access, refresh

    def expire_access_tokens(self) -> None:
        """Make every access token issued so far expired (refresh tokens keep working)."""
        for grant in self._access_tokens.values():
            grant.expires_at = min(grant.expires_at, time.time() - 1)

    def reset_operating(self) -> None:
        """Forget every charge of the operating-time limiter."""
        self._charges.clear()

    def add_type(self, entity_type_id: int, title: str, *, recycle_bin: bool = True) -> EntityType:
        """Register a smart process with its own crm.type row."""
        if entity_type_id in self.types:
            raise ValueError(f"entity type {entity_type_id} already exists")
        self._last_type_row += 1
        return self._register_type(EntityType(entity_type_id, title, recycle_bin=recycle_bin, id=self._last_type_row))

    def add_item(self, entity_type_id: int, fields: dict[str, Any]) -> dict[str, Any]:
        """Store an item (assigning id and timestamps when missing) and return the stored dict."""
        if entity_type_id not in self.types:
            raise ValueError(f"unknown entity type {entity_type_id}")
        fields = copy.deepcopy(fields)
        item_id = int(fields.pop("id", 0) or 0)
        if item_id <= 0:
            item_id = self._last_id[entity_type_id] + 1
        self._last_id[entity_type_id] = max(self._last_id[entity_type_id], item_id)
        now = self._iso(time.time())
        item: dict[str, Any] = {"id": item_id}
        item.update(fields)
        item.setdefault("createdTime", now)
        item.setdefault("updatedTime", item["createdTime"])
        item["entityTypeId"] = entity_type_id
        self.items[entity_type_id][item_id] = item
        return item

    def touch(self, entity_type_id: int, item_id: int, **changes: Any) -> None:
        """Apply changes to an item and move its updatedTime strictly forward (by at least one second)."""
        item = self.items[entity_type_id][item_id]
        item.update(changes)
        now = datetime.now(self.tz).replace(microsecond=0)
        previous = item.get("updatedTime")
        if isinstance(previous, str):
            with contextlib.suppress(ValueError):
                now = max(now, datetime.fromisoformat(previous) + timedelta(seconds=1))
        item["updatedTime"] = now.astimezone(self.tz).isoformat(timespec="seconds")

    def inject(self, method: str, fault: Fault, *, when: Callable[[dict[str, Any]], bool] | None = None) -> None:
        """Queue a one-shot fault for the next top-level call of ``method`` (FIFO per method).

        With ``when``, the fault waits for the first call whose parameters it accepts (e.g. a ``batch`` of
        deletes rather than of reads); calls it does not accept pass through.
        """
        self._faults.setdefault(_method_name(method), deque()).append(_Queued(fault, when))

    def calls_to(self, method: str) -> list[Call]:
        """Entries of the request log for one method (batch sub-commands included)."""
        name = _method_name(method)
        return [call for call in self.calls if call.method == name]

    def webhook_url(self, webhook: Webhook, scheme: str = "https", port: int | None = None) -> str:
        """The base URL of a webhook, ending in a slash."""
        netloc = self.host if port is None else f"{self.host}:{port}"
        return f"{scheme}://{netloc}/rest/{webhook.user_id}/{webhook.code}/"

    def _register_type(self, entity_type: EntityType) -> EntityType:
        self.types[entity_type.entity_type_id] = entity_type
        self.items.setdefault(entity_type.entity_type_id, {})
        self._last_id.setdefault(entity_type.entity_type_id, 0)
        return entity_type

    def _text(self, key: str) -> str:
        return _TEXTS.get(self.language, {}).get(key) or _TEXTS["en"][key]

    def _iso(self, timestamp: float) -> str:
        return datetime.fromtimestamp(timestamp, self.tz).isoformat(timespec="seconds")

    def _time_block(
        self, start: float, finish: float, processing: float, credential: str | None = None, method: str = ""
    ) -> dict[str, Any]:
        operating, expires_in = self._operating(credential, method) if credential is not None else (0.0, None)
        reset_at = start + self.operating_window if expires_in is None else time.time() + expires_in
        return {
            "start": start,
            "finish": finish,
            "duration": finish - start,
            "processing": processing,
            "date_start": self._iso(start),
            "date_finish": self._iso(finish),
            "operating_reset_at": int(reset_at),
            "operating": operating,
        }

    def _cost(self, method: str) -> float:
        return next((cost for name, cost in self.method_cost.items() if _method_name(name) == method), 0.0)

    def _operating(self, credential: str, method: str) -> tuple[float, float | None]:
        """Seconds charged to (credential, method) within the window, and in how many seconds the oldest expires."""
        charges = self._charges.get((credential, method))
        if not charges:
            return 0.0, None
        now = time.monotonic()
        while charges and charges[0][0] + self.operating_window <= now:
            charges.popleft()
        if not charges:
            return 0.0, None
        return sum(cost for _, cost in charges), charges[0][0] + self.operating_window - now

    def _operating_blocked(self, caller: _Caller, method: str) -> bool:
        if self.operating_limit is None or method in _UNLIMITED_METHODS:
            return False
        return self._operating(caller.credential, method)[0] > self.operating_limit

    def _charge(self, caller: _Caller, method: str) -> None:
        cost = self._cost(method)
        if method in _UNLIMITED_METHODS or cost < _MINIMAL_FIX_TIME:
            return
        self._charges.setdefault((caller.credential, method), deque()).append((time.monotonic(), cost))

    def _issue(self, grant: _Grant) -> tuple[str, str, _Grant]:
        access, refresh = secrets.token_hex(16), secrets.token_hex(16)
        live = dataclasses.replace(grant, expires_at=time.time() + self.access_ttl)
        self._access_tokens[access] = live
        self._refresh_tokens[refresh] = dataclasses.replace(grant, expires_at=math.inf)
        return access, refresh, live

    def _oauth_caller(self, grant: _Grant) -> _Caller:
        """An OAuth grant acts with the rights of its user's webhook (full rights when the user has none)."""
        rights = next((hook for hook in self.webhooks.values() if hook.user_id == grant.user_id), None)
        base = rights if rights is not None else Webhook(grant.user_id, "")
        webhook = dataclasses.replace(base, code="", scopes=grant.scopes)
        return _Caller(webhook, f"oauth:{grant.client_id}")

    def _refresh(self, params: dict[str, Any], origin: str, netloc: str) -> tuple[dict[str, Any], int]:
        """The token endpoint's ``grant_type=refresh_token``: the response body and the grant's user id."""
        grant_type = _text_param(params, "grant_type")
        if grant_type is None:
            raise _RestError(400, "invalid_request", 'No "grant_type" parameter found')
        if grant_type != "refresh_token":
            raise _RestError(400, "invalid_request", f'Grant type "{grant_type}" is not supported')
        values: dict[str, str] = {}
        for name in ("client_id", "client_secret", "refresh_token"):
            value = _text_param(params, name)
            if value is None:
                raise _RestError(400, "invalid_request", f'No "{name}" parameter found')
            values[name] = value
        secret = self.apps.get(values["client_id"])
        if secret is None or not secrets.compare_digest(secret.encode(), values["client_secret"].encode()):
            raise _RestError(401, "invalid_client", "Invalid client credentials")
        grant = self._refresh_tokens.get(values["refresh_token"])
        if grant is None or grant.client_id != values["client_id"]:
            raise _RestError(400, "invalid_grant", "Invalid refresh token")
        del self._refresh_tokens[values["refresh_token"]]
        access, refresh, live = self._issue(grant)
        body = {
            "access_token": access,
            "client_endpoint": f"{origin}/rest/",
            "domain": netloc,
            "expires": int(live.expires_at),
            "expires_in": math.ceil(self.access_ttl),
            "member_id": hashlib.sha256(self.host.encode()).hexdigest()[:32],
            "refresh_token": refresh,
            "scope": ",".join(sorted(grant.scopes)),
            "server_endpoint": f"{origin}/rest/",
            "status": "L",
            "user_id": grant.user_id,
        }
        return body, grant.user_id

    def _status(self, err: _RestError) -> int:
        return self.status_overrides.get(str(err.code), err.status)

    def _admit(self) -> bool:
        """Leaky bucket: True (and +1) when the request fits, False (bucket untouched) otherwise."""
        if self.rate_limit is None:
            return True
        capacity, drain_per_second = self.rate_limit
        now = time.monotonic()
        self._bucket_level = max(0.0, self._bucket_level - (now - self._bucket_at) * drain_per_second)
        self._bucket_at = now
        if self._bucket_level + 1 > capacity:
            return False
        self._bucket_level += 1
        return True

    def _pop_fault(self, method: str, params: dict[str, Any]) -> Fault | None:
        queue = self._faults.get(method, deque())
        for queued in list(queue):
            if queued.when is None or queued.when(params):
                queue.remove(queued)
                return queued.fault
        return None

    def _log(
        self,
        method: str,
        params: dict[str, Any],
        user_id: int | None,
        status: int,
        error: Any,
        *,
        via_batch: bool = False,
        dropped: bool = False,
    ) -> None:
        self.calls.append(
            Call(
                method,
                params,
                user_id,
                status,
                None if error is None else str(error),
                via_batch=via_batch,
                dropped=dropped,
            )
        )

    # ------------------------------------------------------------------ method dispatch

    def _run(self, method: str, params: dict[str, Any], caller: _Caller) -> _Outcome:
        handler = self._handlers.get(method)
        if handler is None:
            raise _RestError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        if method.startswith("crm.") and not caller.webhook.intranet:
            raise _RestError(403, "allowed_only_intranet_user", "This action is available only to Intranet users")
        outcome = handler(caller, params)
        # Like loadlimiter.php, only a call that returns is charged: a thrown error skips registerEnding.
        self._charge(caller, method)
        return outcome

    def _factory(self, entity_type_id: int) -> EntityType:
        entity_type = self.types.get(entity_type_id)
        if entity_type is None:
            raise _RestError(400, "NOT_FOUND", self._text("type_not_found"))
        return entity_type

    def _item(self, entity_type_id: int, item_id: int) -> dict[str, Any]:
        item = self.items[entity_type_id].get(item_id)
        if item is None:
            raise _RestError(400, "NOT_FOUND", self._text("item_not_found"))
        return item

    # ------------------------------------------------------------------ methods

    def _crm_item_get(self, caller: _Caller, params: dict[str, Any]) -> _Outcome:
        webhook = caller.webhook
        entity_type_id = _bind_int(params, "entityTypeId")
        item_id = _bind_int(params, "id")
        self._factory(entity_type_id)
        item = self._item(entity_type_id, item_id)
        if not webhook.can_read:
            raise _RestError(400, "ACCESS_DENIED", self._text("read_denied"))
        return _Outcome({"item": copy.deepcopy(item)})

    def _crm_item_delete(self, caller: _Caller, params: dict[str, Any]) -> _Outcome:
        webhook = caller.webhook
        entity_type_id = _bind_int(params, "entityTypeId")
        item_id = _bind_int(params, "id")
        entity_type = self._factory(entity_type_id)
        self._item(entity_type_id, item_id)
        if not webhook.can_delete:
            raise _RestError(400, "ACCESS_DENIED", self._text("access_denied"))
        blocked = self.undeletable.get((entity_type_id, item_id))
        if blocked is not None:
            raise _RestError(400, *blocked)
        item = self.items[entity_type_id].pop(item_id)
        if entity_type.recycle_bin:
            self.recycle_bin.append({**item, "entityTypeId": entity_type_id})
        return _Outcome([])

    def _crm_item_list(self, caller: _Caller, params: dict[str, Any]) -> _Outcome:
        webhook = caller.webhook
        entity_type_id = _bind_int(params, "entityTypeId")
        self._factory(entity_type_id)
        rows = list(self.items[entity_type_id].values()) if webhook.can_read else []
        rows = _filter_rows(rows, params.get("filter"))
        rows = _order_rows(rows, params.get("order"))
        select = _select_names(params.get("select"))
        return _paged(params, [_project(row, select) for row in rows], "items")

    def _crm_type_list(self, caller: _Caller, params: dict[str, Any]) -> _Outcome:
        rows = [t.to_rest() for t in self.types.values() if not t.system]
        rows = _filter_rows(rows, params.get("filter"))
        rows = _order_rows(rows, params.get("order"))
        return _paged(params, rows, "types")

    def _scope(self, caller: _Caller, params: dict[str, Any]) -> _Outcome:
        return _Outcome(sorted(caller.webhook.scopes))

    def _profile(self, caller: _Caller, params: dict[str, Any]) -> _Outcome:
        webhook = caller.webhook
        return _Outcome(
            {"ID": str(webhook.user_id), "ADMIN": webhook.admin, "NAME": webhook.name, "LAST_NAME": webhook.last_name}
        )

    def _batch(self, caller: _Caller, params: dict[str, Any]) -> _Outcome:
        webhook = caller.webhook
        top = {str(key).lower(): value for key, value in params.items()}
        halt = _php_bool(top.get("halt", False))
        cmd = top.get("cmd")
        commands: list[tuple[Any, Any]]
        if isinstance(cmd, list):
            commands = list(enumerate(cmd))
        elif isinstance(cmd, dict):
            commands = list(cmd.items())
        else:
            commands = []
        containers: dict[str, dict[Any, Any]] = {name: {} for name in _BATCH_CONTAINERS}
        for index, (key, command) in enumerate(commands):
            method, sub_params = _parse_command(command)
            sub_params = _substitute(sub_params, containers)
            started = time.time()
            try:
                if index >= BATCH_MAX_LENGTH:
                    raise _RestError(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
                if method in _BATCH_FORBIDDEN:
                    raise _RestError(405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage")
                scope = _required_scope(method)
                if scope is not None and scope not in webhook.scopes:
                    raise _RestError(401, "insufficient_scope", "")
                if self._operating_blocked(caller, method):
                    raise _operation_time_limit()
                outcome = self._run(method, sub_params, caller)
            except _RestError as err:
                containers["result_error"][key] = err.body()
                self._log(method, sub_params, webhook.user_id, 400, err.code, via_batch=True)
                if halt and index < BATCH_MAX_LENGTH:
                    break
                continue
            finished = time.time()
            containers["result"][key] = outcome.result
            if outcome.total is not None:
                containers["result_total"][key] = outcome.total
            if outcome.next is not None:
                containers["result_next"][key] = outcome.next
            containers["result_time"][key] = self._time_block(
                started, finished, finished - started, caller.credential, method
            )
            self._log(method, sub_params, webhook.user_id, 200, None, via_batch=True)
        return _Outcome({name: _php_array(containers[name]) for name in _BATCH_CONTAINERS})


# ---------------------------------------------------------------------- ASGI app


def create_app(portal: Portal) -> Starlette:
    """The ASGI app serving ``portal`` under ``/rest/...`` and its OAuth token endpoint under ``/oauth/token/``."""

    async def rest(request: Request) -> Response:
        return await _serve(portal, request)

    async def token(request: Request) -> Response:
        return await _serve_token(portal, request)

    return Starlette(
        routes=[
            Route("/rest/{path:path}", rest, methods=["GET", "POST"]),
            Route("/oauth/token/", token, methods=["GET", "POST"]),
            Route("/oauth/token", token, methods=["GET", "POST"]),
        ]
    )


async def _serve(portal: Portal, request: Request) -> Response:
    started = time.time()
    params = await _read_params(request)
    segments = request.path_params["path"].split("/")
    method = _method_name(segments[-1])

    def fail(err: _RestError, user_id: int | None) -> Response:
        status = portal._status(err)
        portal._log(method, params, user_id, status, err.code)
        return _json_response(status, err.body())

    if len(segments) == 1:
        token = _token_param(params.pop("auth", None)) or _token_param(params.pop("access_token", None))
        token = token or _bearer(request)
        if not token:
            return fail(_RestError(401, "NO_AUTH_FOUND", "Wrong authorization data"), None)
        grant = portal._access_tokens.get(token)
        if grant is None:
            return fail(_RestError(401, "invalid_token", "Unable to get application by token"), None)
        if grant.expires_at <= time.time():
            return fail(_RestError(401, "expired_token", "The access token provided has expired"), None)
        caller = portal._oauth_caller(grant)
        holder = "access token"
    elif len(segments) != 3 or not (segments[0].isascii() and segments[0].isdigit()):
        return fail(_RestError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!"), None)
    elif portal.require_https and request.url.scheme != "https":
        return fail(_RestError(401, "INVALID_REQUEST", "Https required."), None)
    else:
        webhook = portal.webhooks.get((int(segments[0]), segments[1]))
        if webhook is None:
            return fail(_RestError(401, "INVALID_CREDENTIALS", "Invalid request credentials"), None)
        caller = _Caller(webhook, f"webhook:{webhook.user_id}:{webhook.code}")
        holder = "webhook token"
    user_id = caller.webhook.user_id
    scope = _required_scope(method)
    if scope is not None and scope not in caller.webhook.scopes:
        description = f"The request requires higher privileges than provided by the {holder}"
        return fail(_RestError(401, "insufficient_scope", description), user_id)
    if not portal._admit():
        return fail(_RestError(503, "QUERY_LIMIT_EXCEEDED", "Too many requests"), user_id)
    if portal._operating_blocked(caller, method):
        return fail(_operation_time_limit(), user_id)

    fault = portal._pop_fault(method, params)
    if fault is not None and not fault.perform:
        return await _answer_fault(portal, fault, method, params, user_id)

    processing_start = time.time()
    try:
        outcome = portal._run(method, params, caller)
    except _RestError as err:
        if fault is not None:
            return await _answer_fault(portal, fault, method, params, user_id)
        return fail(err, user_id)
    if fault is not None:
        return await _answer_fault(portal, fault, method, params, user_id)

    finished = time.time()
    body: dict[str, Any] = {"result": outcome.result}
    if outcome.total is not None:
        body["total"] = outcome.total
    if outcome.next is not None:
        body["next"] = outcome.next
    body["time"] = portal._time_block(started, finished, finished - processing_start, caller.credential, method)
    portal._log(method, params, user_id, 200, None)
    return _json_response(200, body)


async def _serve_token(portal: Portal, request: Request) -> Response:
    """The OAuth server's ``/oauth/token/`` (only ``grant_type=refresh_token``), served by the same app."""
    method = "oauth.token"
    portal.token_requests += 1
    params = await _read_params(request)
    logged = {key: "***" if key in _SECRET_PARAMS else value for key, value in params.items()}
    origin = f"{request.url.scheme}://{request.url.netloc}"
    fault = portal._pop_fault(method, params)
    if fault is not None and not fault.perform:
        return await _answer_fault(portal, fault, method, logged, None)
    try:
        body, user_id = portal._refresh(params, origin, request.url.netloc)
    except _RestError as err:
        if fault is not None:
            return await _answer_fault(portal, fault, method, logged, None)
        status = portal._status(err)
        portal._log(method, logged, None, status, err.code)
        return _json_response(status, err.body())
    if fault is not None:
        return await _answer_fault(portal, fault, method, logged, user_id)
    portal._log(method, logged, user_id, 200, None)
    return _json_response(200, body)


async def _answer_fault(
    portal: Portal, fault: Fault, method: str, params: dict[str, Any], user_id: int | None
) -> Response:
    error = fault.json.get("error") if isinstance(fault.json, dict) else None
    portal._log(method, params, user_id, fault.status, error, dropped=fault.drop)
    if fault.delay > 0:
        await anyio.sleep(fault.delay)
    content = json.dumps(fault.json, separators=(",", ":")).encode() if fault.json is not None else (fault.body or b"")
    headers = {"content-type": fault.content_type, **fault.headers}
    if fault.drop:
        return _DroppedResponse(content, status_code=fault.status, headers=headers)
    return Response(content, status_code=fault.status, headers=headers)


class _DroppedResponse(Response):
    """An answer cut off mid-body: it promises more bytes than it sends, so the server has to close the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = len(self.body) + _DROP_SHORTFALL
        headers = [(name, value) for name, value in self.raw_headers if name != b"content-length"]
        headers.append((b"content-length", str(declared).encode()))
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        # A real server refuses to finish a short body (its send raises) and closes the connection mid-response.
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": False})
        # An in-process transport accepts it, so raise what a client would see over a socket.
        raise httpx2.RemoteProtocolError("peer closed connection without sending complete message body")


def _operation_time_limit() -> _RestError:
    return _RestError(429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.")


def _token_param(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _text_param(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return str(value) or None


def _json_response(status: int, body: Any) -> Response:
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(content, status_code=status, headers=_BASE_HEADERS)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


async def _read_params(request: Request) -> dict[str, Any]:
    params = parse_php_query(request.url.query)
    if request.method != "POST":
        return params
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body: dict[str, Any]
    if content_type == "application/json":
        try:
            decoded = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            decoded = {}
        body = decoded if isinstance(decoded, dict) else {}
    elif content_type == "multipart/form-data":
        try:
            form = await request.form()
        except Exception:  # the real portal ignores bodies it cannot parse
            return params
        root: dict[str, Any] = {}
        for key, value in form.multi_items():
            _php_assign(root, _php_keys(key), value if isinstance(value, str) else (value.filename or ""))
        body = {key: _listify(value) for key, value in root.items()}
    else:
        body = parse_php_query((await request.body()).decode("utf-8", errors="replace"))
    params.update(body)
    return params


# ---------------------------------------------------------------------- PHP semantics


def parse_php_query(query: str) -> dict[str, Any]:
    """``parse_str``: a urlencoded query with PHP bracket syntax (``a[b]=x``, ``a[]=x``) into nested values.

    PHP arrays with keys 0..n-1 become lists, other arrays dicts with string keys.
    """
    root: dict[str, Any] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition("=")
        keys = _php_keys(unquote_plus(raw_name))
        if keys[0]:
            _php_assign(root, keys, unquote_plus(raw_value))
    return {key: _listify(value) for key, value in root.items()}


def _php_keys(name: str) -> list[str]:
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


def _php_assign(root: dict[str, Any], keys: list[str], value: Any) -> None:
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


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    converted = {key: _listify(child) for key, child in value.items()}
    if converted and list(converted) == [str(i) for i in range(len(converted))]:
        return list(converted.values())
    return converted


def _php_array(container: dict[Any, Any]) -> Any:
    """JSON shape of a PHP array: ``[]`` when empty, a list for keys 0..n-1 in order, else an object."""
    if not container:
        return []
    if [str(key) for key in container] == [str(i) for i in range(len(container))]:
        return list(container.values())
    return {str(key): value for key, value in container.items()}


def _php_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value not in ("", "0")
    if isinstance(value, (list, dict)):
        return len(value) > 0
    return bool(value)


def _php_string(value: Any) -> str:
    """How PHP interpolates a value into a string (the Binder's ``{...}``)."""
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    if isinstance(value, (list, dict)):
        return "Array"
    return str(value)


def _php_int(value: Any) -> int | None:
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


def _bind_int(params: dict[str, Any], name: str) -> int:
    if name not in params:
        raise _RestError(400, 100, f"Could not find value for parameter {{{name}}}")
    value = _php_int(params[name])
    if value is None:
        shown = _php_string(params[name])
        raise _RestError(
            400, 100, f"Invalid value {{{shown}}} to match with parameter {{{name}}}. Should be value of type int."
        )
    return value


def _method_name(raw: str) -> str:
    name = raw.strip().lower()
    return name.removesuffix(".json")


def _required_scope(method: str) -> str | None:
    return "crm" if method.startswith("crm.") else None


def _yn(flag: bool) -> str:
    return "Y" if flag else "N"


# ---------------------------------------------------------------------- batch helpers


def _parse_command(command: Any) -> tuple[str, dict[str, Any]]:
    text = command if isinstance(command, str) else "" if isinstance(command, (list, dict)) else str(command)
    path, _, query = text.partition("?")
    return _method_name(path.lstrip("/")), parse_php_query(query)


def _substitute(value: Any, containers: dict[str, dict[Any, Any]]) -> Any:
    if isinstance(value, dict):
        return {key: _substitute(child, containers) for key, child in value.items()}
    if isinstance(value, list):
        return [_substitute(child, containers) for child in value]
    if not isinstance(value, str) or "$" not in value:
        return value
    whole = _PLACEHOLDER.fullmatch(value)
    if whole:
        return _resolve(whole, containers)

    def render(match: re.Match[str]) -> str:
        resolved = _resolve(match, containers)
        return "" if resolved is None else _php_string(resolved)

    return _PLACEHOLDER.sub(render, value)


def _resolve(match: re.Match[str], containers: dict[str, dict[Any, Any]]) -> Any:
    node: Any = containers[match.group(1)]
    path = [match.group(2), *re.findall(r"\[([^\]]*)\]", match.group(3))]
    for key in path:
        if isinstance(node, dict):
            if key in node:
                node = node[key]
            elif key.isdigit() and int(key) in node:
                node = node[int(key)]
            else:
                return None
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return None
    return node


# ---------------------------------------------------------------------- list helpers


def _norm(name: str) -> str:
    # camelCase and UPPER_SNAKE spellings of a field name both address it.
    return name.replace("_", "").lower()


def _field(row: dict[str, Any], name: str) -> Any:
    wanted = _norm(name)
    for key, value in row.items():
        if _norm(key) == wanted:
            return value
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and _PHP_NUMERIC.match(value):
        return float(value)
    return None


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(actual, list):
        return any(_equal(element, expected) for element in actual)
    if actual is None:
        return expected is None or expected == ""
    left, right = _number(actual), _number(expected)
    if left is not None and right is not None:
        return left == right
    return _php_string(actual) == _php_string(expected)


def _compare(actual: Any, expected: Any) -> int | None:
    if actual is None or isinstance(actual, (list, dict)):
        return None
    left, right = _number(actual), _number(expected)
    if left is not None and right is not None:
        return (left > right) - (left < right)
    a, b = _php_string(actual), _php_string(expected)
    return (a > b) - (a < b)


def _one_of(actual: Any, expected: Any) -> bool:
    options = list(expected.values()) if isinstance(expected, dict) else expected
    if not isinstance(options, list):
        options = [options]
    return any(_equal(actual, option) for option in options)


def _matches(row: dict[str, Any], key: str, expected: Any) -> bool:
    op = next((candidate for candidate in _FILTER_OPS if key.startswith(candidate)), "")
    actual = _field(row, key[len(op) :])
    if op in ("", "="):
        return _one_of(actual, expected) if isinstance(expected, (list, dict)) else _equal(actual, expected)
    if op in ("!", "!="):
        return not (_one_of(actual, expected) if isinstance(expected, (list, dict)) else _equal(actual, expected))
    if op == "@":
        return _one_of(actual, expected)
    if op == "!@":
        return not _one_of(actual, expected)
    if op == "%":
        return actual is not None and _php_string(expected).lower() in _php_string(actual).lower()
    result = _compare(actual, expected)
    if result is None:
        return False
    return {">": result > 0, ">=": result >= 0, "<": result < 0, "<=": result <= 0}[op]


def _filter_rows(rows: list[dict[str, Any]], filter_: Any) -> list[dict[str, Any]]:
    if not isinstance(filter_, dict):
        return rows
    conditions = [(str(key), value) for key, value in filter_.items() if str(key).lower() != "logic"]
    return [row for row in rows if all(_matches(row, key, value) for key, value in conditions)]


def _sort_key(value: Any) -> tuple[int, float, str]:
    number = _number(value)
    if value is None:
        return (0, 0.0, "")
    if number is not None:
        return (1, number, "")
    return (2, 0.0, _php_string(value))


def _field_sort_key(name: str) -> Callable[[dict[str, Any]], tuple[int, float, str]]:
    return lambda row: _sort_key(_field(row, name))


def _order_rows(rows: list[dict[str, Any]], order: Any) -> list[dict[str, Any]]:
    rows = sorted(rows, key=lambda row: _sort_key(row.get("id")))
    if not isinstance(order, dict):
        return rows
    # Stable sorts from the least significant key up give a multi-key order.
    for name, direction in reversed(list(order.items())):
        descending = str(direction).strip().upper() == "DESC"
        rows.sort(key=_field_sort_key(str(name)), reverse=descending)
    return rows


def _select_names(select: Any) -> set[str] | None:
    """Normalized selected field names, or None for all (``*``)."""
    if select is None:
        return None
    names = list(select.values()) if isinstance(select, dict) else select if isinstance(select, list) else [select]
    normalized = {_norm(str(name)) for name in names}
    if "*" in normalized:
        return None
    return normalized | {"id"}


def _project(row: dict[str, Any], select: set[str] | None) -> dict[str, Any]:
    if select is None:
        return copy.deepcopy(row)
    # fm (multifields) is only returned by a "*" select.
    return {key: copy.deepcopy(value) for key, value in row.items() if _norm(key) in select and key != "fm"}


def _paged(params: dict[str, Any], rows: list[dict[str, Any]], name: str) -> _Outcome:
    start = _php_int(params.get("start")) or 0
    if start == -1:
        return _Outcome({name: rows[:PAGE_SIZE]})
    start = max(start, 0)
    page = rows[start : start + PAGE_SIZE]
    total = len(rows)
    more = start + len(page) < total
    return _Outcome({name: page}, total=total, next=start + PAGE_SIZE if more else None)
