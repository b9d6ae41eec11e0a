"""How `b24-mcp --sandbox` reaches the emulated portal: its webhook, and an HTTP transport into it in-process.

Kept apart from the emulator so the server can name the sandbox at start-up and import the emulator only when
the first call reaches it.
"""

from __future__ import annotations

import httpx2

from b24_mcp.settings import Webhook


def sandbox_webhook() -> Webhook:
    """The sandbox portal's main webhook (an administrator)."""
    from b24_mcp.sandbox.serve import sandbox_webhook as webhook

    return webhook()


def sandbox_http() -> httpx2.AsyncBaseTransport:
    """An HTTP transport answering from a freshly seeded emulator in this process: no port, no network."""
    from b24_mcp.sandbox.serve import sandbox_transport

    return sandbox_transport()
