"""OAuth: calls with tokens, the token endpoint, and signing a person in (oauth.py)."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import pytest

from b24_mcp.sandbox.emulator import Call, Fault, Portal, User
from b24_mcp.sandbox.seed import (
    READONLY_USER_ID,
    SALES_USER_ID,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_HOST,
    SANDBOX_USER_ID,
    seeded_portal,
)
from emulator.emulator_helpers import GET_42, make_client

pytestmark = pytest.mark.anyio

# What a refresh answer holds (settings/oauth/auto-renewal.md); the code exchange's lacks `expires` and `user_id`
# (settings/oauth/index.md, step 2).
TOKEN_ANSWER_FIELDS = {
    "access_token",
    "client_endpoint",
    "domain",
    "expires",
    "expires_in",
    "member_id",
    "refresh_token",
    "scope",
    "server_endpoint",
    "status",
    "user_id",
}
CODE_ANSWER_FIELDS = TOKEN_ANSWER_FIELDS - {"expires", "user_id"}


# ---------------------------------------------------------------------- OAuth calls


@pytest.mark.parametrize(
    ("body", "headers"),
    [({"auth": "{token}"}, {}), ({"access_token": "{token}"}, {}), ({}, {"authorization": "Bearer {token}"})],
)
async def test_live_token_calls_as_its_user(
    client: httpx2.AsyncClient, portal: Portal, body: dict[str, str], headers: dict[str, str]
) -> None:
    access, _ = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    body = {key: value.format(token=access) for key, value in body.items()}
    headers = {key: value.format(token=access) for key, value in headers.items()}
    response = await client.post("/rest/crm.item.delete", json={"entityTypeId": 2, "id": 42, **body}, headers=headers)
    assert response.status_code == 200
    assert response.json()["result"] == []
    assert 42 not in portal.items[2]
    assert portal.calls[-1] == Call("crm.item.delete", {"entityTypeId": 2, "id": 42}, SANDBOX_USER_ID, 200, None)


async def test_token_in_the_query_string_authenticates(client: httpx2.AsyncClient, portal: Portal) -> None:
    access, _ = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    response = await client.get("/rest/profile.json", params={"auth": access})
    assert response.json()["result"]["ID"] == "1"


async def test_token_acts_with_the_rights_of_its_users_webhook(client: httpx2.AsyncClient, portal: Portal) -> None:
    access, _ = portal.issue_tokens(SANDBOX_CLIENT_ID, READONLY_USER_ID)
    response = await client.post("/rest/crm.item.delete", json={"entityTypeId": 2, "id": 42, "auth": access})
    assert response.json() == {"error": "ACCESS_DENIED", "error_description": "Access denied"}


async def test_token_scopes_limit_its_calls(client: httpx2.AsyncClient, portal: Portal) -> None:
    access, _ = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID, frozenset({"user"}))
    denied = await client.post("/rest/crm.item.get", json={**GET_42, "auth": access})
    listed = await client.post("/rest/scope", json={"auth": access})
    assert denied.status_code == 403
    assert denied.json() == {
        "error": "insufficient_scope",
        "error_description": "The request requires higher privileges than provided by the access token",
    }
    assert listed.json()["result"] == ["user"]


async def test_expired_token_is_401_expired_token(client: httpx2.AsyncClient, portal: Portal) -> None:
    access, _ = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    portal.expire_access_tokens()
    response = await client.post("/rest/crm.item.delete", json={"entityTypeId": 2, "id": 42, "auth": access})
    assert response.status_code == 401
    assert response.json() == {"error": "expired_token", "error_description": "The access token provided has expired"}
    assert 42 in portal.items[2]


async def test_access_token_expires_after_its_ttl() -> None:
    portal = seeded_portal(rate_limit=None, access_ttl=0.05)
    access, _ = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    async with make_client(portal) as client:
        fresh = await client.post("/rest/scope", json={"auth": access})
        await anyio.sleep(0.1)
        stale = await client.post("/rest/scope", json={"auth": access})
    assert (fresh.status_code, stale.json()["error"]) == (200, "expired_token")


async def test_issue_tokens_refuses_an_unknown_app(portal: Portal) -> None:
    with pytest.raises(ValueError, match="unknown OAuth application"):
        portal.issue_tokens("local.nope", SANDBOX_USER_ID)


# ---------------------------------------------------------------------- OAuth token endpoint


def refresh_params(refresh_token: str, **overrides: str) -> dict[str, str]:
    params = {
        "grant_type": "refresh_token",
        "client_id": SANDBOX_CLIENT_ID,
        "client_secret": SANDBOX_CLIENT_SECRET,
        "refresh_token": refresh_token,
    }
    params.update(overrides)
    return params


async def refresh(client: httpx2.AsyncClient, refresh_token: str, **overrides: str) -> httpx2.Response:
    return await client.get("/oauth/token/", params=refresh_params(refresh_token, **overrides))


async def test_token_endpoint_answers_the_oauth_shape(client: httpx2.AsyncClient, portal: Portal) -> None:
    _, refresh_token = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID, frozenset({"crm", "user"}))
    before = time.time()
    response = await refresh(client, refresh_token)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == TOKEN_ANSWER_FIELDS
    assert body["client_endpoint"] == f"https://{SANDBOX_HOST}/rest/"
    assert body["domain"] == "oauth.bitrix.info"  # the authorization server, not the portal
    assert (body["expires_in"], body["scope"], body["user_id"]) == (3600, "crm,user", SANDBOX_USER_ID)
    assert int(before) + 3600 <= body["expires"] <= time.time() + 3600
    assert body["refresh_token"] != refresh_token
    assert isinstance(body["member_id"], str)


async def test_refreshed_access_token_works(client: httpx2.AsyncClient, portal: Portal) -> None:
    _, refresh_token = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    portal.expire_access_tokens()
    access = (await refresh(client, refresh_token)).json()["access_token"]
    response = await client.post("/rest/crm.item.get", json={**GET_42, "auth": access})
    assert response.status_code == 200


@pytest.mark.parametrize("encoding", ["data", "json"])
async def test_token_endpoint_reads_only_the_documented_query_string(
    client: httpx2.AsyncClient, portal: Portal, encoding: str
) -> None:
    _, refresh_token = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    params = refresh_params(refresh_token)
    if encoding == "json":
        response = await client.post("/oauth/token/", json=params)
    else:
        response = await client.post("/oauth/token/", data=params)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "error_description": 'No "grant_type" parameter found'}


@pytest.mark.parametrize("encoding", ["data", "json"])
async def test_token_endpoint_takes_a_post_body_where_the_host_accepts_one(
    client: httpx2.AsyncClient, portal: Portal, encoding: str
) -> None:
    portal.oauth.accepts_form = True
    _, refresh_token = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    params = refresh_params(refresh_token)
    if encoding == "json":
        response = await client.post("/oauth/token/", json=params)
    else:
        response = await client.post("/oauth/token/", data=params)
    assert response.status_code == 200
    assert response.json()["user_id"] == SANDBOX_USER_ID


async def test_refresh_token_rotates_and_the_old_one_is_invalid_grant(
    client: httpx2.AsyncClient, portal: Portal
) -> None:
    _, first = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    second = (await refresh(client, first)).json()["refresh_token"]
    reused = await refresh(client, first)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    assert (await refresh(client, second)).status_code == 200


async def test_unknown_refresh_token_is_invalid_grant(client: httpx2.AsyncClient) -> None:
    response = await refresh(client, "0123456789abcdef")
    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


@pytest.mark.parametrize(
    "overrides", [{"client_secret": "wrong"}, {"client_id": "local.unknown"}], ids=["secret", "client_id"]
)
async def test_wrong_client_credentials_are_invalid_client(
    client: httpx2.AsyncClient, portal: Portal, overrides: dict[str, str]
) -> None:
    _, refresh_token = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    response = await refresh(client, refresh_token, **overrides)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert (await refresh(client, refresh_token)).status_code == 200


@pytest.mark.parametrize("missing", ["grant_type", "client_id", "client_secret", "refresh_token"])
async def test_missing_token_parameter_is_invalid_request(
    client: httpx2.AsyncClient, portal: Portal, missing: str
) -> None:
    _, refresh_token = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    params = refresh_params(refresh_token)
    del params[missing]
    response = await client.get("/oauth/token/", params=params)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "error_description": f'No "{missing}" parameter found'}


async def test_other_grant_type_is_invalid_request(client: httpx2.AsyncClient, portal: Portal) -> None:
    _, refresh_token = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    response = await refresh(client, refresh_token, grant_type="authorization_code")
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


async def test_client_endpoint_follows_the_request_origin(portal: Portal) -> None:
    _, refresh_token = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    async with make_client(portal, base_url="http://127.0.0.1:8443") as client:
        body = (await refresh(client, refresh_token)).json()
    assert body["client_endpoint"] == "http://127.0.0.1:8443/rest/"


async def test_token_requests_are_counted_and_logged_with_secrets_masked(
    client: httpx2.AsyncClient, portal: Portal
) -> None:
    _, refresh_token = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    await refresh(client, refresh_token)
    await refresh(client, refresh_token)
    assert portal.token_requests == 2
    assert [(c.method, c.user_id, c.status, c.error) for c in portal.calls_to("oauth.token")] == [
        ("oauth.token", SANDBOX_USER_ID, 200, None),
        ("oauth.token", None, 400, "invalid_grant"),
    ]
    assert portal.calls[0].params == refresh_params("***", client_secret="***")


async def test_token_endpoint_fault_with_perform_rotates_but_loses_the_answer(
    client: httpx2.AsyncClient, portal: Portal
) -> None:
    _, refresh_token = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    portal.inject("oauth.token", Fault(status=502, body=b"<html>Bad Gateway</html>", perform=True))
    lost = await refresh(client, refresh_token)
    again = await refresh(client, refresh_token)
    assert (lost.status_code, again.json()["error"]) == (502, "invalid_grant")


def test_seed_registers_the_sandbox_app() -> None:
    assert seeded_portal().apps == {SANDBOX_CLIENT_ID: SANDBOX_CLIENT_SECRET}


# ---------------------------------------------------------------------- signing a person in (authorization code)

CALLBACK = "https://team.example.test/oauth/callback"
APP_ID, APP_SECRET = "local.team0000000000001", "teamSecret0123456789"


@pytest.fixture
def team_portal(portal: Portal) -> Portal:
    """The sandbox with a team server's OAuth app, its redirect URI registered."""
    portal.add_app(APP_ID, APP_SECRET, redirect_uri=CALLBACK, scopes=frozenset({"crm", "user_brief"}))
    return portal


