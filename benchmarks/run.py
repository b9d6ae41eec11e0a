"""Benchmarks of b24-mcp against the portal emulator on loopback. Prints tables and writes the figures as JSON.

    .venv/bin/python benchmarks/run.py [--quick] [--only NAME ...] [--markdown] [--json PATH] [--list]

Every server is a real child process spoken to through the SDK's `Client` over stdio (`processes.py`), and the
emulator runs in a process of its own (`emulator_process.py`); b24-mcp itself is never imported. Figures are
frozen dataclasses built from `figures.py`'s `Spread` and `Comparison`, and render as `figures.Table`s.

Adding a benchmark: a frozen dataclass for its figure with a `tables()` method (the `figures.Figure` protocol),
an `async def my_benchmark(setup: Setup) -> MyFigure`, any new repetition count in `Profile`, and a
`Benchmark(...)` entry in `BENCHMARKS`; `--only`, the tables and the JSON pick it up from there.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
from figures import (
    DASH,
    RATIO,
    SPREAD_HEADER,
    TIMES,
    Comparison,
    Failed,
    Figure,
    Table,
    comparison_rows,
    fmt,
    guarded,
)
from mcp import Client
from mcp.types import CallToolResult
from processes import (
    Emulator,
    Traffic,
    child_pid,
    cpu_ms,
    describe_error,
    emulator,
    interleave,
    mcp_server,
    read_log,
    structured,
    tail,
    vm_hwm_mib,
)
from shared_state import shared_state

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_JSON = HERE / "results.json"
OURS_SANDBOX = ("-m", "b24_mcp", "--sandbox")
OURS = ("-m", "b24_mcp")
BARE = (str(HERE / "bare_server.py"),)
BARE_COLLECTOR_PAUSED = (str(HERE / "bare_server_collector_paused.py"),)
MINIMAL = (str(HERE / "minimal_tool_server.py"),)
COLD_START_TARGET = 0.95
DEAL = 2
ITEM_TOOL = "crm_item_delete"
BATCH_TOOL = "crm_item_delete_batch"
MINIMAL_TOOL = "crm_item_get"
PREVIEW_ARGS: dict[str, Any] = {"entityTypeId": DEAL, "id": 42}
BULK_ITEMS = 500
PORTAL_BURST = 50
PORTAL_RATE = 2.0


@dataclass(frozen=True)
class Profile:
    """How many repetitions, and how long the capped sections may run."""

    name: str
    starts: int  # cold start: timed starts of each server (after one discarded warm-up start of each)
    memory_starts: int  # idle memory: starts of each server
    import_runs: int  # -X importtime starts of each server
    calls: int  # per call: timed calls of each tool
    warmup: int  # per call: untimed calls of each tool first
    batch_cap_s: float
    one_by_one_cap_s: float
    filter_items: int = 5000  # the clean-up by filter: how many deals it deletes (capped in time by batch_cap_s)


FULL = Profile(
    "full", starts=15, memory_starts=5, import_runs=3, calls=200, warmup=10, batch_cap_s=300.0, one_by_one_cap_s=60.0
)
QUICK = Profile(
    "quick",
    starts=3,
    memory_starts=2,
    import_runs=1,
    calls=30,
    warmup=3,
    batch_cap_s=30.0,
    one_by_one_cap_s=20.0,
    filter_items=1000,
)


# ================================================================================================ set-up


@dataclass(frozen=True)
class Setup:
    """What every benchmark gets: the profile, a scratch folder (logs, audit journal) and a progress line."""

    profile: Profile
    folder: Path

    def say(self, text: str) -> None:
        """Progress, on stderr."""
        print(text, file=sys.stderr, flush=True)

    def env(self, **variables: str) -> dict[str, str]:
        """Settings for a spawned server (the stdio client passes only these and PATH, HOME and the like)."""
        return {"B24_AUDIT_LOG": str(self.folder / "audit.jsonl"), "B24_LOG_LEVEL": "WARNING", **variables}

    @contextmanager
    def errlog(self, name: str) -> Iterator[TextIO]:
        """A file for a child's stderr (the SDK's stdio client needs a real file descriptor)."""
        with (self.folder / f"{name}.stderr.txt").open("w+") as handle:
            yield handle

    @asynccontextmanager
    async def emulator(
        self, *, rate_limit: tuple[int, float] | None = None, extra_deals: int = 0
    ) -> AsyncIterator[Emulator]:
        """The emulator in its own process (see `emulator_process.py`), its stderr in the scratch folder."""
        with self.errlog("emulator") as errlog:
            async with emulator(errlog, rate_limit=rate_limit, extra_deals=extra_deals) as portal:
                yield portal


# ================================================================================================ cold start


@dataclass(frozen=True)
class Start:
    """One spawn → initialize → answered tools/list, and the idle server right after."""

    wall_ms: float
    cpu_ms: float | None
    vm_hwm_mib: float | None
    tools: list[str]
    protocol: str


async def start_once(setup: Setup, args: Sequence[str]) -> Start:
    """Spawn a server, time until its tools/list is answered, then read its CPU time and peak RSS."""
    with setup.errlog("start") as errlog, anyio.fail_after(60):
        started = time.perf_counter()
        async with mcp_server(args, setup.env(), errlog) as client:
            listed = await client.list_tools()
            elapsed = time.perf_counter() - started
            pid = child_pid(args)
            cpu, hwm = cpu_ms(pid), vm_hwm_mib(pid)
            protocol = client.protocol_version
    return Start(elapsed * 1000, cpu, hwm, [tool.name for tool in listed.tools], protocol)


def measured(values: Iterable[float | None]) -> list[float] | None:
    """The values if every one of them could be read, else None."""
    read = list(values)
    known = [value for value in read if value is not None]
    return known if len(known) == len(read) else None


async def interleaved_starts(
    setup: Setup, runs: int, *, warm_up: bool, first: Sequence[str] = OURS_SANDBOX, second: Sequence[str] = BARE
) -> tuple[list[Start], list[Start]]:
    """Starts of `first` (`b24-mcp --sandbox`) and of `second` (the bare server) in ABBA order, after one discarded
    start of each (OS caches, .pyc files) when `warm_up`."""

    async def start_first() -> Start:
        return await start_once(setup, first)

    async def start_second() -> Start:
        return await start_once(setup, second)

    if warm_up:
        await start_first()
        await start_second()
    return await interleave(runs, start_first, start_second)


@dataclass(frozen=True)
class ColdStart:
    """Spawn → answered tools/list: b24-mcp --sandbox against a bare MCPServer with no tools."""

    runs: int
    protocol: str
    tools: list[str]
    wall_ms: Comparison
    cpu_ms: Comparison | None
    target_ratio: float
    within_target: bool
    conclusive: bool  # the per-pair ratios' middle half lies wholly on one side of the target

    def tables(self) -> list[Table]:
        """Wall time, then server CPU time."""
        verdict = "within" if self.within_target else "ABOVE"
        notes = [
            f"target: ratio of medians ≤ {self.target_ratio:.2f} → {verdict} target"
            + ("" if self.conclusive else f" (inconclusive: the per-pair ratios' p25{DASH}p75 straddles the target)"),
            f"{self.runs} starts of each in ABBA order after one discarded start of each; protocol {self.protocol}; "
            f"b24-mcp's tools: {', '.join(self.tools)}.",
        ]
        rows = comparison_rows(self.wall_ms, "b24-mcp --sandbox", "bare MCPServer")
        if self.cpu_ms is not None:
            rows += [["server CPU time (all threads)", "", "", "", "", ""]]
            rows += comparison_rows(self.cpu_ms, "b24-mcp --sandbox", "bare MCPServer")
        title = "Cold start: spawn → initialize → tools/list answered (wall time, then the server's CPU time)"
        return [Table(title, ["", *SPREAD_HEADER], rows, notes)]


async def cold_start(setup: Setup) -> ColdStart:
    """Interleaved starts of ours and the bare server; the ratio of the medians against the target."""
    ours, bare = await interleaved_starts(setup, setup.profile.starts, warm_up=True)
    wall = Comparison.of([s.wall_ms for s in ours], [s.wall_ms for s in bare], "ms", keep_samples=True)
    cpu_ours, cpu_bare = measured(s.cpu_ms for s in ours), measured(s.cpu_ms for s in bare)
    cpu = Comparison.of(cpu_ours, cpu_bare, "ms") if cpu_ours and cpu_bare else None
    ratios = wall.paired_ratios
    return ColdStart(
        runs=len(ours),
        protocol=ours[0].protocol,
        tools=ours[0].tools,
        wall_ms=wall,
        cpu_ms=cpu,
        target_ratio=COLD_START_TARGET,
        within_target=wall.ratio <= COLD_START_TARGET,
        conclusive=ratios.p75 <= COLD_START_TARGET or ratios.p25 > COLD_START_TARGET,
    )


@dataclass(frozen=True)
class StartFloor:
    """Spawn → answered tools/list: the bare server with the collector paused (b24-mcp's start-up trick alone)
    against the bare server. What b24-mcp's own start-up work may cost for a target ratio is the difference."""

    runs: int
    wall_ms: Comparison

    def tables(self) -> list[Table]:
        """One comparison."""
        notes = [
            f"{self.runs} starts of each in ABBA order after one discarded start of each; neither has a tool: the "
            "ratio is what pausing the collector alone gives, the floor under b24-mcp's cold-start ratio."
        ]
        rows = comparison_rows(self.wall_ms, "bare MCPServer, collector paused", "bare MCPServer")
        title = "Cold-start floor: the bare server with only the collector paused, against the bare server"
        return [Table(title, ["", *SPREAD_HEADER], rows, notes)]


async def start_floor(setup: Setup) -> StartFloor:
    """Interleaved starts of the bare server with and without the collector paused."""
    paused, bare = await interleaved_starts(
        setup, setup.profile.starts, warm_up=True, first=BARE_COLLECTOR_PAUSED, second=BARE
    )
    return StartFloor(len(paused), Comparison.of([s.wall_ms for s in paused], [s.wall_ms for s in bare], "ms"))


# ================================================================================================ idle memory


@dataclass(frozen=True)
class IdleMemory:
    """VmHWM of the idle server right after its tools/list: b24-mcp --sandbox against the bare MCPServer."""

    runs: int
    vm_hwm_mib: Comparison

    def tables(self) -> list[Table]:
        """One comparison."""
        rows = comparison_rows(self.vm_hwm_mib, "b24-mcp --sandbox", "bare MCPServer")
        notes = [f"{self.runs} starts of each, interleaved; VmHWM from /proc/<pid>/status."]
        return [Table("Peak memory of the idle server after tools/list (VmHWM)", ["", *SPREAD_HEADER], rows, notes)]


async def idle_memory(setup: Setup) -> IdleMemory:
    """Starts of each, reading the peak RSS once tools/list is answered."""
    ours, bare = await interleaved_starts(setup, setup.profile.memory_starts, warm_up=False)
    hwm_ours, hwm_bare = measured(s.vm_hwm_mib for s in ours), measured(s.vm_hwm_mib for s in bare)
    if hwm_ours is None or hwm_bare is None:
        raise RuntimeError("VmHWM not readable (no /proc, or the server's pid was not found)")
    return IdleMemory(len(ours), Comparison.of(hwm_ours, hwm_bare, "MiB"))


# ================================================================================================ import time

_IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|\s?(\s*)(\S+)\s*$")


@dataclass(frozen=True)
class ModuleTime:
    """One module under -X importtime: its own time and with everything it was first to import."""

    module: str
    self_ms: float
    cumulative_ms: float


@dataclass(frozen=True)
class PackageTime:
    """Self time of the added modules of one top-level package."""

    package: str
    modules: int
    self_ms: float


@dataclass(frozen=True)
class ImportTime:
    """`python -X importtime` of `b24-mcp --sandbox` and of the bare server, each up to an answered tools/list."""

    runs: int
    total_self_ms_ours: float
    total_self_ms_bare: float
    own_by_cumulative: list[ModuleTime]
    added_modules: int
    added_self_ms: float
    added_by_package: list[PackageTime]
    added_heaviest: list[ModuleTime]

    def tables(self) -> list[Table]:
        """b24_mcp's own modules; the modules the bare server never loads, by package."""
        own = Table(
            f"Import time: b24_mcp's own modules by cumulative time (-X importtime, median of {self.runs})",
            ["module", "cumulative", "self"],
            [[m.module, fmt(m.cumulative_ms, "ms"), fmt(m.self_ms, "ms")] for m in self.own_by_cumulative],
            [
                "cumulative counts everything a module is the first to import (the SDK too, which the bare server "
                "imports as well)."
            ],
        )
        heaviest = ", ".join(f"{m.module} {fmt(m.self_ms, 'ms')}" for m in self.added_heaviest[:5])
        added = Table(
            f"Import time: modules b24-mcp loads that the bare server never does ({self.added_modules}, "
            f"{fmt(self.added_self_ms, 'ms')} self time in all)",
            ["package", "modules", "self time"],
            [[p.package, str(p.modules), fmt(p.self_ms, "ms")] for p in self.added_by_package],
            [
                f"heaviest: {heaviest}.",
                f"all imports' self time: {fmt(self.total_self_ms_ours, 'ms')} b24-mcp, "
                f"{fmt(self.total_self_ms_bare, 'ms')} bare (importtime itself slows imports down).",
            ],
        )
        return [own, added]


def parse_importtime(text: str) -> dict[str, ModuleTime]:
    """`-X importtime` output (stderr): module → times of its first import."""
    modules: dict[str, ModuleTime] = {}
    for line in text.splitlines():
        match = _IMPORT_LINE.match(line)
        if match and match.group(4) not in modules:
            name = match.group(4)
            modules[name] = ModuleTime(name, int(match.group(1)) / 1000, int(match.group(2)) / 1000)
    return modules


def median_modules(runs: Sequence[dict[str, ModuleTime]]) -> dict[str, ModuleTime]:
    """Per module, the median self and cumulative time over several traced starts."""
    names = {name for run in runs for name in run}
    return {
        name: ModuleTime(
            name,
            round(statistics.median(run[name].self_ms for run in runs if name in run), 2),
            round(statistics.median(run[name].cumulative_ms for run in runs if name in run), 2),
        )
        for name in names
    }


async def traced_start(setup: Setup, args: Sequence[str], name: str) -> dict[str, ModuleTime]:
    """One `python -X importtime <args>` start up to an answered tools/list."""
    with setup.errlog(f"importtime-{name}") as errlog, anyio.fail_after(60):
        async with mcp_server(["-X", "importtime", *args], setup.env(), errlog) as client:
            await client.list_tools()
        return parse_importtime(read_log(errlog))


async def import_time(setup: Setup) -> ImportTime:
    """Traced starts of both, alternated; b24_mcp's heaviest modules and what ours adds to the bare server."""

    async def ours() -> dict[str, ModuleTime]:
        return await traced_start(setup, OURS_SANDBOX, "ours")

    async def bare() -> dict[str, ModuleTime]:
        return await traced_start(setup, BARE, "bare")

    traced_ours, traced_bare = await interleave(setup.profile.import_runs, ours, bare)
    a, b = median_modules(traced_ours), median_modules(traced_bare)
    own = sorted((m for m in a.values() if m.module.split(".")[0] == "b24_mcp"), key=lambda m: -m.cumulative_ms)
    added = sorted((m for m in a.values() if m.module not in b), key=lambda m: -m.self_ms)
    packages: dict[str, list[ModuleTime]] = {}
    for module in added:
        packages.setdefault(module.module.split(".")[0], []).append(module)
    by_package = sorted(
        (PackageTime(p, len(ms), round(sum(m.self_ms for m in ms), 2)) for p, ms in packages.items()),
        key=lambda p: -p.self_ms,
    )
    return ImportTime(
        runs=setup.profile.import_runs,
        total_self_ms_ours=round(sum(m.self_ms for m in a.values()), 1),
        total_self_ms_bare=round(sum(m.self_ms for m in b.values()), 1),
        own_by_cumulative=own[:8],
        added_modules=len(added),
        added_self_ms=round(sum(m.self_ms for m in added), 2),
        added_by_package=by_package[:8],
        added_heaviest=added[:8],
    )


# ================================================================================================ per call


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


@dataclass(frozen=True)
class Benchmark:
    """One selectable benchmark: `run` measures and returns its figure."""

    name: str
    title: str
    run: Callable[[Setup], Awaitable[Figure]]


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark("cold_start", "spawn → tools/list, b24-mcp --sandbox vs bare MCPServer, interleaved", cold_start),
        Benchmark("start_floor", "spawn → tools/list, bare MCPServer with the collector paused vs bare", start_floor),
        Benchmark("memory", "VmHWM of the idle server, b24-mcp --sandbox vs bare MCPServer", idle_memory),
        Benchmark("import_time", "-X importtime of b24-mcp --sandbox and the bare MCPServer", import_time),
        Benchmark("per_call", "crm_item_delete preview vs the minimal tool server, interleaved", per_call),
        Benchmark("bulk", f"{BULK_ITEMS} deals: crm_item_delete_batch vs one by one under the 50/2 limit", bulk),
        Benchmark("filter_clean_up", "5,000 deals by filter: preview and delete under the 50/2 limit", filter_clean_up),
        Benchmark("shared_state", "B24_DATABASE_URL vs embedded, per call; replicas' throughput", shared_state),
    ]
}


