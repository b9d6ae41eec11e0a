"""Holding up against a real portal's behaviour, over real HTTPS: pacing, retries, lost answers, timeouts, and
OAuth tokens that expire and rotate."""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import pytest

from b24_mcp.deleting.gate import Consent, Route
from b24_mcp.deleting.item import ItemDeletion
from b24_mcp.portal.limiter import LeakyBucket
from b24_mcp.sandbox.emulator import Fault, Portal
from b24_mcp.sandbox.seed import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from b24_mcp.settings import Settings, parse_webhook_url
from helpers import TLSFiles, assert_no_secret, item_deletion

pytestmark = pytest.mark.anyio

HTML_503 = (
    b"<html><head><title>503 Service Temporarily Unavailable</title></head><body class='header_503'></body></html>"
)
QUERY_LIMIT = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}


@pytest.fixture
async def over_https(
    make_settings: Callable[..., Settings], webhook_url: str, tls: TLSFiles
) -> AsyncIterator[Callable[..., ItemDeletion]]:
    """Single-item deletion over the emulator's HTTPS; each one made is closed when the test ends."""
    made: list[ItemDeletion] = []

    def make(**settings: Any) -> ItemDeletion:
        config = make_settings(ca_bundle=tls.ca_bundle, **settings)
        made.append(item_deletion(config, parse_webhook_url(webhook_url, allow_http=False), retry_base=0.01))
        return made[-1]

    yield make
    for service in made:
        await service.app.aclose()


def gets(portal: Portal) -> int:
    return len(portal.calls_to("crm.item.get"))


async def delete_42(service: ItemDeletion) -> Any:
    preview = await service.preview(2, 42)
    return await service.delete(2, 42, Consent(route=Route.TOKEN, token=preview.confirmationToken))


# Pacing


def test_the_bucket_lets_a_burst_through_then_paces_at_the_drain_rate() -> None:
    now = [0.0]
    bucket = LeakyBucket(3, 2.0, margin=0, clock=lambda: now[0])
    assert [bucket.reserve() for _ in range(5)] == [0.0, 0.0, 0.0, 0.5, 1.0]
    now[0] = 10.0
    assert bucket.reserve() == 0.0


def test_the_bucket_keeps_a_margin_for_arrival_jitter() -> None:
    bucket = LeakyBucket(50, 2.0, clock=lambda: 0.0)
    assert [bucket.reserve() for _ in range(49)][-2:] == [0.0, 0.5]


def test_a_saturated_bucket_waits_a_full_drain_step() -> None:
    bucket = LeakyBucket(50, 2.0, margin=0, clock=lambda: 0.0)
    bucket.saturate()
    assert bucket.reserve() == 0.5


async def test_sixty_concurrent_previews_through_one_server_all_succeed(
    over_https: Callable[..., ItemDeletion], portal: Portal
) -> None:
    portal.rate_limit = (50, 5.0)  # a real portal's burst, drained as fast as an Enterprise one: the same pacing
    service = over_https(rate_burst=50, rate_per_second=5.0)
    ids = [40, 41, 42, 43, 44, 45] * 10
    results: list[Any] = []

    async def preview(item_id: int) -> None:
        results.append(await service.preview(2, item_id))

    async with anyio.create_task_group() as group:
        for item_id in ids:
            group.start_soon(preview, item_id)
    await service.portal.aclose()
    assert [result.status for result in results] == ["preview"] * 60
    assert [call.error for call in portal.calls if call.error] == []


# Retries


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=503, json=QUERY_LIMIT),
        Fault(status=503, body=HTML_503, content_type="text/html"),
        Fault(status=502, body=b"<html>Bad Gateway</html>", content_type="text/html"),
        Fault(status=500, json={"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}),
        Fault(status=504, body=b"", content_type="text/html"),
        Fault(status=200, drop=True),
    ],
    ids=["query-limit", "html-503", "html-502", "json-500", "empty-504", "dropped"],
)
async def test_a_passing_failure_is_retried_and_the_call_succeeds(
    over_https: Callable[..., ItemDeletion], portal: Portal, fault: Fault
) -> None:
    portal.inject("crm.item.get", fault)
    result = await over_https().preview(2, 42)
    assert result.status == "preview"
    assert gets(portal) == 2


