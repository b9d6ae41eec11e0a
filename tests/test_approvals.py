"""The page's route in the gate, and approvals kept in the SQLite people store (B24_CONFIRM=page)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from b24_mcp.deleting.approval import Approval, ApprovalState, approval_id
from b24_mcp.deleting.gate import Reach, Route, route_for
from b24_mcp.secure.sealing import Sealer, load_key
from b24_mcp.settings import ConfirmMode
from b24_mcp.signin.approvals import SQLiteApprovals
from b24_mcp.signin.sqlite import SQLiteStore
from b24_mcp.signin.store import SCHEMA_VERSION

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    folder = tmp_path / "state"
    opened = SQLiteStore(folder / "people.sqlite3", Sealer(load_key(folder / "people.key")), clock=lambda: NOW)
    try:
        yield opened
    finally:
        await opened.aclose()


def pending(user_id: int = 3, expires_at: float = NOW + 300) -> Approval:
    return Approval(user_id, {"ids": [42]}, ApprovalState.PENDING, expires_at)


@pytest.mark.parametrize("reach", list(Reach))
def test_page_mode_sends_every_deletion_to_the_page(reach: Reach) -> None:
    assert route_for(ConfirmMode.PAGE, reach, page=True) is Route.PAGE


def test_auto_on_a_sign_in_server_gives_the_page_to_a_client_that_cannot_ask_in_a_form() -> None:
    assert route_for(ConfirmMode.AUTO, Reach.ASKABLE, page=True) is Route.ASK
    assert route_for(ConfirmMode.AUTO, Reach.NO_CAPABILITY, page=True) is Route.PAGE
    assert route_for(ConfirmMode.AUTO, Reach.NO_BACK_CHANNEL, page=True) is Route.PAGE
    assert route_for(ConfirmMode.AUTO, Reach.NO_CAPABILITY) is Route.TOKEN  # no sign-in, no page


def test_the_approval_id_is_derived_from_the_token_one_way() -> None:
    token = "b24c1.payload.signature"
    assert approval_id(token) == approval_id(token) != approval_id(token + "x")
    assert "payload" not in approval_id(token) and len(approval_id(token)) == 32


async def test_only_the_person_decides_and_only_once(store: SQLiteStore) -> None:
    approvals = SQLiteApprovals(store, clock=lambda: NOW)
    await approvals.open_approval("a1", pending(user_id=3))
    assert not await approvals.decide_approval("a1", 4, approve=True)  # another person
    assert await approvals.decide_approval("a1", 3, approve=False)
    assert not await approvals.decide_approval("a1", 3, approve=True)  # decided already
    found = await approvals.find_approval("a1")
    assert found is not None and found.state is ApprovalState.DECLINED


async def test_an_approval_expires_with_its_token(store: SQLiteStore) -> None:
    approvals = SQLiteApprovals(store, clock=lambda: NOW)
    await approvals.open_approval("a1", pending(expires_at=NOW - 1))
    assert await approvals.find_approval("a1") is None
    assert not await approvals.decide_approval("a1", 3, approve=True)


async def test_a_page_sign_in_is_taken_once_and_a_session_names_its_person(store: SQLiteStore) -> None:
    approvals = SQLiteApprovals(store, clock=lambda: NOW)
    await approvals.add_page_signin("state-1", "a1", NOW + 900)
    assert await approvals.take_page_signin("state-1") == "a1"
    assert await approvals.take_page_signin("state-1") is None
    await approvals.add_session("session-1", 3, NOW + 3600)
    assert await approvals.find_session("session-1") == 3
    assert await approvals.find_session("session-2") is None


async def test_ids_and_sessions_are_stored_only_as_digests(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    store = SQLiteStore(folder / "people.sqlite3", Sealer(load_key(folder / "people.key")), clock=lambda: NOW)
    approvals = SQLiteApprovals(store, clock=lambda: NOW)
    try:
        await approvals.open_approval("approval-id-in-clear", pending())
        await approvals.add_session("session-in-clear", 3, NOW + 3600)
    finally:
        await store.aclose()
    with sqlite3.connect(store.path) as db:
        dumped = "\n".join(db.iterdump())
    assert "approval-id-in-clear" not in dumped and "session-in-clear" not in dumped


async def test_a_store_of_schema_2_gains_the_approval_tables(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    path = folder / "people.sqlite3"
    first = SQLiteStore(path, Sealer(load_key(folder / "people.key")))
    await first.aclose()
    with sqlite3.connect(path) as db:
        db.executescript("DROP TABLE approvals; DROP TABLE page_sessions; DROP TABLE page_signins;")
        db.execute("PRAGMA user_version=2")
    upgraded = SQLiteStore(path, Sealer(load_key(folder / "people.key")))
    try:
        await SQLiteApprovals(upgraded).open_approval("a1", pending(expires_at=4_000_000_000))
        assert await SQLiteApprovals(upgraded).find_approval("a1") is not None
    finally:
        await upgraded.aclose()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3


async def test_revoking_a_person_ends_their_page_sessions_and_approvals(store: SQLiteStore) -> None:
    approvals = SQLiteApprovals(store, clock=lambda: NOW)
    await approvals.open_approval("a1", pending(user_id=3))
    await approvals.add_session("session-1", 3, NOW + 3600)
    await store.revoke(3)
    assert await approvals.find_session("session-1") is None
    assert await approvals.find_approval("a1") is None
