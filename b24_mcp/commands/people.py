"""`b24-mcp people`: who has signed in, and ending a person's access.

Works on the people store under `B24_STATE_DIR`, or the shared database's when `B24_DATABASE_URL` is set, while the
server runs (the server sees a revocation at the person's next request, which then gets a 401). Nothing sealed is
read here.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from datetime import UTC, datetime

import anyio

from b24_mcp.secure.keys import KEY_BYTES
from b24_mcp.secure.sealing import Sealer, UnusableFileError, load_key
from b24_mcp.settings import Settings
from b24_mcp.signin.config import DATABASE_NAME, KEY_NAME
from b24_mcp.signin.records import Person
from b24_mcp.signin.sqlite import SQLiteStore
from b24_mcp.signin.store import PeopleStore
from b24_mcp.text import for_terminal


def _when(moment: float | None) -> str:
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M")


def _status(person: Person) -> str:
    return "active" if person.active else "revoked"


def people_command(settings: Settings, action: str, user_id: int | None) -> int:
    """List the people (`list`) or revoke one (`revoke USER_ID`); the exit status."""
    if settings.database_url is not None:
        return _shared_people_command(settings, action, user_id)
    path = settings.state_dir / DATABASE_NAME
    if not os.path.lexists(path):
        print(f"No one has signed in: there is no people store at {for_terminal(str(path))}.")
        return 1 if action == "revoke" else 0
    try:
        key = load_key(settings.state_dir / KEY_NAME, create=False)
    except FileNotFoundError:
        key = os.urandom(KEY_BYTES)  # listing and revoking open nothing sealed
    except UnusableFileError as exc:
        print(f"b24-mcp: {for_terminal(str(exc))}", file=sys.stderr)
        return 1
    try:
        store = SQLiteStore(path, Sealer(key))
    except (UnusableFileError, OSError, RuntimeError, sqlite3.Error) as exc:
        print(f"b24-mcp: the people store cannot be used: {for_terminal(str(exc))}", file=sys.stderr)
        return 1
    if action == "revoke":
        if user_id is None:
            print("b24-mcp: people revoke needs the person's Bitrix24 user id: b24-mcp people revoke USER_ID")
            return 2
        return anyio.run(_revoke, store, user_id)
    return anyio.run(_list, store)


def _shared_people_command(settings: Settings, action: str, user_id: int | None) -> int:
    from b24_mcp.postgres.database import DatabaseUnavailableError
    from b24_mcp.signin.people import shared_store

    if action == "revoke" and user_id is None:
        print("b24-mcp: people revoke needs the person's Bitrix24 user id: b24-mcp people revoke USER_ID")
        return 2
    store = shared_store(settings)
    try:
        if action == "revoke" and user_id is not None:
            return anyio.run(_revoke, store, user_id)
        return anyio.run(_list, store)
    except DatabaseUnavailableError as exc:
        print(f"b24-mcp: the shared database cannot be used: {for_terminal(str(exc))}", file=sys.stderr)
        return 1


async def _list(store: PeopleStore) -> int:
    try:
        people = await store.people()
    finally:
        await store.aclose()
    if not people:
        print("No one has signed in yet.")
        return 0
    rows = [("USER ID", "NAME", "SIGNED IN (UTC)", "LAST USE (UTC)", "STATUS")]
    rows += [
        (str(p.user_id), for_terminal(p.name, 40), _when(p.signed_in_at), _when(p.last_used_at), _status(p))
        for p in people
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4])
    return 0


async def _revoke(store: PeopleStore, user_id: int) -> int:
    try:
        people = {person.user_id: person for person in await store.people()}
        revoked = await store.revoke(user_id)
    finally:
        await store.aclose()
    if not revoked:
        print(f"No one with Bitrix24 user id {user_id} has signed in.")
        return 1
    name = for_terminal(people[user_id].name, 60) if user_id in people else ""
    print(
        f"Revoked user {user_id} ({name}): their MCP tokens no longer work (their next request gets 401) and their "
        "Bitrix24 tokens are erased here. They can sign in again from their MCP client; to stop that, remove their "
        "access to the application in Bitrix24."
    )
    return 0


def check_signin(settings: Settings) -> int:
    """`b24-mcp check` with sign-in: the configuration and the people store, one line each; the exit status.

    The portal is reached with each person's own tokens once they sign in, so nothing is sent to it here.
    """
    from b24_mcp.commands.check import approval_page, operations
    from b24_mcp.signin.config import SignInConfig

    config = SignInConfig.from_settings(settings)  # SettingsError names what is missing or in the way
    lines = [
        f"info  sign-in: people sign in at {config.issuer}/authorize with their {config.portal_host} accounts",
        f"info  the Bitrix24 application {config.client_id} must have the redirect URI {config.callback_url}",
        f"info  MCP clients connect to {config.resource}",
        f"info  confirmation: {settings.confirm.value} (B24_CONFIRM)",
        *(f"info  {line}" for line in [approval_page(settings)] if line is not None),
        *(f"info  {line}" for line in operations(settings, config.issuer)),
    ]
    if settings.database_url is not None:
        from b24_mcp.postgres.database import DatabaseUnavailableError
        from b24_mcp.signin.people import shared_store

        try:
            people = anyio.run(_people_of, shared_store(settings))
        except DatabaseUnavailableError as exc:
            lines.append(f"FAIL  people store: the shared database cannot be used: {exc}")
            return _report(lines, 1)
        active = sum(1 for person in people if person.active)
        lines.append(f"ok    people store: the shared database (B24_DATABASE_URL; {active} signed in)")
        return _report(lines, 0)
    status = 0
    stored = os.path.lexists(config.database)
    try:
        load_key(config.key_file, create=False)
        key_found = True
    except FileNotFoundError:
        key_found = False
    except UnusableFileError as exc:
        lines.append(f"FAIL  {exc}")
        return _report(lines, 1)
    if stored and not key_found:
        lines.append(
            f"FAIL  {config.key_file} is missing: the Bitrix24 tokens in the people store cannot be opened, so "
            "everyone signs in again (restore the key from its backup first, if there is one)"
        )
        status = 1
    elif stored:
        try:
            people = anyio.run(_people_of, SQLiteStore(config.database, Sealer(bytes(KEY_BYTES))))
        except (UnusableFileError, OSError, RuntimeError, sqlite3.Error) as exc:
            lines.append(f"FAIL  people store: {exc}")
            return _report(lines, 1)
        active = sum(1 for person in people if person.active)
        lines.append(f"ok    people store: {config.database} ({active} signed in)")
    else:
        lines.append(f"ok    people store: {config.database} (created at the first start)")
    return _report(lines, status)


def _report(lines: list[str], status: int) -> int:
    for line in lines:
        print(for_terminal(line))
    if status == 0:
        print("Ready: people can sign in once the server runs (b24-mcp --transport http).")
    else:
        print("Not ready: fix the FAIL line above, then run check again.")
    return status


async def _people_of(store: PeopleStore) -> list[Person]:
    try:
        return await store.people()
    finally:
        await store.aclose()