async def authorize(client: httpx2.AsyncClient, **params: str) -> httpx2.Response:
    return await client.get("/oauth/authorize/", params={"client_id": APP_ID, **params})


def redirect_query(response: httpx2.Response) -> dict[str, str]:
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == CALLBACK
    return {key: values[0] for key, values in parse_qs(location.query).items()}


async def exchange(client: httpx2.AsyncClient, code: str, **overrides: str) -> httpx2.Response:
    params = {"grant_type": "authorization_code", "client_id": APP_ID, "client_secret": APP_SECRET, "code": code}
    return await client.get("/oauth/token/", params=params | overrides)


async def sign_in(client: httpx2.AsyncClient, portal: Portal, user_id: int) -> dict[str, object]:
    portal.sign_in_as(user_id)
    code = redirect_query(await authorize(client, state="s"))["code"]
    body: dict[str, object] = (await exchange(client, code)).json()
    return body


@pytest.mark.usefixtures("team_portal")
async def test_authorize_redirects_to_the_registered_uri_with_code_and_portal_details(
    client: httpx2.AsyncClient, portal: Portal
) -> None:
    query = redirect_query(await authorize(client, state="opaque-123"))
    assert list(query) == ["code", "state", "domain", "member_id", "scope", "server_domain"]
    assert query["state"] == "opaque-123"
    assert query["domain"] == SANDBOX_HOST
    assert query["server_domain"] == "oauth.bitrix.info"  # the authorization server, not the portal
    assert query["member_id"] == portal.member_id
    assert query["scope"] == "crm,user_brief"


