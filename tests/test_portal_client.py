"""The portal client against the emulator over real HTTPS: answers become results, or errors with the portal's
code exactly as sent; transport failures get our own codes; nothing carries the webhook code."""

from __future__ import annotations

import socket

import pytest

from b24_mcp.errors import PortalError, Refusal, TransportError
from b24_mcp.portal.auth import WebhookAuth
from b24_mcp.portal.client import PortalClient
from b24_mcp.sandbox.emulator import Fault, Portal
from b24_mcp.sandbox.seed import SANDBOX_HOST, SANDBOX_USER_ID, SANDBOX_WEBHOOK_CODE
from b24_mcp.sandbox.serve import sandbox_transport
from b24_mcp.settings import parse_webhook_url
from emulator.emulator_helpers import EXTRANET_HOOK, NOSCOPE_HOOK, READONLY_HOOK
from helpers import TLSFiles, assert_no_secret

pytestmark = pytest.mark.anyio

HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1>nginx</body></html>"


def client_for(url: str, tls: TLSFiles | None, timeout: float = 5.0) -> PortalClient:
    """A client that makes exactly one attempt: retries are the reliability tests' subject."""
    return PortalClient(
        WebhookAuth(parse_webhook_url(url, allow_http=False)),
        timeout=timeout,
        ca_bundle=str(tls.ca_bundle) if tls else None,
        max_retries=0,
    )


@pytest.fixture
async def client(webhook_url: str, tls: TLSFiles) -> PortalClient:
    return client_for(webhook_url, tls)


async def portal_error(client: PortalClient, method: str, params: dict[str, object]) -> PortalError:
    with pytest.raises(PortalError) as caught:
        await client.call(method, params)
    await client.aclose()
    assert_no_secret(str(caught.value))
    return caught.value


async def transport_error(client: PortalClient, method: str = "crm.item.get") -> TransportError:
    with pytest.raises(TransportError) as caught:
        await client.call(method, {"entityTypeId": 2, "id": 42})
    await client.aclose()
    assert_no_secret(str(caught.value))
    return caught.value


async def test_get_returns_the_item_and_the_time_block(client: PortalClient) -> None:
    answer = await client.call("crm.item.get", {"entityTypeId": 2, "id": 42})
    await client.aclose()
    assert answer.result["item"]["title"] == "Acme renewal"
    assert answer.time is not None and "duration" in answer.time


async def test_delete_success_is_an_empty_list(client: PortalClient, portal: Portal) -> None:
    answer = await client.call("crm.item.delete", {"entityTypeId": 2, "id": 42})
    await client.aclose()
    assert answer.result == []
    assert 42 not in portal.items[2]


async def test_missing_item_is_not_found_with_the_portals_text(client: PortalClient) -> None:
    error = await portal_error(client, "crm.item.delete", {"entityTypeId": 2, "id": 999})
    assert (error.code, error.description, error.http_status) == ("NOT_FOUND", "Item was not found.", 400)
    assert error.retryable is False


async def test_unknown_type_is_not_found_for_the_smart_process(client: PortalClient) -> None:
    error = await portal_error(client, "crm.item.delete", {"entityTypeId": 999999, "id": 1})
    assert (error.code, error.description) == ("NOT_FOUND", "Smart Process Automation was not found")


async def test_numeric_error_code_becomes_the_string_100(client: PortalClient) -> None:
    error = await portal_error(client, "crm.item.delete", {"entityTypeId": 2})
    assert error.code == "100"
    assert error.description == "Could not find value for parameter {id}"
    assert error.retryable is False


async def test_user_without_delete_right_gets_access_denied(https_origin: str, tls: TLSFiles) -> None:
    client = client_for(https_origin + READONLY_HOOK, tls)
    error = await portal_error(client, "crm.item.delete", {"entityTypeId": 2, "id": 42})
    assert (error.code, error.description, error.retryable) == ("ACCESS_DENIED", "Access denied", False)


async def test_extranet_user_gets_the_lowercase_intranet_code(https_origin: str, tls: TLSFiles) -> None:
    client = client_for(https_origin + EXTRANET_HOOK, tls)
    error = await portal_error(client, "crm.item.delete", {"entityTypeId": 2, "id": 42})
    assert (error.code, error.http_status, error.retryable) == ("allowed_only_intranet_user", 403, False)


