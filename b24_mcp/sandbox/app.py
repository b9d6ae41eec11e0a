"""The ASGI app: HTTP in and out around ``gateway`` (routes, request bodies, delayed and dropped answers).

Uses only Starlette's public surface: routes, ``Request``, and a ``Response`` subclass whose ``__call__`` speaks
plain ASGI for the one answer no library offers, a connection dropped mid-body.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from b24_mcp.sandbox.envelope import Answer
from b24_mcp.sandbox.faults import ConnectionDropped
from b24_mcp.sandbox.gateway import Incoming, serve_authorize, serve_rest, serve_token
from b24_mcp.sandbox.php import parse_php_query, php_assign, php_keys, php_listify
from b24_mcp.sandbox.state import PortalState

__all__ = ["create_app"]


def create_app(portal: PortalState) -> Starlette:
    """The ASGI app serving ``portal``: ``/rest/...``, and its OAuth ``/oauth/authorize/`` and ``/oauth/token/``."""

    def endpoint(serve: Callable[[PortalState, Incoming], Answer]) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            incoming = Incoming(
                scheme=request.url.scheme,
                netloc=request.url.netloc,
                path=request.path_params.get("path", ""),
                params=await _read_params(request),
                bearer=_bearer(request),
                query=parse_php_query(request.url.query),
            )
            return await _deliver(serve(portal, incoming))

        return handle

    rest, token, authorize = endpoint(serve_rest), endpoint(serve_token), endpoint(serve_authorize)
    return Starlette(
        routes=[
            Route("/rest/{path:path}", rest, methods=["GET", "POST"]),
            Route("/oauth/token/", token, methods=["GET", "POST"]),
            Route("/oauth/token", token, methods=["GET", "POST"]),
            Route("/oauth/authorize/", authorize, methods=["GET"]),
            Route("/oauth/authorize", authorize, methods=["GET"]),
        ]
    )


async def _deliver(answer: Answer) -> Response:
    if answer.delay > 0:
        await anyio.sleep(answer.delay)
    response_type = _CutOffResponse if answer.drop else Response
    return response_type(answer.content, status_code=answer.status, headers=answer.headers)


class _CutOffResponse(Response):
    """Half an answer, then ``ConnectionDropped``: an ASGI server closes the connection mid-response, so the client
    sees a truncated body (``serve.sandbox_transport`` turns the exception into that client error in process)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = self.raw_headers if self.body else [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True})
        raise ConnectionDropped("the emulator dropped the connection in the middle of its answer")


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


async def _read_params(request: Request) -> dict[str, Any]:
    """Query string and body merged (the body wins), decoded as the portal does (spec §3.2)."""
    params = parse_php_query(request.url.query)
    if request.method != "POST":
        return params
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body: dict[str, Any]
    if content_type == "application/json":
        try:
            decoded = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            decoded = {}
        body = decoded if isinstance(decoded, dict) else {}
    elif content_type == "multipart/form-data":
        try:
            form = await request.form()
        except Exception:  # the real portal ignores bodies it cannot parse
            return params
        root: dict[str, Any] = {}
        for key, value in form.multi_items():
            php_assign(root, php_keys(key), value if isinstance(value, str) else (value.filename or ""))
        body = {key: php_listify(value) for key, value in root.items()}
    else:
        body = parse_php_query((await request.body()).decode("utf-8", errors="replace"))
    params.update(body)
    return params
