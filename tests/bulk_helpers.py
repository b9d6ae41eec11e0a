"""What the bulk tool's tests share: the tool's name, seeding deals, reading results, and the server with the
emulator over HTTPS (without its request limit)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from mcp import Client
from mcp.types import CallToolResult

from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.seed import seeded_portal
from b24_mcp.serving.tools import build_server
from b24_mcp.settings import Settings
from helpers import Connect, TLSFiles, make_app

TOOL = "crm_item_delete_batch"
CLEAN_UP = "Clean-up test"


def unlimited_portal() -> Portal:
    """The seeded portal without its request limit (pacing is the benchmark's business): as a module's `portal`
    fixture, the one conftest's HTTPS fixtures serve."""
    return seeded_portal(rate_limit=None)


def https_client(make_settings: Callable[..., Settings], webhook_url: str, tls: TLSFiles) -> Connect:
    """`async with connect(confirm="auto", client={...}) as client`: the server, with the emulator over HTTPS."""

    @asynccontextmanager
    async def open_client(client: dict[str, Any] | None = None, **values: Any) -> AsyncIterator[Client]:
        values = {"rate_burst": 10_000, "rate_per_second": 1000.0} | values
        settings = make_settings(webhook_url=webhook_url, ca_bundle=tls.ca_bundle, **values)
        async with Client(build_server(make_app(settings)), **(client or {})) as session:
            yield session

    return open_client


def requests(portal: Portal) -> list[str]:
    """The HTTP requests the portal received (batch commands not counted)."""
    return [call.method for call in portal.calls if not call.via_batch]


def data(result: CallToolResult) -> dict[str, Any]:
    """The structured content of a result."""
    assert result.structured_content is not None
    return dict(result.structured_content)


def add_deals(portal: Portal, count: int, first: int = 100_001, **fields: Any) -> list[int]:
    """`count` deals titled "Clean-up test N", ids from `first` up."""
    for offset in range(count):
        values = {"id": first + offset, "title": f"{CLEAN_UP} {offset}", "stageId": "NEW", "assignedById": 1}
        portal.add_item(2, values | fields)
    portal.calls.clear()
    return list(range(first, first + count))
