"""The approval page (`B24_CONFIRM=page`): the person approves or declines a deletion in their own browser.

`GET /approve/{id}` shows what a preview would delete, the fixed facts first (action, count, type, ids, portal,
recycle bin or permanent), then the question with the CRM text quoted, all of it escaped: nothing from the CRM is
ever markup. Only the person whose MCP token made the preview can decide, in a browser signed in to the portal as
that person: a browser without a session with this server is sent through the portal's own sign-in (the same
Bitrix24 application, back through `/oauth/callback` with a state of the page's own) and gets a session cookie
(a random id stored as a digest, HttpOnly, SameSite=Lax, Secure on https, one hour). The MCP access token does not
open the page (the page reads no `Authorization` header): an assistant that fetches the link itself gets the
portal's sign-in, never the page. Another person gets 403 and nothing is decided.

`POST /approve/{id}` (Approve or Decline) needs the session, the page's form token (an HMAC of the approval's id
under the session id, so another site cannot forge it) and, when the browser sends one, this server's own Origin.
The pages cannot be framed or cached and leak no address (the sign-in pages' headers).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from b24_mcp.deleting.approval import APPROVAL_PATH, ApprovalState
from b24_mcp.portal.catalog import where_it_goes
from b24_mcp.portal.client import PortalClient
from b24_mcp.secure.sealing import new_token
from b24_mcp.signin.approvals import SESSION_SECONDS, SIGN_IN_SECONDS, PageStore
from b24_mcp.signin.bitrix import SignInFailed, sign_in
from b24_mcp.signin.config import SignInConfig
from b24_mcp.signin.pages import _HEADERS, _page, _param, _read_form
from b24_mcp.signin.records import StoreFull

logger = logging.getLogger(__name__)

PAGE_STATE_PREFIX = "b24page_"  # a portal sign-in begun from the approval page, not by an MCP client
SHOWN_IDS = 50
_ID_LENGTH = 32


def _cookie_name(issuer: str) -> str:
    # `__Host-`: the browser keeps it only when Secure, for this host alone, on every path.
    return "__Host-b24mcp_page" if issuer.startswith("https://") else "b24mcp_page"


def form_token(session: str, approval_id: str) -> str:
    """The page's form token: bound to the browser's session and to this approval."""
    return hmac.new(session.encode(), f"approve:{approval_id}".encode(), hashlib.sha256).hexdigest()


def _facts(facts: Mapping[str, Any]) -> str:
    """The fixed facts, then the question, every value escaped."""
    ids = [int(item_id) for item_id in facts.get("ids", [])]
    count = int(facts.get("count", len(ids)))
    shown = ", ".join(f"#{item_id}" for item_id in ids[:SHOWN_IDS])
    if count > SHOWN_IDS:
        shown += f" and {count - SHOWN_IDS} more"
    recycle_bin = facts.get("recycleBin")
    rows = [
        ("Action", "Delete"),
        ("Portal", str(facts.get("host", ""))),
        ("Type", f"{facts.get('type', '')} (entityTypeId {int(facts.get('entityTypeId', 0))})"),
        ("Count", str(count) + (" (more match the filter; they stay for a later round)" if facts.get("more") else "")),
        ("Ids", shown),
        ("Recycle bin", where_it_goes(recycle_bin if isinstance(recycle_bin, bool) else None, many=count > 1)),
    ]
    table = "".join(f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>" for name, value in rows)
    # The question escapes markdown for MCP clients (`\<`); here HTML escaping does that job.
    question = html.escape(str(facts.get("question", "")).replace("\\", ""))
    return (
        f'<table class="facts">{table}</table>'
        f'<p class="muted">What the server asks (text from the CRM is quoted in «», it is data):</p>'
        f'<p class="q">{question}</p>'
        "<p>Approving allows this deletion once, as it is now: if anything changes on the portal before it is "
        "deleted, nothing is deleted.</p>"
    )


class ApprovalPage:
    """The page's Starlette handlers, and the end of a portal sign-in begun from it."""

    def __init__(
        self,
        config: SignInConfig,
        store: PageStore,
        portal: PortalClient,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._store = store
        self._portal = portal
        self._clock = clock
        self._cookie = _cookie_name(config.issuer)

    def _own(self, approval_id: str) -> str:
        return self._config.issuer + APPROVAL_PATH + approval_id

    async def _session(self, request: Request) -> tuple[str, int] | None:
        session = request.cookies.get(self._cookie)
        if not session or len(session) > 128 or not session.isprintable():
            return None
        user_id = await self._store.find_session(session)
        return None if user_id is None else (session, user_id)

    async def show(self, request: Request) -> Response:
        """`GET /approve/{id}`: the facts and the two buttons, for the person the approval is for."""
        approval_id = _approval_id(request)
        approval = await self._store.find_approval(approval_id) if approval_id else None
        if approval_id is None or approval is None:
            return _gone()
        signed = await self._session(request)
        if signed is None:
            return await self._sign_in(approval_id)
        session, user_id = signed
        if user_id != approval.user_id:
            return _not_yours(user_id)
        if approval.state is not ApprovalState.PENDING:
            return _decided(approval.state)
        body = (
            _facts(approval.facts) + f'<form method="post" action="{html.escape(self._own(approval_id))}">'
            f'<input type="hidden" name="form_token" value="{form_token(session, approval_id)}">'
            '<button type="submit" name="decision" value="approve">Approve</button>'
            '<button type="submit" name="decision" value="decline">Decline</button></form>'
        )
        return _page(200, "Approve this deletion?", body)

    async def decide(self, request: Request) -> Response:
        """`POST /approve/{id}` with `form_token` and `decision` (`approve` or `decline`)."""
        origin = request.headers.get("origin")
        if origin is not None and origin.lower() != self._config.issuer:
            return _page(403, "Not allowed", "<p>This form can only be sent from this server's own page.</p>")
        approval_id = _approval_id(request)
        form = await _read_form(request)
        if form is None:
            return _page(413, "Too large", "<p>This is not an answer to an approval page.</p>")
        signed = await self._session(request)
        if approval_id is None or signed is None:
            return _page(403, "Not allowed", "<p>Open the approval link in your browser first.</p>")
        session, user_id = signed
        given = form.get("form_token", "")
        if not hmac.compare_digest(given.encode(), form_token(session, approval_id).encode()):
            return _page(403, "Not allowed", "<p>This form can only be sent from this server's own page.</p>")
        approval = await self._store.find_approval(approval_id)
        if approval is None:
            return _gone()
        if user_id != approval.user_id:
            return _not_yours(user_id)
        approve = form.get("decision") == "approve"
        if not await self._store.decide_approval(approval_id, user_id, approve):
            current = await self._store.find_approval(approval_id)
            return _decided(current.state) if current is not None else _gone()
        logger.info("User %d %s a deletion on the approval page", user_id, "approved" if approve else "declined")
        return _decided(ApprovalState.APPROVED if approve else ApprovalState.DECLINED)

    async def _sign_in(self, approval_id: str) -> Response:
        """Send the browser through the portal's sign-in, to come back to this page."""
        state = new_token(PAGE_STATE_PREFIX)
        try:
            await self._store.add_page_signin(state, approval_id, self._clock() + SIGN_IN_SECONDS)
        except StoreFull:
            return _page(503, "Try again in a moment", "<p>Too many sign-ins are in flight.</p>")
        return RedirectResponse(self._config.portal_authorize_url(state), status_code=302, headers=_HEADERS)

    async def signed_in(self, request: Request, state: str) -> Response:
        """The portal sent the browser back (`/oauth/callback`) from a sign-in the page began: a session for the
        person the portal says signed in, and back to the page."""
        approval_id = await self._store.take_page_signin(state)
        if approval_id is None:
            return _page(400, "This sign-in has expired", "<p>Open the approval link again.</p>")
        code = _param(dict(request.query_params), "code")
        if code is None:
            return _page(403, "Not signed in", "<p>The portal did not sign you in.</p>")
        try:
            person = await sign_in(self._portal, self._config, code)
        except SignInFailed as failed:
            return _page(403, "Not signed in", f"<p>{html.escape(failed.description)}</p>")
        session = new_token("")
        await self._store.add_session(session, person.user_id, self._clock() + SESSION_SECONDS)
        response = RedirectResponse(self._own(approval_id), status_code=303, headers=_HEADERS)
        response.set_cookie(
            self._cookie,
            session,
            max_age=SESSION_SECONDS,
            path="/",
            secure=self._config.issuer.startswith("https://"),
            httponly=True,
            samesite="lax",  # the portal's redirect back is a cross-site navigation: Strict would drop the cookie
        )
        return response


def _approval_id(request: Request) -> str | None:
    value = request.path_params.get("approval_id")
    if not isinstance(value, str) or len(value) != _ID_LENGTH:
        return None
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    return value if set(value) <= allowed else None


def _gone() -> Response:
    return _page(
        404,
        "No such approval",
        "<p>This approval link is unknown or has expired (with the preview's confirmation). Ask the assistant to "
        "preview the deletion again.</p>",
    )


def _not_yours(user_id: int) -> Response:
    logger.warning("User %d opened an approval page that is not theirs; nothing was approved", user_id)
    return _page(
        403,
        "Not yours to approve",
        "<p>This deletion can only be approved by the person who asked for it, signed in to the portal as "
        "themselves. Nothing was approved.</p>",
    )


def _decided(state: ApprovalState) -> Response:
    if state is ApprovalState.APPROVED:
        text = "Approved. Go back to your assistant: the deletion happens when it calls again."
    else:
        text = "Declined. Nothing will be deleted."
    return _page(200, "Approval " + state.value, f"<p>{html.escape(text)}</p>")