@pytest.mark.usefixtures("team_portal")
async def test_authorize_without_state_sends_none_back(client: httpx2.AsyncClient) -> None:
    assert "state" not in redirect_query(await authorize(client))


@pytest.mark.usefixtures("team_portal")
async def test_authorize_ignores_a_redirect_uri_in_the_request(client: httpx2.AsyncClient) -> None:
    redirect_query(await authorize(client, redirect_uri="https://elsewhere.test/cb"))


@pytest.mark.usefixtures("team_portal")
async def test_code_exchange_answers_the_token_shape_for_the_signed_in_user(
    client: httpx2.AsyncClient, portal: Portal
) -> None:
    portal.sign_in_as(READONLY_USER_ID)
    query = redirect_query(await authorize(client, state="s"))
    response = await exchange(client, query["code"])
    assert response.status_code == 200
    body = response.json()
    assert set(body) == CODE_ANSWER_FIELDS  # no user_id, as documented: the person is who `profile` says
    assert (body["scope"], body["expires_in"], body["status"]) == ("crm,user_brief", 3600, "L")
    assert body["client_endpoint"] == f"https://{SANDBOX_HOST}/rest/"
    assert body["member_id"] == query["member_id"]
    profile = (await client.post("/rest/profile", json={"auth": body["access_token"]})).json()["result"]
    assert profile["ID"] == str(READONLY_USER_ID)


