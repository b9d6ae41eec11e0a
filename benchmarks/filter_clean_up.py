"""The `filter_clean_up` benchmark: 5,000 deals by filter, previewed and deleted under the 50/2 limit."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import anyio
from bulk import bulk_server_env
from common import BATCH_TOOL, DEAL, OURS, PORTAL_BURST, PORTAL_RATE, Setup
from figures import (
    RATIO,
    Table,
    fmt,
)
from per_call import FLOOR_NOTE, count, limit_floor, over_floor
from processes import (
    Traffic,
    describe_error,
    mcp_server,
    structured,
    tail,
)

BENCH_TITLE = "Bench deal"  # the emulator's extra deals are titled "Bench deal N"


@dataclass(frozen=True)
class FilterPhase:
    """One call of the clean-up: its wall time and the portal requests it made."""

    seconds: float
    traffic: Traffic


@dataclass(frozen=True)
class FilterCleanUp:
    """`crm_item_delete_batch` with a filter over the extra deals: preview, then the deletion with its token."""

    items: int
    portal_limit: str
    filter: dict[str, Any]
    preview: FilterPhase | None
    delete: FilterPhase | None
    matched: int | None
    more: bool | None
    status: str | None
    deleted: int | None
    remaining: int | None
    progress_notifications: int
    seconds: float
    gone_from_portal: int
    traffic: Traffic
    limit_floor_s: float
    measured_over_floor: float | None
    error: str | None

    def tables(self) -> list[Table]:
        """Preview, deletion and the whole, with requests and the bucket's floor."""
        header = [
            "phase",
            "time",
            "HTTP requests",
            "crm.item.list commands",
            "QUERY_LIMIT_EXCEEDED",
            "limit floor",
            "time/floor",
        ]
        rows = []
        for label, phase in (("preview (dryRun: true)", self.preview), ("deletion with the token", self.delete)):
            if phase is None:
                rows.append([label, "not reached", "", "", "", "", ""])
                continue
            requests = phase.traffic.http_requests
            rows.append(
                [
                    label,
                    fmt(phase.seconds, "s"),
                    str(requests),
                    str(phase.traffic.batch_subcommands.get("crm.item.list", 0)),
                    str(phase.traffic.query_limit_exceeded),
                    fmt(limit_floor(requests), "s"),
                    fmt(over_floor(phase.seconds, requests), RATIO),
                ]
            )
        rows.append(
            [
                "whole clean-up",
                fmt(self.seconds, "s") + (" (failed, see below)" if self.error else ""),
                str(self.traffic.http_requests),
                str(self.traffic.batch_subcommands.get("crm.item.list", 0)),
                str(self.traffic.query_limit_exceeded),
                fmt(self.limit_floor_s, "s"),
                fmt(self.measured_over_floor, RATIO),
            ]
        )
        notes = [
            f"filter {json.dumps(self.filter)}: matched {self.matched}, more {self.more}; deletion status "
            f"{self.status}, deleted {self.deleted}, remaining {self.remaining}; {self.gone_from_portal}/{self.items} "
            f"deals gone from the portal; {self.progress_notifications} progress notifications.",
            "A phase's floor assumes the bucket empty at its start, as it is after the preview (3 requests, and the "
            "bucket drains while the emulator lists). The preview's time is the emulator's own work: it scans every "
            "deal for each of the 101 page commands, where a real portal runs an indexed query.",
            FLOOR_NOTE,
        ]
        if self.error:
            notes.insert(0, f"failed: {self.error}")
        title = f"Clean-up of {self.items} deals by filter, portal limit {self.portal_limit} (burst/per second)"
        return [Table(title, header, rows, notes)]


async def filter_clean_up(setup: Setup) -> FilterCleanUp:
    """Preview and delete the extra deals by a filter on their title, on a fresh emulator and server under the
    real portal's limit, with b24-mcp's default pacing and B24_BATCH_MAX."""
    items = setup.profile.filter_items
    cap = setup.profile.batch_cap_s
    conditions = {"%title": BENCH_TITLE}
    args: dict[str, Any] = {"entityTypeId": DEAL, "filter": conditions}
    fields: dict[str, Any] = {}
    phases: dict[str, FilterPhase] = {}
    notifications = 0
    error: str | None = None

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        nonlocal notifications
        notifications += 1

    async with setup.emulator(rate_limit=(PORTAL_BURST, PORTAL_RATE), extra_deals=items) as portal:
        with setup.errlog("filter-clean-up") as errlog:
            async with mcp_server(OURS, bulk_server_env(setup, portal), errlog) as client:
                with anyio.fail_after(60):
                    await client.list_tools()
                before = await portal.traffic()
                started = time.perf_counter()
                with anyio.move_on_after(cap) as scope:
                    preview = await client.call_tool(BATCH_TOOL, args)
                    mark = await portal.traffic()
                    phases["preview"] = FilterPhase(round(time.perf_counter() - started, 3), mark.since(before))
                    data = structured(preview)
                    fields |= {"matched": count(data.get("matched")), "more": data.get("more")}
                    token = data.get("confirmationToken")
                    if preview.is_error or not token:
                        error = f"preview: {describe_error(preview)}"
                    else:
                        deleting = time.perf_counter()
                        done = await client.call_tool(
                            BATCH_TOOL,
                            args | {"dryRun": False, "confirmationToken": token},
                            progress_callback=on_progress,
                        )
                        seconds = round(time.perf_counter() - deleting, 3)
                        phases["delete"] = FilterPhase(seconds, (await portal.traffic()).since(mark))
                        result = structured(done)
                        fields |= {"status": result.get("status"), "deleted": count(result.get("deleted"))}
                        fields["remaining"] = count(result.get("remaining"))
                        if done.is_error:
                            error = f"delete: {describe_error(done)}"
                elapsed = time.perf_counter() - started
                if scope.cancelled_caught:
                    error = f"timed out after {cap:.0f} s"
                if error and (server_said := tail(errlog)):
                    error += f" (server's stderr: {server_said})"
        seen = (await portal.traffic()).since(before)
        gone = items - await portal.extra_remaining()
    return FilterCleanUp(
        items=items,
        portal_limit=f"{PORTAL_BURST}/{PORTAL_RATE:g}",
        filter=conditions,
        preview=phases.get("preview"),
        delete=phases.get("delete"),
        matched=fields.get("matched"),
        more=fields.get("more"),
        status=fields.get("status"),
        deleted=fields.get("deleted"),
        remaining=fields.get("remaining"),
        progress_notifications=notifications,
        seconds=round(elapsed, 3),
        gone_from_portal=gone,
        traffic=seen,
        limit_floor_s=limit_floor(seen.http_requests),
        measured_over_floor=over_floor(elapsed, seen.http_requests),
        error=error,
    )


# ================================================================================================ registry
