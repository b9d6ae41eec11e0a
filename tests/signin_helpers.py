"""What the sign-in tests share: a sign-in server (`b24-mcp --transport http` with sign-in on: served in the test's
process, or as the command in a process of its own) against the emulator over HTTPS on loopback, and people who sign
in through the SDK's own OAuth client with a headless browser."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import secrets
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from types import TracebackType
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.seed import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from b24_mcp.settings import load_settings
from helpers import b24_environment, http_server, serving_http
from helpers import run_b24 as run_command

CLIENT_REDIRECT = "http://127.0.0.1:9/callback"  # never contacted: the browser stops when it is sent there
MAX_HOPS = 12


@dataclass
class SignInServer:
    """A running sign-in server (`url`, its /mcp, is where a test reaches it), its environment, and how to stop it
    and read its log."""

    url: str
    env: dict[str, str]
    _stop: Callable[[], str]

    @property
    def public_url(self) -> str:
        return self.url.removesuffix("/mcp")

    @property
    def mcp_url(self) -> str:
        return self.url

    def stop(self) -> str:
        """Stop the process (SIGTERM) and return what it wrote to stderr; in-process, what it has logged."""
        return self._stop()


def signin_env(portal: Portal, origin: str, ca_bundle: Path, state: Path, journal: Path, port: int) -> dict[str, str]:
    """The environment of a sign-in server on `port` against the emulator at `origin`; registers the application's
    redirect URI on the portal."""
    public_url = f"http://127.0.0.1:{port}"
    portal.add_app(SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, redirect_uri=public_url + "/oauth/callback")
    return {
        "B24_PUBLIC_URL": public_url,
        "B24_PORTAL_URL": origin,
        "B24_OAUTH_URL": origin + "/oauth/token/",
        "B24_CLIENT_ID": SANDBOX_CLIENT_ID,
        "B24_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
        "B24_CA_BUNDLE": str(ca_bundle),
        "B24_STATE_DIR": str(state),
        "B24_AUDIT_LOG": str(journal),
        "B24_CONFIRM": "token",
        "B24_CONFIRM_SECRET": "signin-confirm-secret-0123456789abcdef",
        "B24_LOG_LEVEL": "INFO",
    }


def run_b24(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The `b24-mcp` command with a server's environment: `run_b24(server.env, "people")`."""
    return run_command(*args, env=env)


@contextmanager
def signin_process(
    env: dict[str, str], log_folder: Path, *args: str, port: int | None = None
) -> Iterator[SignInServer]:
    """`b24-mcp --transport http [args]` with `env` (its port is the public URL's), a process, until the block ends.

    With `port`, a replica behind the public address listening on a port of its own: the `SignInServer`'s URL is
    that port's (where a test reaches this replica), the public URL stays `env`'s."""
    port = port or int(env["B24_PUBLIC_URL"].rsplit(":", 1)[1])
    with http_server(env, *args, port=port, log_folder=log_folder) as served:
        yield SignInServer(served.url, env, served.stop)


class LogLines(logging.Handler):
    """What a server in this process logs at `level` and above, formatted as the command writes it to stderr."""

    def __init__(self, level: str) -> None:
        super().__init__(level)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []
        self._levels: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)

    def __enter__(self) -> LogLines:
        for logger in self._loggers():
            self._levels.append(logger.level)
            logger.addHandler(self)
        logging.getLogger().setLevel(self.level)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for logger, level in zip(self._loggers(), self._levels, strict=True):
            logger.removeHandler(self)
            logger.setLevel(level)

    @staticmethod
    def _loggers() -> list[logging.Logger]:
        # uvicorn's own loggers do not propagate to the root one
        return [logging.getLogger(), logging.getLogger("uvicorn"), logging.getLogger("uvicorn.access")]


@asynccontextmanager
async def signin_server(env: dict[str, str], *args: str, port: int | None = None) -> AsyncIterator[SignInServer]:
    """The sign-in server `b24-mcp --transport http [args]` with `env` would be (its port is the public URL's),
    assembled as the command does and served in this process until the block ends (`signin_process` for a process).

    With `port`, a replica behind the public address listening on a port of its own, as `signin_process`."""
    assert set(args) <= {"--stateless"}, args
    port = port or int(env["B24_PUBLIC_URL"].rsplit(":", 1)[1])
    with mock.patch.dict(os.environ, b24_environment(env), clear=True):  # the environment the command would have
        settings = load_settings()
    with LogLines(settings.log_level) as log:
        async with serving_http(settings, port=port, stateless="--stateless" in args) as url:
            yield SignInServer(url, env, log.text)


class MemoryStorage:
    """The SDK client's token storage, kept by the test (so a person stays signed in across connections)."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@dataclass
class Browser:
    """Follows a sign-in as a person's browser would, without one: redirects, and the consent page's answer.

    `pages` records every address visited; `result` is what reached the client's redirect URI.
    """

    ca_bundle: Path
    allow: bool = True
    pages: list[str] = field(default_factory=list)
    result: AuthorizationCodeResult | None = None
    arrived: dict[str, str] = field(default_factory=dict)  # every parameter the client's redirect URI got

    async def open(self, url: str) -> None:
        """Go to `url` and follow the sign-in until the browser is sent to the client's redirect URI."""
        verify = ssl.create_default_context(cafile=str(self.ca_bundle))
        async with httpx2.AsyncClient(verify=verify, follow_redirects=False, timeout=30) as http:
            response = await http.get(url)
            for _ in range(MAX_HOPS):
                self.pages.append(str(response.request.url))
                if response.status_code in (302, 303):
                    target = urljoin(str(response.request.url), response.headers["location"])
                    if target.startswith(CLIENT_REDIRECT):
                        self._arrive(target)
                        return
                    response = await http.get(target)
                elif response.status_code == 200 and 'name="consent"' in response.text:
                    action, consent = consent_form(response.text)
                    decision = "allow" if self.allow else "deny"
                    response = await http.post(action, data={"consent": consent, "decision": decision})
                else:
                    raise AssertionError(f"the sign-in stopped at HTTP {response.status_code}: {response.text[:300]}")
        raise AssertionError("the sign-in did not come back to the client")

    def _arrive(self, target: str) -> None:
        query = {name: values[0] for name, values in parse_qs(urlsplit(target).query).items()}
        self.arrived = query
        if "code" in query:
            self.result = AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss"))

    async def callback(self) -> AuthorizationCodeResult:
        if self.result is None:
            raise AssertionError(f"no code came back: {self.arrived}")
        result, self.result = self.result, None
        return result