@pytest.mark.usefixtures("team_portal")
async def test_a_code_exchange_answer_can_name_the_user_as_real_ones_were_reported_to(
    client: httpx2.AsyncClient, portal: Portal
) -> None:
    portal.oauth.code_answer_names_user = True
    portal.sign_in_as(READONLY_USER_ID)
    body = (await exchange(client, redirect_query(await authorize(client, state="s"))["code"])).json()
    assert set(body) == TOKEN_ANSWER_FIELDS
    assert body["user_id"] == READONLY_USER_ID


@pytest.mark.usefixtures("team_portal")
async def test_each_person_gets_tokens_that_act_as_them(client: httpx2.AsyncClient, portal: Portal) -> None:
    rita = await sign_in(client, portal, READONLY_USER_ID)
    sam = await sign_in(client, portal, SALES_USER_ID)
    rita_profile = (await client.post("/rest/profile", json={"auth": rita["access_token"]})).json()["result"]
    sam_profile = (await client.post("/rest/profile", json={"auth": sam["access_token"]})).json()["result"]
    assert (rita_profile["ID"], rita_profile["NAME"], rita_profile["LAST_NAME"]) == ("7", "Rita", "Reader")
    assert (sam_profile["ID"], sam_profile["NAME"], sam_profile["LAST_NAME"]) == ("3", "Sam", "Sales")


@pytest.mark.usefixtures("team_portal")
async def test_refreshing_a_signed_in_token_keeps_its_person(client: httpx2.AsyncClient, portal: Portal) -> None:
    sam = await sign_in(client, portal, SALES_USER_ID)
    params = {"client_id": APP_ID, "client_secret": APP_SECRET, "refresh_token": str(sam["refresh_token"])}
    refreshed = (await client.get("/oauth/token/", params={"grant_type": "refresh_token", **params})).json()
    assert refreshed["user_id"] == SALES_USER_ID


@pytest.mark.usefixtures("team_portal")
async def test_a_code_works_once(client: httpx2.AsyncClient) -> None:
    code = redirect_query(await authorize(client))["code"]
    await exchange(client, code)
    again = await exchange(client, code)
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")


