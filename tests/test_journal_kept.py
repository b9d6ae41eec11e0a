"""Outcomes the journal refused (a full disk, an unusable file, a database outage) are kept in memory and written as
soon as the journal takes writes again, without a restart: by the next write, or by the server's timer."""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import psycopg
import pytest
from mcp import Client
from postgres_cluster import Cluster, Postgres

from b24_mcp.deleting.gate import Consent, Route
from b24_mcp.deleting.item import ItemDeletion
from b24_mcp.journal import record as journal_module
from b24_mcp.journal.file import Journal
from b24_mcp.journal.record import Attempt, ConfirmedBy, Entry, JournalStore
from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.link import sandbox_webhook
from b24_mcp.sandbox.serve import sandbox_transport
from b24_mcp.serving.tools import build_server
from b24_mcp.settings import Settings
from bulk_helpers import add_deals
from helpers import make_app

pytestmark = pytest.mark.anyio


def attempt(item_id: int = 42, title: str = "Acme") -> Attempt:
    return Attempt("acme.bitrix24.com", 1, 2, item_id, ConfirmedBy.TOKEN, {"id": item_id, "title": title})


def events(path: Path) -> list[tuple[str, int]]:
    return [(line["event"], line["id"]) for line in map(json.loads, path.read_text().splitlines())]


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    """Poll `condition` (state another task changes) until it holds; fail after `seconds`."""
    with anyio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110  # nothing to wait on: the journal's state is polled
            await anyio.sleep(0.02)


def fill_up(path: Path) -> None:
    """Write to `path` until the disk is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, b"x" * 512)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    return
                raise
    finally:
        os.close(fd)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "audit.jsonl"


async def refused_outcome(path: Path) -> Journal:
    """A journal with an intent whose `deleted` outcome it refused: others may read the file (mode 0644)."""
    journal = Journal(path)
    await journal.write("intent", attempt())
    path.chmod(0o644)
    refused = await journal.write_outcomes([Entry("deleted", attempt_of(path))])
    assert refused is not None and refused.code == "JOURNAL_UNWRITABLE"
    assert journal.kept == 1 and events(path) == [("intent", 42)]
    return journal


def attempt_of(path: Path) -> Attempt:
    """The attempt of the journal's first line (the same attempt id as its intent)."""
    first = json.loads(path.read_text().splitlines()[0])
    return Attempt("acme.bitrix24.com", 1, 2, first["id"], ConfirmedBy.TOKEN, first["item"], first["attempt"])


async def test_an_outcome_the_journal_refused_is_written_before_the_next_entries(path: Path) -> None:
    journal = await refused_outcome(path)
    path.chmod(0o600)
    await journal.write("intent", attempt(43))
    assert events(path) == [("intent", 42), ("deleted", 42), ("intent", 43)]
    intent, outcome, _ = map(json.loads, path.read_text().splitlines())
    assert outcome["attempt"] == intent["attempt"] and journal.kept == 0


async def test_a_kept_outcome_keeps_the_time_it_happened(path: Path) -> None:
    journal = await refused_outcome(path)
    await anyio.sleep(0.05)
    path.chmod(0o600)
    await journal.write("intent", attempt(43))
    _, outcome, later = map(json.loads, path.read_text().splitlines())
    assert outcome["ts"] < later["ts"]