def consent_form(page: str) -> tuple[str, str]:
    """The consent form's action and hidden consent id."""
    action = re.search(r'<form method="post" action="([^"]+)"', page)
    consent = re.search(r'name="consent" value="([^"]+)"', page)
    assert action is not None and consent is not None, page[:300]
    return unescape(action.group(1)), unescape(consent.group(1))


@dataclass
class Person:
    """Someone using an MCP client with the SDK's OAuth support: their portal user, storage and browser."""

    user_id: int
    browser: Browser
    storage: MemoryStorage = field(default_factory=MemoryStorage)
    client_name: str = "b24-mcp tests"

    def provider(self, server_url: str) -> OAuthClientProvider:
        metadata = OAuthClientMetadata(
            redirect_uris=[CLIENT_REDIRECT],  # type: ignore[list-item]  # pydantic parses the URL
            client_name=self.client_name,
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        )
        return OAuthClientProvider(
            server_url,
            metadata,
            self.storage,
            redirect_handler=self.browser.open,
            callback_handler=self.browser.callback,
        )

    @asynccontextmanager
    async def connect(self, portal: Portal, server: SignInServer, **client: Any) -> AsyncIterator[Client]:
        """An MCP session as this person (signing in first when the client has no valid token); `client`: the
        SDK client's options (`mode`, `elicitation_callback`)."""
        portal.sign_in_as(self.user_id)  # the portal's browser session is this person's
        http = httpx2.AsyncClient(auth=self.provider(server.mcp_url), timeout=30)
        async with http, Client(streamable_http_client(server.mcp_url, http_client=http), **client) as session:
            yield session

    @property
    def access_token(self) -> str:
        assert self.storage.tokens is not None
        return self.storage.tokens.access_token


async def call(session: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await session.call_tool(tool, arguments)
    content = result.structured_content
    assert content is not None, result
    return dict(content)


async def delete_with_preview(session: Client, entity_type_id: int, item_id: int) -> dict[str, Any]:
    """Preview an item, then delete it with the preview's token."""
    preview = await call(session, "crm_item_delete", {"entityTypeId": entity_type_id, "id": item_id})
    assert preview["status"] == "preview", preview
    token = preview["confirmationToken"]
    arguments = {"entityTypeId": entity_type_id, "id": item_id, "dryRun": False, "confirmationToken": token}
    return await call(session, "crm_item_delete", arguments)


# ------------------------------------------------------------------------------- an MCP client spoken to by hand


@dataclass(frozen=True)
class RawClient:
    """A registered client and the PKCE pair of its sign-in, for requests made by hand."""

    client_id: str
    client_secret: str | None
    verifier: str
    challenge: str


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


async def register(server: SignInServer, **metadata: Any) -> httpx2.Response:
    body = {"redirect_uris": [CLIENT_REDIRECT], "client_name": "a client by hand", **metadata}
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(server.public_url + "/register", json=body)


async def registered(server: SignInServer, **metadata: Any) -> RawClient:
    response = await register(server, **metadata)
    assert response.status_code == 201, response.text
    verifier, challenge = pkce()
    info = response.json()
    return RawClient(info["client_id"], info.get("client_secret"), verifier, challenge)


def authorize_url(
    server: SignInServer, client: RawClient, *, resource: str | None = None, redirect_uri: str = CLIENT_REDIRECT
) -> str:
    query = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": redirect_uri,
        "code_challenge": client.challenge,
        "code_challenge_method": "S256",
        "state": "client-state",
        "resource": resource or server.mcp_url,
    }
    return f"{server.public_url}/authorize?{urlencode(query)}"


async def token_request(server: SignInServer, client: RawClient, **form: str) -> httpx2.Response:
    """POST /token as `client` (its secret in the body)."""
    credentials = {"client_id": client.client_id} | (
        {"client_secret": client.client_secret} if client.client_secret else {}
    )
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(server.public_url + "/token", data=credentials | form)


async def code_of(server: SignInServer, portal: Portal, browser: Browser, client: RawClient, user_id: int) -> str:
    """Sign `user_id` in through `client` and return the authorization code that came back."""
    portal.sign_in_as(user_id)
    await browser.open(authorize_url(server, client))
    return browser.arrived["code"]


async def redeem(server: SignInServer, client: RawClient, code: str, verifier: str | None = None) -> httpx2.Response:
    return await token_request(
        server,
        client,
        grant_type="authorization_code",
        code=code,
        redirect_uri=CLIENT_REDIRECT,
        code_verifier=verifier or client.verifier,
        resource=server.mcp_url,
    )


async def mcp_status(server: SignInServer, access_token: str) -> int:
    """The HTTP status of a bare `tools/list` with this bearer token."""
    headers = {"authorization": f"Bearer {access_token}", "accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(
            server.mcp_url,
            headers=headers,
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"},
                },
            },
        )
    return response.status_code
