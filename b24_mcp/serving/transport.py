"""Streamable HTTP for a shared team server: bearer token, Host/Origin checks, slow-client limits, graceful stop.

What guards a request, outermost first (`/healthz`, `/readyz` and `/metrics` are answered before all of it, by
`probes.Operations`, under rules of their own):

1. uvicorn with `GuardedH11Protocol` (library_hooks): a request must arrive whole within `REQUEST_READ_SECONDS`,
   and at most `connection_limits()` connections stay open.
2. `BearerTokenGate`: with `B24_MCP_HTTP_TOKEN`, every request carries it (compared in constant time), or gets a
   401 that says the token is missing or wrong. No OAuth discovery is advertised: this server is no authorization
   server. With sign-in (`B24_PUBLIC_URL`, `b24_mcp.signin`) there is no static token: the SDK's authorization
   server serves discovery, registration and tokens, and every request to `/mcp` carries a signed-in person's
   token (the SDK's `RequireAuthMiddleware`, with `resource_metadata` in its 401).
3. The SDK's DNS-rebinding protection (`TransportSecuritySettings`), for every bind: Host must name the bound
   address (any spelling, with the port) or one of `B24_MCP_ALLOWED_HOSTS`; Origin, when sent, likewise (421/403).
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import ipaddress
import json
import logging
import resource
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver import MCPServer, RequestStateSecurity
from mcp.server.transport_security import TransportSecuritySettings

from b24_mcp.secure.keys import request_state_key
from b24_mcp.settings import ConfirmMode, Settings, SettingsError, is_loopback_host

if TYPE_CHECKING:
    import uvicorn
    from starlette.types import ASGIApp, Receive, Scope, Send

    from b24_mcp.journal.record import JournalStore

logger = logging.getLogger(__name__)

MCP_PATH = "/mcp"
DRAIN_SECONDS = 30
REQUEST_READ_SECONDS = 10.0  # from a request's first byte to its last (head and body)
MAX_CONNECTIONS = 1000
ACCEPT_BURST = 128  # uvicorn's backlog: how many connections asyncio accepts in one go
FILES_WANTED = 8192  # the open-files limit the server raises its own to, when the hard limit allows
FD_HEADROOM = 100  # descriptors kept for the listener, the portal's connections, the journal
PUBLIC_PREFIX = "/.well-known/"  # served without the token; nothing is served there (no OAuth metadata)


def bind_address(host: str) -> str:
    """`--host` as the socket takes it: `[::1]` (as in a URL) is `::1`."""
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the server on this machine."""
    return is_loopback_host(bind_address(host))


def http_options(settings: Settings, host: str, port: int) -> dict[str, Any]:
    """`MCPServer` keyword arguments for serving over HTTP; `SettingsError` for an unsafe binding."""
    if settings.mcp_http_token is None and settings.public_url is None and not is_loopback(host):
        raise SettingsError(
            [
                f"B24_MCP_HTTP_TOKEN is not set: serving on {host} without a bearer token would let anyone who "
                "reaches the port delete CRM items; set a long random token (openssl rand -hex 32), or bind to "
                "127.0.0.1"
            ]
        )
    if not 0 < port < 65536:
        raise SettingsError([f"--port {port} is not a TCP port (1-65535)"])
    options: dict[str, Any] = {}
    if settings.confirm_secret is not None:
        # Replicas that share B24_CONFIRM_SECRET also unseal each other's elicitation state (2026-07-28 era).
        key = request_state_key(settings.confirm_secret.get_secret_value().encode())
        options["request_state_security"] = RequestStateSecurity(keys=[key])
    return options


def stateless_cannot_ask(settings: Settings, stateless: bool) -> bool:
    """Whether a 2025-11-25 client that declared elicitation gets a preview token instead of a question.

    Stateless HTTP has no back channel to ask such a client; `B24_CONFIRM=auto` then falls back to tokens (and
    `elicit` refuses). 2026-07-28 clients are asked either way. On a sign-in server, `auto` sends such a client's
    person to the approval page instead, so nothing is lost.
    """
    return stateless and settings.confirm is ConfirmMode.AUTO and settings.public_url is None


