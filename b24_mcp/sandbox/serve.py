"""Ways to reach the emulator: in-process for `--sandbox`, or over real HTTPS on loopback for tests."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

import httpx2

from b24_mcp.sandbox.emulator import Portal, create_app
from b24_mcp.sandbox.faults import ConnectionDropped
from b24_mcp.sandbox.seed import seeded_portal

if TYPE_CHECKING:
    from starlette.types import ASGIApp

__all__ = ["sandbox_transport", "serve_asgi", "serve_portal"]


class _InProcessTransport(httpx2.ASGITransport):
    """``ASGITransport`` that reports a connection the emulator dropped as a socket client would see it."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            return await super().handle_async_request(request)
        except ConnectionDropped as dropped:
            message = "peer closed connection without sending complete message body"
            raise httpx2.RemoteProtocolError(message, request=request) from dropped


def sandbox_transport(portal: Portal | None = None) -> httpx2.ASGITransport:
    """An HTTP transport that answers from the emulator in this process: no port, no network."""
    return _InProcessTransport(app=create_app(portal or seeded_portal()))


def _not_a_planned_drop(record: logging.LogRecord) -> bool:
    """A log filter for the HTTP server: the connections a fault drops on purpose are no error to log."""
    return record.exc_info is None or not isinstance(record.exc_info[1], ConnectionDropped)


def serve_portal(
    portal: Portal, *, certfile: str | None = None, keyfile: str | None = None, host: str = "127.0.0.1"
) -> AbstractContextManager[str]:
    """Serve the emulator on a free loopback port in a background thread (HTTPS with a certificate, else plain
    HTTP); yields its origin."""
    return serve_asgi(create_app(portal), certfile=certfile, keyfile=keyfile, host=host)


@contextmanager
def serve_asgi(
    app: ASGIApp, *, certfile: str | None = None, keyfile: str | None = None, host: str = "127.0.0.1"
) -> Iterator[str]:
    """`serve_portal` for any ASGI app (the tests' one emulator for the session, whose portal each test sets)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=0,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    logging.getLogger("uvicorn.error").addFilter(_not_a_planned_drop)  # the same filter once, however often served
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="b24-emulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the emulator did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"{'https' if certfile else 'http'}://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
