"""The application a deletion runs in: one portal client, its confirmation tokens, the journal, the catalog, the
guardrails and the confirmation mode, shared by every connection of the process.

Built once and frozen by the composition root (`b24_mcp.app`); a signed-in person's view of it is made per request
(`as_person`), never by changing it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from b24_mcp.deleting.confirmation import ConfirmationTokens
from b24_mcp.deleting.gate import Guardrails
from b24_mcp.journal.record import JournalStore
from b24_mcp.portal.auth import Auth
from b24_mcp.portal.catalog import EntityCatalog
from b24_mcp.portal.client import PortalClient
from b24_mcp.settings import ConfirmMode

if TYPE_CHECKING:
    from mcp.server.auth.provider import AccessToken

    from b24_mcp.deleting.approval import ApprovalDesk


class People(Protocol):
    """The people who sign in to a team server (`b24_mcp.signin`), each acting with their own Bitrix24 rights."""

    def app_for(self, access: AccessToken | None) -> App:
        """The application as the person behind this request's access token uses it."""
        ...


@dataclass(frozen=True)
class App:
    """One portal, one confirmation policy, one journal: shared by every connection of the process."""

    portal: PortalClient
    tokens: ConfirmationTokens
    journal: JournalStore
    catalog: EntityCatalog
    guardrails: Guardrails
    mode: ConfirmMode
    call_deadline: float
    batch_max: int = 5000  # B24_BATCH_MAX: how many items one clean-up by filter covers
    user_name: str | None = None  # the signed-in person the portal client acts as (sign-in), for the journal
    people: People | None = None  # sign-in (B24_PUBLIC_URL): who is signed in; tool calls act as one of them
    approvals: ApprovalDesk | None = None  # sign-in: the page where people approve deletions (B24_CONFIRM=page)
    # What the composition root opened for this application (HTTP pool, database pool, people store), closed by
    # `aclose`; None for a person's view, which owns nothing of its own.
    closing: Callable[[], Awaitable[None]] | None = None

    def as_person(self, access: AccessToken | None) -> App:
        """The application a tool call uses: as the person behind `access` when people sign in, else this one."""
        return self if self.people is None else self.people.app_for(access)

    def acting_as(self, auth: Auth, *, user_name: str | None) -> App:
        """This application acting with another credential of its portal (a signed-in person): their portal
        client (sharing the HTTP pool and the rate limiter), confirmation tokens bound to them, their catalog,
        their name for the journal; the journal, guardrails and mode are shared."""
        portal = self.portal.for_credential(auth)
        return replace(
            self,
            portal=portal,
            tokens=self.tokens.bound_to(portal.identity),
            catalog=EntityCatalog(portal),
            user_name=user_name,
            people=None,
            closing=None,
        )

    async def aclose(self) -> None:
        """Close what this application holds: everything the composition root opened for it, or else its own
        portal client (a person's, which leaves the shared pool open)."""
        if self.closing is not None:
            await self.closing()
        else:
            await self.portal.aclose()