def start_warnings(settings: Settings, host: str, stateless: bool) -> list[str]:
    """What the operator should know about this way of serving, one log line each."""
    warnings = []
    if stateless_cannot_ask(settings, stateless):
        warnings.append(
            "--stateless with B24_CONFIRM=auto: a client on the 2025-11-25 protocol cannot be asked here (no back "
            "channel), so its deletions need a preview's confirmation token instead; set B24_CONFIRM=elicit to "
            "refuse them rather than fall back"
        )
    if settings.mcp_http_token is None and settings.public_url is None:  # on loopback: elsewhere it is refused
        warnings.append(
            "no B24_MCP_HTTP_TOKEN: any program or user on this machine can call the tools, and so delete CRM "
            "items; set one (openssl rand -hex 32) unless this machine is yours alone"
        )
    if _is_unspecified(host) and not settings.mcp_allowed_hosts:
        warnings.append(
            f"bound to {host} but B24_MCP_ALLOWED_HOSTS is empty: only requests addressed to this machine's "
            "loopback (Host 127.0.0.1, localhost, [::1]) are accepted; list the names clients use, e.g. "
            "B24_MCP_ALLOWED_HOSTS=mcp.example.com,10.0.0.5:8000"
        )
    return warnings


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return host == ""


def _spellings(address: ipaddress.IPv4Address | ipaddress.IPv6Address, given: str) -> list[str]:
    """How a client may write `address` in a Host header (IPv6 in brackets)."""
    if address.version == 4:
        return list(dict.fromkeys([str(address), given]))
    groups = address.exploded.split(":")
    forms = [address.compressed, address.exploded, ":".join(f"{int(group, 16):x}" for group in groups), given]
    return [f"[{form}]" for form in dict.fromkeys(form.lower() for form in forms)]


def bound_names(host: str) -> list[str]:
    """The host part of Host headers that reach a server bound to `host` directly (without the port)."""
    loopback = ["127.0.0.1", "localhost", *_spellings(ipaddress.IPv6Address("::1"), "::1")]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return loopback if host.lower() == "localhost" else [host.lower()]
    if address.is_unspecified:
        return loopback  # every address of the machine: the others are B24_MCP_ALLOWED_HOSTS' to name
    names = _spellings(address, host)
    return [*names, "localhost"] if address.is_loopback else names


def transport_security(host: str, port: int, allowed: Sequence[str] = ()) -> TransportSecuritySettings:
    """The SDK's Host/Origin check for a server bound to `host:port`, plus `B24_MCP_ALLOWED_HOSTS` entries.

    An entry `host[:port]` is a Host a reverse proxy forwards (its http:// and https:// origins are then same-origin
    and allowed too); an entry `scheme://host[:port]` is a browser origin allowed to call.
    """
    hosts: list[str] = []
    origins: list[str] = []
    for name in bound_names(host):
        hosts += [f"{name}:{port}", *([name] if port == 80 else [])]
        origins += [f"http://{name}:{port}", *([f"http://{name}"] if port == 80 else [])]
    for entry in allowed:
        if "://" in entry:
            origins.append(entry)
        else:
            hosts.append(entry)
            origins += [f"http://{entry}", f"https://{entry}"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(dict.fromkeys(hosts)),
        allowed_origins=list(dict.fromkeys(origins)),
    )


