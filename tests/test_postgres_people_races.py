"""The people store in the shared database across replicas that race and whose clocks differ: the caps on
registrations and on sign-ins in flight hold however many replicas register at once, and what has expired is
decided on the database's clock, so every replica agrees whatever its own clock says."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import psycopg
import pytest
from mcp.shared.auth import OAuthClientInformationFull
from people_stores import OpenStore, replica_stores, rows

from b24_mcp.postgres.schema import LATEST, MIGRATIONS
from b24_mcp.signin import postgres_pending as people_module
from b24_mcp.signin.postgres import PostgresPeopleStore
from b24_mcp.signin.records import (
    Authorization,
    AwaitingConsent,
    BitrixTokens,
    Grant,
    IssuedCode,
    SignedIn,
    SourceFull,
    StoreFull,
)

pytestmark = [pytest.mark.anyio, pytest.mark.process]

HOUR = 3600.0
CAP = 5
RACERS_PER_REPLICA = 8


def slow() -> float:
    """A replica whose clock is an hour behind."""
    return time.time() - HOUR


def fast() -> float:
    """A replica whose clock is an hour ahead."""
    return time.time() + HOUR


@pytest.fixture
async def replicas(database_url: str) -> AsyncIterator[OpenStore]:
    """`replicas(clock=…)`: a people store with a pool of its own and its own clock, as a replica has; all closed."""
    async with replica_stores(database_url) as open_store:
        yield open_store


def client(client_id: str) -> OAuthClientInformationFull:
    return OAuthClientInformationFull(
        client_id=client_id,
        redirect_uris=["http://127.0.0.1:9/callback"],  # type: ignore[list-item]
        token_endpoint_auth_method="none",
    )


def authorization(expires_at: float) -> Authorization:
    return Authorization("client-1", "http://127.0.0.1:9/callback", True, "challenge", None, ("crm",), "r", expires_at)


def grant(expires_at: float) -> Grant:
    return Grant("client-1", 3, ("crm",), "https://mcp.example/mcp", "family-1", expires_at)


def code(expires_at: float) -> IssuedCode:
    return IssuedCode(grant(expires_at), "challenge", "http://127.0.0.1:9/callback", True)


def signed_in() -> SignedIn:
    return SignedIn("member-of-the-portal", 3, "Sales Person", BitrixTokens("bitrix-access-1", "bitrix-refresh-1"))


async def refusals_of_a_race(
    stores: list[PostgresPeopleStore], attempt: Callable[[PostgresPeopleStore, str], Awaitable[None]]
) -> tuple[int, list[BaseException]]:
    """`RACERS_PER_REPLICA` attempts on each store at once: how many went through, and what the others raised."""
    passed: list[str] = []
    refused: list[BaseException] = []

    async def one(store: PostgresPeopleStore, name: str) -> None:
        try:
            await attempt(store, name)
        except Exception as exc:
            refused.append(exc)
        else:
            passed.append(name)

    for store in stores:  # each pool open and the schema made, so that the attempts below start together
        await store.get_client("warm-up")
    async with anyio.create_task_group() as group:
        for index, store in enumerate(stores):
            for racer in range(RACERS_PER_REPLICA):
                group.start_soon(one, store, f"racer-{index}-{racer}")
    return len(passed), refused


def refusal(exc: BaseException) -> tuple[type[BaseException], str]:
    return type(exc), str(exc)


# -------------------------------------------------------------------------------------------------------- caps


async def test_registrations_racing_on_several_replicas_never_exceed_the_cap(
    replicas: OpenStore, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(people_module, "MAX_CLIENTS", CAP)
    stores = [replicas() for _ in range(4)]

    async def register(store: PostgresPeopleStore, name: str) -> None:
        await store.add_client(client(name))

    passed, refused = await refusals_of_a_race(stores, register)
    with pytest.raises(StoreFull) as lone:
        await stores[0].add_client(client("one-more"))
    assert passed == CAP
    assert rows(database_url, "SELECT count(*) FROM b24mcp.signin_clients") == [(CAP,)]
    assert {refusal(exc) for exc in refused} == {refusal(lone.value)}
    assert len(refused) == 4 * RACERS_PER_REPLICA - CAP


async def test_sign_ins_racing_on_several_replicas_never_exceed_the_cap_on_sign_ins_in_flight(
    replicas: OpenStore, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(people_module, "MAX_PENDING", CAP)
    stores = [replicas() for _ in range(4)]

    async def start_sign_in(store: PostgresPeopleStore, state: str) -> None:
        await store.add_authorization(state, authorization(time.time() + 600))

    passed, refused = await refusals_of_a_race(stores, start_sign_in)
    with pytest.raises(StoreFull) as lone:
        await stores[0].add_authorization("one-more", authorization(time.time() + 600))
    assert passed == CAP
    assert rows(database_url, "SELECT count(*) FROM b24mcp.signin_authorizations") == [(CAP,)]
    assert {refusal(exc) for exc in refused} == {refusal(lone.value)}


async def test_a_sources_share_of_registrations_racing_on_several_replicas_holds(
    replicas: OpenStore, database_url: str
) -> None:
    stores = [replicas() for _ in range(4)]

    async def register(store: PostgresPeopleStore, name: str) -> None:
        await store.add_client(client(name), "192.0.2.1", CAP)

    passed, refused = await refusals_of_a_race(stores, register)
    assert passed == CAP
    assert {type(exc) for exc in refused} == {SourceFull}
    assert all(1 <= exc.retry_after <= people_module.UNUSED_CLIENT_SECONDS for exc in refused)  # type: ignore[attr-defined]
    await stores[1].add_client(client("another-address"), "192.0.2.2", CAP)


async def test_a_sources_share_of_sign_ins_in_flight_holds_across_replicas(replicas: OpenStore) -> None:
    one, other = replicas(), replicas()
    await one.add_authorization("state-1", authorization(time.time() + 600), "2001:db8::/64", 1)
    with pytest.raises(SourceFull) as full:
        await other.add_authorization("state-2", authorization(time.time() + 600), "2001:db8::/64", 1)
    assert 590 <= full.value.retry_after <= 601
    await other.take_authorization("state-1")
    await other.add_authorization("state-3", authorization(time.time() + 600), "2001:db8::/64", 1)


async def test_a_consent_is_to_one_exact_redirect_uri_on_every_replica(replicas: OpenStore) -> None:
    one, other = replicas(), replicas()
    await one.sign_in(signed_in(), "client-1", "http://127.0.0.1:9/callback")
    assert await other.has_consented(3, "client-1", "http://127.0.0.1:9/callback")
    assert not await other.has_consented(3, "client-1", "https://evil.example/steal")


async def test_a_database_of_schema_2_is_upgraded_and_its_consents_no_longer_count(
    replicas: OpenStore, database_url: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as connection, connection.transaction():
        for statement in (statement for migration in MIGRATIONS[:2] for statement in migration):
            connection.execute(statement)
        connection.execute("INSERT INTO b24mcp.schema_version (version) VALUES (2)")
        connection.execute("INSERT INTO b24mcp.signin_consents VALUES (3, 'client-1', 1.0)")
    store = replicas()
    assert not await store.has_consented(3, "client-1", "http://127.0.0.1:9/callback")  # asked once more
    await store.add_client(client("client-1"), "192.0.2.1", 1)
    await store.sign_in(signed_in(), "client-1", "http://127.0.0.1:9/callback")
    assert await store.has_consented(3, "client-1", "http://127.0.0.1:9/callback")
    assert rows(database_url, "SELECT version FROM b24mcp.schema_version") == [(LATEST,)]
    assert rows(database_url, "SELECT source FROM b24mcp.signin_clients") == [(None,)]  # used: no longer counted


# ------------------------------------------------------------------------------------- the database's clock


async def test_a_code_issued_by_a_replica_whose_clock_is_slow_is_accepted_by_one_whose_clock_is_fast(
    replicas: OpenStore,
) -> None:
    behind, ahead = replicas(clock=slow), replicas(clock=fast)
    await behind.add_code("mcp-code-1", code(slow() + 60))
    found = await ahead.find_code("mcp-code-1")
    assert found is not None
    assert found.grant.expires_at == pytest.approx(fast() + 60, abs=5)  # on the reader's own clock


async def test_a_code_expired_on_the_databases_clock_is_expired_for_every_replica(replicas: OpenStore) -> None:
    behind, ahead, punctual = replicas(clock=slow), replicas(clock=fast), replicas()
    await ahead.add_code("mcp-code-1", code(fast() + 1))
    await anyio.sleep(1.5)
    assert [await replica.find_code("mcp-code-1") for replica in (behind, ahead, punctual)] == [None] * 3


async def test_tokens_issued_by_a_replica_whose_clock_is_slow_are_accepted_by_one_whose_clock_is_fast(
    replicas: OpenStore,
) -> None:
    behind, ahead = replicas(clock=slow), replicas(clock=fast)
    await behind.sign_in(signed_in(), "client-1", "http://127.0.0.1:9/cb")
    await behind.add_tokens("mcp-access-1", "mcp-refresh-1", grant(slow() + 60), slow() + 120)
    access = await ahead.find_access("mcp-access-1")
    refresh = await ahead.find_refresh("mcp-refresh-1")
    assert access is not None and refresh is not None
    assert access[0].expires_at == pytest.approx(fast() + 60, abs=5)  # on the reader's own clock
    assert refresh.expires_at == pytest.approx(fast() + 120, abs=5)


async def test_an_access_token_expired_on_the_databases_clock_is_refused_by_every_replica(
    replicas: OpenStore,
) -> None:
    behind, ahead, punctual = replicas(clock=slow), replicas(clock=fast), replicas()
    await ahead.sign_in(signed_in(), "client-1", "http://127.0.0.1:9/cb")
    await ahead.add_tokens("mcp-access-1", "mcp-refresh-1", grant(fast() + 1), fast() + 600)
    await anyio.sleep(1.5)
    assert [await replica.find_access("mcp-access-1") for replica in (behind, ahead, punctual)] == [None] * 3
    assert all([await replica.find_refresh("mcp-refresh-1") for replica in (behind, ahead, punctual)])


async def test_a_sign_in_started_on_a_replica_whose_clock_is_slow_comes_back_through_one_whose_clock_is_fast(
    replicas: OpenStore,
) -> None:
    behind, ahead = replicas(clock=slow), replicas(clock=fast)
    await behind.add_authorization("state-1", authorization(slow() + 60))
    await behind.await_consent("consent-1", AwaitingConsent(authorization(slow() + 60), signed_in(), slow() + 60))
    taken = await ahead.take_authorization("state-1")
    waiting = await ahead.take_consent("consent-1")
    assert taken is not None and waiting is not None
    assert taken.expires_at == pytest.approx(fast() + 60, abs=5)
    assert waiting.expires_at == pytest.approx(fast() + 60, abs=5)


async def test_a_replica_whose_clock_is_days_ahead_keeps_the_fresh_registrations_of_the_others(
    replicas: OpenStore,
) -> None:
    punctual, ahead = replicas(), replicas(clock=lambda: time.time() + 2 * 86_400)
    await punctual.add_client(client("registered-just-now"))
    await ahead.add_client(client("another"))  # forgets unused registrations, on the database's clock
    assert await ahead.get_client("registered-just-now") is not None


async def test_sign_ins_and_uses_are_stamped_on_the_databases_clock(replicas: OpenStore, database_url: str) -> None:
    ahead = replicas(clock=fast)
    person = await ahead.sign_in(signed_in(), "client-1", "http://127.0.0.1:9/cb")
    [(database_now,)] = rows(database_url, "SELECT extract(epoch FROM now())::double precision")
    assert person.signed_in_at == pytest.approx(database_now, abs=5)
    [listed] = await ahead.people()
    assert listed.signed_in_at == person.signed_in_at and listed.last_used_at == person.signed_in_at
