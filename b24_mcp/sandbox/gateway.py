"""The portal's front door, free of HTTP plumbing: one request in, one ``Answer`` out.

For ``/rest/…`` (spec §1.2 step 1, §2, §3; statuses per §10: ``INVALID_CREDENTIALS`` and ``insufficient_scope`` 403,
``INVALID_REQUEST`` 400): credentials (webhook path or OAuth token), scope, the leaky bucket,
the operating-time limit, injected faults, the method, the envelope, the request log — in that order. The OAuth
endpoints get the same fault injection and logging (secrets masked).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from b24_mcp.sandbox.envelope import Answer, RestError, html_answer, json_answer, method_name, operation_time_limit
from b24_mcp.sandbox.methods import required_scopes, run
from b24_mcp.sandbox.state import PortalState
from b24_mcp.sandbox.users import Caller

if TYPE_CHECKING:
    from b24_mcp.sandbox.faults import Fault

__all__ = ["Incoming", "serve_authorize", "serve_rest", "serve_token"]

_SECRET_PARAMS = frozenset({"client_secret", "refresh_token", "code"})


@dataclass(frozen=True)
class Incoming:
    """A request as the portal sees it: where it came in, the path after ``/rest/``, the merged parameters (and
    those of the query string alone)."""

    scheme: str
    netloc: str
    path: str
    params: dict[str, Any]
    bearer: str | None = None
    query: dict[str, Any] | None = None  # None: the same as ``params``

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.netloc}"


def serve_rest(portal: PortalState, request: Incoming) -> Answer:
    started = time.time()
    params = dict(request.params)
    segments = request.path.split("/")
    method = method_name(segments[-1])

    def fail(err: RestError, user_id: int | None) -> Answer:
        status = portal.status_for(err)
        portal.log(method, params, user_id, status, err.code)
        return json_answer(status, err.body())

    try:
        caller = _authenticate(portal, request, segments, params)
    except RestError as err:
        return fail(err, None)
    user_id = caller.user_id
    needed = required_scopes(method)
    if needed and not needed & caller.scopes:
        description = f"The request requires higher privileges than provided by the {caller.holder}"
        return fail(RestError(403, "insufficient_scope", description), user_id)
    if not portal.bucket.admit():
        return fail(RestError(503, "QUERY_LIMIT_EXCEEDED", "Too many requests"), user_id)
    if portal.operating.blocked(caller.credential, method):
        return fail(operation_time_limit(), user_id)

    fault = portal.faults.pop(method, params)
    if fault is not None and not fault.perform:
        return _fault_answer(portal, fault, method, params, user_id)
    processing_start = time.time()
    try:
        outcome = run(portal, method, params, caller)
    except RestError as err:
        if fault is not None:
            return _fault_answer(portal, fault, method, params, user_id)
        return fail(err, user_id)
    if fault is not None:
        return _fault_answer(portal, fault, method, params, user_id)

    finished = time.time()
    body: dict[str, Any] = {"result": outcome.result}
    if outcome.total is not None:
        body["total"] = outcome.total
    if outcome.next is not None:
        body["next"] = outcome.next
    body["time"] = portal.time_block(started, finished, finished - processing_start, caller.credential, method)
    portal.log(method, params, user_id, 200, None)
    return json_answer(200, body)


def serve_token(portal: PortalState, request: Incoming) -> Answer:
    """The authorization server's ``/oauth/token/``, served by the same app. It reads the query string, the one
    form documented; a POSTed form only when ``portal.oauth.accepts_form`` (as ``oauth.bitrix24.tech`` does)."""
    method = "oauth.token"
    portal.oauth.token_requests += 1
    params = request.params if portal.oauth.accepts_form or request.query is None else request.query
    logged = _masked(params)
    fault = portal.faults.pop(method, params)
    if fault is not None and not fault.perform:
        return _fault_answer(portal, fault, method, logged, None)
    try:
        body, user_id = portal.oauth.exchange(params, request.origin, portal.member_id)
    except RestError as err:
        if fault is not None:
            return _fault_answer(portal, fault, method, logged, None)
        status = portal.status_for(err)
        portal.log(method, logged, None, status, err.code)
        return json_answer(status, err.body())
    if fault is not None:
        return _fault_answer(portal, fault, method, logged, user_id)
    portal.log(method, logged, user_id, 200, None)
    return json_answer(200, body)


def serve_authorize(portal: PortalState, request: Incoming) -> Answer:
    """The portal's ``/oauth/authorize/``: a page or a redirect for the person's browser."""
    method = "oauth.authorize"
    params = request.params
    fault = portal.faults.pop(method, params)
    if fault is not None and not fault.perform:
        return _fault_answer(portal, fault, method, params, None)
    try:
        answer, user_id = portal.oauth.authorize(params, request.netloc, portal.member_id)
    except RestError as err:
        if fault is not None:
            return _fault_answer(portal, fault, method, params, None)
        status = portal.status_for(err)
        portal.log(method, params, None, status, err.code)
        return html_answer(status, str(err.code), err.description)
    if fault is not None:
        return _fault_answer(portal, fault, method, params, user_id)
    portal.log(method, params, user_id, answer.status, None)
    return answer


def _authenticate(portal: PortalState, request: Incoming, segments: list[str], params: dict[str, Any]) -> Caller:
    """The caller behind a webhook path (``uid/code/method``) or an OAuth token (``method`` + token)."""
    if len(segments) == 1:
        token = _token(params.pop("auth", None)) or _token(params.pop("access_token", None)) or request.bearer
        if not token:
            raise RestError(401, "NO_AUTH_FOUND", "Wrong authorization data")
        grant = portal.oauth.grant(token)
        user = portal.directory.user(grant.user_id)
        return Caller(user, grant.scopes, f"oauth:{grant.client_id}", "access token")
    if len(segments) != 3 or not (segments[0].isascii() and segments[0].isdigit()):
        raise RestError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
    if portal.require_https and request.scheme != "https":
        raise RestError(400, "INVALID_REQUEST", "Https required.")
    webhook = portal.directory.webhooks.get((int(segments[0]), segments[1]))
    if webhook is None:
        raise RestError(403, "INVALID_CREDENTIALS", "Invalid request credentials")
    return portal.directory.webhook_caller(webhook)


def _fault_answer(
    portal: PortalState, fault: Fault, method: str, logged: dict[str, Any], user_id: int | None
) -> Answer:
    portal.log(method, logged, user_id, fault.status, fault.error, dropped=fault.drop)
    return fault.answer()


def _masked(params: dict[str, Any]) -> dict[str, Any]:
    return {key: "***" if key in _SECRET_PARAMS else value for key, value in params.items()}


def _token(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
