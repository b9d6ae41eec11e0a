"""The `per_call` benchmark: a crm_item_delete preview against the minimal tool server, interleaved."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from common import ITEM_TOOL, MINIMAL, MINIMAL_TOOL, OURS, PORTAL_BURST, PORTAL_RATE, PREVIEW_ARGS, Setup
from figures import (
    SPREAD_HEADER,
    Comparison,
    Table,
    comparison_rows,
)
from mcp import Client
from mcp.types import CallToolResult
from processes import (
    Emulator,
    describe_error,
    interleave,
    mcp_server,
    structured,
)


@dataclass(frozen=True)
class PerCall:
    """One tool call's latency: a b24-mcp preview against a minimal MCPServer tool making the same crm.item.get,
    both over stdio against the emulator in its own process."""

    calls: int
    warmup: int
    latency_ms: Comparison
    portal_requests_per_call: dict[str, int]

    def tables(self) -> list[Table]:
        """One comparison."""
        rows = comparison_rows(self.latency_ms, "b24-mcp crm_item_delete preview", "minimal tool (crm.item.get)")
        requests = ", ".join(f"{name} {count}" for name, count in self.portal_requests_per_call.items())
        notes = [
            f"{self.calls} calls of each in ABBA order after {self.warmup} warm-up calls of each; both servers over "
            "stdio, the emulator over plain HTTP in its own process, no rate limit.",
            f"portal requests per call: {requests}.",
        ]
        title = "Per call: crm_item_delete {entityTypeId: 2, id: 42} (preview) vs the minimal tool"
        return [Table(title, ["", *SPREAD_HEADER], rows, notes)]


def preview_problem(result: CallToolResult) -> str | None:
    """Why a crm_item_delete answer is not a preview, or None."""
    if result.is_error or structured(result).get("status") != "preview":
        return describe_error(result)
    return None


def minimal_problem(result: CallToolResult) -> str | None:
    """Why the minimal tool's answer is not the item, or None."""
    item = structured(result).get("result", {}).get("item", {})
    return describe_error(result) if result.is_error or item.get("id") != PREVIEW_ARGS["id"] else None


def timed_tool(
    client: Client, tool: str, arguments: dict[str, Any], problem: Callable[[CallToolResult], str | None]
) -> Callable[[], Awaitable[float]]:
    """A function that calls a tool and returns the milliseconds it took, raising if the answer is wrong."""

    async def call() -> float:
        started = time.perf_counter()
        result = await client.call_tool(tool, arguments)
        elapsed = (time.perf_counter() - started) * 1000
        if (why := problem(result)) is not None:
            raise RuntimeError(f"{tool}: {why}")
        return elapsed

    return call


async def requests_per_call(portal: Emulator, call: Callable[[], Awaitable[float]]) -> int:
    """How many HTTP requests the portal gets for one call."""
    before = await portal.traffic()
    await call()
    return (await portal.traffic()).since(before).http_requests


async def per_call(setup: Setup) -> PerCall:
    """Both servers up at once; warm-up calls, then calls in ABBA order."""
    profile = setup.profile
    # b24-mcp's own pacing would hold the calls to 2/s after the first 50: set it out of the way.
    unpaced = {"B24_RATE_BURST": "10000", "B24_RATE_PER_SECOND": "1000", "B24_CONFIRM": "token"}
    async with setup.emulator() as portal:
        with setup.errlog("per-call-ours") as log_ours, setup.errlog("per-call-minimal") as log_minimal:
            with anyio.fail_after(120 + profile.calls):
                async with (
                    mcp_server(OURS, setup.env(**portal.env(), **unpaced), log_ours) as ours_client,
                    mcp_server(MINIMAL, setup.env(**portal.env()), log_minimal) as minimal_client,
                ):
                    ours = timed_tool(ours_client, ITEM_TOOL, PREVIEW_ARGS, preview_problem)
                    minimal = timed_tool(minimal_client, MINIMAL_TOOL, PREVIEW_ARGS, minimal_problem)
                    for _ in range(profile.warmup):
                        await ours()
                        await minimal()
                    requests = {
                        "b24-mcp": await requests_per_call(portal, ours),
                        "minimal": await requests_per_call(portal, minimal),
                    }
                    ours_ms, minimal_ms = await interleave(profile.calls, ours, minimal)
    return PerCall(profile.calls, profile.warmup, Comparison.of(ours_ms, minimal_ms, "ms"), requests)


# ================================================================================================ bulk deletion

FLOOR_NOTE = (
    f"limit floor = max(0, (requests - {PORTAL_BURST}) / {PORTAL_RATE:g}): the least time the portal's leaky bucket, "
    "empty at the start, lets that many requests through; measured/floor ≥ 1, close to 1 when the client paces "
    "right at the limit (- when the floor is 0)."
)


def limit_floor(requests: int) -> float:
    """The least seconds the portal's bucket (empty at start) allows for `requests` requests."""
    return max(0.0, (requests - PORTAL_BURST) / PORTAL_RATE)


def over_floor(seconds: float, requests: int) -> float | None:
    """Measured time over the limit floor, None when the floor is 0."""
    floor = limit_floor(requests)
    return round(seconds / floor, 3) if floor > 0 else None


def count(value: Any) -> int | None:
    """A count from a result field that may be a number or a list."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, list | dict):
        return len(value)
    return None
