"""Shared fixtures: every tool result checked against its output schema, a seeded emulated portal, settings isolated
from the developer's environment, TLS material, the emulator over real HTTPS on loopback, and MCP clients connected
to the real server."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from mcp import Client
from starlette.types import ASGIApp, Receive, Scope, Send

from b24_mcp.deleting.item import ItemDeletion
from b24_mcp.sandbox.emulator import Portal, create_app
from b24_mcp.sandbox.link import sandbox_webhook
from b24_mcp.sandbox.seed import SANDBOX_USER_ID, SANDBOX_WEBHOOK_CODE, seeded_portal
from b24_mcp.sandbox.serve import sandbox_transport, serve_asgi
from b24_mcp.serving.tools import build_server
from b24_mcp.settings import Settings, load_settings
from conformance import ToolResultCheck
from helpers import Connect, TLSFiles, item_deletion, make_app

# Hypothesis: every CI run (CI=true) tries 200 examples a property, a development run 20; HYPOTHESIS_PROFILE chooses
# either. No deadline: an example is a whole MCP exchange, whose time says nothing about the property.
hypothesis_settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
hypothesis_settings.register_profile(
    "dev", max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "dev")
)

# `postgres` and `database_url`: a real PostgreSQL for the tests of the state replicas share.
pytest_plugins = ["postgres_cluster"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def event_streams_open() -> None:
    """A `DrainingServer` shut down in a test releases sse-starlette's process-wide event streams
    (`AppStatus.should_exit`), which would end every later 2025-11-25 stream of this process at once ("SSE stream
    ended without a response"); each test starts with them open, as a new process would."""
    from sse_starlette.sse import AppStatus

    AppStatus.should_exit = False


@pytest.fixture(autouse=True)
def results_conform_to_output_schemas(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every tool result a test receives through the SDK's client must validate against the tool's listed
    `outputSchema`, errors included, as a strict client (the TypeScript SDK's 1.x) requires."""
    check = ToolResultCheck()
    check.install(monkeypatch)
    yield
    check.verify()


@pytest.fixture
def portal() -> Portal:
    return seeded_portal()


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "b24-mcp" / "audit.jsonl"


@pytest.fixture
def make_settings(tmp_path: Path, journal_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Settings from explicit values only: no B24_* variable or .env of the developer's leaks in."""
    for name in list(os.environ):
        if name.startswith("B24_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)

    def make(**overrides: Any) -> Settings:
        overrides.setdefault("audit_log", journal_path)
        overrides.setdefault("confirm", "token")
        return load_settings(**overrides)

    return make


@pytest.fixture
def service(portal: Portal, make_settings: Callable[..., Settings]) -> ItemDeletion:
    return item_deletion(make_settings(), sandbox_webhook(), sandbox_transport(portal))


@pytest.fixture
def connect(portal: Portal, make_settings: Callable[..., Settings]) -> Connect:
    """`async with connect(confirm="auto", client=dict(...)) as client`: the real server in memory."""

    @asynccontextmanager
    async def open_client(client: dict[str, Any] | None = None, **settings: Any) -> AsyncIterator[Client]:
        server = build_server(make_app(make_settings(**settings), sandbox_webhook(), sandbox_transport(portal)))
        async with Client(server, **(client or {})) as session:
            yield session

    return open_client


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = TLSFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    ca.cert_pem.write_to_path(str(files.ca_bundle))
    cert.cert_chain_pems[0].write_to_path(str(files.certfile))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(files.certfile), append=True)
    cert.private_key_pem.write_to_path(str(files.keyfile))
    return files


class PortalOfTheTest:
    """An ASGI app that answers as the emulator of the test under way (`https_origin` sets it), so one HTTPS server
    serves the whole session; between tests, a 503."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is not None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 503, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="session")
def emulator(tls: TLSFiles) -> Iterator[tuple[str, PortalOfTheTest]]:
    """One emulator over real HTTPS on a loopback port for the session: its origin, and the app each test points at
    its own portal."""
    switch = PortalOfTheTest()
    with serve_asgi(switch, certfile=str(tls.certfile), keyfile=str(tls.keyfile)) as origin:
        yield origin, switch


@pytest.fixture
def https_origin(portal: Portal, emulator: tuple[str, PortalOfTheTest]) -> Iterator[str]:
    """The emulator of this test's `portal`, served over real HTTPS on a loopback port (the session's server)."""
    origin, switch = emulator
    switch.app = create_app(portal)
    try:
        yield origin
    finally:
        switch.app = None


@pytest.fixture
def webhook_url(https_origin: str) -> str:
    return f"{https_origin}/rest/{SANDBOX_USER_ID}/{SANDBOX_WEBHOOK_CODE}/"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs, unmounted afterwards; skipped where mounting is not permitted."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and the mount command")
    point = tmp_path / "small"
    point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"mount is not permitted in this sandbox: {mounted.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `postgres` every test that uses the database, so the inner loop can leave them out."""
    for item in items:
        if {"postgres", "database_url"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)
