"""Floods from one address against the sign-in's unauthenticated endpoints (`/register`, `/authorize`): the address
is slowed (429 with `Retry-After`) once over its share, and everyone else still registers and signs in. The server
runs in memory (the real application, its ASGI stack and a real people store), with small shares and caps, each
address a transport of its own; behind a proxy, the forwarded address counts only from a trusted proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from b24_mcp.app import build_signin_app
from b24_mcp.serving.tools import build_server
from b24_mcp.serving.transport import http_app
from b24_mcp.settings import Settings, SettingsError
from b24_mcp.signin import sqlite as store_module
from b24_mcp.signin.provider import FloodLimits
from b24_mcp.signin.sources import source_address
from b24_mcp.signin.store import UNUSED_CLIENT_SECONDS

pytestmark = pytest.mark.anyio

PUBLIC_URL = "http://127.0.0.1:8000"
REDIRECT = "http://127.0.0.1:9/callback"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
FLOODER, NEIGHBOUR, PROXY = "203.0.113.5", "198.51.100.20", "10.0.0.1"
Server = Callable[[str], httpx2.AsyncClient]  # a client of the server from the given source address


@pytest.fixture
def serve(make_settings: Callable[..., Settings], tmp_path: Path) -> Callable[..., Server]:
    """`serve(limits, trusted_proxies="")`: the sign-in server in memory, and a client of it per source address."""

    def build(limits: FloodLimits, trusted_proxies: str = "") -> Server:
        settings = make_settings(
            public_url=PUBLIC_URL,
            portal_url="https://portal.example",
            client_id="local.app",
            client_secret="app-secret-0123456789abcdef0123456789",
            state_dir=tmp_path / "state",
            **({"trusted_proxies": trusted_proxies} if trusted_proxies else {}),
        )
        app, people = build_signin_app(settings, limits=limits)
        server = build_server(app, server_options=people.server_options())
        people.add_routes(server)
        asgi = http_app(server, settings, host="127.0.0.1", port=8000, stateless=True, journal=app.journal)

        def client_from(address: str) -> httpx2.AsyncClient:
            transport = httpx2.ASGITransport(app=asgi, client=(address, 40000))
            return httpx2.AsyncClient(transport=transport, base_url=PUBLIC_URL)

        return client_from

    return build


async def register(http: httpx2.AsyncClient, **headers: str) -> httpx2.Response:
    body = {"redirect_uris": [REDIRECT], "client_name": "flood", "token_endpoint_auth_method": "none"}
    return await http.post("/register", json=body, headers=headers)


async def authorize(http: httpx2.AsyncClient, client_id: str) -> httpx2.Response:
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        "resource": PUBLIC_URL + "/mcp",
    }
    return await http.get("/authorize", params=query)


def assert_slowed(response: httpx2.Response, at_most: int) -> None:
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["retry-after"]) <= at_most


async def test_a_flood_of_registrations_from_one_address_leaves_the_others_registering(
    serve: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "MAX_CLIENTS", 8)  # the cap on everyone, as a last resort
    client_from = serve(FloodLimits(clients=3))
    async with client_from(FLOODER) as flooder, client_from(NEIGHBOUR) as neighbour:
        flood = [await register(flooder) for _ in range(12)]
        assert [answer.status_code for answer in flood[:3]] == [201] * 3
        assert_slowed(flood[-1], UNUSED_CLIENT_SECONDS)
        assert flood[-1].json()["error"] == "temporarily_unavailable"
        assert (await register(neighbour)).status_code == 201


async def test_a_flood_of_sign_ins_from_one_address_leaves_the_others_signing_in(
    serve: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "MAX_PENDING", 8)
    client_from = serve(FloodLimits(sign_ins=3))
    async with client_from(FLOODER) as flooder, client_from(NEIGHBOUR) as neighbour:
        client_id = (await register(neighbour)).json()["client_id"]  # a client anyone may use: its id is public
        flood = [await authorize(flooder, client_id) for _ in range(12)]
        assert [answer.status_code for answer in flood[:3]] == [302] * 3
        assert_slowed(flood[-1], 900)
        assert flood[-1].headers["content-type"].startswith("text/html")  # a person's browser is there
        signing_in = await authorize(neighbour, client_id)
        assert signing_in.status_code == 302
        assert signing_in.headers["location"].startswith("https://portal.example/oauth/authorize/")


async def test_forwarded_addresses_are_not_believed_by_default(serve: Callable[..., Server]) -> None:
    client_from = serve(FloodLimits(clients=2))
    async with client_from(FLOODER) as flooder:
        answers = [await register(flooder, **{"x-forwarded-for": f"192.0.2.{n}"}) for n in range(3)]
    assert [answer.status_code for answer in answers] == [201, 201, 429]


async def test_behind_a_trusted_proxy_each_forwarded_address_has_its_own_share(serve: Callable[..., Server]) -> None:
    client_from = serve(FloodLimits(clients=2), trusted_proxies=f"{PROXY}/32")
    async with client_from(PROXY) as proxy:
        flood = [await register(proxy, **{"x-forwarded-for": FLOODER}) for _ in range(3)]
        neighbour = await register(proxy, **{"x-forwarded-for": f"{FLOODER}, {NEIGHBOUR}"})  # appended by the proxy
    assert [answer.status_code for answer in flood] == [201, 201, 429]
    assert neighbour.status_code == 201


async def test_a_peer_that_is_not_a_trusted_proxy_cannot_choose_its_address(serve: Callable[..., Server]) -> None:
    client_from = serve(FloodLimits(clients=2), trusted_proxies=PROXY)
    async with client_from(FLOODER) as flooder:
        answers = [await register(flooder, **{"x-forwarded-for": f"192.0.2.{n}"}) for n in range(3)]
    assert [answer.status_code for answer in answers] == [201, 201, 429]


@pytest.mark.parametrize(
    ("peer", "forwarded", "source"),
    [
        ("10.0.0.1", ["192.0.2.7"], "192.0.2.7"),
        ("10.0.0.1", ["192.0.2.7", "10.0.0.2"], "192.0.2.7"),  # a chain of trusted proxies
        ("10.0.0.1", ["192.0.2.66", "192.0.2.7"], "192.0.2.7"),  # what the client itself wrote is not believed
        ("10.0.0.1", ["not an address"], "10.0.0.1"),
        ("10.0.0.1", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("203.0.113.5", ["192.0.2.7"], "203.0.113.5"),
        ("::ffff:203.0.113.5", [], "203.0.113.5"),
    ],
)
def test_the_source_is_the_first_address_no_trusted_proxy_added(peer: str, forwarded: list[str], source: str) -> None:
    trusted = [ipaddress.ip_network("10.0.0.0/24")]
    assert source_address(peer, forwarded, trusted) == ipaddress.ip_address(source)


async def test_an_ipv6_host_counts_as_its_64(serve: Callable[..., Server]) -> None:
    client_from = serve(FloodLimits(clients=2))
    answers = []
    for host in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"):
        async with client_from(host) as http:
            answers.append((await register(http)).status_code)
    async with client_from("2001:db8:1:3::1") as other:
        answers.append((await register(other)).status_code)
    assert answers == [201, 201, 429, 201]


@pytest.mark.parametrize("value", ["10.0.0.1,proxy.internal", "10.0.0.0/33"])
def test_a_trusted_proxy_that_is_no_address_is_refused(make_settings: Callable[..., Settings], value: Any) -> None:
    with pytest.raises(SettingsError, match="B24_TRUSTED_PROXIES"):
        make_settings(trusted_proxies=value)
