"""The `shared_state` benchmark: what sharing the state in PostgreSQL (B24_DATABASE_URL) costs a call, and what
three replicas sharing it get through.

- **Per call** (stdio, ABBA pairs): b24-mcp with `B24_DATABASE_URL` against b24-mcp without it (the embedded
  default: the file journal, in-process bucket and spent tokens), both at once against the same emulator (no rate
  limit, client-side pacing out of the way), in the same run. A preview (`crm_item_delete` of deal 42), then a
  deletion (`dryRun: false` with the token of an untimed preview, each side on its own extra deals).
- **Throughput**: `b24-mcp --transport http --stateless` replicas sharing the database, `WORKERS` concurrent
  clients (the SDK's, one session each, spread over the replicas) calling for a fixed time: previews, then
  deletions (`B24_CONFIRM=none`: read, intent, delete, outcome). One replica, then three.

The database is a throwaway cluster of the machine's PostgreSQL (`tests/postgres_cluster.py`, fsync on, as a real
server), or `B24_BENCH_DATABASE_URL` (its `b24mcp` schema is dropped first). Nothing of b24-mcp is imported.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    ExitStack,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

import anyio
import httpx2
from figures import SPREAD_HEADER, Comparison, Table, comparison_rows
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from processes import Emulator, describe_error, interleave, mcp_server, structured

HERE = Path(__file__).resolve().parent
OURS = ("-m", "b24_mcp")
SECRET = "bench-confirm-secret-0123456789abcdef0123"
HTTP_TOKEN = "bench-http-token-0123456789abcdef0123456789"
WORKERS = 12
DEAL = 2
UNPACED = {"B24_RATE_BURST": "10000", "B24_RATE_PER_SECOND": "1000"}


class Setup(Protocol):
    """What `run.Setup` offers (this module cannot import run.py, which imports it)."""

    @property
    def profile(self) -> Any: ...

    @property
    def folder(self) -> Path: ...

    def say(self, text: str) -> None: ...

    def env(self, **variables: str) -> dict[str, str]: ...

    def errlog(self, name: str) -> AbstractContextManager[TextIO]: ...

    def emulator(
        self, *, rate_limit: tuple[int, float] | None = None, extra_deals: int = 0
    ) -> AbstractAsyncContextManager[Emulator]: ...


@dataclass(frozen=True)
class Counts:
    calls: int
    deletions: int
    seconds: float


def counts(profile: Any) -> Counts:
    return Counts(30, 15, 4.0) if profile.name == "quick" else Counts(200, 100, 15.0)


@dataclass(frozen=True)
class Throughput:
    """Calls completed by `workers` clients over `replicas` replicas in `seconds`."""

    replicas: int
    workers: int
    seconds: float
    previews_per_s: float
    deletions_per_s: float
    errors: int


@dataclass(frozen=True)
class SharedStateCost:
    """Shared state against the embedded default, per call; and the throughput of replicas sharing it."""

    calls: int
    deletions: int
    database: str
    preview_ms: Comparison
    deletion_ms: Comparison
    throughput: list[Throughput]

    def tables(self) -> list[Table]:
        """Per call, then throughput."""
        rows = comparison_rows(self.preview_ms, "preview, shared state (PostgreSQL)", "preview, embedded (default)")
        rows += [["", "", "", "", "", ""]]
        rows += comparison_rows(self.deletion_ms, "deletion, shared state (PostgreSQL)", "deletion, embedded (default)")
        per_call = Table(
            "Shared state: the cost per call of B24_DATABASE_URL against the embedded default",
            ["", *SPREAD_HEADER],
            rows,
            [
                f"{self.calls} previews and {self.deletions} deletions of each in ABBA order, both servers over stdio "
                f"at once, the emulator over plain HTTP without a rate limit; database: {self.database}.",
                "a preview adds one statement (the shared bucket); a deletion adds the bucket for its two portal "
                "requests, the spent token, and the intent and outcome rows (each committed), where the embedded "
                "default fsyncs two journal lines.",
            ],
        )
        throughput = Table(
            f"Shared state: throughput of stateless HTTP replicas sharing the database ({WORKERS} clients)",
            ["replicas", "previews/s", "deletions/s", "errors", "seconds each"],
            [
                [
                    str(run.replicas),
                    f"{run.previews_per_s:.0f}",
                    f"{run.deletions_per_s:.0f}",
                    str(run.errors),
                    f"{run.seconds:g}",
                ]
                for run in self.throughput
            ],
            [
                "each client keeps one SDK session with one replica and calls in a loop; deletions with "
                "B24_CONFIRM=none (read, intent row, delete, outcome row); every process, the emulator and "
                "PostgreSQL share the machine's CPUs."
            ],
        )
        return [per_call, throughput]


@asynccontextmanager
async def shared_database() -> AsyncIterator[str]:
    """`B24_BENCH_DATABASE_URL` (emptied of b24-mcp's schema), or a throwaway cluster with fsync on."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from postgres_cluster import Cluster, Postgres, find_binaries

    given = os.environ.get("B24_BENCH_DATABASE_URL")
    if given:
        Postgres(given, None).reset()
        yield given
        return
    binaries = find_binaries()
    if isinstance(binaries, str):
        raise RuntimeError(f"no PostgreSQL: {binaries} (or set B24_BENCH_DATABASE_URL)")
    cluster = await anyio.to_thread.run_sync(lambda: Cluster.create(binaries, durable=True))
    try:
        yield cluster.url
    finally:
        await anyio.to_thread.run_sync(cluster.destroy)


def timed_preview(client: Client) -> Callable[[], Awaitable[float]]:
    async def call() -> float:
        started = time.perf_counter()
        result = await client.call_tool("crm_item_delete", {"entityTypeId": DEAL, "id": 42})
        elapsed = (time.perf_counter() - started) * 1000
        if result.is_error or structured(result).get("status") != "preview":
            raise RuntimeError(f"preview: {describe_error(result)}")
        return elapsed

    return call


def timed_deletion(client: Client, ids: list[int]) -> Callable[[], Awaitable[float]]:
    """Preview the next of `ids` (untimed), then time its deletion with the token."""

    async def call() -> float:
        item_id = ids.pop()
        preview = await client.call_tool("crm_item_delete", {"entityTypeId": DEAL, "id": item_id})
        token = structured(preview).get("confirmationToken")
        if preview.is_error or not token:
            raise RuntimeError(f"preview {item_id}: {describe_error(preview)}")
        arguments = {"entityTypeId": DEAL, "id": item_id, "dryRun": False, "confirmationToken": token}
        started = time.perf_counter()
        result = await client.call_tool("crm_item_delete", arguments)
        elapsed = (time.perf_counter() - started) * 1000
        if result.is_error or structured(result).get("status") != "deleted":
            raise RuntimeError(f"delete {item_id}: {describe_error(result)}")
        return elapsed

    return call


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=30)