async def test_the_timer_writes_kept_outcomes_without_another_deletion(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(JournalStore, "retry_every", 0.05)
    journal = await refused_outcome(path)
    async with anyio.create_task_group() as server:
        server.start_soon(journal.tend)
        await anyio.sleep(0.2)
        assert journal.kept == 1  # still refused
        path.chmod(0o600)
        await until(lambda: journal.kept == 0)
        server.cancel_scope.cancel()
    assert events(path) == [("intent", 42), ("deleted", 42)]


async def test_outcomes_refused_by_a_really_full_disk_are_written_once_there_is_room(
    small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(JournalStore, "retry_every", 0.05)
    journal = Journal(small_disk / "b24-mcp" / "audit.jsonl")
    deals = [attempt(item_id, title="z" * 5000) for item_id in range(1, 4)]  # each line more than a page
    await journal.write_many([Entry("intent", deal) for deal in deals])
    filler = small_disk / "filler"
    fill_up(filler)
    refused = await journal.write_outcomes([Entry("deleted", deal) for deal in deals])
    assert refused is not None and "No space left on device" in refused.description
    async with anyio.create_task_group() as server:
        server.start_soon(journal.tend)
        os.unlink(filler)
        await until(lambda: journal.kept == 0)
        server.cancel_scope.cancel()
    assert events(journal.path) == [("intent", 1), ("intent", 2), ("intent", 3)] + [("deleted", n) for n in (1, 2, 3)]


async def test_past_the_bound_the_oldest_kept_outcomes_are_dropped_and_the_log_names_reconcile(
    path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(journal_module, "MAX_KEPT", 2)
    journal = Journal(path)
    await journal.write_many([Entry("intent", attempt(item_id)) for item_id in (1, 2, 3)])
    path.chmod(0o644)
    with caplog.at_level(logging.ERROR, "b24_mcp.journal"):
        await journal.write_outcomes([Entry("deleted", attempt(item_id)) for item_id in (1, 2, 3)])
    assert journal.kept == 2
    assert "1 outcome(s) the journal refused were dropped" in caplog.text
    assert "b24-mcp journal reconcile" in caplog.text
    path.chmod(0o600)
    assert await journal.write_kept()
    assert events(path)[3:] == [("deleted", 2), ("deleted", 3)]


async def test_a_server_starting_on_unfinished_intents_says_so_once_and_points_to_reconcile(
    path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(JournalStore, "retry_every", 0.05)
    journal, done, killed = Journal(path), attempt(1), attempt(2)
    await journal.write_many([Entry("intent", done), Entry("intent", killed)])
    await journal.write("deleted", done)
    with caplog.at_level(logging.WARNING, "b24_mcp.journal"):
        async with anyio.create_task_group() as server:
            server.start_soon(journal.tend)
            await anyio.sleep(0.3)
            server.cancel_scope.cancel()
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1, lines
    assert "1 deletion attempt(s) with an intent but no outcome" in lines[0]
    assert "`b24-mcp journal reconcile`" in lines[0]


async def test_a_server_starting_on_a_settled_journal_says_nothing(
    path: Path, caplog: pytest.LogCaptureFixture, connect: Any
) -> None:
    del path
    with caplog.at_level(logging.WARNING, "b24_mcp.journal"):
        async with connect() as client:
            await client.call_tool("crm_item_delete", {"entityTypeId": 2, "id": 42})
    assert [record.getMessage() for record in caplog.records] == []


class StopsTheDatabase(httpx2.AsyncBaseTransport):
    """The emulator's transport, but the database stops while the `at`-th request of deletes is at the portal."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, cluster: Cluster, at: int) -> None:
        self.inner, self.cluster, self.at, self.seen = inner, cluster, at, 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if b"crm.item.delete" in await request.aread():
            self.seen += 1
            if self.seen == self.at:
                await anyio.to_thread.run_sync(self.cluster.stop)
        return await self.inner.handle_async_request(request)


def outcome_rows(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute("SELECT count(*) FROM b24mcp.journal WHERE event IN ('deleted', 'error')").fetchone()
    return int(row[0]) if row else 0


async def test_outcomes_refused_while_the_database_was_down_mid_batch_are_written_once_it_is_back(
    postgres: Postgres,
    database_url: str,
    portal: Portal,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if postgres.cluster is None:
        pytest.skip("the database of B24_TEST_DATABASE_URL cannot be stopped by the tests")
    monkeypatch.setattr(JournalStore, "retry_every", 0.1)
    ids = add_deals(portal, 200)
    settings = make_settings(
        database_url=database_url, confirm_secret="s" * 32, confirm="none", rate_burst=10_000, rate_per_second=1000.0
    )
    transport = StopsTheDatabase(sandbox_transport(portal), postgres.cluster, at=2)
    server = build_server(make_app(settings, sandbox_webhook(), transport))
    async with Client(server) as client:
        try:
            result = await client.call_tool("crm_item_delete_batch", {"entityTypeId": 2, "ids": ids, "dryRun": False})
        finally:
            await anyio.to_thread.run_sync(postgres.cluster.start)
        assert result.structured_content is not None
        assert (result.structured_content["deleted"], result.structured_content["remaining"]) == (100, 100)
        assert len(portal.calls_to("crm.item.delete")) == 100
        with anyio.fail_after(20):
            while await anyio.to_thread.run_sync(outcome_rows, database_url) < 100:  # noqa: ASYNC110  # polled
                await anyio.sleep(0.1)
    with psycopg.connect(database_url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT intent.item_id FROM b24mcp.journal AS intent JOIN b24mcp.journal AS outcome "
            "ON outcome.attempt = intent.attempt AND outcome.event = 'deleted' WHERE intent.event = 'intent'"
        ).fetchall()
    assert sorted(item_id for (item_id,) in rows) == ids[:100]


async def test_a_single_deletion_whose_outcome_was_refused_says_so_and_the_next_write_records_it(
    make_settings: Callable[..., Settings], portal: Portal, journal_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = ItemDeletion(make_app(make_settings(confirm="none"), sandbox_webhook(), sandbox_transport(portal)))
    real_write = os.write
    writes: list[int] = []

    def full_after_the_intent(fd: int, data: Any) -> int:
        writes.append(len(data))
        if len(writes) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr("b24_mcp.journal.file.os.write", full_after_the_intent)
    result = await service.delete(2, 42, Consent(route=Route.NONE))
    assert result.status == "deleted" and 42 not in portal.items[2]
    assert "could not be journaled yet" in result.message and "as soon as the journal takes writes" in result.message
    assert events(journal_path) == [("intent", 42)]
    await service.delete(2, 43, Consent(route=Route.NONE))
    assert events(journal_path) == [("intent", 42), ("deleted", 42), ("intent", 43), ("deleted", 43)]


async def test_outcomes_still_refused_when_the_server_stops_are_named_in_the_log_with_reconcile(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = await refused_outcome(path)
    with caplog.at_level(logging.ERROR, "b24_mcp.journal"):
        await journal.last_try()
    assert "1 outcome(s) the journal refused are lost as this server stops" in caplog.text
    assert "`b24-mcp journal reconcile`" in caplog.text
