"""Benchmarks of b24-mcp against the portal emulator on loopback: cold start, per-call overhead, bulk deletion
under the portal's rate limit, and peak memory. Prints a table and writes the same figures as JSON.

Run from the repository root: `.venv/bin/python benchmarks/run.py [--quick] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult

from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.seed import SANDBOX_USER_ID, SANDBOX_WEBHOOK_CODE, seeded_portal
from b24_mcp.sandbox.serve import serve_portal

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BARE_SERVER = HERE / "bare_server.py"
OUR_ARGS = ["-m", "b24_mcp", "--sandbox"]
REAL_ARGS = ["-m", "b24_mcp"]
BARE_ARGS = [str(BARE_SERVER)]
# The initialize handshake (2025-11-25), as today's assistants (Claude Code, Cursor, ...) speak it.
CLIENT_MODE = "legacy"
COLD_START_TARGET = 1.10
BULK_ITEMS = 500
PORTAL_BURST = 50
PORTAL_RATE = 2.0
BATCH_TOOL = "crm_item_delete_batch"
ITEM_TOOL = "crm_item_delete"
PREVIEW_ARGS: dict[str, Any] = {"entityTypeId": 2, "id": 42}
FLOOR_NOTE = (
    "limit floor = max(0, (requests - burst) / rate) with the portal's burst 50 and rate 2/s: the least time the "
    "portal's leaky bucket, empty at the start, lets that many requests through without QUERY_LIMIT_EXCEEDED. "
    "measured/floor >= 1; close to 1 means the client paced right at the limit. With requests <= burst the floor "
    "is 0 and the ratio is not meaningful (shown as -)."
)


@dataclass(frozen=True)
class Profile:
    """How many repetitions and how long each section may run."""

    starts: int
    calls: int
    warmup: int
    one_by_one_cap: float
    batch_cap: float
    import_runs: int


FULL = Profile(starts=15, calls=200, warmup=5, one_by_one_cap=60.0, batch_cap=300.0, import_runs=3)
QUICK = Profile(starts=3, calls=30, warmup=3, one_by_one_cap=20.0, batch_cap=30.0, import_runs=1)


# ---------------------------------------------------------------------------------------------- small helpers


def ms(seconds: float) -> float:
    """Seconds to milliseconds, rounded for the report."""
    return round(seconds * 1000, 2)


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def spread(samples_ms: Sequence[float]) -> dict[str, Any]:
    """Median, p95, min and max of samples in milliseconds."""
    return {
        "median_ms": round(statistics.median(samples_ms), 2),
        "p95_ms": round(percentile(samples_ms, 0.95), 2),
        "min_ms": round(min(samples_ms), 2),
        "max_ms": round(max(samples_ms), 2),
        "n": len(samples_ms),
    }


@contextmanager
def log_file(folder: Path, name: str) -> Iterator[TextIO]:
    """A file for a child's stderr (the SDK's stdio client needs a real file descriptor)."""
    with (folder / name).open("w+") as handle:
        yield handle


def tail(path: Path, lines: int = 5) -> str:
    """The last lines of a log, for error notes."""
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def child_pid(args: Sequence[str]) -> int | None:
    """The pid of this process's child whose command line ends with `args` (the stdio client spawned it)."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        argv = [part.decode(errors="replace") for part in cmdline if part]
        if ppid == me and argv[1:] == list(args):
            return int(entry.name)
    return None


def vm_hwm_kib(pid: int | None) -> int | None:
    """The RSS high-water mark (VmHWM) of a process, in KiB."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int | None) -> float | None:
    """CPU time a process has used so far, over all its threads (`/proc/<pid>/task/*/schedstat`, in ns)."""
    if pid is None:
        return None
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


def machine_info() -> dict[str, Any]:
    """Where and with what the figures were taken."""
    cpu_model = None
    mem_total_kib = None
    try:
        cpu_model = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            None,
        )
        mem_total_kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        pass
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_total_gib": round(mem_total_kib / 1024**2, 1) if mem_total_kib else None,
        "mcp_version": importlib.metadata.version("mcp"),
        "b24_mcp_version": importlib.metadata.version("b24-mcp"),
        "git": git_state(),
    }


def git_state() -> str | None:
    """The commit benchmarked, with `+dirty` when the working tree has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


# ---------------------------------------------------------------------------------------------- the processes


def base_env(folder: Path) -> dict[str, str]:
    """Settings every spawned server gets (the stdio client passes only these and a few basics like PATH)."""
    return {"B24_AUDIT_LOG": str(folder / "audit.jsonl"), "B24_LOG_LEVEL": "WARNING"}


def portal_env(webhook: str, folder: Path, **extra: str) -> dict[str, str]:
    """Settings for the real server against the emulator served over plain HTTP."""
    return base_env(folder) | {
        "B24_WEBHOOK_URL": webhook,
        "B24_ALLOW_HTTP": "true",
        "B24_CONFIRM": "token",
        **extra,
    }


