"""What `crm_item_delete_batch` answers: the result, the items a preview shows, and each item's outcome."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from b24_mcp.deleting.results import ToolResult
from b24_mcp.journal.record import ConfirmedBy


class FoundItem(BaseModel):
    """An item that exists, as the preview shows it."""

    id: int
    title: str | None = None
    stageId: str | None = None
    updatedTime: str | None = None


class SetSummary(BaseModel):
    """How the previewed items break down: counts by stage and by assignee (user id), the rest as `other`."""

    byStage: dict[str, int]
    byAssignee: dict[str, int]


class ItemOutcome(BaseModel):
    """What happened to one id of a bulk deletion."""

    id: int
    status: Literal["deleted", "error"]
    error: str | None = None
    error_description: str | None = None
    note: str | None = None


class BatchResult(ToolResult):
    """The outcome of one `crm_item_delete_batch` call."""

    status: Literal["preview", "deleted", "partial", "cancelled", "error"] = Field(
        description="preview: nothing deleted yet; deleted: all of them deleted; partial: some deleted, some "
        "failed or remain; cancelled by the person; error: nothing deleted."
    )
    entityTypeId: int = Field(description="The call's entityTypeId; absent only when its arguments were refused.")
    message: str = Field(description="What happened and what to do next.")
    matched: int | None = Field(default=None, description="Filter preview: how many items this preview covers.")
    more: bool | None = Field(
        default=None, description="Filter: true when further items match beyond the cap (B24_BATCH_MAX)."
    )
    found: list[FoundItem] | None = Field(
        default=None, description="Preview: the items that exist (a filter preview: the first 50 by id)."
    )
    missing: list[int] | None = Field(
        default=None,
        description="Ids form: the ids the portal does not list (absent, binned, or unreadable); a deletion leaves "
        "them out, as its preview said.",
    )
    summary: SetSummary | None = Field(default=None, description="Filter preview: counts by stage and assignee.")
    recycleBin: bool | None = Field(
        default=None,
        description="Whether deleted items go to the CRM recycle bin (when the portal keeps one; restorable there, "
        "not through this server).",
    )
    confirmationToken: str | None = Field(default=None, description="Preview: pass with dryRun: false.")
    confirmationExpiresAt: str | None = None
    approvalUrl: str | None = Field(
        default=None,
        description="When the person approves deletions on this server's page: the page to show them (a preview, "
        "and APPROVAL_PENDING).",
    )
    confirmation: ConfirmedBy | None = None
    results: list[ItemOutcome] | None = Field(
        default=None,
        description="Delete: ids form, one entry per requested id that exists (the others are in `missing`); "
        "filter form, the items that failed.",
    )
    deleted: int | None = None
    failed: int | None = Field(default=None, description="Delete: items the portal refused or that could not be told.")
    remaining: int | None = Field(
        default=None, description="Delete: items not deleted because the work stopped (retry later)."
    )
    unblocksAt: str | None = Field(
        default=None, description="When the portal stopped the work for its time limit: when it unblocks (UTC)."
    )
    error: str | None = None
    error_description: str | None = None
    retryable: bool | None = None
    httpStatus: int | None = None
