"""The real thing: `b24-mcp` as a subprocess over stdio, talking to the emulator over HTTPS on loopback."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from b24_mcp.sandbox.emulator import Portal
from helpers import TLSFiles, assert_no_secret, b24_environment, run_b24, webhook_env

pytestmark = [pytest.mark.anyio, pytest.mark.process]


@pytest.fixture
def server_env(webhook_url: str, tls: TLSFiles, journal_path: Path) -> dict[str, str]:
    return webhook_env(webhook_url, tls, journal_path) | {"B24_CONFIRM": "auto", "B24_LOG_LEVEL": "DEBUG"}


class Stderr:
    """The server's stderr, kept in a file to read after the process ended."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp()) / "stderr.txt"

    def read(self) -> str:
        return self.path.read_text()


@asynccontextmanager
async def stdio_server(env: dict[str, str], *args: str) -> AsyncIterator[tuple[Client, Stderr]]:
    """A `b24-mcp` subprocess and a client on its stdio, with the server's stderr captured."""
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "b24_mcp", *args], env=env, cwd=tempfile.gettempdir()
    )
    stderr = Stderr()
    with stderr.path.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            yield client, stderr


async def test_a_subprocess_previews_and_deletes_over_https(server_env: dict[str, str], portal: Portal) -> None:
    async with stdio_server(server_env) as (client, errlog):
        tools = await client.list_tools()
        preview = await client.call_tool("crm_item_delete", {"entityTypeId": 2, "id": 42})
        assert preview.structured_content is not None
        token = preview.structured_content["confirmationToken"]
        deleted = await client.call_tool(
            "crm_item_delete", {"entityTypeId": 2, "id": 42, "dryRun": False, "confirmationToken": token}
        )
    assert sorted(tool.name for tool in tools.tools) == ["crm_entity_types", "crm_item_delete", "crm_item_delete_batch"]
    assert deleted.structured_content is not None and deleted.structured_content["status"] == "deleted"
    assert 42 not in portal.items[2]
    stderr = errlog.read()
    assert "crm_item_delete entityTypeId=2 id=42 dryRun=False -> deleted" in stderr
    assert_no_secret(stderr + str(tools) + str(preview) + str(deleted))


async def test_portal_errors_reach_the_assistant_and_the_secret_does_not(
    server_env: dict[str, str], portal: Portal
) -> None:
    async with stdio_server(server_env) as (client, errlog):
        missing = await client.call_tool("crm_item_delete", {"entityTypeId": 2, "id": 999})
        bad_type = await client.call_tool("crm_item_delete", {"entityTypeId": 999_999, "id": 1})
    assert missing.structured_content is not None and bad_type.structured_content is not None
    assert (missing.is_error, missing.structured_content["error"]) == (True, "NOT_FOUND")
    assert bad_type.structured_content["error_description"] == "Smart Process Automation was not found"
    assert_no_secret(errlog.read() + str(missing) + str(bad_type))


async def test_bad_input_over_stdio_never_reaches_the_portal(server_env: dict[str, str], portal: Portal) -> None:
    async with stdio_server(server_env) as (client, _):
        result = await client.call_tool("crm_item_delete", {"entityTypeId": "2", "id": 42, "dryRun": "false"})
    assert result.is_error is True
    assert portal.calls == []


async def test_an_unreachable_portal_is_a_retryable_error(server_env: dict[str, str], tls: TLSFiles) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = server_env | {
        "B24_WEBHOOK_URL": f"https://127.0.0.1:{port}/rest/1/sbx7f3k9q2w8e5r1t6y4/",
        "B24_MAX_RETRIES": "1",
    }
    async with stdio_server(env) as (client, errlog):
        result = await client.call_tool("crm_item_delete", {"entityTypeId": 2, "id": 42})
    assert result.structured_content is not None
    assert (result.structured_content["error"], result.structured_content["retryable"]) == ("PORTAL_UNREACHABLE", True)
    assert_no_secret(errlog.read() + str(result))


async def test_the_sandbox_needs_no_credentials(tmp_path: Path) -> None:
    env = {"B24_AUDIT_LOG": str(tmp_path / "audit.jsonl"), "B24_CONFIRM": "token"}
    async with stdio_server(env, "--sandbox") as (client, _):
        preview = await client.call_tool("crm_item_delete", {"entityTypeId": 2, "id": 42})
    assert preview.structured_content is not None
    assert preview.structured_content["item"]["title"] == "Acme renewal"


def test_the_demo_walks_through_every_step_and_leaves_its_journal_to_the_journal_command(tmp_path: Path) -> None:
    env = {"B24_AUDIT_LOG": str(tmp_path / "audit.jsonl")}
    done = run_b24("demo", env=env)
    assert done.returncode == 0, done.stderr
    transcript = done.stdout
    for expected in (
        "crm_item_delete — Delete CRM item",
        "crm_entity_types — List CRM entity types; destructiveHint=False\n    arguments: none\n",
        "status=preview",
        "error=CONFIRMATION_REQUIRED",
        "status=deleted",
        "error=NOT_FOUND",
        "the person answers: yes",
        "status=cancelled",
        "smart-process  deleted permanently",
        "#13: deleted\n    missing, not included: 99\n",
        "intent",
        "(`b24-mcp journal --sandbox`)",
    ):
        assert expected in transcript
    assert_no_secret(transcript + done.stderr)
    journal = run_b24("journal", "--sandbox", env=env)
    assert journal.returncode == 0 and "Acme renewal" in journal.stdout
    assert not (tmp_path / "audit.jsonl").exists()  # the real journal is not the demo's


def test_at_a_terminal_the_server_says_what_it_waits_for_and_one_ctrl_c_ends_it(tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "b24_mcp", "--sandbox"],
        stdin=terminal,
        stdout=terminal,
        stderr=subprocess.PIPE,
        env=b24_environment({"B24_AUDIT_LOG": str(tmp_path / "audit.jsonl")}),
        text=True,
    )
    os.close(terminal)
    try:
        hello = {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "a person", "version": "0"},
        }
        os.write(controller, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello}).encode())
        os.write(controller, b"\n")
        seen, deadline = b"", time.monotonic() + 30
        while b'"id":1,"result"' not in seen.replace(b" ", b"") and time.monotonic() < deadline:
            if select.select([controller], [], [], 0.5)[0]:
                seen += os.read(controller, 65536)
        assert b'"serverInfo"' in seen  # a line typed at the terminal is answered
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    assert process.stderr is not None
    said = process.stderr.read()
    assert said.startswith(
        "b24-mcp serves MCP over stdio for the sandbox (an emulated portal) and waits for an MCP client"
    )
    assert "b24-mcp demo" in said and "Ctrl-C stops it." in said
    assert "Traceback" not in said and said.endswith("b24-mcp: stopped.\n")


def test_the_journal_command_prints_a_table_and_raw_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    entry = {
        "ts": "2026-11-28T10:00:00.000Z",
        "event": "deleted",
        "entityTypeId": 2,
        "id": 42,
        "item": {"id": 42, "title": "Acme renewal"},
    }
    path.write_text(json.dumps(entry) + "\nnot json\n")
    table = run_b24("journal", env={"B24_AUDIT_LOG": str(path)})
    raw = run_b24("journal", "--json", env={"B24_AUDIT_LOG": str(path)})
    assert table.returncode == 0 and raw.returncode == 0
    header, row = table.stdout.splitlines()
    assert header.split() == ["TIME", "(UTC)", "EVENT", "TYPE", "ID", "TITLE"]
    assert row.split()[1:] == ["deleted", "2", "42", "Acme", "renewal"]
    assert json.loads(raw.stdout) == entry
