"""Sign-in with the people store in the shared database: its single-use operations raced by two "replicas" (two
stores, each with its own pool), and two `b24-mcp --transport http --stateless` sign-in servers behind one public
address, in front of the portal emulator over real HTTPS."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from people_stores import SECRET, OpenStore, replica_stores, rows
from signin_helpers import Browser, Person, SignInServer, call, run_b24, signin_env, signin_server

from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.seed import SALES_USER_ID
from b24_mcp.signin.postgres import PostgresPeopleStore
from b24_mcp.signin.records import Authorization, BitrixTokens, Grant, IssuedCode, SignedIn
from helpers import TLSFiles, free_port

pytestmark = pytest.mark.anyio

MEMBER = "member-of-the-portal"
ACCESS, REFRESH = "bitrix-access-0123456789", "bitrix-refresh-0123456789"
FIRST_PAIR = BitrixTokens(ACCESS, REFRESH)


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[OpenStore]:
    """`stores()`: a people store with a pool of its own on the test database, as a replica has; all closed."""
    async with replica_stores(database_url) as open_store:
        yield open_store


def grant(user_id: int = 3, family: str = "family-1") -> Grant:
    return Grant("client-1", user_id, ("crm",), "https://mcp.example/mcp", family, time.time() + 600)


def signed_in(user_id: int = 3, tokens: BitrixTokens = FIRST_PAIR) -> SignedIn:
    return SignedIn(MEMBER, user_id, "Sales Person", tokens)


async def twice_at_once(first: Any, second: Any) -> list[Any]:
    results: list[Any] = []

    async def run(operation: Any) -> None:
        results.append(await operation())

    async with anyio.create_task_group() as group:
        group.start_soon(run, first)
        group.start_soon(run, second)
    return results


async def test_a_code_taken_by_two_replicas_at_once_is_taken_once(stores: Callable[[], PostgresPeopleStore]) -> None:
    one, other = stores(), stores()
    await one.add_code("mcp-code-1", IssuedCode(grant(), "challenge", "http://127.0.0.1:9/callback", True))
    assert await other.find_code("mcp-code-1") is not None
    for _ in range(5):  # races: each round a fresh code
        code = f"mcp-code-{time.monotonic_ns()}"
        await one.add_code(code, IssuedCode(grant(), "challenge", "http://127.0.0.1:9/callback", True))
        taken = await twice_at_once(lambda code=code: one.take_code(code), lambda code=code: other.take_code(code))
        assert sorted(result.outcome for result in taken) == ["replayed", "taken"]
        assert {result.family for result in taken} == {"family-1"}
    assert (await one.take_code("never-issued")).outcome == "unknown"


async def test_a_refresh_token_rotated_by_two_replicas_at_once_rotates_once(
    stores: Callable[[], PostgresPeopleStore], database_url: str
) -> None:
    one, other = stores(), stores()
    await one.sign_in(signed_in(), "client-1", "http://127.0.0.1:9/cb")
    await one.add_tokens("mcp-access-1", "mcp-refresh-1", grant(), time.time() + 3600)
    assert await other.find_access("mcp-access-1") is not None
    taken = await twice_at_once(
        lambda: one.rotate_refresh("mcp-refresh-1"), lambda: other.rotate_refresh("mcp-refresh-1")
    )
    assert sorted(result.outcome for result in taken) == ["replayed", "taken"]
    assert await other.find_access("mcp-access-1") is None  # the rotation dropped the family's access tokens
    stored = rows(database_url, "SELECT token FROM b24mcp.signin_tokens")
    assert all(not token.startswith("mcp-") for (token,) in stored)  # digests only


async def test_a_sign_in_state_and_a_consent_are_taken_once(stores: Callable[[], PostgresPeopleStore]) -> None:
    one, other = stores(), stores()
    authorization = Authorization(
        "client-1", "http://127.0.0.1:9/callback", True, "challenge", None, ("crm",), "r", time.time() + 600
    )
    await one.add_authorization("state-1", authorization)
    taken = await twice_at_once(lambda: one.take_authorization("state-1"), lambda: other.take_authorization("state-1"))
    assert sorted(result is None for result in taken) == [False, True]


async def test_bitrix_tokens_are_sealed_and_open_on_every_replica(
    stores: Callable[[], PostgresPeopleStore], database_url: str
) -> None:
    one, other = stores(), stores()
    person = await one.sign_in(signed_in(), "client-1", "http://127.0.0.1:9/cb")
    assert await other.bitrix_tokens(3) == (person.version, BitrixTokens(ACCESS, REFRESH))
    assert await other.has_consented(3, "client-1", "http://127.0.0.1:9/cb")
    dump = repr(rows(database_url, "SELECT * FROM b24mcp.signin_people"))
    assert ACCESS not in dump and REFRESH not in dump
    again = await other.sign_in(signed_in(), "client-1", "http://127.0.0.1:9/cb")
    assert again.version == person.version + 1
    assert not await one.save_bitrix_tokens(3, person.version, BitrixTokens("stale", "stale"))


async def test_a_persons_tokens_refreshed_by_two_replicas_at_once_are_exchanged_once(
    stores: Callable[[], PostgresPeopleStore],
) -> None:
    one, other = stores(), stores()
    person = await one.sign_in(signed_in(), "client-1", "http://127.0.0.1:9/cb")
    exchanges: list[BitrixTokens] = []

    async def renew(stored: BitrixTokens) -> BitrixTokens:
        exchanges.append(stored)
        await anyio.sleep(0.3)  # the other replica waits for the row lock meanwhile
        return BitrixTokens("bitrix-access-2", "bitrix-refresh-2")

    current = BitrixTokens(ACCESS, REFRESH)
    results = await twice_at_once(
        lambda: one.refresh_bitrix_tokens(3, person.version, current, renew),
        lambda: other.refresh_bitrix_tokens(3, person.version, current, renew),
    )
    assert exchanges == [current]
    assert results == [BitrixTokens("bitrix-access-2", "bitrix-refresh-2")] * 2
    assert await other.bitrix_tokens(3) == (person.version, BitrixTokens("bitrix-access-2", "bitrix-refresh-2"))
    assert await one.refresh_bitrix_tokens(3, person.version + 1, current, renew) is None  # another sign-in's
    assert await one.revoke(3)
    assert await other.bitrix_tokens(3) is None


@pytest.mark.process
async def test_people_lists_and_revokes_the_people_of_the_shared_database(
    stores: Callable[[], PostgresPeopleStore],
    portal: Portal,
    https_origin: str,
    tls: TLSFiles,
    database_url: str,
    tmp_path: Path,
) -> None:
    store = stores()
    await store.sign_in(signed_in(), "client-1", "http://127.0.0.1:9/cb")
    env = signin_env(portal, https_origin, tls.ca_bundle, tmp_path / "state", tmp_path / "audit.jsonl", free_port())
    env |= {"B24_DATABASE_URL": database_url, "B24_CONFIRM_SECRET": SECRET.decode()}
    listed = run_b24(env, "people")
    revoked = run_b24(env, "people", "revoke", "3")
    checked = run_b24(env, "check")
    assert listed.returncode == 0, listed.stderr
    assert "Sales Person" in listed.stdout and "active" in listed.stdout
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith("Revoked user 3 (Sales Person)")
    assert await store.bitrix_tokens(3) is None
    assert "ok    people store: the shared database (B24_DATABASE_URL; 0 signed in)" in checked.stdout
    assert not (tmp_path / "state").exists()


# ------------------------------------------------------------------------------- two sign-in servers, one database


def refreshes(portal: Portal) -> int:
    return sum(1 for entry in portal.calls_to("oauth.token") if entry.params.get("grant_type") == "refresh_token")


async def test_a_person_signs_in_through_one_replica_and_works_through_the_other(
    portal: Portal, https_origin: str, tls: TLSFiles, database_url: str, tmp_path: Path
) -> None:
    env = signin_env(portal, https_origin, tls.ca_bundle, tmp_path / "state", tmp_path / "audit.jsonl", free_port())
    env |= {"B24_DATABASE_URL": database_url, "B24_CONFIRM_SECRET": SECRET.decode()}
    # Both replicas have the same public address (a load balancer's); the second listens on a port of its own.
    sales = Person(SALES_USER_ID, Browser(tls.ca_bundle))
    async with (
        signin_server(env, "--stateless") as one,
        signin_server(env, "--stateless", port=free_port()) as other,
    ):
        async with sales.connect(portal, one) as session:
            assert (await call(session, "crm_item_delete", {"entityTypeId": 2, "id": 42}))["status"] == "preview"
        signed_in_pages = len(sales.browser.pages)
        async with sales.connect(portal, other) as session:
            preview = await call(session, "crm_item_delete", {"entityTypeId": 2, "id": 42})
        assert preview["status"] == "preview"
        assert len(sales.browser.pages) == signed_in_pages  # not asked to sign in again

        portal.expire_access_tokens()
        before = refreshes(portal)
        results: list[dict[str, Any]] = []

        async def preview_through(server: SignInServer, item_id: int) -> None:
            async with sales.connect(portal, server) as session:
                results.append(await call(session, "crm_item_delete", {"entityTypeId": 2, "id": item_id}))

        async with anyio.create_task_group() as group:
            for index, item_id in enumerate((40, 41, 42, 43)):
                group.start_soon(preview_through, (one, other)[index % 2], item_id)
    assert [result["status"] for result in results] == ["preview"] * 4, results
    assert refreshes(portal) - before == 1  # one exchange: the other replica used the rotated pair
    assert not [entry for entry in portal.calls if entry.error == "invalid_grant"]
    assert not (tmp_path / "state" / "people.sqlite3").exists()
    assert rows(database_url, "SELECT user_id, version FROM b24mcp.signin_people") == [(SALES_USER_ID, 1)]
