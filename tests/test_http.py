"""Streamable HTTP for a shared team server: bearer auth, safe binding, stateless replicas, graceful shutdown.

Request decisions are tested against the app `b24-mcp --transport http` serves, assembled as the command does and
served in this process (`serving_http`); a `b24-mcp` process only where only a process shows it (bind refusal,
SIGTERM, the open-files limit, what reaches stderr): those tests are marked `process`."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from starlette.types import Receive, Scope, Send

from b24_mcp.sandbox.emulator import Fault, Portal
from b24_mcp.serving.library_hooks import GuardedH11Protocol
from b24_mcp.serving.transport import REQUEST_READ_SECONDS, http_config, start_warnings
from b24_mcp.settings import Settings
from helpers import TLSFiles, assert_no_secret, free_port, http_server, run_b24, serving_http, webhook_env

pytestmark = pytest.mark.anyio

TOKEN = "team-token-5f2a9c1e7b3d4a6f8e0c2b4d6f8a0c2e"
SECRET = "shared-confirm-secret-0123456789"
READ_SECONDS = 1.0  # the request read deadline the in-process server is given (the command's is REQUEST_READ_SECONDS)


# `python -c LIMITED N args...` runs `b24-mcp args...` allowed N open files at most, soft and hard limit alike.
LIMITED = (
    "import resource, runpy, sys; files = int(sys.argv.pop(1)); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (files, files)); "
    "runpy.run_module('b24_mcp', run_name='__main__', alter_sys=True)"
)


@pytest.fixture
def env(webhook_url: str, tls: TLSFiles, journal_path: Path) -> dict[str, str]:
    return webhook_env(webhook_url, tls, journal_path) | {
        "B24_CONFIRM": "token",
        "B24_MCP_HTTP_TOKEN": TOKEN,
        "B24_CONFIRM_SECRET": SECRET,
    }


@pytest.fixture
def settings(make_settings: Callable[..., Settings], webhook_url: str, tls: TLSFiles) -> Callable[..., Settings]:
    """The settings `env` gives a process, for the server served in this process; `**changes` on top."""

    def make(**changes: Any) -> Settings:
        values = {"webhook_url": webhook_url, "ca_bundle": tls.ca_bundle, "mcp_http_token": TOKEN}
        return make_settings(**(values | {"confirm_secret": SECRET} | changes))

    return make


def client(url: str, token: str | None = TOKEN, *, terminate_on_close: bool = True) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=30)
    return Client(streamable_http_client(url, http_client=http, terminate_on_close=terminate_on_close))


async def list_tools_raw(url: str, headers: dict[str, str] | None = None, token: str | None = TOKEN) -> httpx2.Response:
    """A bare `tools/list` POST (stateless servers answer it without a session), with these headers."""
    sent = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    sent |= {"authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(
            url, headers=sent | (headers or {}), content=b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
        )


async def call(url: str, arguments: dict[str, Any]) -> dict[str, Any]:
    async with client(url) as session:
        result = await session.call_tool("crm_item_delete", arguments)
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x"])
async def test_a_request_without_the_token_gets_401(
    settings: Callable[..., Settings], authorization: str | None
) -> None:
    async with serving_http(settings()) as url:
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        if authorization:
            headers["authorization"] = authorization
        async with httpx2.AsyncClient() as http:
            response = await http.post(url, headers=headers, content=b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}')
    assert response.status_code == 401
    assert "bearer" in response.headers.get("www-authenticate", "").lower()


async def test_tools_are_listed_with_the_token(settings: Callable[..., Settings]) -> None:
    async with serving_http(settings()) as url, client(url) as session:
        tools = await session.list_tools()
    assert sorted(tool.name for tool in tools.tools) == ["crm_entity_types", "crm_item_delete", "crm_item_delete_batch"]


@pytest.mark.process
def test_a_non_loopback_binding_without_a_token_is_refused(env: dict[str, str]) -> None:
    without_token = {k: v for k, v in env.items() if k != "B24_MCP_HTTP_TOKEN"}
    done = run_b24("--transport", "http", "--host", "0.0.0.0", "--port", str(free_port()), env=without_token)
    assert done.returncode == 2
    assert "B24_MCP_HTTP_TOKEN is not set" in done.stderr


async def test_stateless_replicas_honour_each_others_tokens(settings: Callable[..., Settings], portal: Portal) -> None:
    async with (
        serving_http(settings(), stateless=True) as first,
        serving_http(settings(), stateless=True) as second,
    ):
        preview = await call(first, {"entityTypeId": 2, "id": 42})
        deleted = await call(
            second, {"entityTypeId": 2, "id": 42, "dryRun": False, "confirmationToken": preview["confirmationToken"]}
        )
    assert deleted["status"] == "deleted"
    assert 42 not in portal.items[2]


async def test_replicas_with_different_secrets_refuse_each_others_tokens(
    settings: Callable[..., Settings], portal: Portal
) -> None:
    other = settings(confirm_secret="another-secret-entirely-987654321")
    async with serving_http(settings(), stateless=True) as first, serving_http(other, stateless=True) as second:
        preview = await call(first, {"entityTypeId": 2, "id": 42})
        refused = await call(
            second, {"entityTypeId": 2, "id": 42, "dryRun": False, "confirmationToken": preview["confirmationToken"]}
        )
    assert refused["error"] == "INVALID_CONFIRMATION_TOKEN"
    assert 42 in portal.items[2]


@pytest.mark.process
async def test_sigterm_lets_an_in_flight_deletion_finish(
    env: dict[str, str], portal: Portal, journal_path: Path
) -> None:
    # A bare JSON-RPC POST: the SDK client would also keep a listening stream that reconnects while the server stops.
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "crm_item_delete", "arguments": {"entityTypeId": 2, "id": 42, "dryRun": False}},
    }
    headers = {
        "authorization": f"Bearer {TOKEN}",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2025-11-25",
    }
    with http_server(env | {"B24_CONFIRM": "none"}, "--stateless") as (url, process, _):
        portal.inject("crm.item.delete", Fault(status=200, json={"result": []}, perform=True, delay=1.5))

        async def stop_soon() -> None:
            await anyio.sleep(0.7)
            process.send_signal(signal.SIGTERM)

        async with httpx2.AsyncClient(timeout=30) as http, anyio.create_task_group() as group:
            group.start_soon(stop_soon)
            response = await http.post(url, json=call, headers=headers)
        assert process.wait(timeout=20) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once stopped
    data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
    answer = json.loads(data[-1] if data else response.text)
    assert answer["result"]["structuredContent"]["status"] == "deleted"
    events = [json.loads(line)["event"] for line in journal_path.read_text().splitlines()]
    assert events == ["intent", "deleted"]


# ------------------------------------------------------------------------------------ Host and Origin (DNS rebinding)

BINDS = ["127.0.0.2", "0:0:0:0:0:0:0:1"]  # loopback, but not the spellings the SDK protects by itself


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


@pytest.mark.parametrize("host", BINDS)
async def test_a_request_naming_a_foreign_host_is_refused(settings: Callable[..., Settings], host: str) -> None:
    async with serving_http(settings(), stateless=True, host=host) as url:
        response = await list_tools_raw(url, {"host": f"evil.example:{port_of(url)}"})
    assert response.status_code == 421


@pytest.mark.parametrize("host", BINDS)
async def test_a_request_from_a_foreign_origin_is_refused(settings: Callable[..., Settings], host: str) -> None:
    async with serving_http(settings(), stateless=True, host=host) as url:
        response = await list_tools_raw(url, {"origin": "http://evil.example"})
    assert response.status_code == 403


async def test_a_page_elsewhere_cannot_use_a_loopback_server_without_a_token(
    settings: Callable[..., Settings],
) -> None:
    async with serving_http(settings(mcp_http_token=None), stateless=True, host="127.0.0.2") as url:
        rebound = await list_tools_raw(url, {"host": f"evil.example:{port_of(url)}"}, token=None)
        cross_origin = await list_tools_raw(url, {"origin": "http://evil.example"}, token=None)
        direct = await list_tools_raw(url, token=None)
    assert (rebound.status_code, cross_origin.status_code, direct.status_code) == (421, 403, 200)


async def test_every_spelling_of_the_bound_ipv6_address_is_accepted(settings: Callable[..., Settings]) -> None:
    async with serving_http(settings(), stateless=True, host="0:0:0:0:0:0:0:1") as url:
        port = port_of(url)
        spellings = ["[::1]", "[0:0:0:0:0:0:0:1]", "[0000:0000:0000:0000:0000:0000:0000:0001]", "localhost"]
        statuses = [(await list_tools_raw(url, {"host": f"{name}:{port}"})).status_code for name in spellings]
        same_origin = await list_tools_raw(url, {"origin": f"http://[::1]:{port}"})
    assert statuses == [200] * len(spellings)
    assert same_origin.status_code == 200


async def test_the_names_and_origins_allowed_by_setting_are_accepted(settings: Callable[..., Settings]) -> None:
    allowed = settings(mcp_allowed_hosts="mcp.example.com, https://tools.example")
    async with serving_http(allowed, stateless=True, host="127.0.0.2") as url:
        proxied = await list_tools_raw(url, {"host": "mcp.example.com", "origin": "https://mcp.example.com"})
        other_tool = await list_tools_raw(url, {"origin": "https://tools.example"})
        unlisted = await list_tools_raw(url, {"origin": "https://tools.example:8443"})
    assert (proxied.status_code, other_tool.status_code, unlisted.status_code) == (200, 200, 403)


async def test_a_server_on_ipv6_loopback_with_a_token_serves_a_client(settings: Callable[..., Settings]) -> None:
    async with serving_http(settings(), host="::1") as url, client(url) as session:
        tools = await session.list_tools()
    assert "crm_item_delete" in [tool.name for tool in tools.tools]


def test_a_wildcard_bind_without_allowed_hosts_says_what_to_set(make_settings: Callable[..., Settings]) -> None:
    (warning,) = start_warnings(make_settings(mcp_http_token=TOKEN), "0.0.0.0", stateless=False)
    assert "B24_MCP_ALLOWED_HOSTS is empty" in warning
    assert TOKEN not in warning


# ---------------------------------------------------------------------------------- the bearer token, and no OAuth


async def test_a_wrong_token_is_called_wrong_and_no_oauth_metadata_is_named(settings: Callable[..., Settings]) -> None:
    async with serving_http(settings()) as url:
        response = await list_tools_raw(url, token="wrong-token-" + "0" * 32)
    challenge = response.headers["www-authenticate"]
    assert response.status_code == 401
    assert challenge == (
        'Bearer realm="b24-mcp", error="invalid_token", '
        'error_description="the bearer token is not this server\'s B24_MCP_HTTP_TOKEN"'
    )
    assert response.json()["error"] == "invalid_token"


async def test_a_missing_token_is_called_missing(settings: Callable[..., Settings]) -> None:
    async with serving_http(settings()) as url:
        response = await list_tools_raw(url, token=None)
    assert response.status_code == 401
    assert (
        'error_description="no bearer token: send Authorization: Bearer <B24_MCP_HTTP_TOKEN>"'
        in (response.headers["www-authenticate"])
    )


@pytest.mark.parametrize(
    "path",
    ["/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp",
     "/.well-known/oauth-authorization-server"],
)  # fmt: skip
async def test_no_oauth_discovery_document_is_served(settings: Callable[..., Settings], path: str) -> None:
    async with serving_http(settings()) as url:
        origin = url.removesuffix("/mcp")
        async with httpx2.AsyncClient(timeout=30) as http:
            anonymous = await http.get(origin + path)
            with_token = await http.get(origin + path, headers={"authorization": f"Bearer {TOKEN}"})
    assert (anonymous.status_code, with_token.status_code) == (404, 404)


async def test_other_paths_need_the_token(settings: Callable[..., Settings]) -> None:
    async with serving_http(settings()) as url, httpx2.AsyncClient(timeout=30) as http:
        response = await http.get(url.removesuffix("/mcp") + "/anything")
    assert response.status_code == 401


# --------------------------------------------------------------------------------------------- stateless and asking


@pytest.mark.process
async def test_the_command_logs_its_start_warnings_and_refusals_to_stderr_without_a_secret(env: dict[str, str]) -> None:
    # A wildcard bind, --stateless and B24_CONFIRM=auto: each warning's own rule is pinned in-process above and below.
    with http_server(env | {"B24_CONFIRM": "auto"}, "--stateless", host="0.0.0.0") as served:
        url = served.url.replace("0.0.0.0", "127.0.0.1")
        async with client(url) as session:
            tools = await session.list_tools()
        refused = await list_tools_raw(url, token=TOKEN[:-1] + "x")
        stderr = served.stop()
    assert (len(tools.tools), refused.status_code) == (3, 401)
    assert "--stateless with B24_CONFIRM=auto: a client on the 2025-11-25 protocol cannot be asked here" in stderr
    assert "B24_MCP_ALLOWED_HOSTS is empty" in stderr
    assert "the bearer token is not this server's B24_MCP_HTTP_TOKEN" in stderr
    assert TOKEN[:-1] not in stderr
    assert_no_secret(stderr)


def test_stateless_with_auto_confirmation_warns_at_start(make_settings: Callable[..., Settings]) -> None:
    (warning,) = start_warnings(make_settings(confirm="auto", mcp_http_token=TOKEN), "127.0.0.1", stateless=True)
    assert "--stateless with B24_CONFIRM=auto: a client on the 2025-11-25 protocol cannot be asked here" in warning


def test_stateless_with_token_confirmation_does_not_warn(make_settings: Callable[..., Settings]) -> None:
    assert start_warnings(make_settings(confirm="token", mcp_http_token=TOKEN), "127.0.0.1", stateless=True) == []


# ------------------------------------------------------------------------------------------------------ slow clients

STALLED = 300
FILES = 256  # what the server process may open, fewer than the connections stalled at it


def stall(url: str, count: int) -> list[socket.socket]:
    """`count` connections that each send half a request head and then nothing."""
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    stalled = []
    for _ in range(count):
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appli")
        stalled.append(sock)
    return stalled


def closed_within(sockets: list[socket.socket], seconds: float) -> int:
    """How many of `sockets` the server closes within `seconds`."""
    deadline = time.monotonic() + seconds
    closed = 0
    for sock in sockets:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            closed += sock.recv(1) == b""
        except ConnectionResetError:
            closed += 1
        except TimeoutError:
            pass
    return closed


@pytest.mark.process
async def test_stalled_requests_do_not_keep_an_authenticated_client_waiting(env: dict[str, str]) -> None:
    # More stalled connections than the server may open files: without a cap, accept() fails and the client waits.
    with http_server(env, python_args=("-c", LIMITED, str(FILES))) as (url, _, _):
        stalled = await anyio.to_thread.run_sync(stall, url, FILES + 10)
        try:
            with anyio.fail_after(5):
                async with client(url) as session:
                    tools = await session.list_tools()
        finally:
            for sock in stalled:
                sock.close()
    assert len(tools.tools) == 3


async def test_stalled_requests_are_closed_after_the_read_deadline(settings: Callable[..., Settings]) -> None:
    async with serving_http(settings(), read_seconds=READ_SECONDS) as url:
        stalled = await anyio.to_thread.run_sync(stall, url, STALLED)
        started = time.monotonic()
        try:
            closed = await anyio.to_thread.run_sync(closed_within, stalled, READ_SECONDS + 5)
        finally:
            for sock in stalled:
                sock.close()
    assert closed == STALLED
    assert time.monotonic() - started > READ_SECONDS * 0.9


async def no_app(scope: Scope, receive: Receive, send: Send) -> None:
    """An ASGI app that is never called."""


def test_the_command_gives_a_request_ten_seconds_to_arrive() -> None:
    protocol = http_config(no_app, host="127.0.0.1", port=8000).http  # serve_http's, with the default deadline
    assert isinstance(protocol, type) and issubclass(protocol, GuardedH11Protocol)
    assert protocol.read_seconds == REQUEST_READ_SECONDS == 10.0


async def test_a_refusal_is_logged_without_the_token(
    settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    async with serving_http(settings()) as url:
        await list_tools_raw(url, token=TOKEN[:-1] + "x")
    assert "the bearer token is not this server's B24_MCP_HTTP_TOKEN" in caplog.text
    assert TOKEN[:-1] not in caplog.text


@pytest.mark.process
def test_a_port_out_of_range_is_one_line() -> None:
    done = run_b24("--sandbox", "--transport", "http", "--port", "99999")
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["b24-mcp: --port 99999 is not a TCP port (1-65535)"]


@pytest.mark.parametrize("era", ["legacy", "default"])
async def test_a_stateless_server_in_auto_mode_says_when_it_cannot_ask_the_person(
    settings: Callable[..., Settings], portal: Portal, era: str
) -> None:
    asked: list[str] = []

    async def person(context: Any, params: Any) -> Any:
        from mcp.types import ElicitResult

        asked.append(params.message)
        return ElicitResult(action="accept", content={"delete": True})

    async with serving_http(settings(confirm="auto"), stateless=True) as url:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        options: dict[str, Any] = {"elicitation_callback": person} | ({"mode": "legacy"} if era == "legacy" else {})
        async with Client(streamable_http_client(url, http_client=http), **options) as session:
            result = await session.call_tool("crm_item_delete", {"entityTypeId": 2, "id": 42, "dryRun": False})
    content = result.structured_content
    assert content is not None
    if era == "legacy":  # no back channel: a token is required, and the message says why
        assert (content["error"], asked) == ("CONFIRMATION_REQUIRED", [])
        assert "stateless HTTP server cannot ask the person" in content["message"]
        assert 42 in portal.items[2]
    else:  # the 2026-07-28 era asks through the call's own result, stateless or not
        assert (content["status"], len(asked)) == ("deleted", 1)
