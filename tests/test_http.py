"""Streamable HTTP for a shared team server: bearer auth, safe binding, stateless replicas, graceful shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from b24_mcp.sandbox.emulator import Fault, Portal
from helpers import TLSFiles, assert_no_secret

pytestmark = pytest.mark.anyio

TOKEN = "team-token-5f2a9c1e7b3d4a6f8e0c2b4d6f8a0c2e"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def http_server(env: dict[str, str], *args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`b24-mcp --transport http` on a free loopback port; yields its /mcp URL and the process."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("B24_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "b24_mcp", "--transport", "http", "--port", str(port), *args],
        env=clean | env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    reason = process.stderr.read() if process.stderr else ""
                    raise RuntimeError(f"the server did not start: {reason}") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp", process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=20)


@pytest.fixture
def env(webhook_url: str, tls: TLSFiles, journal_path: Path) -> dict[str, str]:
    return {
        "B24_WEBHOOK_URL": webhook_url,
        "B24_CA_BUNDLE": str(tls.ca_bundle),
        "B24_AUDIT_LOG": str(journal_path),
        "B24_CONFIRM": "token",
        "B24_MCP_HTTP_TOKEN": TOKEN,
        "B24_CONFIRM_SECRET": "shared-confirm-secret-0123456789",
    }


def client(url: str, token: str | None = TOKEN, *, terminate_on_close: bool = True) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=30)
    return Client(streamable_http_client(url, http_client=http, terminate_on_close=terminate_on_close))


async def call(url: str, arguments: dict[str, Any]) -> dict[str, Any]:
    async with client(url) as session:
        result = await session.call_tool("crm_item_delete", arguments)
    assert result.structured_content is not None
    return result.structured_content


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x"])
async def test_a_request_without_the_token_gets_401(env: dict[str, str], authorization: str | None) -> None:
    with http_server(env) as (url, _):
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        if authorization:
            headers["authorization"] = authorization
        async with httpx2.AsyncClient() as http:
            response = await http.post(url, headers=headers, content=b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}')
    assert response.status_code == 401
    assert "bearer" in response.headers.get("www-authenticate", "").lower()


async def test_tools_are_listed_with_the_token(env: dict[str, str]) -> None:
    with http_server(env) as (url, process):
        async with client(url) as session:
            tools = await session.list_tools()
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert sorted(tool.name for tool in tools.tools) == ["crm_entity_types", "crm_item_delete", "crm_item_delete_batch"]
    assert TOKEN not in stderr
    assert_no_secret(stderr)


def test_a_non_loopback_binding_without_a_token_is_refused(env: dict[str, str]) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("B24_")}
    without_token = {k: v for k, v in env.items() if k != "B24_MCP_HTTP_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "b24_mcp", "--transport", "http", "--host", "0.0.0.0", "--port", str(free_port())],
        env=clean | without_token,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert "B24_MCP_HTTP_TOKEN is not set" in done.stderr


async def test_stateless_replicas_honour_each_others_tokens(env: dict[str, str], portal: Portal) -> None:
    with http_server(env, "--stateless") as (first, _), http_server(env, "--stateless") as (second, _):
        preview = await call(first, {"entityTypeId": 2, "id": 42})
        deleted = await call(
            second, {"entityTypeId": 2, "id": 42, "dryRun": False, "confirmationToken": preview["confirmationToken"]}
        )
    assert deleted["status"] == "deleted"
    assert 42 not in portal.items[2]


async def test_replicas_with_different_secrets_refuse_each_others_tokens(env: dict[str, str], portal: Portal) -> None:
    other = env | {"B24_CONFIRM_SECRET": "another-secret-entirely-987654321"}
    with http_server(env, "--stateless") as (first, _), http_server(other, "--stateless") as (second, _):
        preview = await call(first, {"entityTypeId": 2, "id": 42})
        refused = await call(
            second, {"entityTypeId": 2, "id": 42, "dryRun": False, "confirmationToken": preview["confirmationToken"]}
        )
    assert refused["error"] == "INVALID_CONFIRMATION_TOKEN"
    assert 42 in portal.items[2]


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
    with http_server(env | {"B24_CONFIRM": "none"}, "--stateless") as (url, process):
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
