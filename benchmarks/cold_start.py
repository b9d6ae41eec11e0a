"""The `cold_start`, `start_floor` and `memory` benchmarks: spawn to tools/list, and the idle server's peak memory."""

from __future__ import annotations

from dataclasses import dataclass

from common import BARE, BARE_COLLECTOR_PAUSED, COLD_START_TARGET, Setup, interleaved_starts, measured
from figures import (
    DASH,
    SPREAD_HEADER,
    Comparison,
    Table,
    comparison_rows,
)


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
