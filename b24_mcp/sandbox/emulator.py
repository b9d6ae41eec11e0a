"""An in-memory Bitrix24 portal behind an ASGI app, faithful to the REST behaviour the client relies on.

The emulator follows the behavioural spec in ``/work/shared/reference/bitrix24-rest.md``. ``Portal`` is a facade over
``state.PortalState`` (the parts and the method table, all the handlers see), each part in its own module:

* ``crm`` — entity types, items, recycle bin;  ``fields`` — each type's system and user fields;
* ``users`` — users, their permissions, webhooks, the caller;
* ``methods`` — crm.item.get/delete/list, crm.type.list, scope, profile, user.current;  ``batch``;
* ``listing`` — crm.item.list filter/order/select/paging;  ``php`` — PHP query parsing and value binding;
* ``limits`` — leaky bucket and operating-time budget;  ``faults`` — injected misbehaviour;
* ``oauth`` — authorize, token endpoint, grants;  ``log`` — the bounded request log;
* ``envelope`` — errors, answers, the ``time`` block;  ``gateway`` — one request to one answer;
  ``app`` — the ASGI app.

Public names: ``Portal``, ``Fault``, ``Call``, ``CallLog``, ``EntityType``, ``User``, ``Webhook``, ``create_app``,
``parse_php_query``, ``SYSTEM_TYPES``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from b24_mcp.sandbox.app import create_app
from b24_mcp.sandbox.batch import batch
from b24_mcp.sandbox.crm import SYSTEM_TYPES, EntityType
from b24_mcp.sandbox.envelope import Outcome, method_name
from b24_mcp.sandbox.faults import Fault
from b24_mcp.sandbox.log import Call, CallLog
from b24_mcp.sandbox.methods import METHODS, run
from b24_mcp.sandbox.oauth import App
from b24_mcp.sandbox.php import parse_php_query
from b24_mcp.sandbox.state import PortalState
from b24_mcp.sandbox.users import Action, Caller, User, Webhook

__all__ = [
    "SYSTEM_TYPES",
    "Call",
    "CallLog",
    "EntityType",
    "Fault",
    "Portal",
    "User",
    "Webhook",
    "create_app",
    "parse_php_query",
]


class Portal(PortalState):
    """One emulated portal: its CRM data, people, OAuth server, limits, faults and request log.

    ``operating_limit`` seconds of execution time per method and credential per ``operating_window`` seconds
    (480 s per 10 min, as on cloud; ``None`` turns the limit off); ``operating_cost`` the seconds a successful
    call of a method costs (methods not named cost nothing). ``log_limit`` calls are kept in ``calls``
    (``None``: all). ``code_ttl`` is the lifetime of OAuth authorization codes.
    """

    def _attach(self) -> None:
        self.methods.update({**METHODS, "batch": batch})
        # The same objects under the names tests and tools have always used.
        self.items = self.crm.items
        self.types = self.crm.types
        self.recycle_bin = self.crm.recycle_bin
        self.undeletable = self.crm.undeletable
        self.users = self.directory.users
        self.webhooks = self.directory.webhooks
        self.method_cost = self.operating.cost

    # ------------------------------------------------------------------ settings

    @property
    def rate_limit(self) -> tuple[int, float] | None:
        return self.bucket.limit

    @rate_limit.setter
    def rate_limit(self, value: tuple[int, float] | None) -> None:
        self.bucket.limit = value

    @property
    def operating_limit(self) -> float | None:
        return self.operating.limit

    @operating_limit.setter
    def operating_limit(self, value: float | None) -> None:
        self.operating.limit = value

    @property
    def operating_window(self) -> float:
        return self.operating.window

    @operating_window.setter
    def operating_window(self, value: float) -> None:
        self.operating.window = value

    @property
    def access_ttl(self) -> float:
        return self.oauth.access_ttl

    @access_ttl.setter
    def access_ttl(self, value: float) -> None:
        self.oauth.access_ttl = value

    @property
    def token_requests(self) -> int:
        """Requests the OAuth token endpoint has received."""
        return self.oauth.token_requests

    @property
    def apps(self) -> dict[str, str]:
        """client_id -> client_secret of the registered OAuth applications (a copy)."""
        return {client_id: app.secret for client_id, app in self.oauth.apps.items()}

    def set_operating_cost(self, method: str, seconds: float) -> None:
        """Make each successful call of ``method`` (also inside ``batch``) cost ``seconds`` of operating time."""
        self.operating.set_cost(method, seconds)

    def reset_operating(self) -> None:
        """Forget every charge of the operating-time limiter."""
        self.operating.reset()

    # ------------------------------------------------------------------ people and credentials

    def add_user(self, user: User) -> User:
        """Register a person (replacing one with the same id)."""
        return self.directory.add_user(user)

    def deny(self, user_id: int, action: Action, entity_type_id: int, item_id: int | None = None) -> None:
        """Refuse a registered user ``action`` ("read" or "delete") on a type's items, or on one item."""
        self._user(user_id).deny(action, entity_type_id, item_id)

    def allow(self, user_id: int, action: Action, entity_type_id: int, item_id: int | None = None) -> None:
        """Lift a denial made by ``deny`` with the same arguments."""
        self._user(user_id).allow(action, entity_type_id, item_id)

    def add_webhook(self, webhook: Webhook) -> None:
        """Register an incoming webhook (and its user, from the webhook's fields, if not yet registered)."""
        self.directory.add_webhook(webhook)

    def add_app(
        self,
        client_id: str,
        client_secret: str,
        *,
        redirect_uri: str | None = None,
        scopes: frozenset[str] = frozenset({"crm"}),
    ) -> None:
        """Register (or re-register) an OAuth application with the redirect URI and scopes of its settings."""
        self.oauth.apps[client_id] = App(client_id, client_secret, redirect_uri, frozenset(scopes))

    def sign_in_as(self, user_id: int | None) -> None:
        """The person whose browser session ``/oauth/authorize/`` sees (``None``: nobody is signed in)."""
        if user_id is not None:
            self._user(user_id)
        self.oauth.signed_in = user_id

    def issue_tokens(
        self, client_id: str, user_id: int, scopes: frozenset[str] = frozenset({"crm"})
    ) -> tuple[str, str]:
        """Grant ``client_id`` access as ``user_id``: a fresh (access_token, refresh_token) pair."""
        return self.oauth.issue_tokens(client_id, user_id, scopes)

    def expire_access_tokens(self) -> None:
        """Make every access token issued so far expired (refresh tokens keep working)."""
        self.oauth.expire_access_tokens()

    def webhook_url(self, webhook: Webhook, scheme: str = "https", port: int | None = None) -> str:
        """The base URL of a webhook, ending in a slash."""
        netloc = self.host if port is None else f"{self.host}:{port}"
        return f"{scheme}://{netloc}/rest/{webhook.user_id}/{webhook.code}/"

    # ------------------------------------------------------------------ CRM data

    def add_type(self, entity_type_id: int, title: str, *, recycle_bin: bool = True) -> EntityType:
        """Register a smart process with its own crm.type row."""
        return self.crm.add_type(entity_type_id, title, recycle_bin=recycle_bin)

    def add_user_field(self, entity_type_id: int, name: str, user_type: str) -> None:
        """Declare a user field (``ufCrm…`` / ``UF_CRM_…``) of a type: ``string``, ``integer``, ``boolean``, …."""
        self.crm.add_user_field(entity_type_id, name, user_type)

    def add_item(self, entity_type_id: int, fields: dict[str, Any]) -> dict[str, Any]:
        """Store an item (assigning id and timestamps when missing) and return the stored dict."""
        return self.crm.add_item(entity_type_id, fields)

    def touch(self, entity_type_id: int, item_id: int, *, same_second: bool = False, **changes: Any) -> None:
        """Apply changes to an item and move its updatedTime strictly forward (by at least one second); with
        `same_second`, leave it: the change falls in the second it names (dates have whole seconds)."""
        self.crm.touch(entity_type_id, item_id, same_second=same_second, **changes)

    # ------------------------------------------------------------------ faults and the request log

    def inject(self, method: str, fault: Fault, *, when: Callable[[dict[str, Any]], bool] | None = None) -> None:
        """Queue a one-shot fault for the next top-level call of ``method`` (FIFO per method).

        With ``when``, the fault waits for the first call whose parameters it accepts (e.g. a ``batch`` of
        deletes rather than of reads); calls it does not accept pass through.
        """
        self.faults.inject(method, fault, when)

    def calls_to(self, method: str) -> list[Call]:
        """Entries of the request log for one method (batch sub-commands included)."""
        return self.calls.to(method_name(method))

    # ------------------------------------------------------------------ a call as the gateway runs it

    def execute(self, method: str, params: dict[str, Any], caller: Caller) -> Outcome:
        """Run one method call (after the transport checks) as ``caller``."""
        return run(self, method, params, caller)

    def _user(self, user_id: int) -> User:
        user = self.directory.users.get(user_id)
        if user is None:
            raise ValueError(f"unknown user {user_id}")
        return user
