"""The application as each signed-in person uses it: their own credential, the portal's one rate limit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

from b24_mcp.app import build_signin_app
from b24_mcp.deleting.app import App
from b24_mcp.deleting.item import ItemDeletion
from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.seed import SALES_USER_ID, SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, SANDBOX_USER_ID, seeded_portal
from b24_mcp.sandbox.serve import sandbox_transport
from b24_mcp.settings import Settings
from b24_mcp.signin.people import People
from b24_mcp.signin.person import PersonAuth
from b24_mcp.signin.records import BitrixTokens

pytestmark = pytest.mark.anyio


@pytest.fixture
def portal() -> Portal:
    portal = seeded_portal(rate_limit=(5, 20.0))
    portal.add_app(SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, redirect_uri="http://127.0.0.1:8000/oauth/callback")
    return portal


@pytest.fixture
async def signed_in(
    portal: Portal, make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[tuple[App, People]]:
    settings = make_settings(
        public_url="http://127.0.0.1:8000",
        portal_url="https://sandbox.bitrix24.test",
        client_id=SANDBOX_CLIENT_ID,
        client_secret=SANDBOX_CLIENT_SECRET,
        state_dir=tmp_path / "state",
        rate_burst=5,
        rate_per_second=20,
    )
    app, people = build_signin_app(settings, http_transport=sandbox_transport(portal), retry_base=0.01)
    try:
        yield app, people
    finally:
        await app.aclose()


def as_person(app: App, people: People, portal: Portal, user_id: int) -> App:
    tokens = BitrixTokens(*portal.issue_tokens(SANDBOX_CLIENT_ID, user_id))
    auth = PersonAuth(people.config, user_id=user_id, name=f"user {user_id}", version=1, tokens=tokens, store=None)
    return app.acting_as(auth, user_name=f"user {user_id}")


async def test_people_of_one_portal_share_its_rate_limit(signed_in: tuple[App, People], portal: Portal) -> None:
    app, people = signed_in
    views = [as_person(app, people, portal, user_id) for user_id in (SANDBOX_USER_ID, SALES_USER_ID)]
    results = []

    async def preview(view: App, item_id: int) -> None:
        results.append(await ItemDeletion(view).preview(2, item_id))

    async with anyio.create_task_group() as group:
        for view in views:
            for item_id in (40, 41, 42, 43):
                group.start_soon(preview, view, item_id)
    assert [result.status for result in results] == ["preview"] * 8
    assert [call for call in portal.calls if call.error == "QUERY_LIMIT_EXCEEDED"] == []


async def test_each_person_calls_with_their_own_token(signed_in: tuple[App, People], portal: Portal) -> None:
    app, people = signed_in
    for user_id in (SANDBOX_USER_ID, SALES_USER_ID):
        await ItemDeletion(as_person(app, people, portal, user_id)).preview(2, 42)
    assert [call.user_id for call in portal.calls_to("crm.item.get")] == [SANDBOX_USER_ID, SALES_USER_ID]


async def test_a_persons_confirmation_tokens_are_theirs(signed_in: tuple[App, People], portal: Portal) -> None:
    app, people = signed_in
    mine, theirs = (as_person(app, people, portal, user_id) for user_id in (SANDBOX_USER_ID, SALES_USER_ID))
    token, _ = mine.tokens.issue(2, 42, "v1")
    assert mine.tokens.check(token, 2, 42).subject == "42"
    with pytest.raises(Exception, match="not one this server issued"):
        theirs.tokens.check(token, 2, 42)


async def test_a_request_without_a_signed_in_person_gets_no_application(signed_in: tuple[App, People]) -> None:
    app, _ = signed_in
    with pytest.raises(LookupError):
        app.as_person(None)
