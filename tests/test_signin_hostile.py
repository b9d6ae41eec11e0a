"""Sign-in against what comes from outside: replayed codes and tokens, forged callbacks, foreign origins and
portals, unsafe redirect URIs, text in pages. Requests are made by hand over real HTTP."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from signin_helpers import (
    CLIENT_REDIRECT,
    Browser,
    SignInServer,
    authorize_url,
    code_of,
    consent_form,
    mcp_status,
    redeem,
    register,
    registered,
    signin_env,
    signin_server,
    token_request,
)

from b24_mcp.sandbox.emulator import Fault, Portal
from b24_mcp.sandbox.seed import SALES_USER_ID
from b24_mcp.signin.store import MAX_CLIENTS_PER_SOURCE
from helpers import TLSFiles, free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
async def server(
    portal: Portal, https_origin: str, tls: TLSFiles, tmp_path: Path, journal_path: Path
) -> AsyncIterator[SignInServer]:
    env = signin_env(portal, https_origin, tls.ca_bundle, tmp_path / "state", journal_path, free_port())
    async with signin_server(env) as served:
        yield served


@pytest.fixture
def browser(tls: TLSFiles) -> Browser:
    return Browser(tls.ca_bundle)


async def portal_state(server: SignInServer, url: str) -> str:
    """Start a sign-in at `url` (our /authorize) and return the state this server sent to the portal."""
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.get(url)
    assert response.status_code == 302, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)["state"][0]


def location_query(response: httpx2.Response) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(response.headers["location"]).query).items()}


# ------------------------------------------------------------------------------------------------ codes and tokens


async def test_a_code_gives_tokens_once_and_its_replay_ends_them(
    server: SignInServer, portal: Portal, browser: Browser
) -> None:
    client = await registered(server)
    code = await code_of(server, portal, browser, client, SALES_USER_ID)
    first = await redeem(server, client, code)
    replay = await redeem(server, client, code)
    assert first.status_code == 200
    assert replay.json()["error"] == "invalid_grant"
    assert await mcp_status(server, first.json()["access_token"]) == 401


async def test_a_code_needs_the_pkce_verifier_of_its_challenge(
    server: SignInServer, portal: Portal, browser: Browser
) -> None:
    client = await registered(server)
    code = await code_of(server, portal, browser, client, SALES_USER_ID)
    refused = await redeem(server, client, code, verifier="x" * 64)
    assert refused.json() == {"error": "invalid_grant", "error_description": "incorrect code_verifier"}


async def test_a_code_of_one_client_is_refused_to_another(
    server: SignInServer, portal: Portal, browser: Browser
) -> None:
    client, other = await registered(server), await registered(server)
    code = await code_of(server, portal, browser, client, SALES_USER_ID)
    refused = await redeem(server, other, code, verifier=client.verifier)
    assert refused.json()["error"] == "invalid_grant"


async def test_a_refresh_token_rotates_and_its_replay_ends_the_sign_in(
    server: SignInServer, portal: Portal, browser: Browser
) -> None:
    client = await registered(server)
    tokens = (await redeem(server, client, await code_of(server, portal, browser, client, SALES_USER_ID))).json()
    rotated = await token_request(server, client, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    replay = await token_request(server, client, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert rotated.status_code == 200
    assert rotated.json()["refresh_token"] != tokens["refresh_token"]
    assert replay.json()["error"] == "invalid_grant"
    assert await mcp_status(server, rotated.json()["access_token"]) == 401


async def test_a_refreshed_access_token_replaces_the_old_one(
    server: SignInServer, portal: Portal, browser: Browser
) -> None:
    client = await registered(server)
    tokens = (await redeem(server, client, await code_of(server, portal, browser, client, SALES_USER_ID))).json()
    rotated = await token_request(server, client, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert await mcp_status(server, rotated.json()["access_token"]) == 200
    assert await mcp_status(server, tokens["access_token"]) == 401


async def test_revoking_a_token_at_the_revocation_endpoint_ends_it(
    server: SignInServer, portal: Portal, browser: Browser
) -> None:
    client = await registered(server)
    tokens = (await redeem(server, client, await code_of(server, portal, browser, client, SALES_USER_ID))).json()
    async with httpx2.AsyncClient(timeout=30) as http:
        answer = await http.post(
            server.public_url + "/revoke",
            data={
                "client_id": client.client_id,
                "client_secret": client.client_secret or "",
                "token": tokens["access_token"],
            },
        )
    assert answer.status_code == 200
    assert await mcp_status(server, tokens["access_token"]) == 401


@pytest.mark.parametrize("token", ["b24mcp_at_" + "A" * 43, "not-ours", "b24mcp_at_" + "A" * 500])
async def test_an_unknown_bearer_token_gets_401(server: SignInServer, token: str) -> None:
    assert await mcp_status(server, token) == 401


# ---------------------------------------------------------------------------------------------- the callback


async def test_a_callback_with_an_unknown_state_is_refused(server: SignInServer) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.get(server.public_url + "/oauth/callback", params={"state": "forged", "code": "x"})
    assert response.status_code == 400
    assert "expired or was already used" in response.text


async def test_a_callback_state_works_once(server: SignInServer, portal: Portal, browser: Browser) -> None:
    client = await registered(server)
    portal.sign_in_as(SALES_USER_ID)
    await browser.open(authorize_url(server, client))
    callback = next(page for page in browser.pages if "/oauth/callback?" in page)
    async with httpx2.AsyncClient(timeout=30) as http:
        again = await http.get(callback)
    assert again.status_code == 400


async def test_the_portal_refusing_the_sign_in_sends_the_client_an_error(server: SignInServer) -> None:
    client = await registered(server)
    state = await portal_state(server, authorize_url(server, client))
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.get(
            server.public_url + "/oauth/callback", params={"state": state, "error": "access_denied"}
        )
    assert response.status_code == 302
    assert response.headers["location"].startswith(CLIENT_REDIRECT)
    query = location_query(response)
    assert (query["error"], query["state"], query["iss"]) == ("access_denied", "client-state", server.public_url)


async def test_a_sign_in_to_another_portal_is_refused(server: SignInServer, portal: Portal, browser: Browser) -> None:
    access, refresh = portal.issue_tokens(next(iter(portal.apps)), SALES_USER_ID)
    answer = {
        "access_token": access,
        "refresh_token": refresh,
        "client_endpoint": "https://elsewhere.bitrix24.com/rest/",
        "member_id": "f" * 32,
        "user_id": SALES_USER_ID,
        "expires_in": 3600,
    }
    portal.inject("oauth.token", Fault(status=200, json=answer))
    client = await registered(server)
    portal.sign_in_as(SALES_USER_ID)
    await browser.open(authorize_url(server, client))
    assert browser.arrived["error"] == "access_denied"
    assert "another Bitrix24 portal (elsewhere.bitrix24.com)" in browser.arrived["error_description"]


async def test_a_token_answer_for_another_user_than_the_profile_is_refused(
    server: SignInServer, portal: Portal, browser: Browser
) -> None:
    access, refresh = portal.issue_tokens(next(iter(portal.apps)), SALES_USER_ID)
    origin = server.env["B24_PORTAL_URL"]
    answer = {"access_token": access, "refresh_token": refresh, "client_endpoint": f"{origin}/rest/",
              "member_id": portal.member_id, "user_id": 1, "expires_in": 3600}  # fmt: skip
    portal.inject("oauth.token", Fault(status=200, json=answer))
    client = await registered(server)
    portal.sign_in_as(SALES_USER_ID)
    await browser.open(authorize_url(server, client))
    assert browser.arrived["error"] == "server_error"


async def test_an_oauth_server_that_is_down_is_said_to_the_client(
    server: SignInServer, portal: Portal, browser: Browser
) -> None:
    portal.inject("oauth.token", Fault(status=502, body=b"<html>Bad gateway</html>"))
    client = await registered(server)
    portal.sign_in_as(SALES_USER_ID)
    await browser.open(authorize_url(server, client))
    assert browser.arrived["error"] == "server_error"
    assert "did not answer with a usable token" in browser.arrived["error_description"]


# ----------------------------------------------------------------------------------------------- the consent


async def consent_page(
    server: SignInServer, portal: Portal, tls: TLSFiles, client_name: str = "Tester"
) -> httpx2.Response:
    """Go through the portal as the sales person, stopping at the consent page."""
    client = await registered(server, client_name=client_name)
    portal.sign_in_as(SALES_USER_ID)
    verify = ssl.create_default_context(cafile=str(tls.ca_bundle))
    async with httpx2.AsyncClient(timeout=30, verify=verify, follow_redirects=True) as http:
        return await http.get(authorize_url(server, client))


async def until_it_leaves(tls: TLSFiles, url: str, leaves_at: str) -> httpx2.Response:
    """Follow a sign-in from `url` as a browser would, without answering any page: the response that sends the
    browser to `leaves_at`, or the page it stopped at."""
    verify = ssl.create_default_context(cafile=str(tls.ca_bundle))
    async with httpx2.AsyncClient(timeout=30, verify=verify, follow_redirects=False) as http:
        response = await http.get(url)
        while response.status_code == 302 and not response.headers["location"].startswith(leaves_at):
            response = await http.get(response.headers["location"])
    return response


async def test_consent_to_one_redirect_uri_does_not_send_the_code_to_another(
    server: SignInServer, portal: Portal, browser: Browser, tls: TLSFiles
) -> None:
    steal = "https://evil.example/steal"
    client = await registered(server, redirect_uris=[CLIENT_REDIRECT, steal])
    await code_of(server, portal, browser, client, SALES_USER_ID)  # allowed once, returning to 127.0.0.1:9
    second = await until_it_leaves(tls, authorize_url(server, client, redirect_uri=steal), steal)
    assert second.status_code == 200, second.headers.get("location")  # the page again, no code on its way
    assert "<strong>evil.example</strong>" in second.text
    action, consent = consent_form(second.text)
    async with httpx2.AsyncClient(timeout=30) as http:
        allowed = await http.post(action, data={"consent": consent, "decision": "allow"})
    assert allowed.headers["location"].startswith(steal + "?code=")  # only now, because the person said so


async def test_an_approved_redirect_uri_is_not_asked_about_again(
    server: SignInServer, portal: Portal, browser: Browser
) -> None:
    client = await registered(server)
    await code_of(server, portal, browser, client, SALES_USER_ID)
    browser.pages.clear()
    await code_of(server, portal, browser, client, SALES_USER_ID)
    assert not any("/oauth/consent" in page for page in browser.pages)


async def test_the_consent_page_names_the_whole_host_and_its_domain_however_long(
    server: SignInServer, portal: Portal, tls: TLSFiles
) -> None:
    decoy = "claude.ai-api-mcp-auth-callback-" + "x" * 30 + "." + "y" * 60 + "." + "z" * 60  # 185 characters
    redirect = f"https://{decoy}.evil.example/cb"
    client = await registered(server, client_name="Claude", redirect_uris=[redirect])
    portal.sign_in_as(SALES_USER_ID)
    page = await until_it_leaves(tls, authorize_url(server, client, redirect_uri=redirect), redirect)
    assert page.status_code == 200
    assert f"https://{decoy}.<strong>evil.example</strong>" in page.text  # whole, its domain in bold
    assert "calls itself <strong>«Claude»</strong>" in page.text


async def test_consent_from_another_origin_is_refused(server: SignInServer, portal: Portal, tls: TLSFiles) -> None:
    page = await consent_page(server, portal, tls)
    action, consent = consent_form(page.text)
    async with httpx2.AsyncClient(timeout=30) as http:
        forged = await http.post(
            action, data={"consent": consent, "decision": "allow"}, headers={"origin": "http://evil.example"}
        )
        genuine = await http.post(
            action, data={"consent": consent, "decision": "allow"}, headers={"origin": server.public_url}
        )
    assert forged.status_code == 403
    assert genuine.status_code == 302
    assert "code" in location_query(genuine)


async def test_a_consent_is_answered_once(server: SignInServer, portal: Portal, tls: TLSFiles) -> None:
    page = await consent_page(server, portal, tls)
    action, consent = consent_form(page.text)
    async with httpx2.AsyncClient(timeout=30) as http:
        first = await http.post(action, data={"consent": consent, "decision": "allow"})
        second = await http.post(action, data={"consent": consent, "decision": "allow"})
    assert (first.status_code, second.status_code) == (302, 400)


async def test_an_oversized_consent_answer_is_refused(server: SignInServer) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(server.public_url + "/oauth/consent", data={"consent": "x" * 10_000})
    assert response.status_code == 413


async def test_the_consent_page_cannot_be_framed_cached_or_leak_its_address(
    server: SignInServer, portal: Portal, tls: TLSFiles
) -> None:
    page = await consent_page(server, portal, tls)
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"


async def test_a_client_name_is_shown_as_text(server: SignInServer, portal: Portal, tls: TLSFiles) -> None:
    page = await consent_page(server, portal, tls, client_name='<script>alert("x")</script>')
    assert "<script>" not in page.text
    assert "&lt;script&gt;" in page.text


# -------------------------------------------------------------------------------------- registration, authorize


@pytest.mark.parametrize(
    "uri",
    ["http://evil.example/callback", "javascript:alert(1)", "data:text/html,hi", "file:///etc/passwd"],
)
async def test_registration_refuses_an_unsafe_redirect_uri(server: SignInServer, uri: str) -> None:
    response = await register(server, redirect_uris=[uri])
    assert response.status_code == 400
    assert response.json()["error"] in ("invalid_redirect_uri", "invalid_client_metadata")


@pytest.mark.parametrize(
    "uri",
    [
        "https://claude.ai@evil.example/cb",
        "https://claude.ai:pw@evil.example/cb",
        "https://claude.ai%2Fapi%2Fmcp%40x@evil.example/cb",
        "cursor://anysphere@evil.example/cb",
        "http://claude.ai@127.0.0.1:9/callback",
    ],
)
async def test_registration_refuses_a_redirect_uri_with_user_information(server: SignInServer, uri: str) -> None:
    response = await register(server, redirect_uris=[uri])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_redirect_uri"


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:33418/callback",
        "http://localhost:6274/oauth/callback",
        "https://claude.ai/api/mcp/auth_callback",
        "cursor://anysphere.cursor-retrieval/oauth/user-b24/callback",
        "vscode://vscode.github-authentication/did-authenticate",
    ],
)
async def test_registration_accepts_the_redirect_uris_of_real_clients(server: SignInServer, uri: str) -> None:
    response = await register(server, redirect_uris=[uri])
    assert response.status_code == 201, response.text


async def test_a_token_for_another_resource_is_not_granted(server: SignInServer) -> None:
    client = await registered(server)
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.get(authorize_url(server, client, resource="https://other.example/mcp"))
    assert response.status_code == 302
    assert location_query(response)["error"] == "invalid_target"


async def test_a_code_redeemed_for_another_resource_is_refused(
    server: SignInServer, portal: Portal, browser: Browser
) -> None:
    client = await registered(server)
    code = await code_of(server, portal, browser, client, SALES_USER_ID)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CLIENT_REDIRECT}
    form |= {"code_verifier": client.verifier, "resource": "https://other.example/mcp"}
    refused = await token_request(server, client, **form)
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_target")
    assert (await redeem(server, client, code)).status_code == 200  # the code was not spent by the refusal


async def test_a_refresh_for_another_resource_is_refused(
    server: SignInServer, portal: Portal, browser: Browser
) -> None:
    client = await registered(server)
    tokens = (await redeem(server, client, await code_of(server, portal, browser, client, SALES_USER_ID))).json()
    refused = await token_request(
        server,
        client,
        grant_type="refresh_token",
        refresh_token=tokens["refresh_token"],
        resource="https://other.example/mcp",
    )
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_target")


async def test_a_forwarded_address_is_not_believed_without_trusted_proxies(server: SignInServer) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        for n in range(MAX_CLIENTS_PER_SOURCE + 1):
            body = {"redirect_uris": [CLIENT_REDIRECT], "client_name": f"flood {n}"}
            answer = await http.post(
                server.public_url + "/register", json=body, headers={"x-forwarded-for": f"192.0.2.{n % 250}"}
            )
    assert answer.status_code == 429  # every one counted as this machine's, whatever the header said
    assert int(answer.headers["retry-after"]) > 0


async def test_a_registration_too_large_to_keep_is_refused(server: SignInServer) -> None:
    response = await register(server, client_name="x" * 20_000)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client_metadata"


async def test_an_impossible_pkce_challenge_is_refused_before_the_portal(server: SignInServer) -> None:
    client = await registered(server)
    url = authorize_url(server, client).replace(client.challenge, "short")
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.get(url)
    assert response.status_code == 302
    assert location_query(response)["error"] == "invalid_request"
