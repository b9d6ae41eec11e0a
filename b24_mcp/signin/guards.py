"""ASGI guards in front of the SDK's authorization server, for what its handlers do not let the provider decide.

- The source of each request (`sources`): made current for the provider, which counts registrations and sign-ins in
  flight per source address; a request the store refused as over its address's share (`records.SourceFull`) is
  answered 429 with `Retry-After` (a short page at `/authorize`, where a person's browser is; an OAuth error in JSON
  at `/register`) instead of the SDK's 400 or redirect.
- The resource at `/token` (RFC 8707): the SDK reads a token request's `resource` but gives it to no provider
  method, so the form is read here first, and a resource other than this server's MCP endpoint is answered
  `400 invalid_target` before any code or refresh token is looked at (nothing is spent).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from mcp.server.auth.routes import TOKEN_PATH
from starlette.responses import JSONResponse, Response

from b24_mcp.signin.pages import try_later
from b24_mcp.signin.provider import same_resource
from b24_mcp.signin.sources import Network, Source, serve_as, source_key

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_TOKEN_FORM = 16 * 1024  # a token request is a few hundred bytes
TOO_MANY = "Too many requests from your address; try again in {seconds} seconds."


class SourceCheck:
    """ASGI middleware: the source of each request, its share, and the resource at `/token` (module docstring)."""

    def __init__(self, app: ASGIApp, resource: str, trusted_proxies: Sequence[Network] = ()) -> None:
        self.app = app
        self._resource = resource
        self._trusted = tuple(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == TOKEN_PATH and scope["method"] == "POST":
            body = await _read(receive)
            refusal = self._token_refusal(body)
            if refusal is not None or body is None:
                await (refusal or _too_large())(scope, receive, send)
                return
            receive = _replay(body, receive)
        source = Source(source_key(scope, self._trusted))
        serve_as(source)
        refused = False

        async def watched(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and source.retry_after is not None:
                refused = True
                seconds = source.retry_after
                await try_later(scope["path"], 429, TOO_MANY.format(seconds=seconds), seconds)(scope, receive, send)
            elif not refused:
                await send(message)

        await self.app(scope, receive, watched)

    def _token_refusal(self, body: bytes | None) -> Response | None:
        if body is None:
            return _too_large()
        try:
            fields = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
        except (UnicodeDecodeError, ValueError):
            return None  # the SDK refuses what it cannot read
        for name, value in fields:
            if name == "resource" and not same_resource(value, self._resource):
                description = f"This server only grants access to {self._resource}."
                return JSONResponse(
                    {"error": "invalid_target", "error_description": description},
                    status_code=400,
                    headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
                )
        return None


def _too_large() -> Response:
    return JSONResponse({"error": "invalid_request", "error_description": "The token request is too large."}, 413)


async def _read(receive: Receive) -> bytes | None:
    """The request's body, or None past `MAX_TOKEN_FORM`."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return bytes(body)
        body += message.get("body", b"")
        if len(body) > MAX_TOKEN_FORM:
            return None
        if not message.get("more_body", False):
            return bytes(body)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` with the body already read given back first."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