@pytest.mark.parametrize(
    ("entity_type_id", "item_id", "code"),
    [(2, 999, "NOT_FOUND"), (999_999, 1, "NOT_FOUND")],
)
async def test_a_4xx_answer_is_never_retried(
    over_https: Callable[..., ItemDeletion], portal: Portal, entity_type_id: int, item_id: int, code: str
) -> None:
    result = await over_https().preview(entity_type_id, item_id)
    assert result.error == code
    assert gets(portal) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"error": "ACCESS_DENIED", "error_description": "Access denied"},
        {"error": 100, "error_description": "Could not find value for parameter {id}"},
        {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"},
    ],
)
async def test_refusals_are_never_retried(
    over_https: Callable[..., ItemDeletion], portal: Portal, body: dict[str, Any]
) -> None:
    portal.inject("crm.item.get", Fault(status=400, json=body))
    result = await over_https().preview(2, 42)
    assert result.error == str(body["error"])
    assert gets(portal) == 1


async def test_retries_stop_after_max_retries(over_https: Callable[..., ItemDeletion], portal: Portal) -> None:
    for _ in range(10):
        portal.inject("crm.item.get", Fault(status=503, json=QUERY_LIMIT))
    result = await over_https(max_retries=2).preview(2, 42)
    assert (result.error, result.retryable, result.httpStatus) == ("QUERY_LIMIT_EXCEEDED", True, 503)
    assert gets(portal) == 3


async def test_no_retry_starts_past_the_call_deadline(
    make_settings: Callable[..., Settings], webhook_url: str, tls: TLSFiles, portal: Portal
) -> None:
    for _ in range(10):
        portal.inject("crm.item.get", Fault(status=503, json=QUERY_LIMIT))
    config = make_settings(ca_bundle=tls.ca_bundle, call_deadline=0.6, max_retries=10)
    service = item_deletion(config, parse_webhook_url(webhook_url, allow_http=False), retry_base=0.2)
    result = await service.preview(2, 42)
    assert result.error == "QUERY_LIMIT_EXCEEDED"
    assert 2 <= gets(portal) <= 3


async def test_operation_time_limit_is_not_retried_and_says_when_it_unblocks(
    over_https: Callable[..., ItemDeletion], portal: Portal
) -> None:
    service = over_https()
    portal.set_operating_cost("crm.item.get", 1.0)  # charged, so its answer says when the charge expires
    assert (await service.preview(2, 42)).status == "preview"  # learns operating_reset_at
    blocked = {"error": "OPERATION_TIME_LIMIT", "error_description": "Method is blocked due to operation time limit."}
    portal.inject("crm.item.get", Fault(status=429, json=blocked))
    first = await service.preview(2, 42)
    second = await service.preview(2, 43)
    assert (first.error, first.retryable, first.httpStatus) == ("OPERATION_TIME_LIMIT", True, 429)
    assert first.error_description == "Method is blocked due to operation time limit."
    assert "operating_reset_at" in first.message and "operating_reset_at" in second.message
    assert (second.error, second.httpStatus) == ("OPERATION_TIME_LIMIT", None)
    assert gets(portal) == 2


async def test_a_slow_portal_is_a_timeout_and_retried(over_https: Callable[..., ItemDeletion], portal: Portal) -> None:
    portal.inject("crm.item.get", Fault(status=200, json={"result": {}}, delay=1.5))
    service = over_https(timeout=0.3)
    result = await service.preview(2, 42)
    assert result.status == "preview"
    assert gets(portal) == 2


async def test_a_portal_that_stays_slow_gives_portal_timeout(
    over_https: Callable[..., ItemDeletion], portal: Portal
) -> None:
    portal.inject("crm.item.get", Fault(status=200, json={"result": {}}, delay=1.5))
    result = await over_https(timeout=0.3, max_retries=0).preview(2, 42)
    assert (result.error, result.retryable, result.httpStatus) == ("PORTAL_TIMEOUT", True, None)


def test_the_default_timeout_outlasts_the_portals_own_60_second_limit(
    make_settings: Callable[..., Settings], webhook_url: str
) -> None:
    settings = make_settings()
    assert settings.timeout > 60
    app = item_deletion(settings, parse_webhook_url(webhook_url, allow_http=False)).app
    assert app.portal._wire.timeout == settings.timeout


