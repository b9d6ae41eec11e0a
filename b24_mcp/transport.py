"""Streamable HTTP for a shared team server: bearer-token auth, safe binding, state shared across replicas."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import socket
from typing import Any

import anyio
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer, RequestStateSecurity
from pydantic import AnyHttpUrl

from b24_mcp.settings import Settings, SettingsError

logger = logging.getLogger(__name__)

MCP_PATH = "/mcp"
DRAIN_SECONDS = 30


class BearerToken(TokenVerifier):
    """Accepts exactly one token (`B24_MCP_HTTP_TOKEN`), compared in constant time."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self._token):
            return AccessToken(token="bearer", client_id="b24-mcp-http", scopes=[])
        return None


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the server on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def http_options(settings: Settings, host: str, port: int) -> dict[str, Any]:
    """`MCPServer` keyword arguments for serving over HTTP; `SettingsError` for an unsafe binding."""
    token = settings.mcp_http_token.get_secret_value() if settings.mcp_http_token else None
    if token is None and not is_loopback(host):
        raise SettingsError(
            [
                f"B24_MCP_HTTP_TOKEN is not set: serving on {host} without a bearer token would let anyone who "
                "reaches the port delete CRM items; set a long random token, or bind to 127.0.0.1"
            ]
        )
    options: dict[str, Any] = {}
    if token is not None:
        origin = f"http://{host}:{port}"
        options["token_verifier"] = BearerToken(token)
        options["auth"] = AuthSettings(
            issuer_url=AnyHttpUrl(origin),
            resource_server_url=AnyHttpUrl(f"{origin}{MCP_PATH}"),
            validate_token_resource=False,  # one static token, issued for nothing else
        )
    if settings.confirm_secret is not None:
        # Replicas that share B24_CONFIRM_SECRET also unseal each other's elicitation state (2026-07-28 era).
        key = hashlib.sha256(b"b24-mcp request state\n" + settings.confirm_secret.get_secret_value().encode())
        options["request_state_security"] = RequestStateSecurity(keys=[key.digest()])
    return options


def serve_http(server: MCPServer, *, host: str, port: int, stateless: bool) -> None:
    """Serve MCP at `/mcp` until SIGTERM/SIGINT; then stop accepting, let in-flight calls finish, and exit."""
    import uvicorn
    from sse_starlette.sse import AppStatus

    app = server.streamable_http_app(streamable_http_path=MCP_PATH, stateless_http=stateless, host=host)
    # sse-starlette (under the SDK's responses) ends every event stream the moment uvicorn sees the signal, which
    # would cut a tool call's answer short; this server drains its calls first and then lets the streams go.
    AppStatus.enable_automatic_graceful_drain = False

    class Graceful(uvicorn.Server):
        def unanswered(self) -> int:
            """POST requests (tool calls) whose response has not been sent in full."""
            cycles = (getattr(connection, "cycle", None) for connection in self.server_state.connections)
            return sum(
                1
                for cycle in cycles
                if cycle is not None and not cycle.response_complete and cycle.scope.get("method") == "POST"
            )

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for listener in self.servers:
                listener.close()
            # At shutdown the session manager cancels its tasks, cutting any response still being written: a
            # deletion between its journal's intent line and the portal's answer must first finish and be answered.
            for _ in range(int(DRAIN_SECONDS / 0.05)):
                if not self.unanswered():
                    break
                await anyio.sleep(0.05)
            else:
                logger.warning("%d call(s) unanswered after %d s; stopping anyway", self.unanswered(), DRAIN_SECONDS)
            AppStatus.should_exit = True  # now the remaining (listening) streams may close
            await super().shutdown(sockets)

    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=5
    )
    Graceful(config).run()
