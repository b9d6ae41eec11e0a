"""`b24-mcp journal reconcile`: every unfinished intent settled by reading the portal, with its own attempt id;
the file journal and the shared table alike; one line per item."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from b24_mcp.commands.cli import main
from b24_mcp.commands.reconcile import GONE_NOTE, reconcile
from b24_mcp.deleting.app import App
from b24_mcp.journal.reader import read_tail
from b24_mcp.journal.record import Attempt, ConfirmedBy, Entry
from b24_mcp.sandbox.accounts import SANDBOX_HOST, SANDBOX_USER_ID
from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.link import sandbox_webhook
from b24_mcp.sandbox.serve import sandbox_transport
from b24_mcp.settings import Settings
from helpers import TLSFiles, http_server, make_app, read_journal, run_b24, webhook_env

pytestmark = pytest.mark.anyio

LONG_AGO = "2026-01-02T03:04:05.000Z"
GONE, THERE, HIDDEN = 40, 41, 42  # seeded deals; 40 is deleted on the portal, 42 this user may not read


def attempt(item_id: int, host: str = SANDBOX_HOST) -> Attempt:
    return Attempt(host, SANDBOX_USER_ID, 2, item_id, ConfirmedBy.TOKEN, {"id": item_id, "title": f"Deal {item_id}"})


@pytest.fixture
def app(portal: Portal, make_settings: Callable[..., Settings]) -> App:
    return make_app(make_settings(), sandbox_webhook(), sandbox_transport(portal))


async def crashed(app: App, portal: Portal, *item_ids: int, ts: str | None = LONG_AGO) -> dict[int, Attempt]:
    """Intents written, item 40 then deleted on the portal, and no outcome: what a killed server leaves."""
    attempts = {item_id: attempt(item_id) for item_id in item_ids}
    await app.journal.write_many([Entry("intent", each, ts=ts) for each in attempts.values()])
    portal.items[2].pop(GONE, None)
    portal.deny(SANDBOX_USER_ID, "read", 2, HIDDEN)
    return attempts


def outcomes(journal: Path) -> dict[int, dict[str, Any]]:
    return {line["id"]: line for line in read_journal(journal) if line["event"] != "intent"}


async def test_an_item_that_is_gone_gets_a_deleted_outcome_confirmed_by_absence(
    app: App, portal: Portal, journal_path: Path
) -> None:
    attempts = await crashed(app, portal, GONE)
    (settled,) = await reconcile(app, recent=60)
    assert settled.verdict == "deleted" and "confirmed by absence" in settled.reason
    outcome = outcomes(journal_path)[GONE]
    assert (outcome["event"], outcome["attempt"], outcome["note"]) == ("deleted", attempts[GONE].attempt_id, GONE_NOTE)
    assert outcome["item"] == {"id": GONE, "title": "Deal 40"}  # the intent's snapshot, kept


async def test_an_item_still_there_gets_an_outcome_saying_it_was_not_deleted(
    app: App, portal: Portal, journal_path: Path
) -> None:
    attempts = await crashed(app, portal, THERE)
    (settled,) = await reconcile(app, recent=60)
    assert settled.verdict == "not deleted"
    outcome = outcomes(journal_path)[THERE]
    assert (outcome["event"], outcome["error"], outcome["attempt"]) == (
        "error",
        "NOT_DELETED",
        attempts[THERE].attempt_id,
    )
    assert "still on the portal" in outcome["error_description"]
    assert THERE in portal.items[2] and portal.calls_to("crm.item.delete") == []


async def test_an_item_that_cannot_be_read_is_left_unfinished_and_named(
    app: App, portal: Portal, journal_path: Path
) -> None:
    await crashed(app, portal, HIDDEN)
    (settled,) = await reconcile(app, recent=60)
    assert settled.verdict == "unfinished"
    assert "deal #42" in settled.subject and "ACCESS_DENIED" in settled.reason
    assert outcomes(journal_path) == {}
    assert read_tail(journal_path, 10).unfinished == {0}


async def test_a_recent_intent_whose_item_is_still_there_is_left_for_a_later_run(
    app: App, portal: Portal, journal_path: Path
) -> None:
    await crashed(app, portal, THERE, GONE, ts=None)  # written now: a deletion may be under way
    settled = {each.subject.split(" (")[0]: each for each in await reconcile(app, recent=60)}
    assert settled["deal #41 «Deal 41»"].verdict == "unfinished"
    assert "may be under way" in settled["deal #41 «Deal 41»"].reason
    assert settled["deal #40 «Deal 40»"].verdict == "deleted"  # absence is a fact whatever the age
    assert list(outcomes(journal_path)) == [GONE]


async def test_an_intent_of_another_portal_or_a_malformed_line_is_left_unfinished(
    app: App, portal: Portal, journal_path: Path
) -> None:
    await app.journal.write("intent", attempt(THERE, host="other.bitrix24.com"))
    with journal_path.open("a") as file:
        file.write(json.dumps({"event": "intent", "attempt": "x", "portal": SANDBOX_HOST, "id": "41"}) + "\n")
    settled = await reconcile(app, recent=60)
    assert [each.verdict for each in settled] == ["unfinished", "unfinished"]
    assert "another portal (other.bitrix24.com)" in settled[0].reason
    assert "not well-formed" in settled[1].reason
    assert portal.calls == [] and outcomes(journal_path) == {}


async def test_finished_attempts_are_left_alone_and_a_second_run_has_nothing_to_do(
    app: App, portal: Portal, journal_path: Path
) -> None:
    done = attempt(43)
    await app.journal.write_many([Entry("intent", done), Entry("deleted", done)])
    await crashed(app, portal, GONE, THERE)
    assert [each.verdict for each in await reconcile(app, recent=60)] == ["deleted", "not deleted"]
    assert await reconcile(app, recent=60) == []
    events = [line["event"] for line in read_journal(journal_path)]
    assert events == ["intent", "deleted", "intent", "intent", "deleted", "error"]


async def test_the_table_journal_is_reconciled_the_same_way(
    portal: Portal, make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(database_url=database_url, confirm_secret="s" * 32)
    app = make_app(settings, sandbox_webhook(), sandbox_transport(portal))
    try:
        attempts = await crashed(app, portal, GONE, THERE, HIDDEN)
        verdicts = [each.verdict for each in await reconcile(app, recent=60)]
    finally:
        await app.aclose()
    assert verdicts == ["deleted", "not deleted", "unfinished"]
    with psycopg.connect(database_url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT item_id, event, attempt FROM b24mcp.journal WHERE event <> 'intent' ORDER BY item_id"
        ).fetchall()
    assert rows == [(GONE, "deleted", attempts[GONE].attempt_id), (THERE, "error", attempts[THERE].attempt_id)]


def test_the_command_says_what_it_did_one_line_per_item(
    portal: Portal, webhook_url: str, tls: TLSFiles, tmp_path: Path
) -> None:
    journal = tmp_path / "audit.jsonl"
    host = webhook_url.split("/")[2]
    lines = [
        {"ts": LONG_AGO, "event": "intent", "attempt": f"a{item_id}", "portal": host, "userId": SANDBOX_USER_ID}
        | {"entityTypeId": 2, "id": item_id, "confirmation": "token", "item": {"id": item_id, "title": "Acme\x1b[2J"}}
        for item_id in (GONE, THERE, HIDDEN)
    ]
    journal.write_text("".join(json.dumps(line) + "\n" for line in lines))
    journal.chmod(0o600)
    portal.items[2].pop(GONE)
    portal.deny(SANDBOX_USER_ID, "read", 2, HIDDEN)
    done = run_b24("journal", "reconcile", env=webhook_env(webhook_url, tls, journal))
    assert done.returncode == 1, done.stderr  # one is left unfinished
    out = done.stdout.splitlines()
    assert out[0].startswith("deleted      deal #40 «Acme\\x1b[2J» (attempt a40")
    assert out[1].startswith("not deleted  deal #41") and "NOT_DELETED" in out[1]
    assert out[2].startswith("unfinished   deal #42") and "ACCESS_DENIED" in out[2]
    assert out[3] == "2 of 3 unfinished intent(s) settled; 1 left unfinished."
    assert [(line["attempt"], line["event"]) for line in read_journal(journal)[3:]] == [
        ("a40", "deleted"),
        ("a41", "error"),
    ]
    shown = run_b24("journal", env=webhook_env(webhook_url, tls, journal))
    assert "1 deletion attempt(s) have an intent but no outcome" in shown.stdout


def test_the_help_and_the_readmes_journal_section_name_reconcile(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "`journal reconcile` settles every unfinished intent" in " ".join(capsys.readouterr().out.split())
    root = Path(__file__).parent.parent
    readme_journal = (root / "README.md").read_text().split("## The journal", 1)[1].split("\n## ", 1)[0]
    assert "b24-mcp journal reconcile" in readme_journal
    reliability = (root / "docs" / "reliability.md").read_text()
    assert "b24-mcp journal reconcile" in reliability.split("## The audit journal", 1)[1].split("\n## ", 1)[0]
    threat_model = (root / "docs" / "security.md").read_text().split("## Threat model", 1)[1]
    assert "journal reconcile" in threat_model


def test_a_server_starting_on_unfinished_intents_says_so_in_one_log_line(
    webhook_url: str, tls: TLSFiles, tmp_path: Path
) -> None:
    journal = tmp_path / "audit.jsonl"
    intent = {"ts": LONG_AGO, "event": "intent", "attempt": "a1", "portal": "x", "entityTypeId": 2, "id": 41}
    journal.write_text(json.dumps(intent) + "\n")
    journal.chmod(0o600)
    env = webhook_env(webhook_url, tls, journal) | {"B24_MCP_HTTP_TOKEN": "t" * 32}
    with http_server(env) as served:
        deadline = time.monotonic() + 20
        while "journal reconcile" not in served.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = served.stop()
    (line,) = [line for line in log.splitlines() if "journal reconcile" in line]
    assert "WARNING" in line and "1 deletion attempt(s) with an intent but no outcome" in line