class BearerTokenGate:
    """ASGI middleware: every HTTP request (but under `/.well-known/`) carries `Authorization: Bearer <token>`.

    The token is compared as a SHA-256 digest in constant time, so neither its content nor its length shows in the
    timing. A refusal is a 401 whose `WWW-Authenticate` says `invalid_token` and why, and names no metadata: a
    client should tell its user the token is missing or wrong, not start an OAuth flow.
    """

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        *,
        realm: str = "b24-mcp",
        also: Sequence[str] = (),
        named: str = "B24_MCP_HTTP_TOKEN",
    ) -> None:
        self.app = app
        # `also`: further tokens accepted (/metrics takes B24_METRICS_TOKEN too); `named` is what 401s call them.
        self._digests = [hashlib.sha256(each.encode()).digest() for each in (token, *also)]
        self._realm = realm
        self._named = named
        self._refused = 0  # since the last log line: at most one a minute, however many requests are refused
        self._logged_at = float("-inf")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"].startswith(PUBLIC_PREFIX):
            await self.app(scope, receive, send)
            return
        problem = self._problem(scope)
        if problem is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            self._log_refusal(scope, problem)
            await self._refuse(send, problem)

    def _problem(self, scope: Scope) -> str | None:
        values = [value for name, value in scope["headers"] if name.lower() == b"authorization"]
        if not values:
            return f"no bearer token: send Authorization: Bearer <{self._named}>"
        scheme, _, credentials = values[0].strip().partition(b" ")
        if len(values) > 1 or scheme.lower() != b"bearer":
            return "the Authorization header is not one Bearer token"
        digest = hashlib.sha256(credentials.strip()).digest()
        if not any([hmac.compare_digest(digest, each) for each in self._digests]):  # a list: each one compared
            return f"the bearer token is not this server's {self._named}"
        return None

    def _log_refusal(self, scope: Scope, problem: str) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._logged_at >= 60:
            client = scope.get("client")
            logger.warning(
                "refused %d request(s) with 401 since the last such line; the latest, from %s: %s",
                self._refused,
                client[0] if client else "a client",
                problem,
            )
            self._refused, self._logged_at = 0, now

    async def _refuse(self, send: Send, problem: str) -> None:
        challenge = f'Bearer realm="{self._realm}", error="invalid_token", error_description="{problem}"'
        body = json.dumps({"error": "invalid_token", "error_description": problem}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", challenge.encode()),
        ]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def metrics_app(settings: Settings, security: TransportSecuritySettings) -> ASGIApp:
    """`/metrics` as this server's settings protect it (`probes`: a token, off with sign-in, or the Host check)."""
    from b24_mcp.serving.probes import HostChecked, metrics_off, serve_metrics

    tokens = [token.get_secret_value() for token in (settings.metrics_token, settings.mcp_http_token) if token]
    if tokens:
        named = "B24_METRICS_TOKEN" if settings.mcp_http_token is None else "B24_METRICS_TOKEN or B24_MCP_HTTP_TOKEN"
        return BearerTokenGate(serve_metrics, tokens[0], also=tokens[1:], named=named, realm="b24-mcp metrics")
    if settings.public_url is not None:
        return metrics_off
    return HostChecked(serve_metrics, security)  # a loopback server without a token: its /mcp is open too


def http_app(
    server: MCPServer, settings: Settings, *, host: str, port: int, stateless: bool, journal: JournalStore
) -> ASGIApp:
    """The ASGI application serving MCP at `/mcp`: the SDK's, behind the Host/Origin check and the bearer token;
    the probes and `/metrics` in front of all (`probes`), with metrics recorded from now on."""
    from b24_mcp.serving.probes import Operations, Readiness
    from b24_mcp.telemetry import metrics

    allowed = settings.mcp_allowed_hosts
    if settings.public_url is not None:  # sign-in: clients reach the server at B24_PUBLIC_URL
        allowed = (*allowed, settings.public_url.partition("://")[2])
    security = transport_security(host, port, allowed)
    app: ASGIApp = server.streamable_http_app(
        streamable_http_path=MCP_PATH, stateless_http=stateless, transport_security=security, host=host
    )
    if settings.public_url is not None:
        from b24_mcp.signin.metadata import IssuerMetadata

        app = IssuerMetadata(app, settings.public_url, settings.trusted_proxies)
    if settings.mcp_http_token is not None:
        app = BearerTokenGate(app, settings.mcp_http_token.get_secret_value())
    metrics.enable(per_user=settings.metrics_user_ids)
    return Operations(app, readiness=Readiness(journal), metrics_app=metrics_app(settings, security))


def connection_limits() -> tuple[int, int]:
    """How many connections uvicorn accepts at once (its `backlog`), and how many may stay open.

    Raises this process's soft limit of open files to the hard one first (as Go servers do): a host's usual
    `ulimit -n 1024` would otherwise cap the server far below what the machine allows. Running out of descriptors
    must never happen: asyncio then logs an error per pending connection and stops accepting for a second at a time,
    so a flood of stalled connections would lock every client out. The cap leaves room for a few accept bursts
    (asyncio accepts up to `backlog` connections before the first is seen and the cap applies) and the process's
    own files.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, FILES_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (OSError, ValueError):
            logger.warning("could not raise the open-files limit from %d to %d", soft, wanted)
    files = FILES_WANTED if soft == resource.RLIM_INFINITY else soft
    burst = max(8, min(ACCEPT_BURST, files // 8))
    return burst, max(8, min(MAX_CONNECTIONS, files - 4 * burst - FD_HEADROOM))


class NamesAllowedHosts(logging.Filter):
    """The SDK's line for a refused Host or Origin, naming what to set; the header as a terminal shows it safely."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for header, status in (("Host", 421), ("Origin", 403)):
            prefix = f"Invalid {header} header: "
            if message.startswith(prefix):
                from b24_mcp.text import for_terminal

                shown = for_terminal(message.removeprefix(prefix), 200)
                record.msg = (
                    f"refused a request with {header} {shown} ({status}): not this server's address; if clients "
                    "reach it by that name, add it to B24_MCP_ALLOWED_HOSTS"
                )
                record.args = ()
        return True