async def test_webhook_without_crm_scope_gets_insufficient_scope(https_origin: str, tls: TLSFiles) -> None:
    client = client_for(https_origin + NOSCOPE_HOOK, tls)
    error = await portal_error(client, "crm.item.get", {"entityTypeId": 2, "id": 42})
    assert (error.code, error.http_status, error.retryable) == ("insufficient_scope", 403, False)


async def test_wrong_webhook_code_gets_invalid_credentials(https_origin: str, tls: TLSFiles) -> None:
    client = client_for(f"{https_origin}/rest/1/not-the-right-code/", tls)
    error = await portal_error(client, "crm.item.get", {"entityTypeId": 2, "id": 42})
    assert (error.code, error.http_status, error.retryable) == ("INVALID_CREDENTIALS", 403, False)


async def test_a_webhook_over_plain_http_gets_400_invalid_request_decided_by_its_code(portal: Portal) -> None:
    url = f"http://{SANDBOX_HOST}/rest/{SANDBOX_USER_ID}/{SANDBOX_WEBHOOK_CODE}/"
    client = PortalClient(
        WebhookAuth(parse_webhook_url(url, allow_http=True)), http_transport=sandbox_transport(portal), max_retries=0
    )
    error = await portal_error(client, "crm.item.get", {"entityTypeId": 2, "id": 42})
    assert (error.code, error.http_status, error.retryable) == ("INVALID_REQUEST", 400, False)


