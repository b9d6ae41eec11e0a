"""Each reach past a library's documented API (b24_mcp.serving.library_hooks) still finds what it relies on."""

from __future__ import annotations

import inspect
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import h11
import pytest
import uvicorn
from sse_starlette import sse
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http import h11_impl

from b24_mcp.serving.library_hooks import DrainingServer, GuardedH11Protocol, guarded_protocol

pytestmark = pytest.mark.anyio

READ_SECONDS = 0.5


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers `ok`; a POST to /slow only after a second."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await anyio.sleep(1)
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


# ----------------------------------------------------------------------------- what the hooks rely on, by name


def test_sse_starlette_still_has_the_app_status_flags_the_drain_sets() -> None:
    assert isinstance(sse.AppStatus.should_exit, bool)
    assert isinstance(sse.AppStatus.enable_automatic_graceful_drain, bool)
    assert callable(sse.AppStatus.disable_automatic_graceful_drain)  # what hold_event_streams() does by hand


def test_sse_starlette_still_consults_the_flags_when_the_server_stops() -> None:
    watcher = inspect.getsource(sse._shutdown_watcher)
    assert "AppStatus.should_exit" in watcher
    assert "AppStatus.enable_automatic_graceful_drain" in watcher


def test_uvicorn_server_still_has_shutdown_listeners_and_connections() -> None:
    assert list(inspect.signature(uvicorn.Server.shutdown).parameters) == ["self", "sockets"]
    server = uvicorn.Server(uvicorn.Config(app=hello))
    assert isinstance(server.server_state.connections, set)
    assert "self.servers" in inspect.getsource(uvicorn.Server.startup)


def test_uvicorn_h11_connections_still_carry_a_cycle_with_completion_and_scope() -> None:
    assert "self.cycle" in inspect.getsource(h11_impl.H11Protocol.__init__)
    cycle_init = inspect.getsource(h11_impl.RequestResponseCycle.__init__)
    assert "self.response_complete = False" in cycle_init
    assert "self.scope = scope" in cycle_init


def test_uvicorn_h11_protocol_still_has_what_the_guard_overrides_and_reads() -> None:
    for method in ("connection_made", "data_received", "connection_lost"):
        assert callable(getattr(h11_impl.H11Protocol, method))
    init = inspect.getsource(h11_impl.H11Protocol.__init__)
    for attribute in ("self.conn = h11.Connection", "self.connections = server_state.connections", "self.loop ="):
        assert attribute in init
    assert "self.transport = transport" in inspect.getsource(h11_impl.H11Protocol.connection_made)


def test_uvicorn_config_still_takes_a_protocol_class() -> None:
    config = uvicorn.Config(app=hello, http=guarded_protocol(read_seconds=1, max_connections=2))
    config.load()
    assert issubclass(config.http_protocol_class, GuardedH11Protocol)


def test_h11_still_names_the_states_the_guard_watches() -> None:
    assert (h11.IDLE, h11.SEND_BODY, h11.DONE) == (h11.IDLE, h11.SEND_BODY, h11.DONE)
    assert h11.Connection(h11.SERVER).their_state is h11.IDLE


# ----------------------------------------------------------------------------------------- what the hooks do


@asynccontextmanager
async def guarded_server(max_connections: int = 100) -> AsyncIterator[DrainingServer]:
    """The draining uvicorn server with the guarded protocol on a loopback port, in this event loop."""
    protocol = guarded_protocol(read_seconds=READ_SECONDS, max_connections=max_connections)
    config = uvicorn.Config(hello, host="127.0.0.1", port=0, http=protocol, lifespan="off", log_level="warning")
    server = DrainingServer(config)
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve)
        for _ in range(1000):
            if server.started:
                break
            await anyio.sleep(0.01)
        try:
            yield server
        finally:
            server.should_exit = True


def port_of(server: DrainingServer) -> int:
    return int(server.servers[0].sockets[0].getsockname()[1])


