"""The operators' side of the HTTP server, in process: the probes, who may read /metrics, what the metrics count,
and the JSON log lines with the request id their journal lines share."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import anyio
import httpx2
import pytest
from mcp import Client
from prometheus_client.parser import text_string_to_metric_families

from b24_mcp.deleting.app import App
from b24_mcp.journal.file import Journal
from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.faults import Fault
from b24_mcp.sandbox.link import sandbox_webhook
from b24_mcp.sandbox.seed import SANDBOX_WEBHOOK_CODE
from b24_mcp.sandbox.serve import sandbox_transport
from b24_mcp.serving.observing import CallObserver, describe
from b24_mcp.serving.probes import NOT_READY, Readiness
from b24_mcp.serving.tools import build_server
from b24_mcp.serving.transport import http_app
from b24_mcp.settings import Settings
from b24_mcp.telemetry import metrics, tracing
from b24_mcp.telemetry.logs import json_formatter
from helpers import make_app, read_journal

pytestmark = pytest.mark.anyio

TOKEN = "mcp-token-0123456789abcdef0123456789abcdef"
METRICS_TOKEN = "metrics-token-0123456789abcdef0123456789ab"
ORIGIN = "http://127.0.0.1:8000"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(autouse=True)
def metrics_off() -> Iterator[None]:
    yield
    metrics.disable()


@pytest.fixture
def build(portal: Portal, make_settings: Callable[..., Settings]) -> Callable[..., tuple[Any, App]]:
    """`build(**settings)`: the HTTP server's ASGI application on 127.0.0.1:8000 over the sandbox, and its App."""

    def make(**values: Any) -> tuple[Any, App]:
        settings = make_settings(**values)
        app = make_app(settings, sandbox_webhook(), sandbox_transport(portal))
        server = build_server(app)
        return http_app(server, settings, host="127.0.0.1", port=8000, stateless=True, journal=app.journal), app

    return make


@asynccontextmanager
async def http(asgi: Any, **headers: str) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=asgi), base_url=ORIGIN, headers=headers) as client:
        yield client


