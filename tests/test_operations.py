"""Operating a real `b24-mcp --transport http` process: the probes a load balancer asks (with the shared database
stopped and started again), the metrics Prometheus scrapes, and the JSON log a pipeline reads."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from postgres_cluster import Postgres
from signin_helpers import Browser, Person, signin_env, signin_process

from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.seed import SANDBOX_USER_ID, SANDBOX_WEBHOOK_CODE
from helpers import TLSFiles, b24_environment, free_port, http_server, read_journal, run_b24, webhook_env

pytestmark = pytest.mark.anyio

TOKEN = "team-token-5f2a9c1e7b3d4a6f8e0c2b4d6f8a0c2e"
METRICS_TOKEN = "scrape-token-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
SECRET = "shared-confirm-secret-0123456789abcdef"


def base(url: str) -> str:
    return url.removesuffix("/mcp")


def status_of(url: str, **headers: str) -> int:
    return httpx2.get(url, headers=headers, timeout=10).status_code


def wait_for(url: str, status: int, seconds: float = 30) -> int:
    """GET `url` until it answers `status` (or `seconds` pass): the last status."""
    deadline = time.monotonic() + seconds
    answered = status_of(url)
    while answered != status and time.monotonic() < deadline:
        time.sleep(0.2)
        answered = status_of(url)
    return answered


async def tool(url: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    async with Client(streamable_http_client(url, http_client=http)) as session:
        result = await session.call_tool(name, arguments)
    return dict(result.structured_content or {})


def metric(text: str, line_start: str) -> float:
    """The value of the exposition's sample whose line starts with `line_start`."""
    [line] = [line for line in text.splitlines() if line.startswith(line_start + " ")]
    return float(line.rsplit(" ", 1)[1])