def start_line(settings: Settings, *, host: str, port: int, sandbox: bool) -> str:
    """The one line that says where the server listens, how callers authenticate, and against what."""
    shown = f"[{host}]" if ":" in host else host
    where = f"http://{shown}:{port}{MCP_PATH}"
    if _is_unspecified(host):
        where += " (every address of this machine)"
    if settings.public_url is not None:
        auth = f"each person signs in (B24_PUBLIC_URL; clients connect to {settings.public_url}{MCP_PATH})"
    elif settings.mcp_http_token is not None:
        auth = "bearer token (B24_MCP_HTTP_TOKEN)"
    else:
        auth = "none (no B24_MCP_HTTP_TOKEN)"
    portal = "the sandbox (an emulated portal, nothing real is touched)" if sandbox else "the configured portal"
    return f"serving MCP at {where} for {portal}; authentication: {auth}"


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    """The listening socket; `SettingsError`, one line, when the address cannot be had (in use, not ours)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=backlog)
    except OSError as exc:
        where = f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            problem = f"port {port} is in use on {host} (another server?); stop it or choose another with --port"
        elif exc.errno == errno.EACCES:
            problem = f"permission denied for {where} (ports below 1024 need privileges); choose another with --port"
        elif exc.errno == errno.EADDRNOTAVAIL:
            problem = f"{host} is not an address of this machine (--host)"
        else:
            problem = f"{where}: {exc.strerror or type(exc).__name__}"
        raise SettingsError([f"cannot listen: {problem}"]) from None


def http_config(app: ASGIApp, *, host: str, port: int, read_seconds: float = REQUEST_READ_SECONDS) -> uvicorn.Config:
    """How uvicorn serves `app`: the guarded protocol (a request arrives whole within `read_seconds`, connections
    capped below the open-files limit), logging left to the process's handler (`telemetry.logs`, so uvicorn's lines
    share the server's format), no forwarded headers believed, a short graceful stop."""
    import uvicorn

    from b24_mcp.serving.library_hooks import guarded_protocol

    backlog, max_connections = connection_limits()
    return uvicorn.Config(
        app,
        host=bind_address(host),
        port=port,
        backlog=backlog,
        http=guarded_protocol(read_seconds=read_seconds, max_connections=max_connections),
        log_config=None,
        log_level="warning",
        access_log=False,
        proxy_headers=False,  # X-Forwarded-For is believed only from B24_TRUSTED_PROXIES (signin.sources)
        timeout_graceful_shutdown=5,
    )


def serve_http(
    server: MCPServer,
    *,
    host: str,
    port: int,
    stateless: bool,
    settings: Settings,
    journal: JournalStore,
    sandbox: bool = False,
) -> int:
    """Serve MCP at `/mcp` until SIGTERM/SIGINT; then stop accepting, let in-flight calls finish; the exit status.

    uvicorn leaves logging to the process's handler (`telemetry.logs`), so its lines share the server's format."""
    from b24_mcp.serving.library_hooks import DrainingServer, hold_event_streams

    host = bind_address(host)
    app = http_app(server, settings, host=host, port=port, stateless=stateless, journal=journal)
    logging.getLogger("mcp.server.transport_security").addFilter(NamesAllowedHosts())
    backlog, _ = connection_limits()
    listener = _listen(host, port, backlog)
    for warning in start_warnings(settings, host, stateless):
        logger.warning("%s", warning)
    hold_event_streams()  # DrainingServer releases them once in-flight calls are answered
    draining = type("Draining", (DrainingServer,), {"drain_seconds": DRAIN_SECONDS})
    logger.info("%s", start_line(settings, host=host, port=port, sandbox=sandbox))
    try:
        draining(http_config(app, host=host, port=port)).run(sockets=[listener])
    except KeyboardInterrupt:  # uvicorn raises Ctrl-C again once it has stopped
        return 130
    return 0