# ================================================================================================ the run


@dataclass(frozen=True)
class Machine:
    """Where and with what the figures were taken."""

    date: str
    platform: str
    python: str
    cpu_count: int | None
    cpu_model: str | None
    memory_total_gib: float | None
    mcp_version: str
    b24_mcp_version: str
    git: str | None

    @classmethod
    def here(cls) -> Machine:
        """This machine, now."""
        return cls(
            date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            platform=platform.platform(),
            python=platform.python_version(),
            cpu_count=os.cpu_count(),
            cpu_model=proc_field("/proc/cpuinfo", "model name"),
            memory_total_gib=memory_total_gib(),
            mcp_version=importlib.metadata.version("mcp"),
            b24_mcp_version=importlib.metadata.version("b24-mcp"),
            git=git_state(),
        )

    def describe(self) -> str:
        """Two lines for the top of the report."""
        return (
            f"{self.date}, git {self.git}, mcp {self.mcp_version}, b24-mcp {self.b24_mcp_version}\n"
            f"{self.platform}, Python {self.python}, {self.cpu_count} CPUs ({self.cpu_model}), "
            f"{self.memory_total_gib} GiB RAM"
        )


def proc_field(path: str, key: str) -> str | None:
    """The value of the first `key: value` line of a /proc file."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(key)), None)


def memory_total_gib() -> float | None:
    """Total memory from /proc/meminfo."""
    value = proc_field("/proc/meminfo", "MemTotal")
    return round(int(value.split()[0]) / 1024**2, 1) if value else None


def git_state() -> str | None:
    """The commit benchmarked, `+dirty` when tracked files have changes (read-only: no index refresh)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


