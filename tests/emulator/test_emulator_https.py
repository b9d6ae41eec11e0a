"""Dropped connections, seen by an httpx2 client through a real uvicorn server over HTTPS on loopback."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2
import pytest
import trustme

from b24_mcp.sandbox.emulator import Fault, Portal
from b24_mcp.sandbox.seed import SANDBOX_USER_ID, SANDBOX_WEBHOOK_CODE
from b24_mcp.sandbox.serve import serve_portal

HOOK = f"/rest/{SANDBOX_USER_ID}/{SANDBOX_WEBHOOK_CODE}/"
DELETE_42 = {"entityTypeId": 2, "id": 42}

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(server key and certificate chain, CA certificate) for 127.0.0.1."""
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server_pem, ca_pem = folder / "server.pem", folder / "ca.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    ca.cert_pem.write_to_path(str(ca_pem))
    return server_pem, ca_pem


@pytest.fixture
def origin(portal: Portal, tls_files: tuple[Path, Path]) -> Iterator[str]:
    server_pem, _ = tls_files
    with serve_portal(portal, certfile=str(server_pem), keyfile=str(server_pem)) as url:
        yield url


@pytest.fixture
async def client(origin: str, tls_files: tuple[Path, Path]) -> AsyncIterator[httpx2.AsyncClient]:
    verify = ssl.create_default_context(cafile=str(tls_files[1]))
    async with httpx2.AsyncClient(base_url=origin, verify=verify, timeout=5.0) as c:
        yield c


async def test_dropped_answer_raises_a_transport_error(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.inject("crm.item.delete", Fault(status=200, json={"result": []}, drop=True))
    with pytest.raises(httpx2.TransportError):
        await client.post(HOOK + "crm.item.delete", json=DELETE_42)
    assert 42 in portal.items[2]


async def test_a_planned_drop_is_not_logged_as_an_error(
    client: httpx2.AsyncClient, portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    portal.inject("crm.item.delete", Fault(status=200, json={"result": []}, drop=True))
    with caplog.at_level(logging.WARNING), pytest.raises(httpx2.TransportError):
        await client.post(HOOK + "crm.item.delete", json=DELETE_42)
    assert [record for record in caplog.records if record.name.startswith("uvicorn")] == []


async def test_the_next_call_after_a_drop_gets_a_fresh_connection(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.inject("crm.item.get", Fault(status=200, json={"result": {}}, drop=True))
    with pytest.raises(httpx2.RemoteProtocolError):
        await client.post(HOOK + "crm.item.get", json=DELETE_42)
    response = await client.post(HOOK + "crm.item.get", json=DELETE_42)
    assert response.json()["result"]["item"]["id"] == 42


async def test_drop_with_perform_deletes_and_loses_the_answer(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.inject("crm.item.delete", Fault(status=200, json={"result": []}, drop=True, perform=True))
    with pytest.raises(httpx2.TransportError):
        await client.post(HOOK + "crm.item.delete", json=DELETE_42)
    assert 42 not in portal.items[2]
    retry = await client.post(HOOK + "crm.item.delete", json=DELETE_42)
    assert retry.json() == {"error": "NOT_FOUND", "error_description": "Item was not found."}
