"""The `bulk` benchmark: deals deleted by crm_item_delete_batch against one by one under the 50/2 limit."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from common import BATCH_TOOL, BULK_ITEMS, DEAL, ITEM_TOOL, OURS, PORTAL_BURST, PORTAL_RATE, Setup
from figures import (
    RATIO,
    TIMES,
    Failed,
    Table,
    fmt,
    guarded,
)
from mcp import Client
from per_call import FLOOR_NOTE, count, limit_floor, over_floor
from processes import (
    Emulator,
    Traffic,
    describe_error,
    mcp_server,
    structured,
    tail,
)


@dataclass(frozen=True)
class BatchRun:
    """`crm_item_delete_batch` with all the ids: preview, then the deletion with its token."""

    items: int
    preview_s: float | None
    found: int | None
    status: str | None
    deleted: int | None
    failed: int | None
    seconds: float
    gone_from_portal: int
    traffic: Traffic
    limit_floor_s: float
    measured_over_floor: float | None
    error: str | None


@dataclass(frozen=True)
class Unavailable:
    """The server does not list the tool: `tools` is what it lists."""

    tools: list[str]
    reason: str = "n/a (tool not available)"


@dataclass(frozen=True)
class Estimate:
    """The time for all items, extrapolated from a capped one-by-one run at its steady pace."""

    extrapolated: bool
    total_s: float | None
    steady_s_per_item: float | None
    requests_per_item: float | None
    limit_floor_s: float | None


@dataclass(frozen=True)
class OneByOneRun:
    """`crm_item_delete` preview then delete with its token, item by item, until done or the time cap."""

    items: int
    cap_s: float
    done: int
    seconds: float
    gone_from_portal: int
    traffic: Traffic
    limit_floor_s: float
    measured_over_floor: float | None
    estimate: Estimate
    error: str | None


def bulk_server_env(setup: Setup, portal: Emulator) -> dict[str, str]:
    """b24-mcp against the emulator with token confirmation and its default pacing (50, 2/s)."""
    return setup.env(**portal.env(), B24_CONFIRM="token")


async def batch_run(setup: Setup) -> BatchRun | Unavailable:
    """Preview and delete BULK_ITEMS deals with crm_item_delete_batch, on a fresh emulator and server."""
    cap = setup.profile.batch_cap_s
    async with setup.emulator(rate_limit=(PORTAL_BURST, PORTAL_RATE), extra_deals=BULK_ITEMS) as portal:
        ids = await portal.extra_ids()
        with setup.errlog("bulk-batch") as errlog:
            async with mcp_server(OURS, bulk_server_env(setup, portal), errlog) as client:
                with anyio.fail_after(60):
                    tools = [tool.name for tool in (await client.list_tools()).tools]
                if BATCH_TOOL not in tools:
                    return Unavailable(tools)
                before = await portal.traffic()
                fields: dict[str, Any] = {}
                error: str | None = None
                started = time.perf_counter()
                with anyio.move_on_after(cap) as scope:
                    args: dict[str, Any] = {"entityTypeId": DEAL, "ids": ids}
                    preview = await client.call_tool(BATCH_TOOL, args | {"dryRun": True})
                    fields["preview_s"] = round(time.perf_counter() - started, 3)
                    fields["found"] = count(structured(preview).get("found"))
                    token = structured(preview).get("confirmationToken")
                    if preview.is_error or not token:
                        error = f"preview: {describe_error(preview)}"
                    else:
                        args |= {"dryRun": False, "confirmationToken": token}
                        deleted = await client.call_tool(BATCH_TOOL, args)
                        data = structured(deleted)
                        fields |= {"status": data.get("status"), "deleted": count(data.get("deleted"))}
                        fields["failed"] = count(data.get("failed"))
                        if deleted.is_error:
                            error = f"delete: {describe_error(deleted)}"
                elapsed = time.perf_counter() - started
                if scope.cancelled_caught:
                    error = f"timed out after {cap:.0f} s"
                if error and (server_said := tail(errlog)):
                    error += f" (server's stderr: {server_said})"
        seen = (await portal.traffic()).since(before)
        gone = BULK_ITEMS - await portal.extra_remaining()
    return BatchRun(
        items=len(ids),
        preview_s=fields.get("preview_s"),
        found=fields.get("found"),
        status=fields.get("status"),
        deleted=fields.get("deleted"),
        failed=fields.get("failed"),
        seconds=round(elapsed, 3),
        gone_from_portal=gone,
        traffic=seen,
        limit_floor_s=limit_floor(seen.http_requests),
        measured_over_floor=over_floor(elapsed, seen.http_requests),
        error=error,
    )


async def delete_one_by_one(client: Client, ids: Sequence[int], cap: float) -> tuple[list[float], str | None]:
    """Preview then delete each item with its token until done or `cap` seconds: when each finished, and the
    first error."""
    finished_at: list[float] = []
    started = time.perf_counter()
    with anyio.move_on_after(cap + 30):
        for item_id in ids:
            if time.perf_counter() - started >= cap:
                break
            preview = await client.call_tool(ITEM_TOOL, {"entityTypeId": DEAL, "id": item_id})
            token = structured(preview).get("confirmationToken")
            if preview.is_error or not token:
                return finished_at, f"preview {item_id}: {describe_error(preview)}"
            arguments = {"entityTypeId": DEAL, "id": item_id, "dryRun": False, "confirmationToken": token}
            deleted = await client.call_tool(ITEM_TOOL, arguments)
            if deleted.is_error or structured(deleted).get("status") != "deleted":
                return finished_at, f"delete {item_id}: {describe_error(deleted)}"
            finished_at.append(time.perf_counter() - started)
    return finished_at, None


def extrapolate(finished_at: Sequence[float], total: int, requests: int) -> Estimate:
    """Time for all `total` items: measured if all were done, else the time so far plus the rest at the steady
    pace (seconds per item over the items finished in the second half of the run, once the burst is spent)."""
    done = len(finished_at)
    if done == 0:
        return Estimate(True, None, None, None, None)
    per_item = requests / done
    floor = round(limit_floor(round(per_item * total)), 1)
    if done >= total:
        return Estimate(False, round(finished_at[-1], 2), None, round(per_item, 2), floor)
    window = [moment for moment in finished_at if moment >= finished_at[-1] / 2]
    steady = (window[-1] - window[0]) / (len(window) - 1) if len(window) >= 3 else finished_at[-1] / done
    estimate = finished_at[-1] + (total - done) * steady
    return Estimate(True, round(estimate, 1), round(steady, 3), round(per_item, 2), floor)


async def one_by_one_run(setup: Setup) -> OneByOneRun:
    """Item by item on a fresh emulator and server, capped in time, extrapolated to all items."""
    cap = setup.profile.one_by_one_cap_s
    async with setup.emulator(rate_limit=(PORTAL_BURST, PORTAL_RATE), extra_deals=BULK_ITEMS) as portal:
        ids = await portal.extra_ids()
        with setup.errlog("bulk-one-by-one") as errlog:
            async with mcp_server(OURS, bulk_server_env(setup, portal), errlog) as client:
                with anyio.fail_after(60):
                    await client.list_tools()
                before = await portal.traffic()
                finished_at, error = await delete_one_by_one(client, ids, cap)
            if error and (server_said := tail(errlog)):
                error += f" (server's stderr: {server_said})"
        seen = (await portal.traffic()).since(before)
        gone = BULK_ITEMS - await portal.extra_remaining()
    elapsed = finished_at[-1] if finished_at else 0.0
    return OneByOneRun(
        items=len(ids),
        cap_s=cap,
        done=len(finished_at),
        seconds=round(elapsed, 3),
        gone_from_portal=gone,
        traffic=seen,
        limit_floor_s=limit_floor(seen.http_requests),
        measured_over_floor=over_floor(elapsed, seen.http_requests),
        estimate=extrapolate(finished_at, len(ids), seen.http_requests),
        error=error,
    )


@dataclass(frozen=True)
class Bulk:
    """Deleting BULK_ITEMS deals under the real portal's limit: the batch tool against one by one."""

    items: int
    portal_limit: str
    batch: BatchRun | Unavailable | Failed
    one_by_one: OneByOneRun | Failed
    speedup: float | None

    def tables(self) -> list[Table]:
        """One row per way, plus the extrapolation."""
        header = ["way", "time", "deals gone", "HTTP requests", "QUERY_LIMIT_EXCEEDED", "limit floor", "time/floor"]
        rows = [self.batch_row(), *self.one_by_one_rows()]
        notes = [
            "one by one: a preview (crm.item.get) then a deletion (crm.item.get + crm.item.delete) per item; the "
            "extrapolation adds the remaining items at the steady pace of the run's second half.",
            FLOOR_NOTE,
        ]
        if self.speedup is not None:
            notes.insert(0, f"speed-up of the batch tool over one by one: {self.speedup:g}{TIMES}")
        for way, run in (("batch", self.batch), ("one by one", self.one_by_one)):
            if isinstance(run, BatchRun | OneByOneRun | Failed) and run.error:
                notes.insert(0, f"{way} failed: {run.error}")
        title = f"Bulk deletion of {self.items} deals, portal limit {self.portal_limit} (burst/per second)"
        return [Table(title, header, rows, notes)]

    def batch_row(self) -> list[str]:
        """The batch tool's row."""
        label = "crm_item_delete_batch (preview + delete)"
        run = self.batch
        if isinstance(run, Failed):
            return [label, "failed (see below)", "", "", "", "", ""]
        if isinstance(run, Unavailable):
            return [label, run.reason, "", "", "", "", ""]
        requests = f"{run.traffic.http_requests} (+{sum(run.traffic.batch_subcommands.values())} in batch)"
        return [
            label,
            fmt(run.seconds, "s") + (" (failed, see below)" if run.error else ""),
            f"{run.gone_from_portal}/{run.items}",
            requests,
            str(run.traffic.query_limit_exceeded),
            fmt(run.limit_floor_s, "s"),
            fmt(run.measured_over_floor, RATIO),
        ]

    def one_by_one_rows(self) -> list[list[str]]:
        """The one-by-one row and its extrapolation."""
        run = self.one_by_one
        if isinstance(run, Failed):
            return [["crm_item_delete one by one", "failed (see below)", "", "", "", "", ""]]
        rows = [
            [
                f"crm_item_delete one by one (capped at {run.cap_s:.0f} s)",
                fmt(run.seconds, "s") + (" (failed, see below)" if run.error else ""),
                f"{run.gone_from_portal}/{run.items}",
                str(run.traffic.http_requests),
                str(run.traffic.query_limit_exceeded),
                fmt(run.limit_floor_s, "s"),
                fmt(run.measured_over_floor, RATIO),
            ]
        ]
        estimate = run.estimate
        if estimate.extrapolated and estimate.total_s is not None:
            rows.append(
                [
                    f"  one by one, extrapolated to {run.items}",
                    f"≈ {fmt(estimate.total_s, 's')}",
                    f"{estimate.steady_s_per_item:.2f} s/item steady",
                    f"≈ {round((estimate.requests_per_item or 0) * run.items)}",
                    "",
                    fmt(estimate.limit_floor_s, "s"),
                    "",
                ]
            )
        return rows


async def bulk(setup: Setup) -> Bulk:
    """Both ways, each on a fresh emulator and server, and the speed-up."""
    batch = await guarded("bulk: batch", batch_run(setup))
    single = await guarded("bulk: one by one", one_by_one_run(setup))
    speedup = None
    if isinstance(batch, BatchRun) and isinstance(single, OneByOneRun) and not batch.error and batch.seconds > 0:
        total = single.estimate.total_s
        speedup = None if total is None else round(total / batch.seconds, 1)
    return Bulk(BULK_ITEMS, f"{PORTAL_BURST}/{PORTAL_RATE:g}", batch, single, speedup)


# ================================================================================================ clean-up by filter
