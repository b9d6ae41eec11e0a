"""Serving stdio to a person at a terminal: a note on what is going on, and Ctrl-C that ends it at once.

An MCP client starts the server with pipes; a person who types `b24-mcp` (or `b24-mcp --sandbox`) gets stdin from
the terminal. The SDK reads stdin in a worker thread, which a Ctrl-C cannot interrupt: the server would wait for
Enter, then print a traceback. Here stdin is read in the event loop itself (`wait_readable`), so Ctrl-C cancels it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server

_READ_BYTES = 1 << 16


def terminal_note(*, sandbox: bool) -> str:
    """What a person who started the stdio server by hand reads on stderr."""
    portal = "the sandbox (an emulated portal)" if sandbox else "the configured portal"
    return (
        f"b24-mcp serves MCP over stdio for {portal} and waits for an MCP client to talk to it here; it prints "
        "nothing meanwhile.\n"
        "  To see it work: b24-mcp demo\n"
        "  To try it by hand: npx @modelcontextprotocol/inspector b24-mcp --sandbox\n"
        "  To connect an assistant: see the README (Connect your portal).\n"
        "Ctrl-C stops it."
    )


class TerminalLines:
    """The lines typed at the terminal on `fd`, read without a thread (UTF-8, a bad byte replaced)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def __aiter__(self) -> TerminalLines:
        return self

    async def __anext__(self) -> str:
        while b"\n" not in self.buffer:
            await anyio.wait_readable(self.fd)
            chunk = os.read(self.fd, _READ_BYTES)
            if not chunk:  # Ctrl-D, or the terminal went away
                if not self.buffer:
                    raise StopAsyncIteration
                line, self.buffer = self.buffer, b""
                return line.decode("utf-8", errors="replace")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return (line + b"\n").decode("utf-8", errors="replace")


def serve_terminal(server: MCPServer) -> int:
    """Serve stdio with stdin read in the event loop; the exit status (130 after Ctrl-C, without a traceback)."""

    async def serve() -> None:
        lowlevel: Any = server._lowlevel_server  # what `MCPServer.run_stdio_async` runs, with our stdin
        stdin: Any = TerminalLines(sys.stdin.fileno())
        async with stdio_server(stdin=stdin) as (read_stream, write_stream):
            await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())

    try:
        anyio.run(serve)
    except KeyboardInterrupt:
        print("b24-mcp: stopped.", file=sys.stderr)
        return 130
    return 0
