"""Three `b24-mcp --transport http --stateless` processes sharing one PostgreSQL database, in front of the portal
emulator over real HTTPS, spoken to through the SDK's own client: what one replica does, the others honour."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import psycopg
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from postgres_cluster import Postgres

from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.seed import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, SANDBOX_WEBHOOK_CODE, seeded_portal
from helpers import TLSFiles, http_server, webhook_env

pytestmark = [pytest.mark.anyio, pytest.mark.process]

TOKEN = "team-token-5f2a9c1e7b3d4a6f8e0c2b4d6f8a0c2e"
SECRET = "shared-confirm-secret-0123456789abcdef"
REPLICAS = 3
BURST, RATE = (
    50,
    5.0,
)  # the portal's bucket: a real portal's burst, drained as fast as an Enterprise one (time as a parameter)
SMALL_BURST = 20  # a bucket small enough that a few previews at once go far past it
PREVIEWS = 50  # at once: two and a half times that burst


@pytest.fixture
def portal() -> Portal:
    """The seeded portal, its bucket draining at `RATE` a second; the replicas are told the same."""
    return seeded_portal(rate_limit=(BURST, RATE))


@contextmanager
def replicas(env: dict[str, str], count: int = REPLICAS) -> Iterator[list[str]]:
    """`count` stateless HTTP servers on free loopback ports, until the block ends: their /mcp URLs."""
    with ExitStack() as stack:
        servers = [stack.enter_context(http_server(env, "--stateless", wait=False)) for _ in range(count)]
        for served in servers:
            served.wait_listening(timeout=60)
        yield [served.url for served in servers]


async def call(url: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One `crm_item_delete` call through the SDK's client; its structured result."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
    async with Client(streamable_http_client(url, http_client=http)) as session:
        result = await session.call_tool("crm_item_delete", arguments)
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


def journal_rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute(
            "SELECT seq, event, attempt, item_id, replica, entry::text FROM b24mcp.journal ORDER BY seq"
        ).fetchall()


@pytest.fixture
def env(webhook_url: str, tls: TLSFiles, database_url: str, tmp_path: Path) -> dict[str, str]:
    # B24_AUDIT_LOG is not used: the journal is the table.
    return webhook_env(webhook_url, tls, tmp_path / "audit.jsonl") | {
        "B24_CONFIRM": "token",
        "B24_MCP_HTTP_TOKEN": TOKEN,
        "B24_CONFIRM_SECRET": SECRET,
        "B24_DATABASE_URL": database_url,
        "B24_RATE_BURST": str(BURST),
        "B24_RATE_PER_SECOND": str(RATE),
    }


async def test_one_preview_token_used_twenty_times_at_once_deletes_once(env: dict[str, str], portal: Portal) -> None:
    with replicas(env) as urls:
        token = (await call(urls[0], {"entityTypeId": 2, "id": 42}))["confirmationToken"]
        results: list[dict[str, Any]] = []

        async def delete(index: int) -> None:
            arguments = {"entityTypeId": 2, "id": 42, "dryRun": False, "confirmationToken": token}
            results.append(await call(urls[index % REPLICAS], arguments))

        async with anyio.create_task_group() as group:
            for index in range(20):
                group.start_soon(delete, index)
    assert len(portal.calls_to("crm.item.delete")) == 1
    assert sorted(result["status"] for result in results) == ["deleted"] + ["error"] * 19
    assert {result["error"] for result in results if result["status"] == "error"} <= {
        "INVALID_CONFIRMATION_TOKEN",
        "NOT_FOUND",
    }


@pytest.mark.slow
async def test_previews_far_past_the_burst_at_once_over_three_replicas_stay_inside_the_portals_limit(
    env: dict[str, str], portal: Portal
) -> None:
    portal.rate_limit = (
        SMALL_BURST,
        RATE,
    )  # the replicas are told the same: 30 requests past it, six seconds of pacing
    env |= {"B24_RATE_BURST": str(SMALL_BURST)}
    statuses: list[str] = []
    with replicas(env) as urls:

        async def preview(index: int) -> None:
            statuses.append((await call(urls[index % REPLICAS], {"entityTypeId": 2, "id": 40 + index % 6}))["status"])

        with anyio.fail_after(240):
            async with anyio.create_task_group() as group:
                for index in range(PREVIEWS):
                    group.start_soon(preview, index)
    assert statuses == ["preview"] * PREVIEWS
    assert [call.error for call in portal.calls if call.error] == []
    assert len(portal.calls_to("crm.item.get")) == PREVIEWS


async def test_an_expired_oauth_token_met_by_three_replicas_at_once_is_refreshed_once(
    env: dict[str, str], portal: Portal, https_origin: str
) -> None:
    access, refresh = portal.issue_tokens(SANDBOX_CLIENT_ID, 1)
    oauth = {name: value for name, value in env.items() if name != "B24_WEBHOOK_URL"} | {
        "B24_PORTAL_URL": https_origin,
        "B24_ACCESS_TOKEN": access,
        "B24_REFRESH_TOKEN": refresh,
        "B24_CLIENT_ID": SANDBOX_CLIENT_ID,
        "B24_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
        "B24_OAUTH_URL": f"{https_origin}/oauth/token/",
    }
    results: list[dict[str, Any]] = []
    with replicas(oauth) as urls:
        portal.expire_access_tokens()

        async def preview(index: int) -> None:
            results.append(await call(urls[index % REPLICAS], {"entityTypeId": 2, "id": 40 + index}))

        async with anyio.create_task_group() as group:
            for index in range(6):
                group.start_soon(preview, index)
    assert [result["status"] for result in results] == ["preview"] * 6, results
    assert portal.token_requests == 1  # one exchange: no replica was left with a rotated-away refresh token
    assert not [call for call in portal.calls if call.error == "invalid_grant"]


async def test_the_journal_of_all_three_is_one_table_with_each_intent_before_its_outcome(
    env: dict[str, str], portal: Portal, database_url: str
) -> None:
    with replicas(env | {"B24_CONFIRM": "none"}) as urls:
        async with anyio.create_task_group() as group:
            for index, item_id in enumerate(range(40, 46)):
                group.start_soon(call, urls[index % REPLICAS], {"entityTypeId": 2, "id": item_id, "dryRun": False})
    rows = journal_rows(database_url)
    assert len({replica for *_, replica, _ in rows}) == REPLICAS
    by_attempt: dict[str, dict[str, int]] = {}
    for seq, event, attempt, _, _, _ in rows:
        by_attempt.setdefault(attempt, {})[event] = seq
    assert sorted(item_id for _, event, _, item_id, _, _ in rows if event == "deleted") == list(range(40, 46))
    assert all(events["intent"] < events["deleted"] for events in by_attempt.values())
    assert all(SANDBOX_WEBHOOK_CODE not in text for *_, text in rows)


async def test_with_the_database_down_deletions_are_refused_and_previews_answer_until_it_is_back(
    env: dict[str, str], portal: Portal, postgres: Postgres
) -> None:
    if postgres.cluster is None:
        pytest.skip("the database of B24_TEST_DATABASE_URL cannot be stopped by the tests")
    cluster = postgres.cluster
    with replicas(env | {"B24_CONFIRM": "none"}) as urls:
        assert (await call(urls[0], {"entityTypeId": 2, "id": 40, "dryRun": False}))["status"] == "deleted"
        cluster.stop()
        try:
            refused = [await call(url, {"entityTypeId": 2, "id": 41, "dryRun": False}) for url in urls]
            previews = [await call(url, {"entityTypeId": 2, "id": 42}) for url in urls]
        finally:
            cluster.start()
        deleted: dict[str, Any] = {}
        deadline = time.monotonic() + 60
        while deleted.get("status") != "deleted" and time.monotonic() < deadline:
            deleted = await call(urls[1], {"entityTypeId": 2, "id": 41, "dryRun": False})
    assert [result["error"] for result in refused] == ["JOURNAL_UNWRITABLE"] * REPLICAS
    assert [result["status"] for result in previews] == ["preview"] * REPLICAS
    assert deleted["status"] == "deleted"
    assert len(portal.calls_to("crm.item.delete")) == 2
