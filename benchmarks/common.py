"""What every benchmark shares: the paths, the profile (how many repetitions), the setup, timed starts."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
from processes import (
    Emulator,
    child_pid,
    cpu_ms,
    emulator,
    interleave,
    mcp_server,
    vm_hwm_mib,
)

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