async def test_a_slow_delete_answered_within_the_timeout_is_sent_once(
    over_https: Callable[..., ItemDeletion], portal: Portal
) -> None:
    # 35 s of a 75 s limit, scaled down: the portal answers late, but before the limit.
    portal.inject("crm.item.delete", Fault(status=200, json={"result": []}, perform=True, delay=0.7))
    result = await delete_42(over_https(timeout=1.5))
    assert (result.status, result.error) == ("deleted", None)
    assert "absence" not in result.message
    assert len(portal.calls_to("crm.item.delete")) == 1


async def test_a_timed_out_delete_is_not_sent_again_while_the_portal_may_still_run_it(
    over_https: Callable[..., ItemDeletion], portal: Portal
) -> None:
    # B24_TIMEOUT set below the portal's 60 s: the abandoned delete is settled by reading, never repeated.
    portal.inject("crm.item.delete", Fault(status=200, json={"result": []}, perform=True, delay=1.0))
    result = await delete_42(over_https(timeout=0.3))
    assert (result.status, result.error) == ("deleted", None)
    assert "confirmed by absence" in result.message
    assert len(portal.calls_to("crm.item.delete")) == 1


# Never misreport a deletion


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=200, json={"result": []}, perform=True, drop=True),
        Fault(status=200, json={"result": []}, perform=True, delay=1.5),
        Fault(status=502, body=b"<html>Bad Gateway</html>", content_type="text/html", perform=True),
    ],
    ids=["dropped", "timed-out", "html-502"],
)
async def test_a_delete_whose_answer_was_lost_is_confirmed_by_absence(
    over_https: Callable[..., ItemDeletion], portal: Portal, journal_path: Path, fault: Fault
) -> None:
    portal.inject("crm.item.delete", fault)
    result = await delete_42(over_https(timeout=0.5))
    assert (result.status, result.error) == ("deleted", None)
    assert "confirmed by absence" in result.message
    assert 42 not in portal.items[2]
    last = json.loads(journal_path.read_text().splitlines()[-1])
    assert last["event"] == "deleted" and "confirmed by absence" in last["note"]


async def test_a_lost_answer_of_a_delete_that_did_not_happen_is_retried(
    over_https: Callable[..., ItemDeletion], portal: Portal
) -> None:
    portal.inject("crm.item.delete", Fault(status=200, drop=True))
    result = await delete_42(over_https())
    assert result.status == "deleted"
    assert "absence" not in result.message
    assert len(portal.calls_to("crm.item.delete")) == 2


async def test_not_found_for_an_item_never_seen_stays_an_error(
    over_https: Callable[..., ItemDeletion], portal: Portal
) -> None:
    result = await over_https().delete(2, 999, Consent(route=Route.NONE))
    assert (result.status, result.error) == ("error", "NOT_FOUND")
    assert portal.calls_to("crm.item.delete") == []


# OAuth


@pytest.fixture
def oauth(
    make_settings: Callable[..., Settings], https_origin: str, tls: TLSFiles, portal: Portal, tmp_path: Path
) -> Any:
    class OAuth:
        token_file = tmp_path / "tokens" / "b24-tokens.json"

        def __init__(self) -> None:
            self.access, self.refresh = portal.issue_tokens(SANDBOX_CLIENT_ID, 1)
            self.urls: list[str] = []

        def service(self, **overrides: Any) -> ItemDeletion:
            values: dict[str, Any] = {
                "portal_url": https_origin,
                "access_token": self.access,
                "refresh_token": self.refresh,
                "client_id": SANDBOX_CLIENT_ID,
                "client_secret": SANDBOX_CLIENT_SECRET,
                "oauth_url": f"{https_origin}/oauth/token/",
                "token_file": self.token_file,
                "ca_bundle": tls.ca_bundle,
            } | overrides
            config = make_settings(**{k: v for k, v in values.items() if v is not None})
            import ssl

            recorder = self

            class Recording(httpx2.AsyncHTTPTransport):
                async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
                    recorder.urls.append(str(request.url))
                    return await super().handle_async_request(request)

            transport = Recording(verify=ssl.create_default_context(cafile=str(tls.ca_bundle)))
            return item_deletion(config, config.credentials, transport, retry_base=0.01)

    return OAuth()


async def test_oauth_calls_carry_the_token_in_the_body_never_the_url(oauth: Any, portal: Portal) -> None:
    result = await oauth.service().preview(2, 42)
    assert result.status == "preview"
    assert oauth.urls and all(oauth.access not in url for url in oauth.urls)


