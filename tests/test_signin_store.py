"""The people store and its secrets at rest: single use, replays, versions, caps, private files, sealed tokens."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from mcp.shared.auth import OAuthClientInformationFull

from b24_mcp.secure.sealing import Sealer, UnusableFileError, digest, load_key
from b24_mcp.settings import Settings, SettingsError
from b24_mcp.signin import sqlite as store_module
from b24_mcp.signin.config import SignInConfig
from b24_mcp.signin.provider import redirect_uri_problem, same_resource
from b24_mcp.signin.records import (
    Authorization,
    AwaitingConsent,
    BitrixTokens,
    ForeignPortalError,
    Grant,
    IssuedCode,
    SignedIn,
    SourceFull,
    StoreFull,
)
from b24_mcp.signin.sqlite import SQLiteStore
from b24_mcp.signin.store import SCHEMA_VERSION, UNUSED_CLIENT_SECONDS

pytestmark = pytest.mark.anyio

MEMBER = "a223c6b3710f85df22e9377d6c4f7553"
REDIRECT = "http://127.0.0.1:9/cb"
BITRIX = BitrixTokens("bitrix-access-0123456789abcdef", "bitrix-refresh-0123456789abcdef")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "state" / "b24-mcp"


@pytest.fixture
async def store(folder: Path, clock: Clock) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(folder / "people.sqlite3", Sealer(load_key(folder / "people.key")), clock=clock)
    try:
        yield opened
    finally:
        await opened.aclose()


def person(user_id: int = 3, tokens: BitrixTokens = BITRIX, member: str = MEMBER) -> SignedIn:
    return SignedIn(member, user_id, "Sam Sales", tokens)


def authorization(clock: Clock, client_id: str = "client-1") -> Authorization:
    return Authorization(client_id, REDIRECT, True, "challenge", "state", (), "https://mcp.example/mcp", clock() + 60)


def grant(clock: Clock, family: str = "family-1", user_id: int = 3) -> Grant:
    return Grant("client-1", user_id, (), "https://mcp.example/mcp", family, clock() + 60)


def client(
    client_id: str = "client-1", secret: str | None = "minted-client-secret-0123456789"
) -> OAuthClientInformationFull:
    return OAuthClientInformationFull(
        client_id=client_id,
        client_secret=secret,
        redirect_uris=[REDIRECT],  # type: ignore[list-item]
        token_endpoint_auth_method="client_secret_post" if secret else "none",
    )


# ------------------------------------------------------------------------------------------------- files


async def test_a_new_store_and_its_key_are_private(store: SQLiteStore, folder: Path) -> None:
    await store.sign_in(person(), "client-1", REDIRECT)
    modes = {path.name: path.stat().st_mode & 0o777 for path in folder.iterdir()}
    assert all(mode == 0o600 for mode in modes.values()), modes
    assert folder.stat().st_mode & 0o777 == 0o700


def test_a_store_others_may_read_is_refused(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "people.sqlite3").touch(mode=0o644)
    os.chmod(folder / "people.sqlite3", 0o644)
    with pytest.raises(UnusableFileError, match="chmod 600"):
        SQLiteStore(folder / "people.sqlite3", Sealer(bytes(32)))


def test_a_key_file_that_is_a_link_is_refused(folder: Path, tmp_path: Path) -> None:
    folder.mkdir(parents=True)
    target = tmp_path / "elsewhere.key"
    target.write_text("00" * 32)
    target.chmod(0o600)
    (folder / "people.key").symlink_to(target)
    with pytest.raises(UnusableFileError, match="symbolic link"):
        load_key(folder / "people.key")


def test_a_key_file_without_a_key_is_refused(folder: Path) -> None:
    folder.mkdir(parents=True)
    key = folder / "people.key"
    key.write_text("not a key")
    key.chmod(0o600)
    with pytest.raises(UnusableFileError, match="does not hold a key"):
        load_key(key)


def test_the_key_is_created_once_and_read_back(folder: Path) -> None:
    assert load_key(folder / "people.key") == load_key(folder / "people.key")


async def test_no_token_is_stored_in_clear(store: SQLiteStore, folder: Path, clock: Clock) -> None:
    await store.add_client(client())
    await store.sign_in(person(), "client-1", REDIRECT)
    await store.add_authorization("sign-in-state-secret", authorization(clock))
    await store.add_code("b24mcp_code_secret", IssuedCode(grant(clock), "challenge", REDIRECT, True))
    await store.add_tokens("b24mcp_at_secret", "b24mcp_rt_secret", grant(clock), clock() + 600)
    await store.aclose()
    stored = b"".join(path.read_bytes() for path in folder.iterdir() if path.name != "people.key")
    for secret in ("minted-client-secret", "bitrix-access", "bitrix-refresh", "sign-in-state-secret",
                   "b24mcp_code_secret", "b24mcp_at_secret", "b24mcp_rt_secret"):  # fmt: skip
        assert secret.encode() not in stored
    assert digest("b24mcp_at_secret").encode() in stored


# ------------------------------------------------------------------------------------------------ sealing


def test_a_sealed_value_opens_only_for_its_row_and_key() -> None:
    sealer = Sealer(bytes(range(32)))
    sealed = sealer.seal("bitrix-refresh", "person:3:refresh")
    assert sealer.open(sealed, "person:3:refresh") == "bitrix-refresh"
    assert sealer.open(sealed, "person:7:refresh") is None
    assert Sealer(bytes(32)).open(sealed, "person:3:refresh") is None
    assert sealer.open(sealed[:-4] + "AAAA", "person:3:refresh") is None


async def test_tokens_sealed_with_another_key_are_not_used(folder: Path, clock: Clock) -> None:
    path = folder / "people.sqlite3"
    first = SQLiteStore(path, Sealer(load_key(folder / "people.key")), clock=clock)
    await first.sign_in(person(), "client-1", REDIRECT)
    await first.aclose()
    other = SQLiteStore(path, Sealer(bytes(32)), clock=clock)
    try:
        assert await other.bitrix_tokens(3) is None
    finally:
        await other.aclose()


# ------------------------------------------------------------------------------------------------ single use


async def test_a_sign_in_state_is_taken_once(store: SQLiteStore, clock: Clock) -> None:
    await store.add_authorization("state", authorization(clock))
    assert await store.take_authorization("state") == authorization(clock)
    assert await store.take_authorization("state") is None


async def test_an_expired_sign_in_state_is_not_taken(store: SQLiteStore, clock: Clock) -> None:
    await store.add_authorization("state", authorization(clock))
    clock.now += 61
    assert await store.take_authorization("state") is None


async def test_a_waiting_consent_is_taken_once_with_its_tokens(store: SQLiteStore, clock: Clock) -> None:
    waiting = AwaitingConsent(authorization(clock), person(), clock() + 60)
    await store.await_consent("consent", waiting)
    taken = await store.take_consent("consent")
    assert taken is not None and taken.person.tokens == BITRIX
    assert await store.take_consent("consent") is None


async def test_a_code_is_taken_once_and_a_replay_names_its_family(store: SQLiteStore, clock: Clock) -> None:
    await store.add_code("code", IssuedCode(grant(clock), "challenge", REDIRECT, True))
    first, second = await store.take_code("code"), await store.take_code("code")
    assert (first.outcome, second.outcome, second.family) == ("taken", "replayed", "family-1")


async def test_a_refresh_token_rotates_once_and_drops_its_access_tokens(store: SQLiteStore, clock: Clock) -> None:
    await store.sign_in(person(), "client-1", REDIRECT)
    await store.add_tokens("access", "refresh", grant(clock), clock() + 600)
    first, second = await store.rotate_refresh("refresh"), await store.rotate_refresh("refresh")
    assert (first.outcome, second.outcome) == ("taken", "replayed")
    assert await store.find_access("access") is None


async def test_revoking_a_family_ends_its_tokens_only(store: SQLiteStore, clock: Clock) -> None:
    await store.sign_in(person(), "client-1", REDIRECT)
    await store.add_tokens("access-1", "refresh-1", grant(clock, "one"), clock() + 600)
    await store.add_tokens("access-2", "refresh-2", grant(clock, "two"), clock() + 600)
    await store.revoke_family("one")
    assert await store.find_access("access-1") is None
    assert await store.find_access("access-2") is not None


# ----------------------------------------------------------------------------------------- people and versions


async def test_an_access_token_finds_its_signed_in_person(store: SQLiteStore, clock: Clock) -> None:
    await store.sign_in(person(), "client-1", REDIRECT)
    await store.add_tokens("access", None, grant(clock), clock() + 600)
    found = await store.find_access("access")
    assert found is not None
    assert (found[1].user_id, found[1].name, found[1].version) == (3, "Sam Sales", 1)


async def test_an_expired_access_token_is_not_found(store: SQLiteStore, clock: Clock) -> None:
    await store.sign_in(person(), "client-1", REDIRECT)
    await store.add_tokens("access", None, grant(clock), clock() + 600)
    clock.now += 61
    assert await store.find_access("access") is None


async def test_a_refreshed_pair_is_saved_only_for_the_current_sign_in(store: SQLiteStore) -> None:
    first = await store.sign_in(person(), "client-1", REDIRECT)
    await store.sign_in(person(tokens=BitrixTokens("newer-access", "newer-refresh")), "client-2", REDIRECT)
    saved = await store.save_bitrix_tokens(3, first.version, BitrixTokens("stale-access", "stale-refresh"))
    assert saved is False
    assert await store.bitrix_tokens(3) == (2, BitrixTokens("newer-access", "newer-refresh"))


async def test_revoking_a_person_ends_their_tokens_and_consents(store: SQLiteStore, clock: Clock) -> None:
    await store.sign_in(person(), "client-1", REDIRECT)
    await store.add_tokens("access", "refresh", grant(clock), clock() + 600)
    assert await store.revoke(3) is True
    assert await store.find_access("access") is None
    assert await store.bitrix_tokens(3) is None
    assert await store.has_consented(3, "client-1", REDIRECT) is False
    assert [(p.user_id, p.active) for p in await store.people()] == [(3, False)]


async def test_a_consent_is_to_one_exact_redirect_uri(store: SQLiteStore) -> None:
    await store.sign_in(person(), "client-1", REDIRECT)
    assert await store.has_consented(3, "client-1", REDIRECT)
    assert not await store.has_consented(3, "client-1", "https://evil.example/steal")
    assert not await store.has_consented(3, "client-1", REDIRECT + "/")


async def test_a_person_of_another_portal_is_refused(store: SQLiteStore) -> None:
    await store.sign_in(person(), "client-1", REDIRECT)
    with pytest.raises(ForeignPortalError):
        await store.sign_in(person(user_id=9, member="b" * 32), "client-1", REDIRECT)


# ---------------------------------------------------------------------------------------------------- growth


async def test_registrations_stop_at_the_cap(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "MAX_CLIENTS", 2)
    await store.add_client(client("a"))
    await store.add_client(client("b"))
    with pytest.raises(StoreFull):
        await store.add_client(client("c"))


async def test_a_registration_never_used_is_forgotten_within_minutes(
    store: SQLiteStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert UNUSED_CLIENT_SECONDS <= 3600
    monkeypatch.setattr(store_module, "MAX_CLIENTS", 1)
    await store.add_client(client("a"))
    clock.now += UNUSED_CLIENT_SECONDS + 1
    await store.add_client(client("b"))
    assert await store.get_client("a") is None


async def test_a_source_over_its_share_of_registrations_is_told_when_to_retry(store: SQLiteStore, clock: Clock) -> None:
    await store.add_client(client("a"), "192.0.2.1", 2)
    clock.now += 60
    await store.add_client(client("b"), "192.0.2.1", 2)
    with pytest.raises(SourceFull) as full:
        await store.add_client(client("c"), "192.0.2.1", 2)
    assert full.value.retry_after == UNUSED_CLIENT_SECONDS - 60  # when the oldest is forgotten
    await store.add_client(client("d"), "192.0.2.2", 2)


async def test_a_registration_used_for_a_sign_in_no_longer_counts_against_its_source(store: SQLiteStore) -> None:
    await store.add_client(client("client-1"), "192.0.2.1", 1)
    await store.sign_in(person(), "client-1", REDIRECT)
    await store.add_client(client("client-2"), "192.0.2.1", 1)


async def test_a_source_over_its_share_of_sign_ins_in_flight_is_told_when_to_retry(
    store: SQLiteStore, clock: Clock
) -> None:
    await store.add_authorization("one", authorization(clock), "192.0.2.1", 1)
    with pytest.raises(SourceFull) as full:
        await store.add_authorization("two", authorization(clock), "192.0.2.1", 1)
    assert full.value.retry_after == 60
    await store.take_authorization("one")  # came back from the portal: no longer in flight
    await store.add_authorization("three", authorization(clock), "192.0.2.1", 1)


async def test_a_client_secret_comes_back_for_the_token_endpoint(store: SQLiteStore) -> None:
    await store.add_client(client())
    found = await store.get_client("client-1")
    assert found is not None and found.client_secret == "minted-client-secret-0123456789"


async def test_sign_ins_in_flight_stop_at_the_cap(
    store: SQLiteStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "MAX_PENDING", 1)
    await store.add_authorization("one", authorization(clock))
    with pytest.raises(StoreFull):
        await store.add_authorization("two", authorization(clock))


async def test_a_store_of_schema_1_is_upgraded_and_its_consents_no_longer_count(folder: Path, clock: Clock) -> None:
    folder.mkdir(parents=True, mode=0o700)
    path = folder / "people.sqlite3"
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE clients (client_id TEXT PRIMARY KEY, info TEXT NOT NULL, secret TEXT, created_at REAL NOT NULL,"
        " used_at REAL); CREATE TABLE authorizations (state TEXT PRIMARY KEY, data TEXT NOT NULL, expires_at REAL NOT"
        " NULL); CREATE TABLE consents (user_id INTEGER NOT NULL, client_id TEXT NOT NULL, at REAL NOT NULL,"
        " PRIMARY KEY (user_id, client_id)); INSERT INTO consents VALUES (3, 'client-1', 1.0); PRAGMA user_version=1;"
    )
    db.close()
    upgraded = SQLiteStore(path, Sealer(load_key(folder / "people.key")), clock=clock)
    try:
        assert not await upgraded.has_consented(3, "client-1", REDIRECT)  # the person is asked once more
        await upgraded.add_client(client("client-1"), "192.0.2.1", 1)
        await upgraded.sign_in(person(), "client-1", REDIRECT)
        assert await upgraded.has_consented(3, "client-1", REDIRECT)
    finally:
        await upgraded.aclose()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_store_of_a_newer_version_is_refused(folder: Path) -> None:
    folder.mkdir(parents=True, mode=0o700)
    path = folder / "people.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    path.chmod(0o600)
    with pytest.raises(RuntimeError, match="newer b24-mcp"):
        SQLiteStore(path, Sealer(bytes(32)))


# ----------------------------------------------------------------------------------------------- rules, settings


@pytest.mark.parametrize(
    ("uri", "allowed"),
    [
        ("https://claude.ai/api/mcp/auth_callback", True),
        ("http://127.0.0.1:33418/callback", True),
        ("http://[::1]:8080/cb", True),
        ("cursor://anysphere.cursor-retrieval/oauth/callback", True),
        ("http://evil.example/cb", False),
        ("https://app.example/cb#fragment", False),
        ("javascript:alert(1)", False),
        ("data:text/html,x", False),
    ],
)
def test_redirect_uris_are_https_loopback_or_an_applications_own(uri: str, allowed: bool) -> None:
    assert (redirect_uri_problem(uri) is None) is allowed


@pytest.mark.parametrize(
    ("requested", "same"),
    [
        ("https://mcp.example/mcp", True),
        ("https://MCP.example/mcp/", True),
        ("https://mcp.example/other", False),
        ("https://mcp.example:8443/mcp", False),
        ("https://mcp.example/mcp?x=1", False),
    ],
)
def test_the_resource_must_be_this_servers_endpoint(requested: str, same: bool) -> None:
    assert same_resource(requested, "https://mcp.example/mcp") is same


def test_the_public_url_is_normalised(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(public_url="HTTPS://MCP.Acme.Example:443/")
    assert settings.public_url == "https://mcp.acme.example"


def test_sign_in_names_every_missing_variable(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError) as refused:
        SignInConfig.from_settings(make_settings(public_url="https://mcp.acme.example"))
    assert [line.split(" ")[0] for line in refused.value.lines] == [
        "B24_PORTAL_URL",
        "B24_CLIENT_ID",
        "B24_CLIENT_SECRET",
    ]


@pytest.mark.process
def test_without_a_public_url_the_sign_in_code_is_never_imported() -> None:
    script = (
        "import sys; from b24_mcp.app import build_app; from b24_mcp.serving.tools import build_server; "
        "from b24_mcp.settings import load_settings; from b24_mcp.sandbox.link import sandbox_webhook; "
        "build_server(build_app(load_settings(), sandbox_webhook())); "
        "print(sorted(m for m in sys.modules if m.startswith('b24_mcp.signin')))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env={})
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr
