"""Refreshing an OAuth token against the emulator's token endpoint over real HTTPS: what the OAuth server says
comes back with its own code but never with a secret in it; an answer that is not a token is a `TransportError`
that did not send the call; a refresh failing after a lost answer says so."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from b24_mcp.errors import PortalError, TransportError, may_have_acted
from b24_mcp.portal.client import PortalClient
from b24_mcp.portal.oauth import OAuthSession
from b24_mcp.sandbox.emulator import Fault, Portal
from b24_mcp.sandbox.seed import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from b24_mcp.settings import OAuthConfig
from helpers import TLSFiles

pytestmark = pytest.mark.anyio

GET_42 = {"entityTypeId": 2, "id": 42}


class Grant:
    """A fresh OAuth grant on the emulated portal, and a client that uses it."""

    def __init__(self, portal: Portal, origin: str, tls: TLSFiles, token_file: Path) -> None:
        self.access, self.refresh = portal.issue_tokens(SANDBOX_CLIENT_ID, 1)
        self.config = OAuthConfig(
            scheme="https",
            host=urlsplit(origin).netloc,
            rest_base=f"{origin}/rest/",
            access_token=self.access,
            refresh_token=self.refresh,
            client_id=SANDBOX_CLIENT_ID,
            client_secret=SANDBOX_CLIENT_SECRET,
            oauth_url=f"{origin}/oauth/token/",
            token_file=token_file,
        )
        self.tls = tls

    def client(self, *, timeout: float = 5.0, max_retries: int = 0) -> PortalClient:
        return PortalClient(
            OAuthSession(self.config),
            timeout=timeout,
            ca_bundle=str(self.tls.ca_bundle),
            max_retries=max_retries,
            retry_base=0.01,
        )

    def secrets(self) -> tuple[str, ...]:
        return (self.access, self.refresh, SANDBOX_CLIENT_SECRET)


@pytest.fixture
def grant(portal: Portal, https_origin: str, tls: TLSFiles, tmp_path: Path) -> Grant:
    return Grant(portal, https_origin, tls, tmp_path / "tokens" / "b24-tokens.json")


async def failed_call(client: PortalClient) -> PortalError | TransportError:
    try:
        with pytest.raises((PortalError, TransportError)) as caught:
            await client.call("crm.item.get", GET_42)
    finally:
        await client.aclose()
    assert isinstance(caught.value, PortalError | TransportError)
    return caught.value


def assert_none_of(secrets: tuple[str, ...], *texts: str | None) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in (text or "")


async def test_an_expired_token_is_refreshed_and_the_call_repeated(grant: Grant, portal: Portal) -> None:
    portal.expire_access_tokens()
    client = grant.client()
    answer = await client.call("crm.item.get", GET_42)
    await client.aclose()
    assert answer.result["item"]["id"] == 42
    assert len(portal.calls_to("oauth.token")) == 1


async def test_an_oauth_error_echoing_the_refresh_token_and_client_secret_is_masked(
    grant: Grant, portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    portal.expire_access_tokens()
    echo = f"The refresh token {grant.refresh} of client secret {SANDBOX_CLIENT_SECRET} is invalid"
    portal.inject("oauth.token", Fault(status=400, json={"error": "invalid_grant", "error_description": echo}))
    error = await failed_call(grant.client())
    assert isinstance(error, PortalError)
    assert (error.code, error.http_status) == ("invalid_grant", 400)
    assert error.description == "The refresh token *** of client secret *** is invalid"
    assert error.hint is not None and "re-authorised" in error.hint
    assert_none_of(grant.secrets(), str(error), error.description, error.hint, caplog.text)


async def test_a_portal_error_echoing_the_access_token_is_masked(grant: Grant, portal: Portal) -> None:
    echo = {"error": "invalid_token", "error_description": f"Token {grant.access} is unknown"}
    portal.inject("crm.item.get", Fault(status=401, json=echo))
    error = await failed_call(grant.client())
    assert (error.code, error.description) == ("invalid_token", "Token *** is unknown")


async def test_the_tokens_before_a_refresh_stay_masked_after_it(grant: Grant, portal: Portal) -> None:
    portal.expire_access_tokens()
    client = grant.client()
    await client.call("crm.item.get", GET_42)
    assert grant.config.token_file is not None
    saved = json.loads(grant.config.token_file.read_text())
    text = f"{grant.access} {grant.refresh} {saved['access_token']} {saved['refresh_token']}"
    assert client.scrub(text) == "*** *** *** ***"
    await client.aclose()


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (200, b'{"expires_in": 3600}', "application/json"),
        (200, b'{"access_token": {"nested": true}}', "application/json"),
        (502, b"<html>Bad Gateway</html>", "text/html"),
    ],
    ids=["no-token", "token-not-a-string", "html"],
)
async def test_an_oauth_answer_that_is_not_a_token_is_a_transport_error_and_the_call_was_not_sent(
    grant: Grant, portal: Portal, status: int, body: bytes, content_type: str
) -> None:
    portal.expire_access_tokens()
    portal.inject("oauth.token", Fault(status=status, body=body, content_type=content_type))
    error = await failed_call(grant.client(max_retries=3))
    assert isinstance(error, TransportError)
    assert (error.code, error.http_status, error.maybe_sent) == ("BAD_PORTAL_RESPONSE", status, False)
    assert not may_have_acted(error)
    assert len(portal.calls_to("crm.item.get")) == 1


async def test_a_broken_gzip_token_answer_is_a_transport_error(grant: Grant, portal: Portal) -> None:
    portal.expire_access_tokens()
    portal.inject("oauth.token", Fault(status=200, body=b"not gzip", headers={"Content-Encoding": "gzip"}))
    error = await failed_call(grant.client())
    assert isinstance(error, TransportError)
    assert (error.code, error.maybe_sent) == ("BAD_PORTAL_RESPONSE", False)


async def test_a_refresh_failing_after_a_lost_answer_is_marked_as_following_it(grant: Grant, portal: Portal) -> None:
    slow = Fault(status=200, json={"result": {}}, delay=1.0, perform=True)
    expired = Fault(status=401, json={"error": "expired_token", "error_description": "The access token has expired"})
    portal.inject("crm.item.get", slow)
    portal.inject("crm.item.get", expired)
    portal.inject("oauth.token", Fault(status=400, json={"error": "invalid_grant", "error_description": "Expired"}))
    error = await failed_call(grant.client(timeout=0.3, max_retries=1))
    assert (error.code, error.after_lost_answer) == ("invalid_grant", True)
