"""The state replicas share, against a real PostgreSQL: each store used by two "replicas" at once (two
applications, each with its own connection pool, in this process), the portal emulator over real HTTPS."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import psycopg
import pytest
from postgres_cluster import Postgres

from b24_mcp.deleting.gate import Consent, Route
from b24_mcp.deleting.item import ItemDeletion
from b24_mcp.journal.record import Attempt, ConfirmedBy, Entry, JournalUnwritable
from b24_mcp.postgres.database import Database, DatabaseUnavailableError
from b24_mcp.postgres.journal import TableJournal, read_table_tail
from b24_mcp.postgres.pacing import SharedBucket
from b24_mcp.postgres.schema import LATEST
from b24_mcp.postgres.spent import SharedSpentTokens
from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.seed import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, SANDBOX_WEBHOOK_CODE
from b24_mcp.settings import Settings, SettingsError, parse_webhook_url
from helpers import TLSFiles, item_deletion, run_b24

pytestmark = pytest.mark.anyio

SECRET = "shared-confirm-secret-0123456789abcdef"


@pytest.fixture
async def databases(database_url: str) -> AsyncIterator[Callable[..., Database]]:
    """`databases()`: a new pool on the test database, as a replica has; all closed at the end."""
    opened: list[Database] = []

    def open_one(**options: Any) -> Database:
        opened.append(Database(database_url, **options))
        return opened[-1]

    yield open_one
    for database in opened:
        await database.aclose()


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute(query).fetchall()


def stopped(postgres: Postgres) -> Any:
    if postgres.cluster is None:
        pytest.skip("the database of B24_TEST_DATABASE_URL cannot be stopped by the tests")
    return postgres.cluster


def attempt(item_id: int, item: dict[str, Any] | None = None) -> Attempt:
    return Attempt(
        "acme.bitrix24.com", 1, 2, item_id, ConfirmedBy.TOKEN, item or {"id": item_id, "title": f"Deal {item_id}"}
    )


# ------------------------------------------------------------------------------------------------ spent tokens


async def test_a_token_spent_on_one_replica_is_refused_on_another(databases: Callable[..., Database]) -> None:
    first, second = SharedSpentTokens(databases()), SharedSpentTokens(databases())
    expires = int(time.time()) + 300
    assert await first.spend("nonce-1", expires) is True
    assert await second.spend("nonce-1", expires) is False
    assert await first.spend("nonce-1", expires) is False


async def test_twenty_spends_of_one_token_at_once_let_exactly_one_through(
    databases: Callable[..., Database],
) -> None:
    stores = [SharedSpentTokens(databases()) for _ in range(3)]
    outcomes: list[bool] = []

    async def spend(index: int) -> None:
        outcomes.append(await stores[index % 3].spend("contested", int(time.time()) + 300))

    async with anyio.create_task_group() as group:
        for index in range(20):
            group.start_soon(spend, index)
    assert sorted(outcomes) == [False] * 19 + [True]


async def test_spent_tokens_are_forgotten_a_day_after_they_expire(
    databases: Callable[..., Database], database_url: str
) -> None:
    store = SharedSpentTokens(databases())
    now = int(time.time())
    assert await store.spend("long-expired", now - 2 * 86_400)
    assert await SharedSpentTokens(databases()).spend("recent", now + 300)  # a first spend purges
    assert rows(database_url, "SELECT nonce FROM b24mcp.spent_tokens") == [("recent",)]


async def test_without_the_database_a_token_is_not_spent_and_nothing_can_be_deleted(
    databases: Callable[..., Database], postgres: Postgres
) -> None:
    cluster = stopped(postgres)
    store = SharedSpentTokens(databases(timeout=1))
    assert await store.spend("warm-up", int(time.time()) + 300)
    cluster.stop()
    with pytest.raises(JournalUnwritable) as refused:
        await store.spend("kept", int(time.time()) + 300)
    cluster.start()
    assert refused.value.code == "JOURNAL_UNWRITABLE"
    assert postgres.url not in refused.value.description
    assert await store.spend("kept", int(time.time()) + 300) is True  # the same pool, reconnected


# ---------------------------------------------------------------------------------------- the portal's bucket


def bucket(database: Database, capacity: int = 4, rate: float = 2.0) -> SharedBucket:
    return SharedBucket(
        database, portal="acme.bitrix24.com", credential="acme/webhook/1", capacity=capacity, rate=rate, margin=0
    )


async def test_replicas_fill_one_bucket(databases: Callable[..., Database]) -> None:
    first, second = bucket(databases()), bucket(databases())
    started = time.monotonic()
    async with anyio.create_task_group() as group:
        for index in range(6):  # two more than the bucket holds: 0.5 s and 1 s at 2 per second
            group.start_soon((first if index % 2 else second).acquire, "crm.item.get")
    assert time.monotonic() - started >= 0.95


async def test_a_bucket_the_portal_called_full_paces_every_replica(databases: Callable[..., Database]) -> None:
    first, second = bucket(databases(), capacity=10), bucket(databases(), capacity=10)
    first.saturate()
    await first.acquire("crm.item.get")  # fills the shared bucket, then waits its turn (0.5 s)
    started = time.monotonic()
    await second.acquire("crm.item.get")
    assert time.monotonic() - started >= 0.45


async def test_a_method_blocked_on_one_replica_is_blocked_on_all_until_it_unblocks(
    databases: Callable[..., Database],
) -> None:
    first, second = bucket(databases()), bucket(databases())
    until = int(time.time()) + 2
    await first.block("crm.item.delete", until)
    assert await second.acquire("crm.item.delete") == until
    assert await second.acquire("crm.item.get") is None  # other methods go on
    await anyio.sleep(until + 0.5 - time.time())
    assert await second.acquire("crm.item.delete") is None


async def test_without_the_database_a_replica_paces_itself_and_goes_on(
    databases: Callable[..., Database], postgres: Postgres
) -> None:
    cluster = stopped(postgres)
    pacing = bucket(databases(timeout=1), capacity=50)
    await pacing.acquire("crm.item.get")
    cluster.stop()
    try:
        with anyio.fail_after(10):
            for _ in range(5):
                assert await pacing.acquire("crm.item.get") is None
    finally:
        cluster.start()


# ------------------------------------------------------------------------------------------------- the journal


async def test_replicas_write_one_journal_each_intent_before_its_outcome(
    databases: Callable[..., Database],
) -> None:
    first, second = TableJournal(databases()), TableJournal(databases())
    one, two = attempt(1), attempt(2)
    await first.write("intent", one)
    await second.write("intent", two)
    await second.write("deleted", two)
    await first.write("error", one, error="ACCESS_DENIED", error_description="Access denied")
    tail = await read_table_tail(databases(), 10)
    assert [(entry["id"], entry["event"]) for entry in tail.entries] == [
        (1, "intent"),
        (2, "intent"),
        (2, "deleted"),
        (1, "error"),
    ]
    assert tail.entries[3]["error"] == "ACCESS_DENIED"
    assert tail.unfinished == frozenset()


async def test_an_intent_without_an_outcome_is_unfinished(databases: Callable[..., Database]) -> None:
    journal = TableJournal(databases())
    await journal.write_many([Entry("intent", attempt(item_id)) for item_id in (1, 2, 3)])
    await journal.write("deleted", attempt(4))
    tail = await read_table_tail(databases(), 2)
    assert (tail.unfinished, tail.unfinished_before, tail.reach) == (frozenset({0}), 2, 4)


async def test_a_batch_the_database_refuses_in_part_leaves_none_of_it(
    databases: Callable[..., Database], database_url: str
) -> None:
    journal = TableJournal(databases())
    too_big = Attempt("acme.bitrix24.com", 1, 2, 2**70, ConfirmedBy.TOKEN, {})
    with pytest.raises(JournalUnwritable) as refused:
        await journal.write_many([Entry("intent", attempt(1)), Entry("intent", too_big)])
    assert refused.value.durable == 0
    assert rows(database_url, "SELECT count(*) FROM b24mcp.journal") == [(0,)]


async def test_the_snapshot_comes_back_exactly(databases: Callable[..., Database]) -> None:
    item = {"id": 7, "title": "Nul\x00 \u202etxt.exe\u202c 😀 «quoted»", "comments": "line\nbreak\ttab", "n": 1.5}
    await TableJournal(databases()).write("intent", attempt(7, item))
    (entry,) = (await read_table_tail(databases(), 1)).entries
    assert entry["item"] == item


async def test_a_write_retried_after_a_lost_answer_is_not_recorded_twice(
    databases: Callable[..., Database], database_url: str
) -> None:
    journal, same = TableJournal(databases()), attempt(9)
    await journal.write("intent", same)
    await journal.write("intent", same)
    assert rows(database_url, "SELECT count(*) FROM b24mcp.journal") == [(1,)]


async def test_the_journal_is_refused_while_the_database_is_down_and_works_when_it_is_back(
    databases: Callable[..., Database], postgres: Postgres
) -> None:
    cluster = stopped(postgres)
    journal = TableJournal(databases(timeout=1))
    await journal.write("intent", attempt(1))
    cluster.stop()
    try:
        with pytest.raises(JournalUnwritable) as refused:
            await journal.write("intent", attempt(2))
    finally:
        cluster.start()
    assert refused.value.durable == 0
    assert "Connection refused" in refused.value.description or "Timeout" in refused.value.description
    await journal.write("intent", attempt(3))


# ---------------------------------------------------------------------------------------------------- the schema


async def test_replicas_starting_together_make_the_schema_once(
    databases: Callable[..., Database], database_url: str
) -> None:
    replicas = [databases() for _ in range(3)]

    async def first_use(database: Database) -> None:
        await TableJournal(database).write("intent", attempt(1))

    async with anyio.create_task_group() as group:
        for database in replicas:
            group.start_soon(first_use, database)
    assert rows(database_url, "SELECT version FROM b24mcp.schema_version") == [(LATEST,)]


async def test_a_schema_newer_than_this_version_is_left_alone_and_deletions_refused(
    databases: Callable[..., Database], database_url: str
) -> None:
    await TableJournal(databases()).write("intent", attempt(1))
    rows(database_url, f"UPDATE b24mcp.schema_version SET version = {LATEST + 1} RETURNING version")
    with pytest.raises(JournalUnwritable) as refused:
        await TableJournal(databases()).write("intent", attempt(2))
    assert f"schema is version {LATEST + 1}, newer than this b24-mcp knows" in refused.value.description


@pytest.mark.process
def test_db_upgrade_makes_the_schema_then_finds_nothing_to_do(database_url: str) -> None:
    env = {"B24_DATABASE_URL": database_url, "B24_CONFIRM_SECRET": SECRET}
    first, again = run_b24("db", "upgrade", env=env), run_b24("db", "upgrade", env=env)
    assert (first.returncode, again.returncode) == (0, 0), first.stderr
    assert first.stdout.strip() == f"Schema b24mcp upgraded from version 0 to {LATEST}."
    assert again.stdout.strip() == f"Schema b24mcp is at version {LATEST}, the current one: nothing to do."


@pytest.mark.process
def test_db_upgrade_of_an_unreachable_database_says_so_without_the_password(postgres: Postgres) -> None:
    url = "postgresql://b24mcp:pa55-word-never-shown@127.0.0.1:1/nowhere"
    done = run_b24("db", "upgrade", env={"B24_DATABASE_URL": url, "B24_CONFIRM_SECRET": SECRET})
    assert done.returncode == 1
    assert done.stderr.startswith("b24-mcp: the database schema was not upgraded: ")
    assert "pa55-word-never-shown" not in done.stderr + done.stdout


# ------------------------------------------------------------------------------------------------ the settings


def test_a_database_url_needs_the_shared_confirmation_secret(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError) as refused:
        make_settings(database_url="postgresql://u:pa55-word-never-shown@db/b24")
    (line,) = refused.value.lines
    assert line.startswith("B24_DATABASE_URL needs B24_CONFIRM_SECRET too")
    assert "pa55-word-never-shown" not in line


def test_a_database_url_that_is_not_postgresql_is_refused_without_being_shown(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(SettingsError) as refused:
        make_settings(database_url="mysql://u:pa55-word-never-shown@db/b24", confirm_secret=SECRET)
    assert refused.value.lines == [
        "B24_DATABASE_URL is not a PostgreSQL URL; expected postgresql://user:password@host:5432/database"
    ]


@pytest.mark.process
def test_without_a_database_url_the_driver_is_never_imported() -> None:
    script = (
        "import sys; from b24_mcp.app import build_app; from b24_mcp.settings import load_settings; "
        "from b24_mcp.sandbox.link import sandbox_webhook; build_app(load_settings(), sandbox_webhook()); "
        "print(sorted(m for m in sys.modules if m.startswith(('psycopg', 'b24_mcp.postgres', 'cryptography'))))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env={})
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


# ---------------------------------------------------------------------- two replicas against the emulated portal


@pytest.fixture
def replica(
    make_settings: Callable[..., Settings], database_url: str, webhook_url: str, tls: TLSFiles
) -> Callable[..., ItemDeletion]:
    """`replica()`: a new application (its own pool) sharing the database, over HTTPS to the emulator."""

    def make(**settings: Any) -> ItemDeletion:
        config = make_settings(database_url=database_url, confirm_secret=SECRET, ca_bundle=tls.ca_bundle, **settings)
        return item_deletion(config, parse_webhook_url(webhook_url, allow_http=False))

    return make


async def close(*services: ItemDeletion) -> None:
    for service in services:
        await service.app.aclose()


async def test_a_block_met_by_one_replica_stops_the_method_on_the_other_without_asking_the_portal(
    replica: Callable[..., ItemDeletion], portal: Portal
) -> None:
    portal.operating_limit = 1.0
    portal.method_cost["crm.item.get"] = 0.6
    first, second = replica(), replica()
    try:
        assert [(await first.preview(2, item_id)).status for item_id in (42, 43)] == ["preview", "preview"]
        blocked_here = await first.preview(2, 44)
        asked = len(portal.calls_to("crm.item.get"))
        blocked_there = await second.preview(2, 45)
    finally:
        await close(first, second)
    assert (blocked_here.error, blocked_here.httpStatus) == ("OPERATION_TIME_LIMIT", 429)
    assert (blocked_there.error, blocked_there.httpStatus, blocked_there.retryable) == (
        "OPERATION_TIME_LIMIT",
        None,
        True,
    )
    assert "operating_reset_at" in blocked_there.message
    assert len(portal.calls_to("crm.item.get")) == asked


async def test_a_token_confirmed_on_one_replica_cannot_delete_again_through_another(
    replica: Callable[..., ItemDeletion], portal: Portal, database_url: str
) -> None:
    first, second = replica(), replica()
    try:
        item = await first.fetch(2, 42)
        consent = Consent(route=Route.TOKEN, token=(await first.preview(2, 42)).confirmationToken)
        deleted = await first.delete(2, 42, consent)
        portal.add_item(2, dict(item))  # the same item, the same version, back on the portal
        again = await second.delete(2, 42, consent)
    finally:
        await close(first, second)
    assert deleted.status == "deleted"
    assert (again.error, again.error_description) == (
        "INVALID_CONFIRMATION_TOKEN",
        "The confirmation token was already used. Preview again (dryRun: true) for a fresh token.",
    )
    assert len(portal.calls_to("crm.item.delete")) == 1
    journal = rows(database_url, "SELECT entry::text FROM b24mcp.journal ORDER BY seq")
    assert all(SANDBOX_WEBHOOK_CODE not in text for (text,) in journal)


# --------------------------------------------------------------------------------------------------- OAuth grants


@pytest.fixture
def oauth_replica(
    make_settings: Callable[..., Settings], database_url: str, https_origin: str, tls: TLSFiles, portal: Portal
) -> Callable[[], ItemDeletion]:
    access, refresh = portal.issue_tokens(SANDBOX_CLIENT_ID, 1)

    def make() -> ItemDeletion:
        config = make_settings(
            database_url=database_url,
            confirm_secret=SECRET,
            ca_bundle=tls.ca_bundle,
            portal_url=https_origin,
            access_token=access,
            refresh_token=refresh,
            client_id=SANDBOX_CLIENT_ID,
            client_secret=SANDBOX_CLIENT_SECRET,
            oauth_url=f"{https_origin}/oauth/token/",
        )
        return item_deletion(config)

    return make


async def test_an_expired_token_met_by_two_replicas_at_once_is_refreshed_once(
    oauth_replica: Callable[[], ItemDeletion], portal: Portal
) -> None:
    replicas = [oauth_replica(), oauth_replica()]
    portal.expire_access_tokens()
    results: list[Any] = []

    async def preview(index: int) -> None:
        results.append(await replicas[index % 2].preview(2, 40 + index))

    try:
        async with anyio.create_task_group() as group:
            for index in range(6):
                group.start_soon(preview, index)
    finally:
        await close(*replicas)
    assert [result.status for result in results] == ["preview"] * 6, [result.message for result in results]
    assert portal.token_requests == 1


async def test_the_stored_tokens_are_sealed(
    oauth_replica: Callable[[], ItemDeletion], portal: Portal, database_url: str
) -> None:
    service = oauth_replica()
    portal.expire_access_tokens()
    try:
        assert (await service.preview(2, 42)).status == "preview"
    finally:
        await close(service)
    ((holder, access, refresh),) = rows(database_url, "SELECT holder, access_token, refresh_token FROM b24mcp.grants")
    live = portal.oauth._access_tokens.keys() | portal.oauth._refresh_tokens.keys()
    assert holder == f"app:{SANDBOX_CLIENT_ID}"
    assert access.startswith("s1.") and refresh.startswith("s1.")
    assert not any(token in access + refresh for token in live)


async def test_a_replica_takes_the_pair_another_rotated_instead_of_refreshing_again(
    oauth_replica: Callable[[], ItemDeletion], portal: Portal
) -> None:
    first, second = oauth_replica(), oauth_replica()
    portal.expire_access_tokens()
    try:
        assert (await first.preview(2, 42)).status == "preview"
        assert (await second.preview(2, 43)).status == "preview"  # its configured token expired: takes the new one
    finally:
        await close(first, second)
    assert portal.token_requests == 1


async def test_an_unreachable_database_is_reported_without_its_password() -> None:
    database = Database("postgresql://b24mcp:pa55-word-never-shown@127.0.0.1:1/nowhere", timeout=1)
    try:
        with pytest.raises(DatabaseUnavailableError) as failed:
            async with database.connection():
                pass
    finally:
        await database.aclose()
    assert "pa55-word-never-shown" not in str(failed.value)


@pytest.mark.process
def test_check_says_whether_deletions_could_be_journaled_in_the_database(database_url: str) -> None:
    env = {"B24_DATABASE_URL": database_url, "B24_CONFIRM_SECRET": SECRET}
    reachable = run_b24("check", "--sandbox", env=env)
    unreachable = run_b24(
        "check", "--sandbox", env=env | {"B24_DATABASE_URL": "postgresql://b24mcp:pa55-word-never-shown@127.0.0.1:1/x"}
    )
    assert reachable.returncode == 0, reachable.stdout + reachable.stderr
    assert "ok    journal: the database of B24_DATABASE_URL answers (the replicas share it)" in reachable.stdout
    assert unreachable.returncode == 1
    assert "FAIL  journal: the database of B24_DATABASE_URL cannot be used (" in unreachable.stdout
    assert "pa55-word-never-shown" not in unreachable.stdout + unreachable.stderr


@pytest.mark.process
async def test_b24_mcp_journal_reads_the_table(databases: Callable[..., Database], database_url: str) -> None:
    journal = TableJournal(databases())
    await journal.write("intent", attempt(1))
    await journal.write("deleted", attempt(1))
    await journal.write("intent", attempt(2, {"id": 2, "title": "Half-done \x1b[31m deal"}))
    env = {"B24_DATABASE_URL": database_url, "B24_CONFIRM_SECRET": SECRET}
    table, raw = run_b24("journal", env=env), run_b24("journal", "--json", env=env)
    assert (table.returncode, raw.returncode) == (0, 0), table.stderr
    assert "Deal 1" in table.stdout and "intent UNFINISHED" in table.stdout
    assert "Half-done \\x1b[31m deal" in table.stdout and "\x1b" not in table.stdout
    assert [json.loads(line)["event"] for line in raw.stdout.splitlines()] == ["intent", "deleted", "intent"]
