"""Sign-in while the shared database is down.

Every request that needs the people store answers 503 with `Retry-After`: an OAuth error in JSON at the OAuth
endpoints and the MCP endpoint, a short page where a person's browser is sent; the log gets one warning per refusal
and no traceback. Nothing is decided meanwhile: a good token is not called invalid, and a code or refresh token
presented during the outage is not spent, so all of them work once the database is back, without a restart.

The database is really stopped (`pg_ctl stop -m immediate`, connections cut) and started again on the same port.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from postgres_cluster import Cluster, Postgres
from signin_helpers import (
    Browser,
    RawClient,
    SignInServer,
    authorize_url,
    code_of,
    redeem,
    register,
    registered,
    signin_env,
    signin_server,
    token_request,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from b24_mcp.postgres.database import DatabaseUnavailableError
from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.seed import SALES_USER_ID
from b24_mcp.signin.metadata import IssuerMetadata
from helpers import TLSFiles, free_port

pytestmark = pytest.mark.anyio

SECRET = "shared-confirm-secret-0123456789abcdef"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
REFUSED = "Answered 503"


@dataclass
class Outage:
    """A sign-in server whose database has just been stopped, and what a client got from it before."""

    server: SignInServer
    client: RawClient
    access_token: str
    refresh_token: str
    code: str  # issued before the outage, not redeemed yet
    cluster: Cluster
    database_url: str

    def end(self) -> None:
        self.cluster.start()


@pytest.fixture
async def outage(
    postgres: Postgres, database_url: str, portal: Portal, https_origin: str, tls: TLSFiles, tmp_path: Path
) -> AsyncIterator[Outage]:
    """A replica with a signed-in client (its tokens, and a code not yet redeemed), then the database stopped."""
    cluster = postgres.cluster
    if cluster is None:
        pytest.skip("B24_TEST_DATABASE_URL names a database these tests may not stop")
    env = signin_env(portal, https_origin, tls.ca_bundle, tmp_path / "state", tmp_path / "audit.jsonl", free_port())
    env |= {"B24_DATABASE_URL": database_url, "B24_CONFIRM_SECRET": SECRET}
    browser = Browser(tls.ca_bundle)
    async with signin_server(env, "--stateless") as server:
        client = await registered(server)
        issued = await redeem(server, client, await code_of(server, portal, browser, client, SALES_USER_ID))
        assert issued.status_code == 200, issued.text
        code = await code_of(server, portal, browser, client, SALES_USER_ID)
        tokens = issued.json()
        cluster.stop()
        try:
            yield Outage(server, client, tokens["access_token"], tokens["refresh_token"], code, cluster, database_url)
        finally:
            if not cluster.running():
                cluster.start()


async def mcp_request(server: SignInServer, access_token: str) -> httpx2.Response:
    """An MCP `initialize` with this bearer token."""
    headers = {"authorization": f"Bearer {access_token}", "accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(server.mcp_url, headers=headers, json=INITIALIZE)


async def refresh(outage: Outage) -> httpx2.Response:
    return await token_request(
        outage.server, outage.client, grant_type="refresh_token", refresh_token=outage.refresh_token
    )


async def revoke(outage: Outage) -> httpx2.Response:
    form = {"token": outage.access_token, "client_id": outage.client.client_id}
    form |= {"client_secret": outage.client.client_secret} if outage.client.client_secret else {}
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(outage.server.public_url + "/revoke", data=form)


async def browse(method: str, url: str, **form: str) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=30, follow_redirects=False) as http:
        return await http.request(method, url, data=form or None)


def retry_after(response: httpx2.Response) -> int:
    return int(response.headers["retry-after"])


def assert_oauth_unavailable(response: httpx2.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {
        "error": "temporarily_unavailable",
        "error_description": "The sign-in store is temporarily unavailable; try again in a few seconds.",
    }
    assert 1 <= retry_after(response) <= 10
    assert "www-authenticate" not in response.headers  # nothing says the client's credentials are wrong


def assert_page_unavailable(response: httpx2.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "The sign-in store is temporarily unavailable; try again in a few seconds." in response.text
    assert len(response.text) < 1000
    assert 1 <= retry_after(response) <= 10


# ------------------------------------------------------------------------------------------- while it is down


async def test_an_mcp_request_with_a_good_token_gets_503_not_401_while_the_database_is_down(outage: Outage) -> None:
    assert_oauth_unavailable(await mcp_request(outage.server, outage.access_token))


async def test_the_oauth_endpoints_answer_503_with_an_oauth_error_while_the_database_is_down(outage: Outage) -> None:
    assert_oauth_unavailable(await register(outage.server))
    assert_oauth_unavailable(await redeem(outage.server, outage.client, outage.code))
    assert_oauth_unavailable(await refresh(outage))
    assert_oauth_unavailable(await revoke(outage))


async def test_the_pages_a_browser_is_sent_to_answer_a_short_503_page_while_the_database_is_down(
    outage: Outage,
) -> None:
    public = outage.server.public_url
    assert_page_unavailable(await browse("GET", authorize_url(outage.server, outage.client)))
    assert_page_unavailable(await browse("GET", f"{public}/oauth/callback?state={'s' * 43}&code=portal-code"))
    assert_page_unavailable(await browse("POST", f"{public}/oauth/consent", consent="c" * 43, decision="allow"))


async def test_each_refusal_logs_one_warning_naming_the_failure_without_a_traceback_or_a_secret(
    outage: Outage,
) -> None:
    await mcp_request(outage.server, outage.access_token)
    await redeem(outage.server, outage.client, outage.code)
    await browse("GET", authorize_url(outage.server, outage.client))
    log = outage.server.stop()
    refusals = [line for line in log.splitlines() if REFUSED in line]
    assert [line.split()[2] for line in refusals] == ["WARNING"] * 3, log
    assert all("the people store is unavailable (OperationalError: " in line for line in refusals), refusals
    assert "Traceback" not in log, log
    password = outage.database_url.split(":")[2].split("@")[0]
    for secret in (outage.database_url, password, outage.access_token, outage.code, outage.client.verifier):
        assert secret not in log


# ----------------------------------------------------------------------------------------- once it is back


async def test_once_the_database_is_back_the_same_access_token_is_accepted_without_a_restart(outage: Outage) -> None:
    assert (await mcp_request(outage.server, outage.access_token)).status_code == 503
    outage.end()
    assert (await mcp_request(outage.server, outage.access_token)).status_code == 200  # the same process, unrestarted


async def test_a_code_and_a_refresh_token_refused_during_the_outage_are_not_spent(outage: Outage) -> None:
    assert (await redeem(outage.server, outage.client, outage.code)).status_code == 503
    assert (await refresh(outage)).status_code == 503
    outage.end()
    redeemed = await redeem(outage.server, outage.client, outage.code)
    refreshed = await refresh(outage)
    assert redeemed.status_code == 200, redeemed.text
    assert refreshed.status_code == 200, refreshed.text
    assert (await mcp_request(outage.server, refreshed.json()["access_token"])).status_code == 200


# ------------------------------------------------------------------------------------------------ the middleware


async def test_a_failure_other_than_the_databases_is_not_answered_as_an_outage() -> None:
    async def failing(request: Request) -> Response:
        if request.path_params["kind"] == "database":
            raise DatabaseUnavailableError("OperationalError: connection refused")
        raise RuntimeError("a bug")

    app = IssuerMetadata(Starlette(routes=[Route("/token/{kind}", failing, methods=["POST"])]), "http://127.0.0.1:9")
    transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:9") as http:
        outage, bug = await http.post("/token/database"), await http.post("/token/bug")
    assert (outage.status_code, bug.status_code) == (503, 500)