def samples(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------------------------------------- probes


async def test_the_probes_answer_without_the_token_whatever_host_the_balancer_names(build: Any) -> None:
    asgi, _ = build(mcp_http_token=TOKEN)
    async with http(asgi, Host="10.1.2.3:8000") as client:
        alive, ready = await client.get("/healthz"), await client.get("/readyz")
        mcp = await client.post("/mcp", json={})
    assert (alive.status_code, alive.json()) == (200, {"status": "alive"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    assert alive.headers["cache-control"] == "no-store"
    assert mcp.status_code == 401  # everything else still needs the token


async def test_a_probe_answers_get_and_head_only(build: Any) -> None:
    asgi, _ = build(mcp_http_token=TOKEN)
    async with http(asgi) as client:
        head, post = await client.head("/readyz"), await client.post("/healthz")
    assert (head.status_code, head.content) == (200, b"")
    assert (post.status_code, post.headers["allow"]) == (405, "GET, HEAD")


async def test_readiness_says_not_ready_without_the_cause_while_the_journal_cannot_be_written(
    build: Any, journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal_path.parent.mkdir(parents=True)
    journal_path.write_text("")
    journal_path.chmod(0o644)  # readable by others: the journal refuses it
    asgi, _ = build(mcp_http_token=TOKEN)
    async with http(asgi) as client:
        ready, alive = await client.get("/readyz"), await client.get("/healthz")
    assert (ready.status_code, ready.json()) == (503, {"status": "not ready", "reason": NOT_READY})
    assert str(journal_path) not in ready.text
    assert alive.status_code == 200
    assert "chmod 600" in caplog.text  # the cause, for the operator


async def test_readiness_recovers_by_itself_once_the_cause_goes(journal_path: Path) -> None:
    now = [0.0]
    readiness = Readiness(Journal(journal_path), clock=lambda: now[0])
    journal_path.parent.mkdir(parents=True)
    journal_path.write_text("")
    journal_path.chmod(0o666)
    assert await readiness.problem() is not None
    journal_path.chmod(0o600)
    assert await readiness.problem() is not None  # asked again only after a second
    now[0] += 1.0
    assert await readiness.problem() is None


# ---------------------------------------------------------------------------------------------- who reads /metrics


async def test_metrics_take_the_servers_token_or_the_metrics_token_which_opens_nothing_else(build: Any) -> None:
    asgi, _ = build(mcp_http_token=TOKEN, metrics_token=METRICS_TOKEN)
    async with http(asgi) as client:
        anonymous = await client.get("/metrics")
        with_mcp_token = await client.get("/metrics", headers=bearer(TOKEN))
        with_metrics_token = await client.get("/metrics", headers=bearer(METRICS_TOKEN))
        mcp_with_metrics_token = await client.post("/mcp", json={}, headers=bearer(METRICS_TOKEN))
    assert anonymous.status_code == 401
    assert "B24_METRICS_TOKEN or B24_MCP_HTTP_TOKEN" in anonymous.headers["www-authenticate"]
    assert with_mcp_token.status_code == with_metrics_token.status_code == 200
    assert with_metrics_token.headers["content-type"].startswith("text/plain; version=")
    assert mcp_with_metrics_token.status_code == 401


async def test_a_sign_in_server_serves_metrics_only_with_a_metrics_token(
    make_settings: Callable[..., Settings],
) -> None:
    from b24_mcp.serving.transport import metrics_app, transport_security

    metrics.enable()
    security = transport_security("127.0.0.1", 8000)
    signin = make_settings(public_url="https://mcp.example.com")
    async with http(metrics_app(signin, security)) as client:
        off = await client.get("/metrics")
    async with http(
        metrics_app(make_settings(public_url="https://mcp.example.com", metrics_token=METRICS_TOKEN), security)
    ) as client:
        anonymous, scraped = await client.get("/metrics"), await client.get("/metrics", headers=bearer(METRICS_TOKEN))
    assert (off.status_code, off.json()["error"]) == (403, "metrics_off")
    assert (anonymous.status_code, scraped.status_code) == (401, 200)


async def test_an_open_loopback_server_serves_metrics_to_requests_for_its_own_host_only(build: Any) -> None:
    asgi, _ = build()
    async with http(asgi) as client:
        own = await client.get("/metrics")
        rebound = await client.get("/metrics", headers={"Host": "attacker.example"})
    assert own.status_code == 200
    assert rebound.status_code == 421


async def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(build: Any) -> None:
    asgi, _ = build(mcp_http_token=TOKEN)
    async with http(asgi, **bearer(TOKEN)) as client:
        answer = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.endswith("# EOF\n")


# ----------------------------------------------------------------------------------------------- what is counted


async def calls_of_every_kind(client: Client) -> None:
    """A preview and its deletion, a refused deletion, a bulk deletion with a missing id, bad arguments."""
    preview = await client.call_tool("crm_item_delete", {"entityTypeId": 2, "id": 42})
    token = (preview.structured_content or {})["confirmationToken"]
    await client.call_tool(
        "crm_item_delete", {"entityTypeId": 2, "id": 42, "dryRun": False, "confirmationToken": token}
    )
    await client.call_tool("crm_item_delete", {"entityTypeId": 2, "id": 41, "dryRun": False})
    ids = {"entityTypeId": 2, "ids": [40, 43, 999_999]}
    batch = await client.call_tool("crm_item_delete_batch", ids)
    token = (batch.structured_content or {})["confirmationToken"]
    await client.call_tool("crm_item_delete_batch", ids | {"dryRun": False, "confirmationToken": token})
    await client.call_tool("crm_item_delete", {"entityTypeId": "2", "id": 42})
    await client.call_tool("crm_entity_types", {})


async def test_the_metrics_count_calls_deletions_refusals_and_portal_requests(
    portal: Portal, make_settings: Callable[..., Settings]
) -> None:
    metrics.enable()
    app = make_app(make_settings(), sandbox_webhook(), sandbox_transport(portal))
    async with Client(build_server(app)) as client:
        await calls_of_every_kind(client)
    text = metrics.exposition(None)[0].decode()
    found = samples(text)

    def value(name: str, **labels: str) -> float:
        return found.get((name, tuple(sorted(labels.items()))), 0.0)

    calls = "b24mcp_tool_calls_total"
    assert value(calls, tool="crm_item_delete", status="preview") == 1
    assert value(calls, tool="crm_item_delete", status="deleted") == 1
    assert value(calls, tool="crm_item_delete", status="error") == 2  # refused, and bad arguments
    assert value(calls, tool="crm_item_delete_batch", status="preview") == 1
    assert value(calls, tool="crm_item_delete_batch", status="deleted") == 1  # the missing id was never confirmed
    assert value(calls, tool="crm_entity_types", status="ok") == 1
    assert value("b24mcp_deletions_total", outcome="deleted") == 3
    assert value("b24mcp_deletions_total", outcome="failed") == 0  # the missing id is not an item that failed
    assert value("b24mcp_refusals_total", code="CONFIRMATION_REQUIRED") == 1
    assert value("b24mcp_refusals_total", code="INVALID_ARGUMENTS") == 1
    for method in ("batch", "crm.item.get"):
        sent = len(portal.calls_to(method))
        assert value("b24mcp_portal_requests_total", method=method, result="ok") == sent > 0
        assert value("b24mcp_portal_request_seconds_count", method=method) == sent
    assert value("b24mcp_rate_limit_wait_seconds_count") == sum(
        count for (name, _), count in found.items() if name == "b24mcp_portal_requests_total"
    )
    assert value("b24mcp_journal_write_seconds_count", store="file") >= 4
    assert "Acme renewal" not in text and "Northwind" not in text and SANDBOX_WEBHOOK_CODE not in text
    assert "user_id" not in text


async def test_a_portal_code_of_no_known_kind_is_counted_as_portal_error_not_by_its_text(
    portal: Portal, make_settings: Callable[..., Settings]
) -> None:
    metrics.enable()
    portal.inject("crm.item.get", Fault(status=400, json={"error": "SOME_NEW_CODE_1234", "error_description": "x"}))
    app = make_app(make_settings(), sandbox_webhook(), sandbox_transport(portal))
    async with Client(build_server(app)) as client:
        await client.call_tool("crm_item_delete", {"entityTypeId": 2, "id": 42})
    text = metrics.exposition(None)[0].decode()
    assert 'b24mcp_portal_requests_total{method="crm.item.get",result="PORTAL_ERROR"} 1.0' in text
    assert "SOME_NEW_CODE" not in text


def test_a_persons_user_id_is_a_label_only_when_the_operator_asks() -> None:
    metrics.enable(per_user=True)
    metrics.tool_call("crm_item_delete", "preview", 7)
    metrics.tool_call("crm_item_delete", "preview", None)
    text = metrics.exposition(None)[0].decode()
    assert 'b24mcp_tool_calls_total{status="preview",tool="crm_item_delete",user_id="7"} 1.0' in text
    assert 'b24mcp_tool_calls_total{status="preview",tool="crm_item_delete",user_id=""} 1.0' in text


def test_nothing_is_recorded_before_metrics_are_turned_on() -> None:
    metrics.tool_call("crm_item_delete", "preview")
    metrics.refused("READ_ONLY")
    metrics.deletions(deleted=3)
    with metrics.portal_request("crm.item.get"):
        pass
    assert not metrics.enabled()


# ------------------------------------------------------------------------------------------------------ JSON lines


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The root logger's records as `B24_LOG_FORMAT=json` writes them, into a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(json_formatter())
    handler.addFilter(tracing.CallFields())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_a_tool_calls_json_line_leads_to_its_journal_lines(
    json_log: io.StringIO, portal: Portal, make_settings: Callable[..., Settings], journal_path: Path
) -> None:
    app = make_app(make_settings(confirm="none"), sandbox_webhook(), sandbox_transport(portal))
    async with Client(build_server(app)) as client:
        await client.call_tool("crm_item_delete", {"entityTypeId": 2, "id": 42, "dryRun": False})
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    [call] = [line for line in lines if line.get("tool") == "crm_item_delete"]
    assert {"ts", "level", "logger", "message"} <= call.keys()
    assert (call["status"], call["error"], call["entity_type_id"], call["dry_run"]) == ("deleted", None, 2, False)
    assert isinstance(call["duration_ms"], float)
    journal = read_journal(journal_path)
    assert [entry["event"] for entry in journal] == ["intent", "deleted"]
    assert {entry["requestId"] for entry in journal} == {call["request_id"]}


async def test_a_json_line_is_one_line_whatever_the_message_holds(json_log: io.StringIO) -> None:
    logging.getLogger("b24_mcp.test").warning("a title\nwith \x1b[31m a newline %s", "«x»")
    [line] = json_log.getvalue().splitlines()
    assert json.loads(line)["message"] == "a title\nwith \x1b[31m a newline «x»"
    assert "\x1b" not in line


# ------------------------------------------------------------------------------------------------- the call's line


async def test_an_interrupted_call_is_logged_and_counted_as_an_error(caplog: pytest.LogCaptureFixture) -> None:
    metrics.enable()
    caplog.set_level(logging.INFO)

    async def never_answered(_: Any) -> Any:
        await anyio.sleep(10)

    request = SimpleNamespace(method="tools/call", params={"name": "crm_item_delete", "arguments": {"id": 42}})
    with anyio.move_on_after(0.01):
        await CallObserver({"crm_item_delete"})(cast(Any, request), never_answered)
    assert "crm_item_delete id=42 -> error CANCELLED" in caplog.text
    assert 'b24mcp_tool_calls_total{status="error",tool="crm_item_delete"} 1.0' in metrics.exposition(None)[0].decode()


def test_the_calls_line_shows_numbers_only_whatever_the_arguments_hold() -> None:
    hostile = {"entityTypeId": "2\nFAKE LINE", "id": True, "ids": ["x"] * 3, "filter": {"%title": "Secret"}}
    shown = describe(hostile)
    assert shown == "ids=3 filter=1 conditions dryRun=True "
    assert "FAKE" not in shown and "Secret" not in shown
