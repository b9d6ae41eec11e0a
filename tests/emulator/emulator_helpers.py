"""What the emulator's tests share: the sandbox's webhook paths (the portal client's tests use them too), the
portal's usual errors, and a REST call."""

from __future__ import annotations

from typing import Any

import httpx2

from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.seed import (
    EXTRANET_USER_ID,
    EXTRANET_WEBHOOK_CODE,
    NOSCOPE_USER_ID,
    NOSCOPE_WEBHOOK_CODE,
    READONLY_USER_ID,
    READONLY_WEBHOOK_CODE,
    SANDBOX_HOST,
    SANDBOX_USER_ID,
    SANDBOX_WEBHOOK_CODE,
)
from b24_mcp.sandbox.serve import sandbox_transport

BASE_URL = f"https://{SANDBOX_HOST}"
HOOK = f"/rest/{SANDBOX_USER_ID}/{SANDBOX_WEBHOOK_CODE}/"
READONLY_HOOK = f"/rest/{READONLY_USER_ID}/{READONLY_WEBHOOK_CODE}/"
EXTRANET_HOOK = f"/rest/{EXTRANET_USER_ID}/{EXTRANET_WEBHOOK_CODE}/"
NOSCOPE_HOOK = f"/rest/{NOSCOPE_USER_ID}/{NOSCOPE_WEBHOOK_CODE}/"

ITEM_NOT_FOUND = {"error": "NOT_FOUND", "error_description": "Item was not found."}
TYPE_NOT_FOUND = {"error": "NOT_FOUND", "error_description": "Smart Process Automation was not found"}
GET_42 = {"entityTypeId": 2, "id": 42}


def make_client(portal: Portal, base_url: str = BASE_URL) -> httpx2.AsyncClient:
    """An HTTP client that reaches `portal` in-process through its ASGI app."""
    return httpx2.AsyncClient(transport=sandbox_transport(portal), base_url=base_url)


async def call(
    client: httpx2.AsyncClient, method: str, params: dict[str, Any] | None = None, hook: str = HOOK
) -> httpx2.Response:
    """POST a REST call as JSON through `hook` (the main webhook by default)."""
    return await client.post(hook + method, json=params or {})
