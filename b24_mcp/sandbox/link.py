"""How `b24-mcp --sandbox` reaches the emulated portal: its webhook, and an HTTP transport into it in-process.

Kept apart from the emulator so the server can name the sandbox at start-up and import the emulator only when
the first call reaches it.
"""

from __future__ import annotations

import httpx2

from b24_mcp.credentials import Webhook, parse_webhook_url
from b24_mcp.sandbox.accounts import SANDBOX_HOST, SANDBOX_USER_ID, SANDBOX_WEBHOOK_CODE


def sandbox_webhook() -> Webhook:
    """The sandbox portal's main webhook (an administrator)."""
    return parse_webhook_url(f"https://{SANDBOX_HOST}/rest/{SANDBOX_USER_ID}/{SANDBOX_WEBHOOK_CODE}/", allow_http=False)


def sandbox_http() -> httpx2.AsyncBaseTransport:
    """An HTTP transport answering from a freshly seeded emulator in this process: no port, no network."""
    from b24_mcp.sandbox.serve import sandbox_transport

    return sandbox_transport()
