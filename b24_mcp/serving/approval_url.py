"""URL-mode elicitation: a client that declares it is sent to this server's approval page through MCP itself.

On the 2025-11-25 protocol (a connection with a back channel) the server asks the client mid-call to open the page
(`elicitation/create`, mode `url`); once the client reports back, it waits a while for the person's decision on the
page, and the gate then decides as for every page approval (approved: deletes; declined: cancelled; still
pending: `APPROVAL_PENDING`). A client that declines or dismisses the request gets `cancelled`.

The 2026-07-28 protocol cannot carry it with the SDK's public API: its resolver markers (`Elicit`) ask only form
questions, a tool with `Resolve(...)` parameters may not return its own `InputRequiredResult`, and its HTTP
transport has no back channel (`can_send_request` is false). Such a client gets the link in the result (a preview's
`approvalUrl`, or `APPROVAL_PENDING`), as a client without URL mode does.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from typing import Any

from mcp.server.elicitation import AcceptedUrlElicitation
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError

from b24_mcp.deleting.app import App
from b24_mcp.deleting.approval import ApprovalState, approval_id
from b24_mcp.deleting.gate import Answer, Consent, Route

logger = logging.getLogger(__name__)
_ASKING_ERA = "2026-07-28"


def declares_url_mode(ctx: Context[Any, Any]) -> bool:
    """Whether the client declared URL-mode elicitation and this connection can carry it mid-call."""
    version = ctx.protocol_version
    if version is None or version >= _ASKING_ERA or not ctx.session.can_send_request:
        return False
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    return elicitation is not None and elicitation.url is not None


async def through_url_mode(ctx: Context[Any, Any], app: App, consent: Consent, what: str) -> Consent:
    """Send the person to the approval page through the client, when the route is the page, the approval is still
    pending and the client can be sent there; the consent as the client's answer leaves it."""
    desk, token = app.approvals, consent.token
    if consent.route is not Route.PAGE or desk is None or token is None or not declares_url_mode(ctx):
        return consent
    approval = await desk.store.find_approval(approval_id(token))
    if approval is None or approval.state is not ApprovalState.PENDING or approval.user_id != app.portal.user_id:
        return consent  # nothing to open here: the gate says why, or deletes
    message = (
        f"Approve the deletion of {what} on the b24-mcp server's page, in your browser signed in to the portal. "
        "Nothing is deleted unless you approve it there."
    )
    try:
        answer = await ctx.elicit_url(message, desk.url(token), approval_id(token))
    except MCPError as exc:
        logger.info("The client did not take the approval page (URL-mode elicitation): %s", exc)
        return consent
    if not isinstance(answer, AcceptedUrlElicitation):
        dismissed = Answer.DECLINED if answer.action == "decline" else Answer.CANCELLED
        return replace(consent, answer=dismissed)
    if await desk.decided(token) is not ApprovalState.PENDING:
        with contextlib.suppress(MCPError):
            await ctx.session.send_elicit_complete(approval_id(token), related_request_id=ctx.request_id)
    return consent