@pytest.mark.parametrize(
    ("status", "body", "retryable"),
    [
        (503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}, True),
        (
            429,
            {"error": "OPERATION_TIME_LIMIT", "error_description": "Method is blocked due to operation time limit."},
            True,
        ),
        (401, {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}, False),
        (401, {"error": "expired_token", "error_description": "The access token provided has expired"}, False),
        (500, {"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}, True),
        (400, {"error": "CRM_ITEM_HAS_RUNNING_WORKFLOWS", "error_description": "Workflows are running"}, False),
        (200, {"error": "wrong_client", "error_description": "Wrong client"}, False),
        (503, {"error": "SOMETHING_NEW", "error_description": "Unknown 5xx"}, True),
    ],
)
async def test_portal_codes_pass_through_exactly(
    client: PortalClient, portal: Portal, status: int, body: dict[str, str], retryable: bool
) -> None:
    portal.inject("crm.item.get", Fault(status=status, json=body))
    error = await portal_error(client, "crm.item.get", {"entityTypeId": 2, "id": 42})
    assert (error.code, error.description, error.http_status) == (body["error"], body["error_description"], status)
    assert error.retryable is retryable


async def test_a_fatal_code_is_not_retryable_even_inside_a_5xx(client: PortalClient, portal: Portal) -> None:
    portal.inject("crm.item.get", Fault(status=502, json={"error": "ACCESS_DENIED", "error_description": "x"}))
    error = await portal_error(client, "crm.item.get", {"entityTypeId": 2, "id": 42})
    assert error.retryable is False


@pytest.mark.parametrize(
    ("status", "body", "content_type", "retryable"),
    [
        (502, HTML_502, "text/html", True),
        (503, b"", "text/html", True),
        (200, b'{"result": {"item": {"id": 4', "application/json", False),
        (200, b"", "application/json", False),
        (403, b"<html>Forbidden</html>", "text/html", False),
        (200, b"[1, 2, 3]", "application/json", False),
    ],
)
async def test_unusable_bodies_are_bad_portal_response(
    client: PortalClient, portal: Portal, status: int, body: bytes, content_type: str, retryable: bool
) -> None:
    portal.inject("crm.item.get", Fault(status=status, body=body, content_type=content_type))
    error = await transport_error(client)
    assert (error.code, error.http_status, error.retryable) == ("BAD_PORTAL_RESPONSE", status, retryable)


async def test_a_time_block_without_operating_reset_at_is_read_and_blocks_nothing(
    client: PortalClient, portal: Portal
) -> None:
    timing = {"start": 1.5, "finish": 1.75, "duration": 0.25, "processing": 0.125, "operating": 0}
    portal.inject("crm.item.get", Fault(status=200, json={"result": {"item": {"id": 42}}, "time": timing}))
    blocked = {"error": "OPERATION_TIME_LIMIT", "error_description": "Method is blocked due to operation time limit."}
    portal.inject("crm.item.get", Fault(status=429, json=blocked))
    answer = await client.call("crm.item.get", {"entityTypeId": 2, "id": 42})
    assert answer.time == timing
    error = await portal_error(client, "crm.item.get", {"entityTypeId": 2, "id": 42})
    assert (error.code, error.hint) == (
        "OPERATION_TIME_LIMIT",
        "The portal blocked crm.item.get for a while; retry in a few minutes.",
    )


async def test_a_slow_answer_is_portal_timeout(webhook_url: str, tls: TLSFiles, portal: Portal) -> None:
    portal.inject("crm.item.get", Fault(status=200, json={"result": {}}, delay=2.0))
    error = await transport_error(client_for(webhook_url, tls, timeout=0.3))
    assert (error.code, error.retryable, error.maybe_sent) == ("PORTAL_TIMEOUT", True, True)


async def test_a_closed_port_is_portal_unreachable(tls: TLSFiles) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = await transport_error(client_for(f"https://127.0.0.1:{port}/rest/1/abcdef/", tls))
    assert (error.code, error.retryable, error.maybe_sent) == ("PORTAL_UNREACHABLE", True, False)


async def test_an_untrusted_certificate_is_explained(webhook_url: str) -> None:
    error = await transport_error(client_for(webhook_url, None))
    assert error.code == "PORTAL_UNREACHABLE"
    assert "B24_CA_BUNDLE" in error.description


async def test_a_redirect_is_reported_not_followed(client: PortalClient, portal: Portal) -> None:
    portal.inject(
        "crm.item.delete",
        Fault(status=302, body=b"", headers={"Location": "https://new.bitrix24.com/rest/1/code/crm.item.delete"}),
    )
    error = await transport_error(client, "crm.item.delete")
    assert (error.code, error.http_status, error.retryable) == ("PORTAL_REDIRECT", 302, False)
    assert "new.bitrix24.com" in error.description
    assert 42 in portal.items[2]


async def test_one_connection_serves_consecutive_calls(client: PortalClient, portal: Portal) -> None:
    for _ in range(3):
        await client.call("crm.item.get", {"entityTypeId": 2, "id": 42})
    pool = client._wire._client()._transport._pool  # type: ignore[attr-defined]
    assert len(pool.connections) == 1
    await client.aclose()


async def test_a_client_for_another_credential_shares_the_pool_and_leaves_it_open_when_closed(
    client: PortalClient, webhook_url: str
) -> None:
    await client.call("crm.item.get", {"entityTypeId": 2, "id": 42})
    pool = client._wire._client()._transport._pool  # type: ignore[attr-defined]
    connection = pool.connections[0]
    other = client.for_credential(WebhookAuth(parse_webhook_url(webhook_url, allow_http=False)))
    await other.call("crm.item.get", {"entityTypeId": 2, "id": 42})
    await other.aclose()
    await client.call("crm.item.get", {"entityTypeId": 2, "id": 42})
    assert client._wire._client()._transport._pool.connections == [connection]  # type: ignore[attr-defined]
    await client.aclose()


# The method the portal blocked


BLOCKED = {"error": "OPERATION_TIME_LIMIT", "error_description": "Method is blocked due to operation time limit."}


async def test_the_portals_operation_time_limit_passes_through_and_says_when_it_unblocks(
    client: PortalClient, portal: Portal
) -> None:
    portal.set_operating_cost("crm.item.get", 1.0)  # charged, so its answer says when the charge expires
    await client.call("crm.item.get", {"entityTypeId": 2, "id": 42})  # learns operating_reset_at
    portal.inject("crm.item.get", Fault(status=429, json=BLOCKED))
    error = await portal_error(client, "crm.item.get", {"entityTypeId": 2, "id": 42})
    assert (error.code, error.description, error.http_status) == (
        "OPERATION_TIME_LIMIT",
        BLOCKED["error_description"],
        429,
    )
    assert error.hint is not None and "operating_reset_at" in error.hint


async def test_a_method_the_portal_blocked_is_refused_here_without_sending_until_it_unblocks(
    client: PortalClient, portal: Portal
) -> None:
    portal.set_operating_cost("crm.item.get", 1.0)
    await client.call("crm.item.get", {"entityTypeId": 2, "id": 42})
    portal.inject("crm.item.get", Fault(status=429, json=BLOCKED))
    await portal_error(client, "crm.item.get", {"entityTypeId": 2, "id": 42})
    with pytest.raises(Refusal) as caught:
        await client.call("crm.item.get", {"entityTypeId": 2, "id": 43})
    await client.aclose()
    refusal = caught.value
    assert (refusal.code, refusal.retryable, refusal.http_status) == ("OPERATION_TIME_LIMIT", True, None)
    assert "operating_reset_at" in refusal.description and refusal.hint
    assert len(portal.calls_to("crm.item.get")) == 2


# Answers that cannot be read


async def test_a_broken_gzip_body_after_the_portal_acted_is_a_transport_error_that_may_have_acted(
    client: PortalClient, portal: Portal
) -> None:
    broken = Fault(status=200, body=b"this is not gzip", headers={"Content-Encoding": "gzip"}, perform=True)
    portal.inject("crm.item.delete", broken)
    error = await transport_error(client, "crm.item.delete")
    assert (error.code, error.maybe_sent, error.http_status) == ("BAD_PORTAL_RESPONSE", True, 200)
    assert 42 not in portal.items[2]  # it did act: the caller's reconciliation has to find that out


async def test_a_json_answer_nested_too_deeply_to_parse_is_a_bad_portal_response(
    client: PortalClient, portal: Portal
) -> None:
    portal.inject("crm.item.get", Fault(status=200, body=b"[" * 100_000 + b"]" * 100_000))
    error = await transport_error(client)
    assert (error.code, error.http_status) == ("BAD_PORTAL_RESPONSE", 200)


async def test_an_absurdly_long_description_is_clipped(client: PortalClient, portal: Portal) -> None:
    portal.inject("crm.item.get", Fault(status=400, json={"error": "NOT_FOUND", "error_description": "x" * 100_000}))
    error = await portal_error(client, "crm.item.get", {"entityTypeId": 2, "id": 42})
    assert error.code == "NOT_FOUND"
    assert error.description.startswith("xxx") and len(error.description) < 2100


# Secrets echoed back


async def test_an_error_description_echoing_the_webhook_is_masked(
    client: PortalClient, portal: Portal, webhook_url: str
) -> None:
    echo = f"Webhook {webhook_url} (code {SANDBOX_WEBHOOK_CODE.upper()}) is not allowed here"
    portal.inject("crm.item.delete", Fault(status=403, json={"error": "ACCESS_DENIED", "error_description": echo}))
    error = await portal_error(client, "crm.item.delete", {"entityTypeId": 2, "id": 42})
    assert error.code == "ACCESS_DENIED"
    assert error.description == "Webhook *** (code ***) is not allowed here"


async def test_an_error_code_echoing_the_webhook_code_is_masked(client: PortalClient, portal: Portal) -> None:
    portal.inject(
        "crm.item.get", Fault(status=400, json={"error": f"BAD_{SANDBOX_WEBHOOK_CODE}", "error_description": ""})
    )
    error = await portal_error(client, "crm.item.get", {"entityTypeId": 2, "id": 42})
    assert error.code == "BAD_***"


async def test_a_redirect_to_a_host_named_after_the_webhook_code_is_masked(
    client: PortalClient, portal: Portal
) -> None:
    location = f"https://{SANDBOX_WEBHOOK_CODE}.example.com/rest/1/{SANDBOX_WEBHOOK_CODE}/crm.item.get"
    portal.inject("crm.item.get", Fault(status=301, body=b"", headers={"Location": location}))
    error = await transport_error(client)
    assert error.code == "PORTAL_REDIRECT"
    assert "***.example.com" in error.description


async def test_a_content_type_echoing_the_webhook_code_is_masked(client: PortalClient, portal: Portal) -> None:
    portal.inject("crm.item.get", Fault(status=502, body=b"<html/>", content_type=f"text/{SANDBOX_WEBHOOK_CODE}"))
    error = await transport_error(client)
    assert error.code == "BAD_PORTAL_RESPONSE"
    assert "text/***" in error.description


async def test_a_successful_answer_echoing_the_webhook_is_masked(
    client: PortalClient, portal: Portal, webhook_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    item = {"id": 42, "title": f"Integration via {webhook_url}", SANDBOX_WEBHOOK_CODE: [SANDBOX_WEBHOOK_CODE, 7]}
    portal.inject("crm.item.get", Fault(status=200, json={"result": {"item": item}, "total": 1}))
    answer = await client.call("crm.item.get", {"entityTypeId": 2, "id": 42})
    await client.aclose()
    assert answer.result == {"item": {"id": 42, "title": "Integration via ***", "***": ["***", 7]}}
    assert answer.total == 1
    assert_no_secret(caplog.text)


async def test_the_client_scrubs_any_text_for_other_modules(client: PortalClient, webhook_url: str) -> None:
    assert client.scrub(f"see {webhook_url}crm.item.get and {SANDBOX_WEBHOOK_CODE}") == "see ***crm.item.get and ***"