async def test_an_expired_token_is_refreshed_once_and_the_call_repeated(oauth: Any, portal: Portal) -> None:
    service = oauth.service()
    portal.expire_access_tokens()
    result = await service.preview(2, 42)
    assert result.status == "preview"
    assert portal.token_requests == 1


async def test_the_token_endpoint_is_asked_as_documented_a_get_with_a_query_string(
    oauth: Any, portal: Portal, https_origin: str
) -> None:
    portal.expire_access_tokens()
    assert (await oauth.service().preview(2, 42)).status == "preview"
    (asked,) = [url for url in oauth.urls if "/oauth/token/" in url]
    query = parse_qs(urlsplit(asked).query)
    assert query["grant_type"] == ["refresh_token"] and query["refresh_token"] == [oauth.refresh]
    assert query["client_id"] == [SANDBOX_CLIENT_ID] and query["client_secret"] == [SANDBOX_CLIENT_SECRET]
    rest = [url for url in oauth.urls if "/rest/" in url]
    assert all(oauth.refresh not in url and SANDBOX_CLIENT_SECRET not in url for url in rest)


async def test_concurrent_calls_share_one_refresh(oauth: Any, portal: Portal) -> None:
    service = oauth.service()
    portal.expire_access_tokens()
    results: list[Any] = []

    async def preview(item_id: int) -> None:
        results.append(await service.preview(2, item_id))

    async with anyio.create_task_group() as group:
        for item_id in (40, 41, 42, 43, 44):
            group.start_soon(preview, item_id)
    assert [result.status for result in results] == ["preview"] * 5
    assert portal.token_requests == 1


async def test_the_rotated_pair_is_saved_privately_and_used_after_a_restart(oauth: Any, portal: Portal) -> None:
    portal.expire_access_tokens()
    assert (await oauth.service().preview(2, 42)).status == "preview"
    saved = json.loads(oauth.token_file.read_text())
    assert stat.S_IMODE(oauth.token_file.stat().st_mode) == 0o600
    assert saved["refresh_token"] != oauth.refresh and saved["access_token"] != oauth.access
    restarted = oauth.service()  # configured with the stale pair; the file is newer
    assert (await restarted.preview(2, 43)).status == "preview"
    assert portal.token_requests == 1


async def test_a_refused_refresh_says_to_reauthorise(oauth: Any, portal: Portal) -> None:
    service = oauth.service(refresh_token="not-a-refresh-token", token_file=None)
    portal.expire_access_tokens()
    result = await service.preview(2, 42)
    assert (result.error, result.retryable) == ("invalid_grant", False)
    assert "re-authorised" in result.message


async def test_without_refresh_credentials_an_expired_token_says_what_to_set(oauth: Any, portal: Portal) -> None:
    service = oauth.service(refresh_token=None, client_secret=None, token_file=None)
    portal.expire_access_tokens()
    result = await service.preview(2, 42)
    assert result.error == "expired_token"
    assert result.error_description == "The access token provided has expired"
    assert "B24_REFRESH_TOKEN" in result.message


async def test_oauth_secrets_never_reach_results_or_logs(
    oauth: Any, portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx2")  # even where a configuration turns the library's log on
    caplog.set_level(logging.DEBUG, logger="httpcore2")
    service = oauth.service()
    portal.expire_access_tokens()
    results = [await service.preview(2, 42), await delete_42(service)]
    assert portal.token_requests == 1  # the refresh's GET, its secrets in the query string, was made
    saved = json.loads(oauth.token_file.read_text())
    text = caplog.text + "".join(result.model_dump_json() for result in results)
    for secret in (oauth.access, oauth.refresh, SANDBOX_CLIENT_SECRET, saved["access_token"], saved["refresh_token"]):
        assert secret not in text
    assert_no_secret(text)


async def test_the_portals_own_operating_limit_blocks_the_method_and_the_server_says_until_when(
    over_https: Callable[..., ItemDeletion], portal: Portal
) -> None:
    portal.operating_limit = 1.0
    portal.method_cost["crm.item.get"] = 0.6
    service = over_https()
    first, second = await service.preview(2, 42), await service.preview(2, 43)
    blocked = await service.preview(2, 44)
    assert (first.status, second.status) == ("preview", "preview")
    assert (blocked.error, blocked.httpStatus, blocked.retryable) == ("OPERATION_TIME_LIMIT", 429, True)
    assert "operating_reset_at" in blocked.message
    assert gets(portal) == 3  # not retried in a loop
