"""The approval page as a route of the gate: whether a call's deletion is approved on the page, and the approval
a preview opens there (`approval` keeps them; `signin.approval_page` shows them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from b24_mcp.deleting.app import App
from b24_mcp.deleting.gate import Reach, Route, route_for


def page_route(app: App, reach: Reach | None) -> bool:
    """Whether a deletion by this call's client is approved on the page (`B24_CONFIRM=page`, or `auto` on a
    sign-in server with a client that cannot be asked through a form)."""
    if app.approvals is None:
        return False
    return route_for(app.mode, reach or Reach.NO_CAPABILITY, page=True) is Route.PAGE


async def offer(app: App, reach: Reach | None, token: str, facts: Mapping[str, Any]) -> str | None:
    """At a preview: open the approval of what it showed and return the page's address, when the page is the
    route; None otherwise (and on a read-only server, which deletes nothing)."""
    if app.approvals is None or app.guardrails.read_only or not page_route(app, reach):
        return None
    user_id = app.portal.user_id
    if user_id is None:
        return None
    claim = app.tokens.check(token, int(facts["entityTypeId"]), str(facts["subject"]))
    return await app.approvals.open(token, user_id, claim.expires_at, facts)
