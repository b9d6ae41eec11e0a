"""The HTTP transport's pieces on their own: which Host and Origin values a bind accepts, the bearer-token gate,
and what the server says at start."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable

import httpx2
import pytest
from starlette.types import Receive, Scope, Send

from b24_mcp.serving.transport import (
    BearerTokenGate,
    NamesAllowedHosts,
    bind_address,
    is_loopback,
    start_line,
    start_warnings,
    stateless_cannot_ask,
    transport_security,
)
from b24_mcp.settings import Settings

pytestmark = pytest.mark.anyio

TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("host", ["127.0.0.2", "127.255.0.1", "::1", "0:0:0:0:0:0:0:1", "[::1]", "localhost"])
def test_every_loopback_spelling_is_loopback(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "example.com", ""])
def test_other_binds_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_a_bracketed_ipv6_bind_is_the_bare_address() -> None:
    assert (bind_address("[::1]"), bind_address("::1"), bind_address("127.0.0.1")) == ("::1", "::1", "127.0.0.1")


def test_an_ipv4_loopback_bind_accepts_its_address_and_localhost_with_the_port() -> None:
    security = transport_security("127.0.0.2", 8000)
    assert security.enable_dns_rebinding_protection
    assert security.allowed_hosts == ["127.0.0.2:8000", "localhost:8000"]
    assert security.allowed_origins == ["http://127.0.0.2:8000", "http://localhost:8000"]


def test_an_ipv6_bind_accepts_every_spelling_of_its_address() -> None:
    hosts = transport_security("0:0:0:0:0:0:0:1", 8000).allowed_hosts
    assert hosts == [
        "[::1]:8000",
        "[0000:0000:0000:0000:0000:0000:0000:0001]:8000",
        "[0:0:0:0:0:0:0:1]:8000",
        "localhost:8000",
    ]


def test_a_wildcard_bind_accepts_only_loopback_names_unless_others_are_listed() -> None:
    security = transport_security("0.0.0.0", 8000, ("mcp.example.com", "https://tools.example"))
    assert security.allowed_hosts == [
        "127.0.0.1:8000",
        "localhost:8000",
        "[::1]:8000",
        "[0000:0000:0000:0000:0000:0000:0000:0001]:8000",
        "[0:0:0:0:0:0:0:1]:8000",
        "mcp.example.com",
    ]
    listed = {"https://tools.example", "http://mcp.example.com", "https://mcp.example.com"}
    assert listed <= set(security.allowed_origins)


def test_port_80_may_be_left_out_of_host_and_origin() -> None:
    security = transport_security("127.0.0.1", 80)
    assert {"127.0.0.1:80", "127.0.0.1"} <= set(security.allowed_hosts)
    assert "http://127.0.0.1" in security.allowed_origins


def test_a_named_bind_accepts_its_name() -> None:
    assert transport_security("mcp.internal", 9000).allowed_hosts == ["mcp.internal:9000"]


async def ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def status_with(*authorization: str, path: str = "/mcp") -> int:
    transport = httpx2.ASGITransport(app=BearerTokenGate(ok, TOKEN))
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        headers = [("authorization", value) for value in authorization]
        return (await http.post(path, headers=headers)).status_code


async def test_the_gate_lets_the_token_through_whatever_the_schemes_case() -> None:
    assert [await status_with(f"Bearer {TOKEN}"), await status_with(f"bearer {TOKEN}")] == [200, 200]


@pytest.mark.parametrize("authorization", [(), ("Bearer",), (f"Bearer {TOKEN[:-1]}",), (f"Basic {TOKEN}",)])
async def test_the_gate_refuses_anything_but_the_token(authorization: tuple[str, ...]) -> None:
    assert await status_with(*authorization) == 401


async def test_the_gate_refuses_two_authorization_headers() -> None:
    assert await status_with(f"Bearer {TOKEN}", "Bearer another") == 401


async def test_the_gate_leaves_well_known_paths_to_the_app() -> None:
    assert await status_with(path="/.well-known/oauth-protected-resource") == 200


@pytest.mark.parametrize(("confirm", "stateless", "cannot_ask"), [
    ("auto", True, True), ("auto", False, False), ("elicit", True, False), ("token", True, False),
])  # fmt: skip
def test_only_stateless_auto_falls_back_from_asking_to_tokens(
    make_settings: Callable[..., Settings], confirm: str, stateless: bool, cannot_ask: bool
) -> None:
    assert stateless_cannot_ask(make_settings(confirm=confirm), stateless) is cannot_ask


def test_stateless_auto_is_a_start_warning(make_settings: Callable[..., Settings]) -> None:
    (warning,) = start_warnings(make_settings(confirm="auto", mcp_http_token=TOKEN), "127.0.0.1", stateless=True)
    assert warning.startswith("--stateless with B24_CONFIRM=auto")


def test_a_wildcard_bind_with_allowed_hosts_gives_no_warning(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(mcp_allowed_hosts="mcp.example.com", mcp_http_token=TOKEN)
    assert start_warnings(settings, "0.0.0.0", stateless=False) == []


@pytest.mark.process
@pytest.mark.parametrize(
    ("soft", "hard", "limits"),
    [(256, 256, "(32, 28) 256"), (1024, 1024, "(128, 412) 1024"), (1024, 4096, "(128, 1000) 4096")],
)
def test_the_connection_cap_stays_clear_of_the_open_files_limit_raised_to_the_hard_one(
    soft: int, hard: int, limits: str
) -> None:
    script = (
        "import resource, sys; from b24_mcp.serving.transport import connection_limits; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard})); "
        "print(connection_limits(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == limits


def test_the_start_line_says_where_how_and_against_what(make_settings: Callable[..., Settings]) -> None:
    assert start_line(make_settings(), host="127.0.0.1", port=8000, sandbox=True) == (
        "serving MCP at http://127.0.0.1:8000/mcp for the sandbox (an emulated portal, nothing real is touched); "
        "authentication: none (no B24_MCP_HTTP_TOKEN)"
    )
    line = start_line(make_settings(mcp_http_token=TOKEN), host="::1", port=9000, sandbox=False)
    assert line == (
        "serving MCP at http://[::1]:9000/mcp for the configured portal; authentication: bearer token "
        "(B24_MCP_HTTP_TOKEN)"
    )


def test_loopback_without_a_token_is_a_start_warning_naming_the_token(make_settings: Callable[..., Settings]) -> None:
    (warning,) = start_warnings(make_settings(), "127.0.0.1", stateless=False)
    assert warning.startswith("no B24_MCP_HTTP_TOKEN: any program or user on this machine can call the tools")


def test_a_refused_host_is_logged_naming_the_setting_that_allows_it() -> None:
    record = logging.LogRecord(
        "mcp.server.transport_security", logging.WARNING, "", 0, "Invalid Host header: %s", ("a\x1bb",), None
    )
    assert NamesAllowedHosts().filter(record)
    assert record.getMessage() == (
        "refused a request with Host a\\x1bb (421): not this server's address; if clients reach it by that name, "
        "add it to B24_MCP_ALLOWED_HOSTS"
    )


def test_stateless_auto_on_a_sign_in_server_falls_back_to_the_approval_page_not_to_tokens(
    make_settings: Callable[..., Settings],
) -> None:
    assert not stateless_cannot_ask(make_settings(confirm="auto", public_url="https://mcp.example.com"), True)
