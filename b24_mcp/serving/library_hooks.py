"""Every place b24-mcp reaches past a library's documented API, in one module.

Checked against uvicorn 0.54 and sse-starlette 3.7 (bounded in pyproject.toml; h11 0.16 as uvicorn brings it).
Each hook has a test in tests/test_library_hooks.py that fails by name when the library changes, instead of a drain
or a time-out silently no longer working:

- sse-starlette's process-wide `AppStatus`: hold event streams open through a drain, then release them;
- uvicorn's `Server.shutdown`, `Server.servers` and `server_state.connections` (each connection's `cycle`): stop
  accepting, then wait for tool calls still being answered;
- uvicorn's `H11Protocol` (`connection_made`, `data_received`, `connection_lost`, `conn`, `transport`,
  `connections`): a deadline for reading a request, and a cap on open connections.

Two more live where they are needed, to keep them off the stdio start; their tests are there too:
b24_mcp.settings reads an env file's bad line number from python-dotenv's `dotenv.parser.parse_stream`, and
b24_mcp.serving.terminal runs the MCP SDK's `MCPServer._lowlevel_server` over stdin read in the event loop (what
`MCPServer.run_stdio_async` does with the process's stdin, which a Ctrl-C at a terminal cannot interrupt).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any, ClassVar

import anyio
import h11
import uvicorn
from sse_starlette.sse import AppStatus
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- sse-starlette's AppStatus


def hold_event_streams() -> None:
    """Keep event streams open when uvicorn sees SIGTERM, until `release_event_streams()`.

    sse-starlette (under the SDK's responses) otherwise ends every stream the moment the signal arrives, which cuts a
    tool call's answer short.
    """
    AppStatus.enable_automatic_graceful_drain = False  # what AppStatus.disable_automatic_graceful_drain() does


def release_event_streams() -> None:
    """Let the event streams still open (listening streams) close: the drain is over."""
    AppStatus.should_exit = True


# ---------------------------------------------------------------------------------- uvicorn's server and connections


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose shutdown first waits up to `drain_seconds` for tool calls still being answered.

    At shutdown the SDK's session manager cancels its tasks, cutting any response still being written: a deletion
    between its journal's intent line and the portal's answer must first finish and be answered.
    """

    drain_seconds: ClassVar[float] = 30.0

    def unanswered(self) -> int:
        """POST requests (tool calls) whose response has not been sent in full."""
        cycles = (getattr(connection, "cycle", None) for connection in self.server_state.connections)
        return sum(
            1
            for cycle in cycles
            if cycle is not None and not cycle.response_complete and cycle.scope.get("method") == "POST"
        )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for listener in self.servers:
            listener.close()
        for _ in range(int(self.drain_seconds / 0.05)):
            if not self.unanswered():
                break
            await anyio.sleep(0.05)
        if self.unanswered():
            logger.warning("%d call(s) unanswered after %g s; stopping anyway", self.unanswered(), self.drain_seconds)
        release_event_streams()  # now the remaining (listening) streams may close
        await super().shutdown(sockets)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus two limits uvicorn does not have.

    - A request (head and body) must arrive whole within `read_seconds` of its first byte (of the connection, for
      the first request): uvicorn itself waits forever for a request that stalls half-sent.
    - At most `max_connections` stay open. Over that, the connection that has been reading a request the longest is
      closed to make room (a stalled one, nearly always: a real client sends its request at once); when every
      connection is busy with a request already read, the new one is refused.

    Configure through `guarded_protocol()`, which makes a subclass with the limits set.
    """

    read_seconds: ClassVar[float] = 10.0
    max_connections: ClassVar[int] = 1000
    _warned_at: ClassVar[float] = float("-inf")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self.reading_since: float | None = None  # when the request now being read began; None when none is

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_reading()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def data_received(self, data: bytes) -> None:
        if self._read_timer is None and self.conn.their_state is h11.IDLE:
            self._start_reading()  # the next request on a kept-alive connection begins
        super().data_received(data)
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            self._stop_reading()  # read whole (or the connection is done for)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_reading()
        super().connection_lost(exc)

    def _start_reading(self) -> None:
        self.reading_since = time.monotonic()
        self._read_timer = self.loop.call_later(self.read_seconds, self._read_timed_out)

    def _stop_reading(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        self.reading_since = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        self.reading_since = None
        logger.debug("closed a connection whose request did not arrive within %g s", self.read_seconds)
        self.transport.abort()

    def _make_room(self) -> None:
        reading = [
            connection
            for connection in self.connections
            if isinstance(connection, GuardedH11Protocol)
            and connection is not self
            and connection.reading_since is not None
        ]
        now = time.monotonic()
        if now - type(self)._warned_at > 60:
            type(self)._warned_at = now
            logger.warning(
                "%d connections open (the limit); %s",
                self.max_connections,
                "closing the ones that have been sending a request the longest" if reading else "refusing new ones",
            )
        if not reading:
            self._stop_reading()
            self.transport.abort()
            return
        oldest = min(reading, key=lambda connection: connection.reading_since or now)
        oldest._stop_reading()
        oldest.transport.abort()


def guarded_protocol(*, read_seconds: float, max_connections: int) -> type[GuardedH11Protocol]:
    """A `GuardedH11Protocol` with these limits, for `uvicorn.Config(http=...)`."""
    limits = {"read_seconds": read_seconds, "max_connections": max_connections}
    return type("GuardedH11Protocol", (GuardedH11Protocol,), limits)