@dataclass(frozen=True)
class Results:
    """Everything one run measured; `benchmarks/results.json` is this, as JSON."""

    machine: Machine
    profile: Profile
    benchmarks: dict[str, Figure]
    wall_s: float

    def to_json(self) -> str:
        """Indented JSON."""
        return json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False) + "\n"

    def tables(self) -> list[Table]:
        """Every benchmark's tables, in the order they ran."""
        return [table for figure in self.benchmarks.values() for table in figure.tables()]


async def run_benchmarks(setup: Setup, selected: Sequence[Benchmark]) -> dict[str, Figure]:
    """Each selected benchmark in turn; a failed one is recorded as such."""
    figures: dict[str, Figure] = {}
    for benchmark in selected:
        setup.say(f"{benchmark.name}: {benchmark.title} ...")
        started = time.perf_counter()
        figures[benchmark.name] = await guarded(benchmark.title, benchmark.run(setup))
        setup.say(f"  ({time.perf_counter() - started:.0f} s)")
    return figures


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Benchmarks of b24-mcp against the portal emulator on loopback (see benchmarks/README.md)."
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, shorter caps (a smoke run)")
    parser.add_argument(
        "--only", action="append", choices=list(BENCHMARKS), metavar="NAME", help="run only this one (repeatable)"
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    parser.add_argument(
        "--json",
        type=Path,
        help=f"write the figures there (default: {RESULTS_JSON.relative_to(REPO)}, for a full run of everything)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks, print their tables, write the JSON."""
    args = parse_args(argv)
    if args.list:
        for benchmark in BENCHMARKS.values():
            print(f"{benchmark.name:12} {benchmark.title}")
        return 0
    profile = QUICK if args.quick else FULL
    selected = [BENCHMARKS[name] for name in dict.fromkeys(args.only or BENCHMARKS)]
    complete = profile is FULL and len(selected) == len(BENCHMARKS)
    output: Path | None = args.json or (RESULTS_JSON if complete else None)
    started = time.perf_counter()
    machine = Machine.here()
    with tempfile.TemporaryDirectory(prefix="b24-bench-") as folder:
        figures = anyio.run(run_benchmarks, Setup(profile, Path(folder)), selected)
    results = Results(machine, profile, figures, round(time.perf_counter() - started, 1))
    render = Table.markdown if args.markdown else Table.text
    print(f"b24-mcp benchmarks ({profile.name} profile), {machine.describe()}\n")
    print("\n\n".join(render(table) for table in results.tables()))
    print(f"\n(whole run {results.wall_s:.0f} s)")
    if output is None:
        print("(figures not written: a quick or partial run; pass --json PATH to keep them)")
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(results.to_json())
        print(f"(figures written to {output})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
