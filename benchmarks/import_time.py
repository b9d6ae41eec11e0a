"""The `import_time` benchmark: -X importtime of b24-mcp --sandbox and the bare MCPServer."""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
from common import BARE, OURS_SANDBOX, Setup
from figures import (
    Table,
    fmt,
)
from processes import (
    interleave,
    mcp_server,
    read_log,
)

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