@asynccontextmanager
async def mcp_server(args: Sequence[str], env: dict[str, str], errlog: TextIO) -> AsyncIterator[Client]:
    """A server subprocess (`python <args>`) with the SDK's client on its stdio; stderr goes to `errlog`."""
    params = StdioServerParameters(command=sys.executable, args=list(args), env=env, cwd=tempfile.gettempdir())
    async with Client(stdio_client(params, errlog=errlog), mode=CLIENT_MODE, cache=None) as client:
        yield client


def webhook_of(origin: str) -> str:
    """The sandbox webhook's base URL on a served emulator."""
    return f"{origin}/rest/{SANDBOX_USER_ID}/{SANDBOX_WEBHOOK_CODE}/"


def structured(result: CallToolResult) -> dict[str, Any]:
    """A tool result's structured content (empty when there is none)."""
    return dict(result.structured_content or {})


def describe_error(result: CallToolResult) -> str:
    """One line saying why a tool call failed."""
    data = structured(result)
    if data.get("error"):
        return f"{data['error']}: {data.get('message') or data.get('error_description') or ''}".strip()
    texts = [getattr(part, "text", "") for part in result.content]
    return " ".join(text for text in texts if text)[:300] or "isError"


# ---------------------------------------------------------------------------------------------- 1 + 4: cold start


@dataclass
class StartSample:
    """One spawn → tools/list measurement."""

    seconds: float
    cpu_seconds: float | None
    hwm_kib: int | None
    tools: list[str]
    protocol: str


async def start_once(args: Sequence[str], env: dict[str, str], folder: Path) -> StartSample:
    """Spawn a server, time until its tools/list is answered, then read its peak RSS while it is idle."""
    with log_file(folder, "start-stderr.txt") as errlog:
        started = time.perf_counter()
        async with mcp_server(args, env, errlog) as client:
            listed = await client.list_tools()
            elapsed = time.perf_counter() - started
            pid = child_pid(args)
            cpu, hwm = cpu_seconds(pid), vm_hwm_kib(pid)
            protocol = client.protocol_version
    return StartSample(elapsed, cpu, hwm, [tool.name for tool in listed.tools], protocol)


async def cold_start(profile: Profile, folder: Path) -> dict[str, Any]:
    """Ours and the bare server, interleaved (ABBA order), after one discarded warm-up run of each."""
    env = base_env(folder)
    runs: dict[str, list[StartSample]] = {"b24_mcp": [], "bare": []}
    specs = {"b24_mcp": OUR_ARGS, "bare": BARE_ARGS}
    for args in specs.values():
        with anyio.fail_after(60):
            await start_once(args, env, folder)  # warm-up: OS caches, .pyc files
    for index in range(profile.starts):
        order = ["b24_mcp", "bare"] if index % 2 == 0 else ["bare", "b24_mcp"]
        for name in order:
            with anyio.fail_after(60):
                runs[name].append(await start_once(specs[name], env, folder))
    figures: dict[str, Any] = {"runs": profile.starts, "protocol": runs["b24_mcp"][0].protocol}
    for name, samples in runs.items():
        figures[name] = spread([sample.seconds * 1000 for sample in samples]) | {
            "samples_ms": [ms(sample.seconds) for sample in samples],
            "tools": samples[0].tools,
        }
    ours, bare = figures["b24_mcp"]["median_ms"], figures["bare"]["median_ms"]
    figures["ratio"] = round(ours / bare, 3)
    figures["diff_ms"] = round(ours - bare, 1)
    pairs = [a.seconds - b.seconds for a, b in zip(runs["b24_mcp"], runs["bare"], strict=True)]
    figures["median_paired_diff_ms"] = round(statistics.median(pairs) * 1000, 1)
    figures["cpu"] = cpu_figures(runs)
    figures["target_ratio"] = COLD_START_TARGET
    figures["within_target"] = figures["ratio"] <= COLD_START_TARGET
    figures["memory"] = memory_figures(runs)
    return figures


def cpu_figures(runs: dict[str, list[StartSample]]) -> dict[str, Any]:
    """Median CPU time the servers used up to the answered tools/list: steadier than wall time on a busy machine."""
    result: dict[str, Any] = {}
    for name, samples in runs.items():
        values = [sample.cpu_seconds * 1000 for sample in samples if sample.cpu_seconds is not None]
        result[name] = spread(values) if values else None
    if result["b24_mcp"] and result["bare"]:
        ours, bare = result["b24_mcp"]["median_ms"], result["bare"]["median_ms"]
        result["ratio"] = round(ours / bare, 3)
        result["diff_ms"] = round(ours - bare, 1)
    return result


