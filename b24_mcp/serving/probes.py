"""What a load balancer and a monitoring system ask a team server: `/healthz`, `/readyz` and `/metrics`.

`Operations` sits in front of everything else on the HTTP server (outside the bearer token, sign-in and the
Host/Origin check) and answers three paths itself, to GET and HEAD:

- `/healthz` (liveness): 200 `{"status": "alive"}` while the process serves. It asks nothing of the journal or the
  database: previews work while the database is down, and restarting the process would not bring it back.
- `/readyz` (readiness): 200 `{"status": "ready"}` when a deletion could be recorded now (the journal file can be
  appended to; or the shared database answers and its schema is this server's), else 503 `{"status": "not
  ready", "reason": ...}`, so that a load balancer takes the replica out until the cause goes. The journal is
  asked at most once a second however often the probe comes, and for at most `READY_SECONDS`; the detailed cause
  (a path, the database's error) goes to the log once per change, never into the answer.
- `/metrics`: the Prometheus exposition (`telemetry.metrics`). It needs a bearer token: `B24_METRICS_TOKEN`, or the
  server's `B24_MCP_HTTP_TOKEN`. A sign-in server (no static token) serves it only with `B24_METRICS_TOKEN`
  (403 otherwise): behind a reverse proxy every request comes from loopback, so no address can stand for an
  operator. A loopback server without any token (whose /mcp is open too) serves it to requests whose Host names
  the bound address, so a web page cannot read it through DNS rebinding.

The probes take no token and skip the Host check: a load balancer or a kubelet addresses a replica by its IP,
and what they answer is no secret.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from b24_mcp.journal.record import JournalStore
from b24_mcp.telemetry import metrics

if TYPE_CHECKING:
    from mcp.server.transport_security import TransportSecuritySettings
    from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"
READY_SECONDS = 2.0  # the longest a readiness check waits for the journal (Kubernetes' timeoutSeconds: 3)
READY_CACHE_SECONDS = 1.0
NOT_READY = "the journal cannot record a deletion now; the server's log says why"


class Readiness:
    """Whether a deletion could be recorded now, asked of the journal at most once per `READY_CACHE_SECONDS`."""

    def __init__(self, journal: JournalStore, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._journal = journal
        self._clock = clock
        self._lock = anyio.Lock()
        self._checked_at = float("-inf")
        self._problem: str | None = None  # the detailed cause last found, for the log

    async def problem(self) -> str | None:
        """Why the server is not ready (the detailed cause, for the log), or None when it is."""
        async with self._lock:
            if self._clock() - self._checked_at >= READY_CACHE_SECONDS:
                problem: str | None = f"the journal did not answer within {READY_SECONDS:g} s"
                with anyio.move_on_after(READY_SECONDS):
                    problem = await self._journal.problem()
                self._changed(problem)
                self._problem, self._checked_at = problem, self._clock()
            return self._problem

    def _changed(self, problem: str | None) -> None:
        if problem == self._problem:
            return
        if problem is None:
            logger.info("ready again: deletions can be recorded")
        else:
            logger.warning("not ready (GET %s answers 503): %s", READY_PATH, problem)


class Operations:
    """ASGI middleware answering `/healthz`, `/readyz` and `/metrics` in front of `app` (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, readiness: Readiness, metrics_app: ASGIApp) -> None:
        self.app = app
        self._readiness = readiness
        self._metrics = metrics_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path not in (HEALTH_PATH, READY_PATH, METRICS_PATH):
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await respond(send, scope, 405, {"error": "method_not_allowed"}, [(b"allow", b"GET, HEAD")])
        elif path == HEALTH_PATH:
            await respond(send, scope, 200, {"status": "alive"})
        elif path == READY_PATH:
            if await self._readiness.problem() is None:
                await respond(send, scope, 200, {"status": "ready"})
            else:
                await respond(send, scope, 503, {"status": "not ready", "reason": NOT_READY})
        else:
            await self._metrics(scope, receive, send)


async def respond(
    send: Send, scope: Scope, status: int, body: dict[str, str], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A small JSON answer that no cache keeps (no body for HEAD)."""
    data = json.dumps(body).encode()
    await _send(send, scope, status, data, b"application/json", headers or [])


async def _send(
    send: Send, scope: Scope, status: int, data: bytes, content_type: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    head = [
        (b"content-type", content_type),
        (b"content-length", str(len(data)).encode()),
        (b"cache-control", b"no-store"),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else data})


async def serve_metrics(scope: Scope, receive: Receive, send: Send) -> None:
    """The exposition, in the format the scraper's Accept asks for."""
    accept = next((value.decode("latin-1") for name, value in scope["headers"] if name.lower() == b"accept"), None)
    data, content_type = await anyio.to_thread.run_sync(metrics.exposition, accept)
    await _send(send, scope, 200, data, content_type.encode(), [])


async def metrics_off(scope: Scope, receive: Receive, send: Send) -> None:
    await respond(
        send,
        scope,
        403,
        {"error": "metrics_off", "error_description": "a sign-in server serves /metrics only with B24_METRICS_TOKEN"},
    )


class HostChecked:
    """The SDK's Host/Origin check (DNS-rebinding protection) in front of `app`."""

    def __init__(self, app: ASGIApp, security: TransportSecuritySettings) -> None:
        from mcp.server.transport_security import TransportSecurityMiddleware

        self.app = app
        self._check = TransportSecurityMiddleware(security)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.requests import Request

        refusal = await self._check.validate_request(Request(scope, receive), is_post=False)
        if refusal is not None:
            await refusal(scope, receive, send)
        else:
            await self.app(scope, receive, send)
