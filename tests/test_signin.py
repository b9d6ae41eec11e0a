"""Sign-in over real HTTP: each person signs in with the SDK's own OAuth client (discovery, registration, PKCE,
the redirect through the portal and back, the token exchange) and acts with their own Bitrix24 rights."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from signin_helpers import (
    Browser,
    Person,
    SignInServer,
    call,
    delete_with_preview,
    run_b24,
    signin_env,
    signin_process,
    signin_server,
)

from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.seed import SALES_USER_ID, SANDBOX_CLIENT_SECRET, SANDBOX_USER_ID
from helpers import TLSFiles, free_port, read_journal

pytestmark = pytest.mark.anyio

TOOLS = ["crm_entity_types", "crm_item_delete", "crm_item_delete_batch"]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def env(portal: Portal, https_origin: str, tls: TLSFiles, state: Path, journal_path: Path) -> dict[str, str]:
    return signin_env(portal, https_origin, tls.ca_bundle, state, journal_path, free_port())


@pytest.fixture
async def server(env: dict[str, str]) -> AsyncIterator[SignInServer]:
    async with signin_server(env) as served:
        yield served


@pytest.fixture
def process(env: dict[str, str], tmp_path: Path) -> Iterator[SignInServer]:
    """The command itself, for what only its process shows: its stderr, its files once it has stopped."""
    with signin_process(env, tmp_path / "logs") as served:
        yield served


@pytest.fixture
def admin(tls: TLSFiles) -> Person:
    return Person(SANDBOX_USER_ID, Browser(tls.ca_bundle))


@pytest.fixture
def sales(tls: TLSFiles) -> Person:
    return Person(SALES_USER_ID, Browser(tls.ca_bundle))


def refreshes(portal: Portal) -> int:
    return sum(1 for entry in portal.calls_to("oauth.token") if entry.params.get("grant_type") == "refresh_token")


async def preview_through_a_new_server(
    env: dict[str, str], tmp_path: Path, portal: Portal, person: Person, *args: str
) -> dict[str, Any]:
    """Start a sign-in server (with `args`), preview deal 42 through it as `person`, and stop it."""
    async with signin_server(env, *args) as server, person.connect(portal, server) as session:
        return await call(session, "crm_item_delete", {"entityTypeId": 2, "id": 42})


# --------------------------------------------------------------------------------------------------- discovery


async def test_a_request_without_a_token_gets_401_naming_the_resource_metadata(server: SignInServer) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(
            server.mcp_url,
            headers={"accept": "application/json, text/event-stream", "content-type": "application/json"},
            content=b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
        )
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert f'resource_metadata="{server.public_url}/.well-known/oauth-protected-resource/mcp"' in challenge


async def test_the_resource_names_this_server_as_its_authorization_server(server: SignInServer) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.get(server.public_url + "/.well-known/oauth-protected-resource/mcp")
    assert response.json()["resource"] == server.mcp_url
    assert response.json()["authorization_servers"] == [server.public_url]


async def test_the_authorization_server_offers_pkce_s256_registration_and_names_itself(server: SignInServer) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        metadata = (await http.get(server.public_url + "/.well-known/oauth-authorization-server")).json()
    assert metadata["issuer"] == server.public_url
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["registration_endpoint"] == server.public_url + "/register"
    assert metadata["authorization_endpoint"] == server.public_url + "/authorize"
    assert metadata["authorization_response_iss_parameter_supported"] is True


# --------------------------------------------------------------------------------------------------- signing in


async def test_a_person_signs_in_through_the_portal_and_uses_the_tools(
    server: SignInServer, portal: Portal, sales: Person
) -> None:
    async with sales.connect(portal, server) as session:
        tools = await session.list_tools()
    assert sorted(tool.name for tool in tools.tools) == TOOLS
    visited = [page.split("?")[0] for page in sales.browser.pages]
    assert visited[0] == server.public_url + "/authorize"
    assert any(page.endswith("/oauth/authorize/") for page in visited)  # the portal's sign-in
    assert server.public_url + "/oauth/callback" in visited
    exchanges = [entry for entry in portal.calls_to("oauth.token") if entry.status == 200]
    assert [entry.params["grant_type"] for entry in exchanges] == ["authorization_code"]


async def test_a_code_exchange_answer_without_user_id_signs_in_whom_the_profile_names(
    server: SignInServer, portal: Portal, sales: Person
) -> None:
    assert not portal.oauth.code_answer_names_user  # the documented answer: no user_id
    async with sales.connect(portal, server) as session:
        result = await call(session, "crm_item_delete", {"entityTypeId": 2, "id": 42})
    assert result["status"] == "preview"
    profiles = [entry for entry in portal.calls_to("profile") if entry.status == 200]
    assert [entry.user_id for entry in profiles] == [SALES_USER_ID]
    assert f"User {SALES_USER_ID} signed in" in server.stop()


async def test_a_code_exchange_answer_naming_the_user_signs_them_in_too(
    server: SignInServer, portal: Portal, sales: Person
) -> None:
    portal.oauth.code_answer_names_user = True
    async with sales.connect(portal, server) as session:
        await session.list_tools()
    assert f"User {SALES_USER_ID} signed in" in server.stop()


async def test_the_code_exchange_is_a_get_whose_secrets_no_log_line_holds_even_at_debug(
    env: dict[str, str], portal: Portal, sales: Person, tmp_path: Path
) -> None:
    with signin_process(env | {"B24_LOG_LEVEL": "DEBUG"}, tmp_path / "logs") as server:
        async with sales.connect(portal, server) as session:
            await session.list_tools()
        stderr = server.stop()
    (exchange,) = [entry for entry in portal.calls_to("oauth.token") if entry.status == 200]
    assert exchange.params["grant_type"] == "authorization_code"  # read from the query string: a GET
    assert f"User {SALES_USER_ID} signed in" in stderr
    assert SANDBOX_CLIENT_SECRET not in stderr
    assert "code=" not in stderr and "client_secret" not in stderr


async def test_the_client_gets_our_tokens_never_the_portals(
    server: SignInServer, portal: Portal, sales: Person
) -> None:
    async with sales.connect(portal, server) as session:
        await call(session, "crm_item_delete", {"entityTypeId": 2, "id": 42})
    assert sales.storage.tokens is not None
    assert sales.access_token.startswith("b24mcp_at_")
    portal_tokens = set(portal.oauth._access_tokens) | set(portal.oauth._refresh_tokens)  # the emulator's own
    assert sales.access_token not in portal_tokens
    assert sales.storage.tokens.refresh_token not in portal_tokens


async def test_the_redirect_back_to_the_client_names_the_issuer(
    server: SignInServer, portal: Portal, sales: Person
) -> None:
    async with sales.connect(portal, server):
        pass
    assert sales.browser.arrived["iss"] == server.public_url


async def test_a_person_who_denies_the_client_gets_no_code(server: SignInServer, portal: Portal, tls: TLSFiles) -> None:
    person = Person(SALES_USER_ID, Browser(tls.ca_bundle, allow=False))
    with pytest.raises(Exception):  # noqa: B017, PT011 (the SDK's flow fails; what matters is what came back)
        async with person.connect(portal, server):
            pass
    assert person.browser.arrived["error"] == "access_denied"
    assert person.storage.tokens is None


async def test_a_second_sign_in_through_the_same_client_is_not_asked_again(
    server: SignInServer, portal: Portal, sales: Person
) -> None:
    async with sales.connect(portal, server):
        pass
    sales.storage.tokens = None  # signed out on the client's side: it signs in again
    async with sales.connect(portal, server):
        pass
    consents = [page for page in sales.browser.pages if page.endswith("/oauth/consent")]
    assert len(consents) == 1


# ------------------------------------------------------------------------------------ two people, their own rights


async def test_each_person_deletes_with_their_own_rights(
    server: SignInServer, portal: Portal, admin: Person, sales: Person, journal_path: Path
) -> None:
    async with admin.connect(portal, server) as session:
        by_admin = await delete_with_preview(session, 4, 31)
    async with sales.connect(portal, server) as session:
        by_sales = await delete_with_preview(session, 4, 32)
    assert by_admin["status"] == "deleted"
    assert (by_sales["status"], by_sales["error"]) == ("error", "ACCESS_DENIED")
    assert 31 not in portal.items[4]
    assert 32 in portal.items[4]


async def test_the_journal_names_the_person_on_every_line(
    server: SignInServer, portal: Portal, admin: Person, sales: Person, journal_path: Path
) -> None:
    async with admin.connect(portal, server) as session:
        await delete_with_preview(session, 4, 31)
    async with sales.connect(portal, server) as session:
        await delete_with_preview(session, 4, 32)
    lines = [(line["event"], line["id"], line["userId"], line["userName"]) for line in read_journal(journal_path)]
    assert lines == [
        ("intent", 31, SANDBOX_USER_ID, "Sandbox Administrator"),
        ("deleted", 31, SANDBOX_USER_ID, "Sandbox Administrator"),
        ("intent", 32, SALES_USER_ID, "Sam Sales"),
        ("error", 32, SALES_USER_ID, "Sam Sales"),
    ]


async def test_a_preview_token_of_one_person_is_refused_for_another(
    server: SignInServer, portal: Portal, admin: Person, sales: Person
) -> None:
    async with admin.connect(portal, server) as session:
        preview = await call(session, "crm_item_delete", {"entityTypeId": 2, "id": 42})
    arguments = {"entityTypeId": 2, "id": 42, "dryRun": False, "confirmationToken": preview["confirmationToken"]}
    async with sales.connect(portal, server) as session:
        refused = await call(session, "crm_item_delete", arguments)
    assert refused["error"] == "INVALID_CONFIRMATION_TOKEN"
    assert 42 in portal.items[2]


async def test_a_person_who_may_not_read_a_type_gets_the_portals_answer(
    server: SignInServer, portal: Portal, sales: Person
) -> None:
    project = next(iter(portal.items[1046]))
    async with sales.connect(portal, server) as session:
        preview = await call(session, "crm_item_delete", {"entityTypeId": 1046, "id": project})
    assert preview["error"] == "ACCESS_DENIED"


async def test_two_people_share_one_session_store_but_not_a_session(
    server: SignInServer, portal: Portal, admin: Person, sales: Person
) -> None:
    async with admin.connect(portal, server) as first, sales.connect(portal, server) as second:
        mine = await call(first, "crm_item_delete", {"entityTypeId": 4, "id": 31})
        theirs = await call(second, "crm_item_delete", {"entityTypeId": 4, "id": 31})
    assert mine["confirmationToken"] != theirs["confirmationToken"]
    assert mine["status"] == theirs["status"] == "preview"


async def test_people_sign_in_to_a_stateless_server_too(
    env: dict[str, str], tmp_path: Path, portal: Portal, sales: Person
) -> None:
    preview = await preview_through_a_new_server(env, tmp_path, portal, sales, "--stateless")
    assert preview["status"] == "preview"


# ------------------------------------------------------------------------------------ the person's Bitrix24 tokens


async def test_expired_bitrix_tokens_are_refreshed_once_for_concurrent_calls(
    server: SignInServer, portal: Portal, sales: Person
) -> None:
    async with sales.connect(portal, server) as session:
        portal.expire_access_tokens()
        results: list[dict[str, object]] = []

        async def preview(item_id: int) -> None:
            results.append(await call(session, "crm_item_delete", {"entityTypeId": 2, "id": item_id}))

        async with anyio.create_task_group() as group:
            for item_id in (40, 41, 42, 43):
                group.start_soon(preview, item_id)
    assert [result["status"] for result in results] == ["preview"] * 4
    assert refreshes(portal) == 1


async def test_the_rotated_pair_is_saved_and_used_after_a_restart(
    env: dict[str, str], tmp_path: Path, portal: Portal, sales: Person
) -> None:
    async with signin_server(env) as server, sales.connect(portal, server) as session:
        portal.expire_access_tokens()
        await call(session, "crm_item_delete", {"entityTypeId": 2, "id": 42})
    portal.expire_access_tokens()  # the pair the first run got is rotated: only the saved one can refresh now
    preview = await preview_through_a_new_server(env, tmp_path, portal, sales)
    assert preview["status"] == "preview"
    assert refreshes(portal) == 2


async def test_a_person_stays_signed_in_across_a_restart(
    env: dict[str, str], tmp_path: Path, portal: Portal, sales: Person
) -> None:
    await preview_through_a_new_server(env, tmp_path, portal, sales)
    signed_in_pages = len(sales.browser.pages)
    preview = await preview_through_a_new_server(env, tmp_path, portal, sales)
    assert preview["status"] == "preview"
    assert len(sales.browser.pages) == signed_in_pages  # no second sign-in


async def test_a_refused_refresh_ends_the_sign_in(server: SignInServer, portal: Portal, sales: Person) -> None:
    async with sales.connect(portal, server) as session:
        await call(session, "crm_item_delete", {"entityTypeId": 2, "id": 42})
        portal.oauth._refresh_tokens.clear()  # the portal forgot the grant (180 days passed, app reinstalled)
        portal.expire_access_tokens()
        refused = await call(session, "crm_item_delete", {"entityTypeId": 2, "id": 42})
    assert refused["error"] == "invalid_grant"
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(
            server.mcp_url,
            headers={"authorization": f"Bearer {sales.access_token}", "accept": "application/json, text/event-stream"},
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        )
    assert response.status_code == 401


# ---------------------------------------------------------------------------------------------- people, revoking


@pytest.mark.process
async def test_people_lists_who_signed_in(server: SignInServer, portal: Portal, sales: Person) -> None:
    async with sales.connect(portal, server) as session:
        await call(session, "crm_item_delete", {"entityTypeId": 2, "id": 42})
    listed = run_b24(server.env, "people")
    assert listed.returncode == 0
    header, row = listed.stdout.splitlines()
    assert header.split() == ["USER", "ID", "NAME", "SIGNED", "IN", "(UTC)", "LAST", "USE", "(UTC)", "STATUS"]
    assert row.split()[:3] == [str(SALES_USER_ID), "Sam", "Sales"]
    assert row.split()[-1] == "active"


@pytest.mark.process
async def test_revoking_a_person_refuses_their_next_call(server: SignInServer, portal: Portal, sales: Person) -> None:
    async with sales.connect(portal, server) as session:
        await call(session, "crm_item_delete", {"entityTypeId": 2, "id": 42})
        revoked = run_b24(server.env, "people", "revoke", str(SALES_USER_ID))
        async with httpx2.AsyncClient(timeout=30) as http:
            response = await http.post(
                server.mcp_url,
                headers={
                    "authorization": f"Bearer {sales.access_token}",
                    "accept": "application/json, text/event-stream",
                },
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            )
    assert revoked.returncode == 0, revoked.stderr
    assert response.status_code == 401
    assert run_b24(server.env, "people").stdout.splitlines()[1].split()[-1] == "revoked"


@pytest.mark.process
async def test_a_revoked_person_signs_in_again_from_their_client(
    server: SignInServer, portal: Portal, sales: Person
) -> None:
    async with sales.connect(portal, server) as session:
        await call(session, "crm_item_delete", {"entityTypeId": 2, "id": 42})
        run_b24(server.env, "people", "revoke", str(SALES_USER_ID))
        again = await call(session, "crm_item_delete", {"entityTypeId": 2, "id": 42})
    assert again["status"] == "preview"
    assert sum(1 for page in sales.browser.pages if page.endswith("/oauth/consent")) == 2  # consent was forgotten


@pytest.mark.process
def test_people_before_anyone_signed_in_says_so(env: dict[str, str]) -> None:
    listed = run_b24(env, "people")
    assert (listed.returncode, listed.stdout.split(":")[0]) == (0, "No one has signed in")


@pytest.mark.process
async def test_check_describes_the_sign_in_without_a_secret(env: dict[str, str], server: SignInServer) -> None:
    done = run_b24(env, "check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"redirect URI {server.public_url}/oauth/callback" in done.stdout
    assert "ok    people store:" in done.stdout
    assert done.stdout.splitlines()[-1] == "Ready: people can sign in once the server runs (b24-mcp --transport http)."
    assert SANDBOX_CLIENT_SECRET not in done.stdout


@pytest.mark.process
async def test_revoking_someone_who_never_signed_in_says_so(env: dict[str, str], server: SignInServer) -> None:
    done = run_b24(env, "people", "revoke", "999")
    assert done.returncode == 1
    assert "999" in done.stdout


# ------------------------------------------------------------------------------------------------ secrets at rest


@pytest.mark.process
async def test_the_people_store_is_private_and_holds_no_token_in_clear(
    process: SignInServer, portal: Portal, sales: Person, state: Path
) -> None:
    server = process
    async with sales.connect(portal, server) as session:
        await call(session, "crm_item_delete", {"entityTypeId": 2, "id": 42})
    running = sorted(path for path in state.iterdir() if path.is_file())
    modes = {path.name: path.stat().st_mode & 0o777 for path in running}
    stored = b"".join(path.read_bytes() for path in running if path.name != "people.key")
    stderr = server.stop()
    stored += b"".join(path.read_bytes() for path in state.iterdir() if path.name != "people.key")
    assert modes == {
        name: 0o600 for name in ("people.key", "people.sqlite3", "people.sqlite3-shm", "people.sqlite3-wal")
    }
    assert state.stat().st_mode & 0o777 == 0o700
    assert sales.storage.tokens is not None and sales.storage.client_info is not None
    secrets = [
        sales.access_token,
        sales.storage.tokens.refresh_token or "?",
        sales.storage.client_info.client_secret or "?",
        SANDBOX_CLIENT_SECRET,
        *portal.oauth._access_tokens,
        *portal.oauth._refresh_tokens,
    ]
    for secret in secrets:
        assert secret.encode() not in stored
        assert secret not in stderr


@pytest.mark.process
async def test_a_log_names_the_person_but_no_secret(process: SignInServer, portal: Portal, sales: Person) -> None:
    server = process
    async with sales.connect(portal, server) as session:
        await call(session, "crm_item_delete", {"entityTypeId": 2, "id": 42})
    stderr = server.stop()
    assert f"User {SALES_USER_ID} signed in" in stderr
    assert sales.access_token not in stderr
    assert SANDBOX_CLIENT_SECRET not in stderr


# ---------------------------------------------------------------------------------------------- configuration


@pytest.mark.process
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("B24_WEBHOOK_URL", "https://acme.bitrix24.com/rest/1/abcdefgh/"),
        ("B24_ACCESS_TOKEN", "fixed-access-token"),
        ("B24_MCP_HTTP_TOKEN", "team-token-5f2a9c1e7b3d4a6f8e0c2b4d6f8a0c2e"),
    ],
)
def test_sign_in_refuses_a_credential_of_one_user(env: dict[str, str], variable: str, value: str) -> None:
    done = run_b24(env | {variable: value}, "--transport", "http", "--port", str(free_port()))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"b24-mcp: {variable} is set, but with sign-in (B24_PUBLIC_URL) "
        + {
            "B24_WEBHOOK_URL": "a webhook acts as its one user",
            "B24_ACCESS_TOKEN": "a fixed access token acts as its one user",
            "B24_MCP_HTTP_TOKEN": "each person gets their own token by signing in",
        }[variable]
        + ": unset it"
    ]
    assert value not in done.stderr


@pytest.mark.process
def test_sign_in_needs_the_application(env: dict[str, str]) -> None:
    without = {name: value for name, value in env.items() if name != "B24_CLIENT_SECRET"}
    done = run_b24(without, "--transport", "http", "--port", str(free_port()))
    assert done.returncode == 2
    assert done.stderr.startswith("b24-mcp: B24_CLIENT_SECRET is not set: sign-in (B24_PUBLIC_URL) needs")


@pytest.mark.process
def test_sign_in_is_for_http_only(env: dict[str, str]) -> None:
    done = run_b24(env)
    assert done.returncode == 2
    assert "people sign in over HTTP only" in done.stderr


@pytest.mark.process
def test_a_public_url_in_clear_text_elsewhere_than_this_machine_is_refused(env: dict[str, str]) -> None:
    done = run_b24(env | {"B24_PUBLIC_URL": "http://mcp.acme.example"}, "--transport", "http")
    assert done.returncode == 2
    assert done.stderr.startswith("b24-mcp: B24_PUBLIC_URL uses http:// for a host other than localhost")