def memory_figures(runs: dict[str, list[StartSample]]) -> dict[str, Any]:
    """Median VmHWM of the idle servers after tools/list, from the cold-start runs."""
    result: dict[str, Any] = {}
    for name, samples in runs.items():
        values = [sample.hwm_kib for sample in samples if sample.hwm_kib is not None]
        result[name] = {
            "vm_hwm_mib": round(statistics.median(values) / 1024, 1) if values else None,
            "min_mib": round(min(values) / 1024, 1) if values else None,
            "max_mib": round(max(values) / 1024, 1) if values else None,
            "n": len(values),
        }
    ours, bare = result["b24_mcp"]["vm_hwm_mib"], result["bare"]["vm_hwm_mib"]
    if ours and bare:
        result["ratio"] = round(ours / bare, 3)
        result["diff_mib"] = round(ours - bare, 1)
    return result


# ---------------------------------------------------------------------------------------------- 1b: import time

_IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|\s?(\s*)(\S+)\s*$")


def parse_importtime(text: str) -> dict[str, tuple[float, float]]:
    """`-X importtime` output: module → (self ms, cumulative ms), first import only."""
    modules: dict[str, tuple[float, float]] = {}
    for line in text.splitlines():
        match = _IMPORT_LINE.match(line)
        if match and match.group(4) not in modules:
            modules[match.group(4)] = (int(match.group(1)) / 1000, int(match.group(2)) / 1000)
    return modules