def stalled(port: int, first_bytes: bytes = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(first_bytes)
    return sock


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def get(port: int) -> bytes:
    with anyio.fail_after(5):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = b""
            try:
                while True:
                    answer += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return answer


async def test_a_request_head_that_stalls_is_closed_after_the_read_deadline() -> None:
    async with guarded_server() as server:
        port = port_of(server)
        sock = await anyio.to_thread.run_sync(stalled, port)
        started = time.monotonic()
        assert await anyio.to_thread.run_sync(closed_by_server, sock, 5.0)
        assert READ_SECONDS * 0.8 < time.monotonic() - started < READ_SECONDS + 2
        sock.close()


async def test_a_silent_connection_is_closed_after_the_read_deadline() -> None:
    async with guarded_server() as server:
        port = port_of(server)
        sock = await anyio.to_thread.run_sync(stalled, port, b"")
        assert await anyio.to_thread.run_sync(closed_by_server, sock, 5.0)
        sock.close()


async def test_a_body_that_stalls_is_closed_after_the_read_deadline() -> None:
    head = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{"
    async with guarded_server() as server:
        port = port_of(server)
        sock = await anyio.to_thread.run_sync(stalled, port, head)
        assert await anyio.to_thread.run_sync(closed_by_server, sock, 5.0)
        sock.close()


def answers(sock: socket.socket, count: int) -> bytes:
    """Read `count` whole answers of `hello` (each ends with its body, `ok`)."""
    sock.settimeout(2)
    received = b""
    while received.count(b"200 OK") < count or not received.endswith(b"ok"):
        received += sock.recv(4096)
    return received


async def test_a_kept_alive_connection_may_idle_past_the_read_deadline() -> None:
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    async with guarded_server() as server:
        port = port_of(server)
        sock = await anyio.to_thread.run_sync(stalled, port, request)
        await anyio.to_thread.run_sync(answers, sock, 1)
        await anyio.sleep(READ_SECONDS * 2)  # idle between requests: uvicorn's keep-alive (5 s) governs that
        sock.sendall(request)
        await anyio.to_thread.run_sync(answers, sock, 1)
        sock.close()


async def test_the_next_request_on_a_kept_alive_connection_has_its_own_deadline() -> None:
    async with guarded_server() as server:
        port = port_of(server)
        sock = await anyio.to_thread.run_sync(stalled, port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await anyio.to_thread.run_sync(answers, sock, 1)
        sock.sendall(b"GET / HT")
        started = time.monotonic()
        assert await anyio.to_thread.run_sync(closed_by_server, sock, 4.0)
        assert time.monotonic() - started < READ_SECONDS + 2  # not uvicorn's keep-alive of 5 s
        sock.close()


async def test_when_connections_are_at_the_cap_the_longest_stalled_one_makes_room() -> None:
    async with guarded_server(max_connections=20) as server:
        port = port_of(server)
        socks = [await anyio.to_thread.run_sync(stalled, port) for _ in range(20)]
        await anyio.sleep(0.1)
        assert b"200 OK" in await get(port)
        assert await anyio.to_thread.run_sync(closed_by_server, socks[0], 1.0)
        for sock in socks:
            sock.close()


async def test_the_draining_server_counts_a_post_not_yet_answered() -> None:
    async with guarded_server() as server:
        sock = await anyio.to_thread.run_sync(
            stalled, port_of(server), b"POST /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
        )
        await anyio.sleep(0.3)
        assert server.unanswered() == 1
        await anyio.to_thread.run_sync(answers, sock, 1)
        assert server.unanswered() == 0
        sock.close()


async def test_when_every_connection_at_the_cap_is_being_answered_a_new_one_is_refused() -> None:
    slow = b"POST /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    async with guarded_server(max_connections=5) as server:
        port = port_of(server)
        busy = [await anyio.to_thread.run_sync(stalled, port, slow) for _ in range(5)]
        await anyio.sleep(0.2)
        newcomer = await anyio.to_thread.run_sync(stalled, port, b"")
        assert await anyio.to_thread.run_sync(closed_by_server, newcomer, 0.5)
        for sock in busy:
            await anyio.to_thread.run_sync(answers, sock, 1)  # the calls under way are not disturbed
            sock.close()
        newcomer.close()


def test_python_dotenv_still_reports_a_line_it_cannot_parse_by_number() -> None:
    from io import StringIO

    from dotenv.parser import parse_stream

    bindings = list(parse_stream(StringIO("A=1\nB='unterminated\n")))
    assert [(binding.error, binding.original.line) for binding in bindings] == [(False, 1), (True, 2)]


def test_the_mcp_server_still_runs_its_lowlevel_server_over_given_streams() -> None:
    """serving/terminal.py serves a person's terminal as `MCPServer.run_stdio_async` serves stdio."""
    import inspect

    from mcp.server.mcpserver import MCPServer

    lowlevel = MCPServer("hooks")._lowlevel_server
    assert list(inspect.signature(lowlevel.run).parameters)[:3] == [
        "read_stream",
        "write_stream",
        "initialization_options",
    ]
    assert callable(lowlevel.create_initialization_options)
    assert "self._lowlevel_server.run(" in inspect.getsource(MCPServer.run_stdio_async)