async def test_a_code_expires_after_its_lifetime() -> None:
    portal = seeded_portal(rate_limit=None, code_ttl=0.05)
    portal.add_app(APP_ID, APP_SECRET, redirect_uri=CALLBACK)
    async with make_client(portal) as client:
        code = redirect_query(await authorize(client))["code"]
        await anyio.sleep(0.1)
        late = await exchange(client, code)
    assert late.status_code == 400
    assert late.json() == {"error": "invalid_grant", "error_description": "The authorization code has expired"}


@pytest.mark.usefixtures("team_portal")
async def test_a_code_is_only_for_the_app_it_was_issued_to(client: httpx2.AsyncClient) -> None:
    code = redirect_query(await authorize(client))["code"]
    response = await exchange(client, code, client_id=SANDBOX_CLIENT_ID, client_secret=SANDBOX_CLIENT_SECRET)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


@pytest.mark.usefixtures("team_portal")
async def test_code_exchange_with_a_wrong_secret_is_invalid_client(client: httpx2.AsyncClient) -> None:
    code = redirect_query(await authorize(client))["code"]
    response = await exchange(client, code, client_secret="wrong")
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")


@pytest.mark.usefixtures("team_portal")
async def test_code_exchange_without_a_code_is_invalid_request(client: httpx2.AsyncClient) -> None:
    params = {"grant_type": "authorization_code", "client_id": APP_ID, "client_secret": APP_SECRET}
    response = await client.get("/oauth/token/", params=params)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "error_description": 'No "code" parameter found'}


@pytest.mark.usefixtures("team_portal")
async def test_authorize_with_nobody_signed_in_shows_the_sign_in_page(
    client: httpx2.AsyncClient, portal: Portal
) -> None:
    portal.sign_in_as(None)
    response = await authorize(client, state="s")
    assert response.status_code == 200
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")


async def test_authorize_for_an_unknown_app_shows_an_error_page(client: httpx2.AsyncClient) -> None:
    response = await client.get("/oauth/authorize/", params={"client_id": "local.unknown"})
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "Application not found" in response.text


async def test_authorize_for_an_app_without_redirect_uri_shows_the_code(client: httpx2.AsyncClient) -> None:
    response = await client.get("/oauth/authorize/", params={"client_id": SANDBOX_CLIENT_ID})
    code = response.text.split("Your authorization code: ")[1].split("<")[0]
    params = {"client_id": SANDBOX_CLIENT_ID, "client_secret": SANDBOX_CLIENT_SECRET, "code": code}
    token = await client.get("/oauth/token/", params={"grant_type": "authorization_code", **params})
    assert response.status_code == 200
    profile = (await client.post("/rest/profile", json={"auth": token.json()["access_token"]})).json()["result"]
    assert profile["ID"] == str(SANDBOX_USER_ID)


@pytest.mark.usefixtures("team_portal")
async def test_authorize_is_logged_with_the_signed_in_user(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.sign_in_as(SALES_USER_ID)
    await authorize(client, state="s")
    assert portal.calls_to("oauth.authorize") == [
        Call("oauth.authorize", {"client_id": APP_ID, "state": "s"}, SALES_USER_ID, 302, None)
    ]


def test_sign_in_as_an_unknown_user_is_refused(portal: Portal) -> None:
    with pytest.raises(ValueError, match="unknown user 404"):
        portal.sign_in_as(404)


def test_seeded_portal_has_the_administrator_signed_in(portal: Portal) -> None:
    assert portal.oauth.signed_in == SANDBOX_USER_ID


async def test_a_person_added_later_can_sign_in(team_portal: Portal) -> None:
    team_portal.add_user(User(50, "Nina", "New"))
    async with make_client(team_portal) as client:
        token = await sign_in(client, team_portal, 50)
        profile = (await client.post("/rest/profile", json={"auth": token["access_token"]})).json()["result"]
    assert (profile["NAME"], profile["LAST_NAME"]) == ("Nina", "New")