async def test_a_team_server_answers_its_probes_metrics_and_json_log(tmp_path: Path) -> None:
    journal = tmp_path / "sandbox-audit.jsonl"  # the sandbox's journal, beside B24_AUDIT_LOG
    env = {"B24_MCP_HTTP_TOKEN": TOKEN, "B24_AUDIT_LOG": str(tmp_path / "audit.jsonl"), "B24_CONFIRM": "token"}
    with http_server(env | {"B24_LOG_FORMAT": "json"}, "--sandbox", log_folder=tmp_path) as served:
        origin = base(served.url)
        probes = status_of(f"{origin}/healthz"), status_of(f"{origin}/readyz")
        anonymous_scrape = status_of(f"{origin}/metrics")
        preview = await tool(served.url, "crm_item_delete", {"entityTypeId": 2, "id": 42})
        confirmed = {"entityTypeId": 2, "id": 42, "dryRun": False, "confirmationToken": preview["confirmationToken"]}
        deleted = await tool(served.url, "crm_item_delete", confirmed)
        refused = await tool(served.url, "crm_item_delete", {"entityTypeId": 2, "id": 41, "dryRun": False})
        scrape = httpx2.get(f"{origin}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
        with socket.create_connection(("127.0.0.1", int(origin.rsplit(":", 1)[1]))) as garbage:
            garbage.sendall(b"NOT HTTP\r\n\r\n")  # uvicorn logs a warning of its own
            garbage.recv(1000)
        journal.chmod(0o644)  # unusable: others may read it
        unready = wait_for(f"{origin}/readyz", 503)
        alive_meanwhile = status_of(f"{origin}/healthz")
        journal.chmod(0o600)
        ready_again = wait_for(f"{origin}/readyz", 200)
        stderr = served.stop()
    assert probes == (200, 200) and anonymous_scrape == 401
    assert (deleted["status"], refused["error"]) == ("deleted", "CONFIRMATION_REQUIRED")
    assert metric(scrape, 'b24mcp_tool_calls_total{status="deleted",tool="crm_item_delete"}') == 1
    assert metric(scrape, 'b24mcp_deletions_total{outcome="deleted"}') == 1
    assert metric(scrape, 'b24mcp_refusals_total{code="CONFIRMATION_REQUIRED"}') == 1
    assert metric(scrape, 'b24mcp_portal_request_seconds_count{method="crm.item.delete"}') == 1
    assert (unready, alive_meanwhile, ready_again) == (503, 200, 200)

    lines = [json.loads(line) for line in stderr.splitlines()]  # every line is one JSON object
    assert all({"ts", "level", "logger", "message"} <= line.keys() for line in lines)
    [call] = [line for line in lines if line.get("status") == "deleted"]
    assert (call["tool"], call["error"]) == ("crm_item_delete", None) and call["duration_ms"] >= 0
    assert {entry["requestId"] for entry in read_journal(journal)} == {call["request_id"]}
    assert any(line["level"] == "WARNING" and "not ready" in line["message"] for line in lines)
    assert any(line["logger"] == "uvicorn.error" for line in lines)
    assert TOKEN not in stderr and "Acme renewal" not in stderr


async def test_with_the_database_stopped_a_replica_stays_alive_but_leaves_the_balancer_until_it_is_back(
    webhook_url: str, tls: TLSFiles, database_url: str, postgres: Postgres, tmp_path: Path, portal: Portal
) -> None:
    if postgres.cluster is None:
        pytest.skip("the database of B24_TEST_DATABASE_URL cannot be stopped by the tests")
    env = webhook_env(webhook_url, tls, tmp_path / "audit.jsonl") | {
        "B24_MCP_HTTP_TOKEN": TOKEN,
        "B24_CONFIRM_SECRET": SECRET,
        "B24_DATABASE_URL": database_url,
    }
    with http_server(env, "--stateless", log_folder=tmp_path) as served:
        origin = base(served.url)
        ready = wait_for(f"{origin}/readyz", 200)
        postgres.cluster.stop()
        try:
            unready = wait_for(f"{origin}/readyz", 503)
            alive = status_of(f"{origin}/healthz")
            preview = await tool(served.url, "crm_item_delete", {"entityTypeId": 2, "id": 42})
        finally:
            postgres.cluster.start()
        ready_again = wait_for(f"{origin}/readyz", 200, seconds=60)
        scrape = httpx2.get(f"{origin}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
        stderr = served.stop()
    assert (ready, unready, alive, preview["status"], ready_again) == (200, 503, 200, "preview", 200)
    assert 'b24mcp_db_pool_connections{pool="shared",state="idle"}' in scrape
    assert "ready again" in stderr
    assert database_url not in stderr and SANDBOX_WEBHOOK_CODE not in stderr


async def test_a_sign_in_server_scrapes_with_its_metrics_token_and_labels_people_only_when_asked(
    portal: Portal, https_origin: str, tls: TLSFiles, tmp_path: Path
) -> None:
    port = free_port()
    env = signin_env(portal, https_origin, tls.ca_bundle, tmp_path / "state", tmp_path / "audit.jsonl", port)
    env |= {"B24_METRICS_TOKEN": METRICS_TOKEN, "B24_METRICS_USER_IDS": "true", "B24_LOG_FORMAT": "json"}
    admin = Person(SANDBOX_USER_ID, Browser(tls.ca_bundle))
    with signin_process(env, tmp_path / "logs", port=port) as server:
        async with admin.connect(portal, server) as session:
            await session.call_tool("crm_item_delete", {"entityTypeId": 2, "id": 42})
        scrape = httpx2.get(
            f"{server.public_url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
        )
        with_persons_token = status_of(f"{server.public_url}/metrics", Authorization=f"Bearer {admin.access_token}")
        stderr = server.stop()
    assert scrape.status_code == 200 and with_persons_token == 401
    labels = f'status="preview",tool="crm_item_delete",user_id="{SANDBOX_USER_ID}"'
    assert metric(scrape.text, "b24mcp_tool_calls_total{" + labels + "}") == 1
    [call] = [json.loads(line) for line in stderr.splitlines() if '"tool": "crm_item_delete"' in line]
    assert call["user_id"] == SANDBOX_USER_ID


def test_check_names_the_probe_and_metrics_urls_of_an_http_server(tmp_path: Path) -> None:
    env = {"B24_MCP_HTTP_TOKEN": TOKEN, "B24_AUDIT_LOG": str(tmp_path / "audit.jsonl")}
    done = run_b24("check", "--sandbox", env=env)
    assert "/healthz" in done.stdout and "/readyz" in done.stdout and "/metrics" in done.stdout, done.stdout


def test_the_stdio_server_never_imports_the_metrics_library(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "b24_mcp", "--sandbox"],
        env=b24_environment({"B24_AUDIT_LOG": str(tmp_path / "audit.jsonl")}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tempfile.gettempdir(),
    )
    assert "b24_mcp.serving.tools" in done.stderr  # the server was built
    assert "prometheus" not in done.stderr
