"""The processes the benchmarks talk to: MCP servers over stdio through the SDK's `Client`, and the portal
emulator in a process of its own (`emulator_process.py`); what /proc says about them; interleaved measurement.

Nothing of b24-mcp is imported but the sandbox's webhook constants: the server is only ever a subprocess.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

import anyio
from anyio.abc import ByteSendStream
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult

from b24_mcp.sandbox.seed import SANDBOX_USER_ID, SANDBOX_WEBHOOK_CODE

EMULATOR_SCRIPT = Path(__file__).resolve().parent / "emulator_process.py"
# The initialize handshake (2025-11-25), as today's assistants (Claude Code, Cursor, ...) speak it.
CLIENT_MODE = "legacy"
MAX_LINE = 1 << 20

T = TypeVar("T")


async def interleave(
    runs: int, ours: Callable[[], Awaitable[T]], baseline: Callable[[], Awaitable[T]]
) -> tuple[list[T], list[T]]:
    """`runs` pairs of measurements in ABBA order (ours first in even pairs, the baseline first in odd ones), so
    that drift on the machine and any first/second position effect hit both alike."""
    a: list[T] = []
    b: list[T] = []
    for index in range(runs):
        if index % 2 == 0:
            a.append(await ours())
            b.append(await baseline())
        else:
            b.append(await baseline())
            a.append(await ours())
    return a, b


def read_log(log: TextIO) -> str:
    """What a child has written to its stderr file so far (read through the path: seeking `log` would move the
    child's write offset too, as it shares the open file)."""
    return Path(log.name).read_text(errors="replace")


def tail(log: TextIO, lines: int = 5) -> str:
    """The last lines of a child's stderr, for error messages."""
    return " | ".join(read_log(log).strip().splitlines()[-lines:])


@asynccontextmanager
async def mcp_server(args: Sequence[str], env: dict[str, str], errlog: TextIO) -> AsyncIterator[Client]:
    """A server subprocess (`python <args>`) with the SDK's client on its stdio, initialized. An error gets the
    end of the server's stderr as a note."""
    params = StdioServerParameters(command=sys.executable, args=list(args), env=env, cwd=tempfile.gettempdir())
    try:
        async with Client(stdio_client(params, errlog=errlog), mode=CLIENT_MODE, cache=None) as client:
            yield client
    except Exception as exc:
        if said := tail(errlog):
            exc.add_note(f"{' '.join(args)}'s stderr: {said}")
        raise


@dataclass(frozen=True)
class Traffic:
    """What the emulator received: top-level HTTP requests and `batch` sub-commands by method, and how many
    requests it refused with QUERY_LIMIT_EXCEEDED."""

    http_requests: int
    requests: dict[str, int]
    batch_subcommands: dict[str, int]
    query_limit_exceeded: int

    @classmethod
    def of(cls, stats: dict[str, Any]) -> Traffic:
        """From the emulator's `stats` answer."""
        requests = {str(k): int(v) for k, v in stats["requests"].items()}
        subcommands = {str(k): int(v) for k, v in stats["batch_subcommands"].items()}
        return cls(sum(requests.values()), requests, subcommands, int(stats["query_limit_exceeded"]))

    def since(self, before: Traffic) -> Traffic:
        """The traffic between an earlier snapshot and this one."""

        def minus(now: dict[str, int], then: dict[str, int]) -> dict[str, int]:
            return {k: v - then.get(k, 0) for k, v in now.items() if v - then.get(k, 0)}

        requests = minus(self.requests, before.requests)
        return Traffic(
            sum(requests.values()),
            requests,
            minus(self.batch_subcommands, before.batch_subcommands),
            self.query_limit_exceeded - before.query_limit_exceeded,
        )


@dataclass(frozen=True)
class Emulator:
    """A running `emulator_process.py`: its origin, and its stats on request."""

    origin: str
    commands: ByteSendStream
    answers: BufferedByteReceiveStream

    @property
    def webhook(self) -> str:
        """The sandbox administrator's webhook on this emulator."""
        return f"{self.origin}/rest/{SANDBOX_USER_ID}/{SANDBOX_WEBHOOK_CODE}/"

    def env(self) -> dict[str, str]:
        """The settings pointing b24-mcp (and the minimal server) at this emulator over plain HTTP."""
        return {"B24_WEBHOOK_URL": self.webhook, "B24_ALLOW_HTTP": "true"}

    async def ask(self, command: str) -> Any:
        """Send one command, read its one-line JSON answer."""
        await self.commands.send(command.encode() + b"\n")
        with anyio.fail_after(10):
            return json.loads(await self.answers.receive_until(b"\n", MAX_LINE))

    async def traffic(self) -> Traffic:
        """Everything received so far."""
        return Traffic.of(await self.ask("stats"))

    async def extra_remaining(self) -> int:
        """How many of the extra deals are still there."""
        return int((await self.ask("stats"))["extra_remaining"])

    async def extra_ids(self) -> list[int]:
        """The ids of the extra deals."""
        return [int(item_id) for item_id in await self.ask("ids")]


@asynccontextmanager
async def emulator(
    errlog: TextIO, *, rate_limit: tuple[int, float] | None = None, extra_deals: int = 0
) -> AsyncIterator[Emulator]:
    """The seeded emulator in its own process on a free loopback port, its stderr to `errlog`; stopped by closing
    its stdin."""
    command = [sys.executable, str(EMULATOR_SCRIPT), "--extra-deals", str(extra_deals)]
    if rate_limit is not None:
        command += ["--rate-limit", f"{rate_limit[0]}/{rate_limit[1]}"]
    process = await anyio.open_process(command, stderr=errlog, cwd=tempfile.gettempdir())
    try:
        assert process.stdin is not None
        assert process.stdout is not None
        answers = BufferedByteReceiveStream(process.stdout)
        try:
            with anyio.fail_after(30):
                origin = (await answers.receive_until(b"\n", MAX_LINE)).decode().strip()
        except (anyio.IncompleteRead, TimeoutError) as exc:
            raise RuntimeError(f"the emulator did not start: {tail(errlog)}") from exc
        yield Emulator(origin, process.stdin, answers)
    finally:
        with anyio.CancelScope(shield=True):
            if process.stdin is not None:
                await process.stdin.aclose()
            with anyio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


def child_pid(args: Sequence[str]) -> int | None:
    """The pid of this process's child whose command line is `python <args>` (the stdio client spawned it)."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = [part.decode(errors="replace") for part in (entry / "cmdline").read_bytes().split(b"\0") if part]
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == me and argv[1:] == list(args):
            return int(entry.name)
    return None


def vm_hwm_mib(pid: int | None) -> float | None:
    """The RSS high-water mark (VmHWM) of a process, in MiB."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_ms(pid: int | None) -> float | None:
    """CPU time a process has used so far, all its threads (`/proc/<pid>/task/*/schedstat`, in ns), in ms."""
    if pid is None:
        return None
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        return sum(int((task / "schedstat").read_text().split()[0]) for task in tasks) / 1e6
    except (OSError, ValueError, IndexError):
        return None


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
