"""The composition root (b24_mcp.app): one process, one pool of each kind; a frozen application."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from b24_mcp.app import assemble, build_app, build_signin_app
from b24_mcp.postgres.journal import TableJournal
from b24_mcp.sandbox.link import sandbox_webhook
from b24_mcp.sandbox.seed import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from b24_mcp.settings import Settings, SettingsError
from b24_mcp.signin.postgres import PostgresPeopleStore

pytestmark = pytest.mark.anyio

SECRET = "s" * 40
DATABASE_URL = "postgresql://b24:unused@127.0.0.1:1/b24"  # nothing connects before the first use


def test_the_application_cannot_be_changed_after_it_is_built(make_settings: Callable[..., Settings]) -> None:
    app = build_app(make_settings(), sandbox_webhook())
    with pytest.raises(dataclasses.FrozenInstanceError):
        app.people = None  # type: ignore[misc]


async def test_a_sign_in_server_with_a_database_opens_one_pool_for_its_state_and_its_people(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        public_url="https://mcp.acme.example",
        portal_url="https://sandbox.bitrix24.test",
        client_id=SANDBOX_CLIENT_ID,
        client_secret=SANDBOX_CLIENT_SECRET,
        state_dir=tmp_path / "state",
        database_url=DATABASE_URL,
        confirm_secret=SECRET,
    )
    app, people = build_signin_app(settings)
    try:
        assert isinstance(app.journal, TableJournal) and isinstance(people.store, PostgresPeopleStore)
        assert app.journal._database is people.store._database
        assert app.people is people
    finally:
        await app.aclose()


def test_the_sandbox_is_refused_to_a_sign_in_server(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        public_url="https://mcp.acme.example",
        portal_url="https://sandbox.bitrix24.test",
        client_id=SANDBOX_CLIENT_ID,
        client_secret=SANDBOX_CLIENT_SECRET,
    )
    with pytest.raises(SettingsError, match="unset it to serve the sandbox"):
        assemble(settings, sandbox=True, transport="http", host="127.0.0.1", port=8000)