@contextmanager
def http_replicas(env: dict[str, str], count: int, folder: Path) -> Iterator[list[str]]:
    """`count` `b24-mcp --transport http --stateless` processes on free loopback ports: their /mcp URLs."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("B24_")}
    with ExitStack() as stack:
        ports = []
        for index in range(count):
            port = free_port()
            stderr = stack.enter_context((folder / f"replica-{count}-{index}.stderr.txt").open("w"))
            process = subprocess.Popen(
                [sys.executable, *OURS, "--transport", "http", "--stateless", "--port", str(port)],
                env=clean | env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=tempfile.gettempdir(),
            )
            stack.callback(stop, process)
            ports.append((port, process))
        deadline = time.monotonic() + 60
        for port, process in ports:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("a replica did not start (see its stderr in the scratch folder)") from None
                    time.sleep(0.05)
        yield [f"http://127.0.0.1:{port}/mcp" for port, _ in ports]


async def calls_per_second(
    urls: list[str], seconds: float, arguments: Callable[[], dict[str, Any] | None]
) -> tuple[float, int]:
    """`WORKERS` clients over `urls` calling `crm_item_delete` with `arguments()` for `seconds` (or until it
    returns None): completed calls per second, and the calls that failed. Each client first opens its session and
    makes one untimed preview (the replicas' first calls open their pools); the clock starts when all have."""
    done = errors = ready = 0
    go = anyio.Event()
    window: list[float] = []

    async def worker(url: str) -> None:
        nonlocal done, errors, ready
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {HTTP_TOKEN}"}, timeout=60)
        async with Client(streamable_http_client(url, http_client=http)) as session:
            await session.call_tool("crm_item_delete", {"entityTypeId": DEAL, "id": 42})
            ready += 1
            if ready == WORKERS:
                window.append(time.perf_counter())
                go.set()
            await go.wait()
            while time.perf_counter() < window[0] + seconds and (asked := arguments()) is not None:
                result = await session.call_tool("crm_item_delete", asked)
                if result.is_error:
                    errors += 1
                else:
                    done += 1

    async with anyio.create_task_group() as group:
        for index in range(WORKERS):
            group.start_soon(worker, urls[index % len(urls)])
    return done / (time.perf_counter() - window[0]), errors


async def throughput(setup: Setup, env: dict[str, str], replicas: int, ids: list[int], seconds: float) -> Throughput:
    with http_replicas(env, replicas, setup.folder) as urls:
        previews, preview_errors = await calls_per_second(urls, seconds, lambda: {"entityTypeId": DEAL, "id": 42})

    with http_replicas(env | {"B24_CONFIRM": "none"}, replicas, setup.folder) as urls:

        def next_deletion() -> dict[str, Any] | None:
            return {"entityTypeId": DEAL, "id": ids.pop(), "dryRun": False} if ids else None

        deletions, deletion_errors = await calls_per_second(urls, seconds, next_deletion)
    return Throughput(
        replicas, WORKERS, seconds, round(previews, 1), round(deletions, 1), preview_errors + deletion_errors
    )


async def shared_state(setup: Setup) -> SharedStateCost:
    """Per-call cost against the embedded default, then throughput with one and three replicas."""
    plan = counts(setup.profile)
    async with shared_database() as url:
        database = "B24_BENCH_DATABASE_URL" if os.environ.get("B24_BENCH_DATABASE_URL") else "throwaway cluster"
        extra = 2 * plan.deletions + int(plan.seconds * 2 * 200)
        async with setup.emulator(extra_deals=extra) as portal:
            ids = await portal.extra_ids()
            ours_ids, embedded_ids, load_ids = (
                ids[: plan.deletions],
                ids[plan.deletions : 2 * plan.deletions],
                ids[2 * plan.deletions :],
            )
            base = setup.env(**portal.env(), **UNPACED, B24_CONFIRM="token", B24_CONFIRM_SECRET=SECRET)
            with setup.errlog("shared-state") as log_shared, setup.errlog("embedded-state") as log_embedded:
                async with (
                    mcp_server(OURS, base | {"B24_DATABASE_URL": url}, log_shared) as shared,
                    mcp_server(OURS, base, log_embedded) as embedded,
                ):
                    for _ in range(5):
                        await timed_preview(shared)()
                        await timed_preview(embedded)()
                    setup.say(f"  {plan.calls} previews of each")
                    shared_ms, embedded_ms = await interleave(
                        plan.calls, timed_preview(shared), timed_preview(embedded)
                    )
                    setup.say(f"  {plan.deletions} deletions of each")
                    deleted_shared, deleted_embedded = await interleave(
                        plan.deletions, timed_deletion(shared, ours_ids), timed_deletion(embedded, embedded_ids)
                    )
            load = base | {"B24_DATABASE_URL": url, "B24_MCP_HTTP_TOKEN": HTTP_TOKEN}
            runs = []
            for replicas in (1, 3):
                setup.say(f"  throughput, {replicas} replica(s), {plan.seconds:g} s each way")
                runs.append(await throughput(setup, load, replicas, load_ids, plan.seconds))
    return SharedStateCost(
        plan.calls,
        plan.deletions,
        database,
        Comparison.of(shared_ms, embedded_ms, "ms"),
        Comparison.of(deleted_shared, deleted_embedded, "ms"),
        runs,
    )