def median_modules(runs: Sequence[dict[str, tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    """Per module, the median self and cumulative time over several traced starts."""
    names = {name for run in runs for name in run}
    return {
        name: (
            statistics.median(run[name][0] for run in runs if name in run),
            statistics.median(run[name][1] for run in runs if name in run),
        )
        for name in names
    }


# What `b24-mcp --sandbox` does before serving (cli._serve), timed phase by phase in one process, after the SDK
# is imported: what the project itself adds to start-up, imports and work alike.
PHASES_SCRIPT = """
import json, time
t = [time.perf_counter()]
from mcp.server.mcpserver import MCPServer
t.append(time.perf_counter())
import b24_mcp.cli
from b24_mcp.settings import load_settings
t.append(time.perf_counter())
settings = load_settings()
t.append(time.perf_counter())
from b24_mcp.server import build_server
t.append(time.perf_counter())
from b24_mcp.sandbox.serve import sandbox_transport, sandbox_webhook
t.append(time.perf_counter())
transport = sandbox_transport()
t.append(time.perf_counter())
server = build_server(settings, transport=transport, credentials=sandbox_webhook())
t.append(time.perf_counter())
names = ["import the MCP SDK", "import b24_mcp.cli, settings", "load_settings()", "import b24_mcp.server",
         "import the sandbox", "seed the sandbox portal", "build_server()"]
print(json.dumps({name: (t[i + 1] - t[i]) * 1000 for i, name in enumerate(names)}))
"""


async def startup_phases(runs: int, folder: Path) -> dict[str, float]:
    """Median of each start-up phase over `runs` fresh interpreters."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", ""), **base_env(folder)}
    samples: list[dict[str, float]] = []
    for _ in range(runs):
        with anyio.fail_after(60):
            done = await anyio.run_process(
                [sys.executable, "-c", PHASES_SCRIPT], env=env, cwd=tempfile.gettempdir(), check=True
            )
        samples.append(json.loads(done.stdout))
    return {name: round(statistics.median(sample[name] for sample in samples), 1) for name in samples[0]}


async def import_profile(profile: Profile, folder: Path) -> dict[str, Any]:
    """`python -X importtime` starts of ours and of the bare server, alternated: b24_mcp's heaviest imports, and
    the modules ours loads that the bare server never does (what the project adds to start-up)."""
    traced: dict[str, list[dict[str, tuple[float, float]]]] = {"b24_mcp": [], "bare": []}
    for index in range(profile.import_runs):
        for name, args in {"b24_mcp": OUR_ARGS, "bare": BARE_ARGS}.items():
            with log_file(folder, f"importtime-{name}-{index}.txt") as errlog:
                with anyio.fail_after(60):
                    async with mcp_server(["-X", "importtime", *args], base_env(folder), errlog) as client:
                        await client.list_tools()
                errlog.seek(0)
                traced[name].append(parse_importtime(errlog.read()))
    ours, bare = median_modules(traced["b24_mcp"]), median_modules(traced["bare"])
    own = sorted(
        ((module, figures) for module, figures in ours.items() if module == "b24_mcp" or module.startswith("b24_mcp.")),
        key=lambda pair: -pair[1][1],
    )
    extra = sorted(
        ((module, figures) for module, figures in ours.items() if module not in bare), key=lambda p: -p[1][0]
    )
    roots = {module.split(".")[0] for module, _ in extra}
    by_root = sorted(
        ((root, sum(f[0] for m, f in extra if m.split(".")[0] == root)) for root in roots), key=lambda p: -p[1]
    )
    phases = await startup_phases(profile.import_runs * 2 + 1, folder)
    return {
        "runs": profile.import_runs,
        "phases_ms": phases,
        "project_phases_ms": round(sum(value for name, value in phases.items() if "MCP SDK" not in name), 1),
        "top_own_by_cumulative": [
            {"module": module, "cumulative_ms": round(f[1], 1), "self_ms": round(f[0], 1)} for module, f in own[:5]
        ],
        "total_self_ms": {
            name: round(sum(f[0] for f in mods.values()), 1) for name, mods in (("b24_mcp", ours), ("bare", bare))
        },
        "added_modules": len(extra),
        "added_self_ms": round(sum(f[0] for _, f in extra), 1),
        "added_by_package": [{"package": root, "self_ms": round(total, 1)} for root, total in by_root[:6]],
        "added_top_modules": [{"module": module, "self_ms": round(f[0], 1)} for module, f in extra[:8]],
    }


# ---------------------------------------------------------------------------------------------- 2: per-call overhead


async def per_call(profile: Profile, folder: Path) -> dict[str, Any]:
    """Sequential previews through the stdio server vs direct crm.item.get POSTs, interleaved one for one."""
    portal = seeded_portal(require_https=False, rate_limit=None)
    # The client-side pacing would otherwise hold the previews to 2/s after the first 48: set it out of the way.
    unpaced = {"B24_RATE_BURST": "10000", "B24_RATE_PER_SECOND": "1000"}
    mcp_samples: list[float] = []
    direct_samples: list[float] = []
    with serve_portal(portal) as origin, log_file(folder, "per-call-stderr.txt") as errlog:
        webhook = webhook_of(origin)
        env = portal_env(webhook, folder, **unpaced)
        with anyio.fail_after(120):
            async with mcp_server(REAL_ARGS, env, errlog) as client, httpx2.AsyncClient(timeout=30) as http:

                async def preview() -> float:
                    started = time.perf_counter()
                    result = await client.call_tool(ITEM_TOOL, PREVIEW_ARGS)
                    elapsed = time.perf_counter() - started
                    if result.is_error or structured(result).get("status") != "preview":
                        raise RuntimeError(f"preview failed: {describe_error(result)}")
                    return elapsed

                async def direct() -> float:
                    started = time.perf_counter()
                    response = await http.post(f"{webhook}crm.item.get", json=PREVIEW_ARGS)
                    elapsed = time.perf_counter() - started
                    if response.status_code != 200 or "item" not in response.json().get("result", {}):
                        raise RuntimeError(f"crm.item.get failed: {response.status_code} {response.text[:200]}")
                    return elapsed

                for _ in range(profile.warmup):
                    await preview()
                    await direct()
                for _ in range(profile.calls):
                    mcp_samples.append(await preview() * 1000)
                    direct_samples.append(await direct() * 1000)
    through, plain = spread(mcp_samples), spread(direct_samples)
    return {
        "calls": profile.calls,
        "sdk_round_trip": await sdk_round_trip(profile, folder),
        "warmup": profile.warmup,
        "mcp_preview": through,
        "direct_get": plain,
        "ratio_median": round(through["median_ms"] / plain["median_ms"], 2),
        "diff_median_ms": round(through["median_ms"] - plain["median_ms"], 2),
        "ratio_p95": round(through["p95_ms"] / plain["p95_ms"], 2),
        "diff_p95_ms": round(through["p95_ms"] - plain["p95_ms"], 2),
        "portal_requests": len(portal.calls),
    }


async def sdk_round_trip(profile: Profile, folder: Path) -> dict[str, Any]:
    """The SDK's own floor for a request over stdio: tools/list answered by the bare server, same client."""
    samples: list[float] = []
    with log_file(folder, "round-trip-stderr.txt") as errlog, anyio.fail_after(60):
        async with mcp_server(BARE_ARGS, base_env(folder), errlog) as client:
            for index in range(profile.warmup + profile.calls):
                started = time.perf_counter()
                await client.list_tools()
                if index >= profile.warmup:
                    samples.append((time.perf_counter() - started) * 1000)
    return spread(samples)


# ---------------------------------------------------------------------------------------------- 3: bulk deletion


def bulk_portal() -> tuple[Portal, list[int]]:
    """The sandbox portal under the real limit (50, 2/s), with BULK_ITEMS extra deals to delete."""
    portal = seeded_portal(require_https=False, rate_limit=(PORTAL_BURST, PORTAL_RATE))
    ids = [
        portal.add_item(
            2,
            {
                "title": f"Bench deal {i}",
                "stageId": "NEW",
                "opportunity": float(i),
                "currencyId": "USD",
                "assignedById": 1,
                "categoryId": 0,
            },
        )["id"]
        for i in range(BULK_ITEMS)
    ]
    return portal, ids


def limit_floor(requests: int) -> float:
    """The least seconds the portal's bucket (empty at start) allows for `requests` requests."""
    return max(0.0, (requests - PORTAL_BURST) / PORTAL_RATE)


def traffic(portal: Portal, since: int = 0) -> dict[str, Any]:
    """What the emulator received: top-level HTTP requests (batch sub-commands apart) and rate-limit refusals."""
    calls = portal.calls[since:]
    top = [call for call in calls if not call.via_batch]
    methods: dict[str, int] = {}
    for call in top:
        methods[call.method] = methods.get(call.method, 0) + 1
    return {
        "http_requests": len(top),
        "batch_subcommands": len(calls) - len(top),
        "by_method": methods,
        "query_limit_exceeded": sum(1 for call in calls if call.error == "QUERY_LIMIT_EXCEEDED"),
    }


def pacing(seconds: float, requests: int) -> dict[str, Any]:
    """The limit's floor for that many requests and how the measured time compares."""
    floor = limit_floor(requests)
    return {
        "limit_floor_s": round(floor, 2),
        "measured_over_floor": round(seconds / floor, 3) if floor > 0 else None,
    }


def count(value: Any) -> int | None:
    """A count from a result field that may be a number or a list."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, list | dict):
        return len(value)
    return None


async def bulk_batch(profile: Profile, folder: Path) -> dict[str, Any]:
    """Preview and delete BULK_ITEMS deals with `crm_item_delete_batch` (when the server has it)."""
    portal, ids = bulk_portal()
    outcome: dict[str, Any] = {"available": False, "items": len(ids)}
    with serve_portal(portal) as origin, log_file(folder, "batch-stderr.txt") as errlog:
        env = portal_env(webhook_of(origin), folder)
        async with mcp_server(REAL_ARGS, env, errlog) as client:
            with anyio.fail_after(60):
                names = [tool.name for tool in (await client.list_tools()).tools]
            if BATCH_TOOL not in names:
                return outcome | {"note": "n/a (tool not available)", "tools": names}
            outcome["available"] = True
            before = len(portal.calls)
            started = time.perf_counter()
            with anyio.move_on_after(profile.batch_cap) as scope:
                preview = await client.call_tool(BATCH_TOOL, {"entityTypeId": 2, "ids": ids, "dryRun": True})
                preview_s = time.perf_counter() - started
                data = structured(preview)
                outcome |= {
                    "preview_s": round(preview_s, 3),
                    "found": count(data.get("found")),
                    "missing": count(data.get("missing")),
                }
                token = data.get("confirmationToken")
                if preview.is_error or not token:
                    outcome["error"] = f"preview: {describe_error(preview)}"
                else:
                    deleted = await client.call_tool(
                        BATCH_TOOL, {"entityTypeId": 2, "ids": ids, "dryRun": False, "confirmationToken": token}
                    )
                    result = structured(deleted)
                    outcome |= {
                        "status": result.get("status"),
                        "deleted": count(result.get("deleted")),
                        "failed": count(result.get("failed")),
                    }
                    if deleted.is_error:
                        outcome["error"] = f"delete: {describe_error(deleted)}"
            elapsed = time.perf_counter() - started
    if scope.cancelled_caught:
        outcome["error"] = f"timed out after {profile.batch_cap:.0f} s"
    gone = sum(1 for item_id in ids if item_id not in portal.items[2])
    seen = traffic(portal, before)
    outcome |= {
        "seconds": round(elapsed, 3),
        "gone_from_portal": gone,
        **seen,
        **pacing(elapsed, seen["http_requests"]),
    }
    if "error" in outcome:
        outcome["server_stderr_tail"] = tail(folder / "batch-stderr.txt")
    return outcome


async def bulk_one_by_one(profile: Profile, folder: Path) -> dict[str, Any]:
    """Preview then delete with its token, item by item, until done or the time cap; extrapolate to all items."""
    portal, ids = bulk_portal()
    finished_at: list[float] = []
    errors: list[str] = []
    with serve_portal(portal) as origin, log_file(folder, "one-by-one-stderr.txt") as errlog:
        env = portal_env(webhook_of(origin), folder)
        async with mcp_server(REAL_ARGS, env, errlog) as client:
            with anyio.fail_after(60):
                await client.list_tools()
            started = time.perf_counter()
            with anyio.move_on_after(profile.one_by_one_cap + 30):
                for item_id in ids:
                    if time.perf_counter() - started >= profile.one_by_one_cap:
                        break
                    preview = await client.call_tool(ITEM_TOOL, {"entityTypeId": 2, "id": item_id})
                    token = structured(preview).get("confirmationToken")
                    if preview.is_error or not token:
                        errors.append(f"preview {item_id}: {describe_error(preview)}")
                        break
                    deleted = await client.call_tool(
                        ITEM_TOOL, {"entityTypeId": 2, "id": item_id, "dryRun": False, "confirmationToken": token}
                    )
                    if deleted.is_error or structured(deleted).get("status") != "deleted":
                        errors.append(f"delete {item_id}: {describe_error(deleted)}")
                        break
                    finished_at.append(time.perf_counter() - started)
    done = len(finished_at)
    seen = traffic(portal)
    elapsed = finished_at[-1] if finished_at else 0.0
    outcome: dict[str, Any] = {
        "items": len(ids),
        "cap_s": profile.one_by_one_cap,
        "done": done,
        "seconds": round(elapsed, 3),
        "gone_from_portal": sum(1 for item_id in ids if item_id not in portal.items[2]),
        **seen,
    }
    if errors:
        outcome["error"] = errors[0]
        outcome["server_stderr_tail"] = tail(folder / "one-by-one-stderr.txt")
    outcome |= extrapolate(finished_at, len(ids), seen["http_requests"])
    return outcome


def extrapolate(finished_at: Sequence[float], total: int, requests: int) -> dict[str, Any]:
    """Time for all `total` items: measured if all were done, else the time so far plus the rest at the steady
    pace (seconds per item over the items finished in the second half of the run, once the burst is spent)."""
    done = len(finished_at)
    if done == 0:
        return {"extrapolated": True, "estimated_total_s": None}
    per_request = requests / done
    floor_total = limit_floor(round(per_request * total))
    if done >= total:
        return {"extrapolated": False, "estimated_total_s": round(finished_at[-1], 2), "requests_per_item": 3}
    half = finished_at[-1] / 2
    window = [moment for moment in finished_at if moment >= half]
    steady = (window[-1] - window[0]) / (len(window) - 1) if len(window) >= 3 else finished_at[-1] / done
    estimate = finished_at[-1] + (total - done) * steady
    return {
        "extrapolated": True,
        "steady_s_per_item": round(steady, 3),
        "requests_per_item": round(per_request, 2),
        "estimated_total_s": round(estimate, 1),
        "estimated_limit_floor_s": round(floor_total, 1),
    }


async def bulk(profile: Profile, folder: Path) -> dict[str, Any]:
    """Both ways of deleting BULK_ITEMS deals, each on a fresh emulator and server, and the speed-up."""
    batch = await guarded("bulk batch", bulk_batch(profile, folder))
    single = await guarded("bulk one-by-one", bulk_one_by_one(profile, folder))
    figures: dict[str, Any] = {"items": BULK_ITEMS, "batch": batch, "one_by_one": single, "note": FLOOR_NOTE}
    one = single.get("estimated_total_s")
    if batch.get("available") and not batch.get("error") and one and batch.get("seconds"):
        figures["speedup"] = round(one / batch["seconds"], 1)
    return figures


# ---------------------------------------------------------------------------------------------- orchestration


async def guarded(name: str, work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Run one section; a failure is recorded in its figures instead of stopping the whole run."""
    try:
        result: dict[str, Any] = await work
    except Exception as exc:
        print(f"[{name}] failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return {"error": f"{type(exc).__name__}: {exc}"}
    return result


async def run_all(profile: Profile, folder: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Every section in turn."""
    results: dict[str, Any] = {}
    say(f"cold start: {profile.starts} runs each of b24-mcp --sandbox and the bare MCPServer, interleaved ...")
    results["cold_start"] = await guarded("cold start", cold_start(profile, folder))
    results["memory"] = results["cold_start"].pop("memory", {"error": results["cold_start"].get("error")})
    say(f"import time: {profile.import_runs} -X importtime start(s) of each ...")
    results["import_time"] = await guarded("import time", import_profile(profile, folder))
    say(f"per-call overhead: {profile.calls} previews through MCP vs direct crm.item.get ...")
    results["per_call"] = await guarded("per-call", per_call(profile, folder))
    say(
        f"bulk deletion of {BULK_ITEMS} deals under the 50/2 limit "
        f"(one by one capped at {profile.one_by_one_cap:.0f} s) ..."
    )
    results["bulk"] = await bulk(profile, folder)
    return results


# ---------------------------------------------------------------------------------------------- the report


def render_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with a title."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * width for width in widths)
    out = [title, line, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(out)


def fmt_ms(value: float | None) -> str:
    """Milliseconds for the table."""
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value >= 100 else f"{value:.2f} ms"


def fmt_s(value: float | None) -> str:
    """Seconds for the table."""
    return "-" if value is None else f"{value:.1f} s"


def report(results: dict[str, Any], profile_name: str) -> str:
    """The printed summary of every figure."""
    machine = results["machine"]
    parts = [
        f"b24-mcp benchmarks ({profile_name}) — {machine['date']}, git {machine['git']}",
        f"{machine['platform']}, Python {machine['python']}, {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
        f"{machine['memory_total_gib']} GiB RAM, mcp {machine['mcp_version']}",
        "",
    ]
    cold = results["cold_start"]
    if "error" in cold:
        parts.append(f"Cold start: failed: {cold['error']}")
    else:
        ours, bare = cold["b24_mcp"], cold["bare"]
        verdict = "ok" if cold["within_target"] else "ABOVE TARGET"
        cpu = cold.get("cpu") or {}
        cpu_ours, cpu_bare = cpu.get("b24_mcp") or {}, cpu.get("bare") or {}
        cpu_ratio = f"{cpu['ratio']:.3f} ({cpu['diff_ms']:+.0f} ms)" if "ratio" in cpu else "-"
        parts.append(
            render_table(
                f"1. Cold start: spawn → {cold['protocol']} handshake → tools/list answered ({cold['runs']} runs each)",
                ["server", "wall, median", "min", "max", "server CPU time, median"],
                [
                    [
                        "b24-mcp --sandbox",
                        fmt_ms(ours["median_ms"]),
                        fmt_ms(ours["min_ms"]),
                        fmt_ms(ours["max_ms"]),
                        fmt_ms(cpu_ours.get("median_ms")),
                    ],
                    [
                        "bare MCPServer",
                        fmt_ms(bare["median_ms"]),
                        fmt_ms(bare["min_ms"]),
                        fmt_ms(bare["max_ms"]),
                        fmt_ms(cpu_bare.get("median_ms")),
                    ],
                    [
                        "ratio / difference",
                        f"{cold['ratio']:.3f} ({cold['diff_ms']:+.0f} ms)",
                        f"target ≤ {COLD_START_TARGET:.2f}: {verdict}",
                        "",
                        cpu_ratio,
                    ],
                ],
            )
        )
        parts.append(
            f"   median of the paired differences (runs interleaved ABBA): {cold['median_paired_diff_ms']:+.0f} ms. "
            "Server CPU time: all its threads up to the answer\n"
            "   (/proc/<pid>/task/*/schedstat); close to the wall time, start-up is CPU-bound."
        )
    imports = results["import_time"]
    parts.append("")
    if "error" in imports:
        parts.append(f"Import time: failed: {imports['error']}")
    else:
        rows = [
            [i["module"], fmt_ms(i["cumulative_ms"]), fmt_ms(i["self_ms"])] for i in imports["top_own_by_cumulative"]
        ]
        runs = imports["runs"]
        title = f"   b24_mcp's own imports by cumulative time (-X importtime, median of {runs} run(s))"
        parts.append(render_table(title, ["module", "cumulative", "self"], rows))
        added = ", ".join(f"{p['package']} {p['self_ms']:.0f} ms" for p in imports["added_by_package"])
        totals = imports["total_self_ms"]
        heaviest = ", ".join(f"{m['module']} {m['self_ms']:.0f} ms" for m in imports["added_top_modules"][:4])
        parts.append(
            "   cumulative counts everything a module is first to import: b24_mcp.server pulls in the MCP SDK,\n"
            "   b24_mcp.settings pydantic, which the bare server imports anyway.\n"
            f"   Modules ours loads that the bare server never does: {imports['added_modules']}, "
            f"{imports['added_self_ms']:.0f} ms self time in all ({added});\n"
            f"   heaviest: {heaviest}.\n"
            f"   Sum of all imports under importtime: {totals['b24_mcp']:.0f} ms ours, {totals['bare']:.0f} ms bare "
            "(noisy: ±20 % from run to run here)."
        )
        phases = imports["phases_ms"]
        rows = [[name, fmt_ms(value)] for name, value in phases.items()]
        rows.append(["everything after the SDK import", fmt_ms(imports["project_phases_ms"])])
        title = f"   Start-up phases of b24-mcp --sandbox in one process (median of {imports['runs'] * 2 + 1} runs)"
        parts.append(render_table(title, ["phase", "time"], rows))
    call = results["per_call"]
    parts.append("")
    if "error" in call:
        parts.append(f"Per-call overhead: failed: {call['error']}")
    else:
        through, plain, floor = call["mcp_preview"], call["direct_get"], call["sdk_round_trip"]
        parts.append(
            render_table(
                f"2. Per-call overhead: {call['calls']} sequential calls each, emulator over HTTP on loopback",
                ["path", "median", "p95", "min", "max"],
                [
                    [
                        "MCP crm_item_delete preview (stdio → server → HTTP)",
                        fmt_ms(through["median_ms"]),
                        fmt_ms(through["p95_ms"]),
                        fmt_ms(through["min_ms"]),
                        fmt_ms(through["max_ms"]),
                    ],
                    [
                        "direct crm.item.get POST (httpx2)",
                        fmt_ms(plain["median_ms"]),
                        fmt_ms(plain["p95_ms"]),
                        fmt_ms(plain["min_ms"]),
                        fmt_ms(plain["max_ms"]),
                    ],
                    [
                        "ratio / difference (MCP vs direct)",
                        f"{call['ratio_median']:.2f} ({call['diff_median_ms']:+.2f} ms)",
                        f"{call['ratio_p95']:.2f} ({call['diff_p95_ms']:+.2f} ms)",
                        "",
                        "",
                    ],
                    [
                        "for scale: tools/list on the bare MCPServer (SDK stdio round trip)",
                        fmt_ms(floor["median_ms"]),
                        fmt_ms(floor["p95_ms"]),
                        fmt_ms(floor["min_ms"]),
                        fmt_ms(floor["max_ms"]),
                    ],
                ],
            )
        )
    parts.append("")
    parts.append(bulk_table(results["bulk"]))
    memory = results["memory"]
    parts.append("")
    if "error" in memory or "ratio" not in memory:
        parts.append(f"Peak memory: failed: {memory.get('error')}")
    else:
        ours, bare = memory["b24_mcp"], memory["bare"]
        parts.append(
            render_table(
                "4. Peak memory: VmHWM of the idle server after tools/list (median of the cold-start runs)",
                ["server", "VmHWM", "min", "max"],
                [
                    [
                        "b24-mcp --sandbox",
                        f"{ours['vm_hwm_mib']} MiB",
                        f"{ours['min_mib']} MiB",
                        f"{ours['max_mib']} MiB",
                    ],
                    ["bare MCPServer", f"{bare['vm_hwm_mib']} MiB", f"{bare['min_mib']} MiB", f"{bare['max_mib']} MiB"],
                    ["ratio / difference", f"{memory['ratio']:.3f} ({memory['diff_mib']:+.1f} MiB)", "", ""],
                ],
            )
        )
    return "\n".join(parts)


def bulk_table(figures: dict[str, Any]) -> str:
    """The bulk-deletion rows and the note on the limit floor."""
    batch, single = figures["batch"], figures["one_by_one"]
    header = ["way", "time", "items", "HTTP requests", "QUERY_LIMIT_EXCEEDED", "limit floor", "measured/floor"]
    rows: list[list[str]] = []
    if "error" in batch and not batch.get("available"):
        rows.append(["crm_item_delete_batch", f"failed: {batch['error']}", "", "", "", "", ""])
    elif not batch.get("available"):
        rows.append(["crm_item_delete_batch", "n/a (tool not available)", "", "", "", "", ""])
    else:
        label = fmt_s(batch["seconds"]) + (f" ({batch['error']})" if batch.get("error") else "")
        rows.append(
            [
                "crm_item_delete_batch (preview + delete)",
                label,
                f"{batch['gone_from_portal']}/{batch['items']} gone",
                f"{batch['http_requests']} (+{batch['batch_subcommands']} in batch)",
                str(batch["query_limit_exceeded"]),
                fmt_s(batch["limit_floor_s"]),
                ratio_text(batch["measured_over_floor"]),
            ]
        )
    if "error" in single and "done" not in single:
        rows.append(["crm_item_delete one by one", f"failed: {single['error']}", "", "", "", "", ""])
    else:
        rows.append(
            [
                f"crm_item_delete one by one (capped at {single['cap_s']:.0f} s)",
                fmt_s(single["seconds"]) + (f" ({single['error']})" if single.get("error") else ""),
                f"{single['done']}/{single['items']} gone",
                str(single["http_requests"]),
                str(single["query_limit_exceeded"]),
                fmt_s(limit_floor(single["http_requests"])),
                ratio_text(pacing(single["seconds"], single["http_requests"])["measured_over_floor"]),
            ]
        )
        if single.get("extrapolated") and single.get("estimated_total_s") is not None:
            rows.append(
                [
                    f"  one by one, extrapolated to {single['items']}",
                    f"≈ {fmt_s(single['estimated_total_s'])}",
                    f"{single['steady_s_per_item']:.2f} s/item steady",
                    f"≈ {round(single['requests_per_item'] * single['items'])}",
                    "",
                    fmt_s(single["estimated_limit_floor_s"]),
                    "",
                ]
            )
    speedup = f"speed-up of the batch tool over one by one: {figures['speedup']}x" if "speedup" in figures else ""
    table = render_table(f"3. Bulk deletion of {figures['items']} deals, portal limit 50 burst, 2/s", header, rows)
    note = "   note: " + FLOOR_NOTE
    extra = (
        "   one by one: 3 requests per item (preview = crm.item.get; delete = crm.item.get + crm.item.delete); the "
        "extrapolation adds the remaining items at the steady pace measured over the second half of the run."
    )
    return "\n".join(part for part in (table, speedup and "   " + speedup, extra, note) if part)


def ratio_text(value: float | None) -> str:
    """A ratio for the table, `-` when not meaningful."""
    return "-" if value is None else f"{value:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, run everything, print the table, write the JSON."""
    parser = argparse.ArgumentParser(
        description="Benchmarks of b24-mcp against the portal emulator on loopback (see benchmarks/README.md)."
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, shorter caps (a smoke run)")
    parser.add_argument("--json", type=Path, default=HERE / "results.json", help="where to write the figures")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    name = "quick" if args.quick else "full"

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine_info(), "profile": name, "settings": profile.__dict__.copy()}
    with tempfile.TemporaryDirectory(prefix="b24-bench-") as folder:
        results |= anyio.run(run_all, profile, Path(folder), say)
    results["wall_s"] = round(time.perf_counter() - started, 1)
    print(report(results, name))
    print(f"\n(whole run {results['wall_s']:.0f} s; figures written to {args.json})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
