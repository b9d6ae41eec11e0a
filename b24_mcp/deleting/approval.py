"""Approval on this server's own page (`B24_CONFIRM=page`): what a preview opens, and what the gate asks of it.

A preview's confirmation token is the approval's key: the page's address is derived from the token (one way, so
the address reveals nothing of it), and the approval covers exactly what the token covers (the type, the subject,
the version the preview showed). The person approves or declines in their own browser (`signin.approval_page`);
the gate (`pass_gate`, route `PAGE`) then finds the approval by the token, and spends the token with the deletion.
Approvals live in the people store, so the page and the deletion may be served by different replicas.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from b24_mcp.errors import Refusal

if TYPE_CHECKING:
    pass

APPROVAL_PATH = "/approve/"  # + the approval's id
POLL_SECONDS = 1.0


class ApprovalState(StrEnum):
    """Where an approval stands."""

    PENDING = "pending"
    APPROVED = "approved"
    DECLINED = "declined"


@dataclass(frozen=True)
class Approval:
    """One deletion waiting for (or given) the person's approval: who may approve it, what the page shows."""

    user_id: int
    facts: Mapping[str, Any]  # what the page states (see `page_facts`), JSON
    state: ApprovalState
    expires_at: float  # the confirmation token's expiry


class ApprovalStore(Protocol):
    """Where approvals are kept (the people store: one file, or the database replicas share). Ids are kept as
    digests; every method is atomic."""

    async def open_approval(self, approval_id: str, approval: Approval) -> None:
        """Keep a pending approval (again: the same id keeps its state)."""
        ...

    async def find_approval(self, approval_id: str) -> Approval | None:
        """The unexpired approval under `approval_id`."""
        ...

    async def decide_approval(self, approval_id: str, user_id: int, approve: bool) -> bool:
        """Approve or decline a pending, unexpired approval of `user_id`'s; False when there is none."""
        ...


def approval_id(token: str) -> str:
    """The approval's id for a confirmation token: derived one way, so the page's address does not carry the token."""
    digest = hashlib.sha256(b"b24-mcp approval v1\n" + token.encode()).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode()


class ApprovalPending(Refusal):
    """The person has not approved yet: show them the page, then call again."""

    def __init__(self, url: str) -> None:
        super().__init__(
            "APPROVAL_PENDING",
            f"The person has not approved this deletion yet. Show them this link to approve it in their browser: "
            f"{url} Then call again with the same arguments.",
            retryable=True,
        )
        self.url = url


def page_facts(
    *,
    host: str,
    entity_type_id: int,
    type_name: str,
    ids: list[int],
    recycle_bin: bool | None,
    question: str,
    subject: str,
    more: bool = False,
) -> dict[str, Any]:
    """What the page states: the fixed facts first, then the question (its CRM text quoted, shown as text)."""
    return {
        "subject": subject,
        "host": host,
        "entityTypeId": entity_type_id,
        "type": type_name,
        "ids": ids[:500],
        "count": len(ids),
        "recycleBin": recycle_bin,
        "more": more,
        "question": question,
    }


class ApprovalDesk:
    """Opens approvals at previews and tells the gate where they stand, on the page at `base_url`."""

    def __init__(
        self,
        store: ApprovalStore,
        base_url: str,
        *,
        wait: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.base_url = base_url.rstrip("/")
        self.wait = wait  # how long a URL-mode call waits for the person to decide on the page
        self._clock = clock

    def url(self, token: str) -> str:
        """The page where the person approves the deletion the token covers."""
        return self.base_url + APPROVAL_PATH + approval_id(token)

    async def open(self, token: str, user_id: int, expires_at: float, facts: Mapping[str, Any]) -> str:
        """Keep a pending approval for `user_id` of what the preview showed; its page's address."""
        await self.store.open_approval(
            approval_id(token), Approval(user_id, dict(facts), ApprovalState.PENDING, expires_at)
        )
        return self.url(token)

    async def state(self, token: str) -> ApprovalState | None:
        """Where the approval of this token stands; None when none was opened (or it expired)."""
        approval = await self.store.find_approval(approval_id(token))
        return approval.state if approval is not None else None

    async def decided(self, token: str) -> ApprovalState | None:
        """The state once the person decided, waiting up to `wait` seconds for them (URL-mode elicitation)."""
        deadline = self._clock() + self.wait
        while True:
            state = await self.state(token)
            if state is not ApprovalState.PENDING or self._clock() >= deadline:
                return state
            await anyio.sleep(POLL_SECONDS)


def show_link(url: str) -> str:
    """What a preview tells the assistant to do with the page's address."""
    return (
        f"To delete, the person must approve on this server's page: show them this link and ask them to open it in "
        f"their browser: {url} Once they approved, call again with dryRun: false and this confirmationToken."
    )
