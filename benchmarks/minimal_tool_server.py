"""A minimal MCP tool server on the same SDK: the fair baseline for the per-call figure.

One tool, `crm_item_get`, makes the same `crm.item.get` call as a b24-mcp preview, with httpx2 (one shared
`AsyncClient`, created in the lifespan), against the webhook in `B24_WEBHOOK_URL`, and returns the portal's JSON.
No validation beyond the SDK's, no journal, no token: what any MCP wrapper around the REST call would cost.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from mcp.server.mcpserver import Context, MCPServer

WEBHOOK = os.environ.get("B24_WEBHOOK_URL", "")


@asynccontextmanager
async def lifespan(server: MCPServer[httpx2.AsyncClient]) -> AsyncIterator[httpx2.AsyncClient]:
    """One HTTP client for the server's life."""
    async with httpx2.AsyncClient(base_url=WEBHOOK, timeout=30) as client:
        yield client


# WARNING, as the benchmarks run b24-mcp (`B24_LOG_LEVEL=WARNING`): no log line per request on either side.
server = MCPServer("minimal", lifespan=lifespan, log_level="WARNING")


@server.tool()
async def crm_item_get(entityTypeId: int, id: int, ctx: Context[httpx2.AsyncClient, Any]) -> dict[str, Any]:
    """Read one CRM item (`crm.item.get`) and return the portal's answer as it is."""
    http = ctx.request_context.lifespan_context
    response = await http.post("crm.item.get", json={"entityTypeId": entityTypeId, "id": id})
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


if __name__ == "__main__":
    if not WEBHOOK:
        raise SystemExit("minimal_tool_server: set B24_WEBHOOK_URL")
    server.run()
