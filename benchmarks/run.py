"""Benchmarks of b24-mcp against the portal emulator on loopback. Prints tables and writes the figures as JSON.

    .venv/bin/python benchmarks/run.py [--quick] [--only NAME ...] [--markdown] [--json PATH] [--list]

Every server is a real child process spoken to through the SDK's `Client` over stdio (`processes.py`), and the
emulator runs in a process of its own (`emulator_process.py`); b24-mcp itself is never imported. Figures are
frozen dataclasses built from `figures.py`'s `Spread` and `Comparison`, and render as `figures.Table`s.

One module per benchmark (`cold_start.py`, `import_time.py`, `per_call.py`, `bulk.py`, `filter_clean_up.py`,
`shared_state.py`), what they share in `common.py`. Adding a benchmark: a module with a frozen dataclass for its
figure with a `tables()` method (the `figures.Figure` protocol) and an `async def my_benchmark(setup: Setup) ->
MyFigure`, any new repetition count in `Profile`, and a `Benchmark(...)` entry in `BENCHMARKS`; `--only`, the
tables and the JSON pick it up from there.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
from bulk import bulk
from cold_start import cold_start, idle_memory, start_floor
from common import BULK_ITEMS, FULL, QUICK, REPO, RESULTS_JSON, Profile, Setup
from figures import (
    Figure,
    Table,
    guarded,
)
from filter_clean_up import filter_clean_up
from import_time import import_time
from per_call import per_call
from shared_state import shared_state


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
