"""B24_CONFIRM=page over real HTTP: a person approves a deletion on this server's own page, in their own browser
(one that keeps cookies and signs in at the portal), while another person, and an assistant holding only the MCP
token, cannot."""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx2
import pytest
from mcp import Client
from mcp.types import ElicitRequestParams, ElicitRequestURLParams, ElicitResult
from signin_helpers import Browser, Person, SignInServer, call, run_b24, signin_env, signin_server

from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.seed import SALES_USER_ID, SANDBOX_USER_ID
from b24_mcp.settings import SettingsError, load_settings
from helpers import TLSFiles, free_port, read_journal

pytestmark = pytest.mark.anyio

DEAL = {"entityTypeId": 2, "id": 42}
MAX_HOPS = 12


@pytest.fixture
def env(portal: Portal, https_origin: str, tls: TLSFiles, tmp_path: Path, journal_path: Path) -> dict[str, str]:
    values = signin_env(portal, https_origin, tls.ca_bundle, tmp_path / "state", journal_path, free_port())
    return values | {"B24_CONFIRM": "page"}


@pytest.fixture
async def server(env: dict[str, str]) -> AsyncIterator[SignInServer]:
    async with signin_server(env) as served:
        yield served


@pytest.fixture
def admin(tls: TLSFiles) -> Person:
    return Person(SANDBOX_USER_ID, Browser(tls.ca_bundle))


class PageBrowser:
    """A person's browser: keeps cookies, signs in at the portal as `user_id` when sent there, and answers pages."""

    def __init__(self, portal: Portal, user_id: int, ca_bundle: Path) -> None:
        self.portal = portal
        self.user_id = user_id
        self.http = httpx2.AsyncClient(
            verify=ssl.create_default_context(cafile=str(ca_bundle)), follow_redirects=False, timeout=30
        )

    async def open(self, url: str) -> httpx2.Response:
        """Go to `url`, following redirects (through the portal's sign-in) until a page."""
        self.portal.sign_in_as(self.user_id)  # the portal's own session in this browser is this person's
        response = await self.http.get(url)
        for _ in range(MAX_HOPS):
            if response.status_code not in (302, 303):
                return response
            response = await self.http.get(urljoin(str(response.request.url), response.headers["location"]))
        raise AssertionError("too many redirects")

    async def decide(self, url: str, decision: str, **headers: str) -> httpx2.Response:
        page = await self.open(url)
        assert page.status_code == 200, page.text
        action, token = approval_form(page.text)
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
        return await self.http.post(
            action, data={"form_token": token, "decision": decision}, headers={"origin": origin} | headers
        )

    async def aclose(self) -> None:
        await self.http.aclose()


@asynccontextmanager
async def browser_of(portal: Portal, user_id: int, tls: TLSFiles) -> AsyncIterator[PageBrowser]:
    browser = PageBrowser(portal, user_id, tls.ca_bundle)
    try:
        yield browser
    finally:
        await browser.aclose()


def approval_form(page: str) -> tuple[str, str]:
    action = re.search(r'<form method="post" action="([^"]+)"', page)
    token = re.search(r'name="form_token" value="([^"]+)"', page)
    assert action is not None and token is not None, page[:500]
    return unescape(action.group(1)), unescape(token.group(1))


async def preview(session: Client, tool: str = "crm_item_delete", **arguments: Any) -> dict[str, Any]:
    result = await call(session, tool, arguments or DEAL)
    assert result["status"] == "preview", result
    return result


def delete_arguments(previewed: dict[str, Any], **arguments: Any) -> dict[str, Any]:
    return (arguments or DEAL) | {"dryRun": False, "confirmationToken": previewed["confirmationToken"]}


# ------------------------------------------------------------------------------------------- the whole flow


async def test_a_preview_carries_the_approval_link_and_tells_the_assistant_to_show_it(
    server: SignInServer, portal: Portal, admin: Person
) -> None:
    async with admin.connect(portal, server) as session:
        previewed = await preview(session)
    assert previewed["approvalUrl"].startswith(server.public_url + "/approve/")
    assert previewed["approvalUrl"] in previewed["message"]
    assert "show them this link" in previewed["message"]
    assert previewed["confirmationToken"] not in previewed["approvalUrl"]


async def test_before_the_approval_nothing_is_deleted_and_the_call_is_told_to_wait(
    server: SignInServer, portal: Portal, admin: Person
) -> None:
    async with admin.connect(portal, server) as session:
        previewed = await preview(session)
        pending = await call(session, "crm_item_delete", delete_arguments(previewed))
    assert (pending["status"], pending["error"], pending["retryable"]) == ("error", "APPROVAL_PENDING", True)
    assert pending["approvalUrl"] == previewed["approvalUrl"]
    assert 42 in portal.items[2]


async def test_the_person_approves_in_their_browser_and_the_same_call_then_deletes(
    server: SignInServer, portal: Portal, admin: Person, tls: TLSFiles, journal_path: Path
) -> None:
    async with admin.connect(portal, server) as session:
        previewed = await preview(session)
        async with browser_of(portal, SANDBOX_USER_ID, tls) as browser:
            decided = await browser.decide(previewed["approvalUrl"], "approve")
        deleted = await call(session, "crm_item_delete", delete_arguments(previewed))
    assert decided.status_code == 200 and "Approved" in decided.text
    assert (deleted["status"], deleted["confirmation"]) == ("deleted", "page")
    assert 42 not in portal.items[2]
    lines = [(line["event"], line["confirmation"], line["userId"]) for line in read_journal(journal_path)]
    assert lines == [("intent", "page", SANDBOX_USER_ID), ("deleted", "page", SANDBOX_USER_ID)]


async def test_a_set_by_filter_is_approved_on_its_page_with_its_breakdown(
    server: SignInServer, portal: Portal, admin: Person, tls: TLSFiles
) -> None:
    arguments = {"entityTypeId": 2, "filter": {"@id": [42, 43]}}
    async with admin.connect(portal, server) as session:
        previewed = await preview(session, "crm_item_delete_batch", **arguments)
        async with browser_of(portal, SANDBOX_USER_ID, tls) as browser:
            page = await browser.open(previewed["approvalUrl"])
            await browser.decide(previewed["approvalUrl"], "approve")
        deleted = await call(session, "crm_item_delete_batch", delete_arguments(previewed, **arguments))
    assert "<th>Count</th><td>2</td>" in page.text and "#42, #43" in page.text
    assert (deleted["status"], deleted["confirmation"], deleted["deleted"]) == ("deleted", "page", 2)


async def test_declining_on_the_page_makes_the_next_call_cancelled(
    server: SignInServer, portal: Portal, admin: Person, tls: TLSFiles, journal_path: Path
) -> None:
    async with admin.connect(portal, server) as session:
        previewed = await preview(session)
        async with browser_of(portal, SANDBOX_USER_ID, tls) as browser:
            await browser.decide(previewed["approvalUrl"], "decline")
        cancelled = await call(session, "crm_item_delete", delete_arguments(previewed))
    assert cancelled["status"] == "cancelled"
    assert 42 in portal.items[2]
    assert [(line["event"], line["confirmation"]) for line in read_journal(journal_path)] == [("cancelled", "page")]


async def test_a_change_after_the_approval_is_item_changed(
    server: SignInServer, portal: Portal, admin: Person, tls: TLSFiles
) -> None:
    async with admin.connect(portal, server) as session:
        previewed = await preview(session)
        async with browser_of(portal, SANDBOX_USER_ID, tls) as browser:
            await browser.decide(previewed["approvalUrl"], "approve")
        portal.touch(2, 42, title="Renamed after the approval")
        refused = await call(session, "crm_item_delete", delete_arguments(previewed))
    assert refused["error"] == "ITEM_CHANGED"
    assert 42 in portal.items[2]


# ------------------------------------------------------------------------------------------------ who may approve


async def test_another_person_gets_403_and_nothing_is_approved(
    server: SignInServer, portal: Portal, admin: Person, tls: TLSFiles
) -> None:
    async with admin.connect(portal, server) as session:
        previewed = await preview(session)
        async with browser_of(portal, SALES_USER_ID, tls) as browser:
            page = await browser.open(previewed["approvalUrl"])
        pending = await call(session, "crm_item_delete", delete_arguments(previewed))
    assert page.status_code == 403 and "form_token" not in page.text
    assert pending["error"] == "APPROVAL_PENDING"


async def test_an_assistant_holding_only_the_mcp_token_cannot_open_or_approve_the_page(
    server: SignInServer, portal: Portal, admin: Person, https_origin: str
) -> None:
    async with admin.connect(portal, server) as session:
        previewed = await preview(session)
        bearer = {"authorization": f"Bearer {admin.access_token}"}
        async with httpx2.AsyncClient(timeout=30, follow_redirects=False) as agent:
            opened = await agent.get(previewed["approvalUrl"], headers=bearer)
            posted = await agent.post(
                previewed["approvalUrl"], data={"decision": "approve", "form_token": "x"}, headers=bearer
            )
        pending = await call(session, "crm_item_delete", delete_arguments(previewed))
    assert opened.status_code == 302
    assert opened.headers["location"].startswith(https_origin + "/oauth/authorize/")
    assert posted.status_code == 403
    assert pending["error"] == "APPROVAL_PENDING"


async def test_a_post_from_another_site_or_without_the_form_token_approves_nothing(
    server: SignInServer, portal: Portal, admin: Person, tls: TLSFiles
) -> None:
    async with admin.connect(portal, server) as session:
        previewed = await preview(session)
        async with browser_of(portal, SANDBOX_USER_ID, tls) as browser:
            cross_site = await browser.decide(previewed["approvalUrl"], "approve", origin="https://evil.example")
            forged = await browser.http.post(previewed["approvalUrl"], data={"decision": "approve"})
        pending = await call(session, "crm_item_delete", delete_arguments(previewed))
    assert (cross_site.status_code, forged.status_code) == (403, 403)
    assert pending["error"] == "APPROVAL_PENDING"


# ----------------------------------------------------------------------------------------------------- the page


async def test_the_page_states_the_facts_and_shows_crm_text_as_text(
    server: SignInServer, portal: Portal, admin: Person, tls: TLSFiles, https_origin: str
) -> None:
    portal.touch(2, 42, title='<script>alert(1)</script><b>"x"</b>')
    async with admin.connect(portal, server) as session:
        previewed = await preview(session)
    async with browser_of(portal, SANDBOX_USER_ID, tls) as browser:
        page = await browser.open(previewed["approvalUrl"])
    assert "<script>" not in page.text and "<b>" not in page.text
    assert "&lt;script&gt;" in page.text
    facts = page.text.index("<th>Action</th><td>Delete</td>")
    assert facts < page.text.index("&lt;script&gt;")
    for fact in (f"<td>{urlsplit(https_origin).netloc}</td>", "<td>#42</td>", "recycle bin", "entityTypeId 2"):
        assert fact in page.text


async def test_the_page_cannot_be_framed_or_cached_and_its_cookie_is_httponly(
    server: SignInServer, portal: Portal, admin: Person, tls: TLSFiles
) -> None:
    async with admin.connect(portal, server) as session:
        previewed = await preview(session)
    async with browser_of(portal, SANDBOX_USER_ID, tls) as browser:
        portal.sign_in_as(SANDBOX_USER_ID)
        to_portal = await browser.http.get(previewed["approvalUrl"])
        back = await browser.http.get(to_portal.headers["location"])
        with_cookie = await browser.http.get(back.headers["location"])
        page = await browser.http.get(with_cookie.headers["location"])
    cookie = with_cookie.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert page.status_code == 200
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


# ------------------------------------------------------------------------------------------ modes and URL mode


async def test_auto_on_a_sign_in_server_gives_a_client_without_form_elicitation_the_page(
    env: dict[str, str], portal: Portal, admin: Person
) -> None:
    async with signin_server(env | {"B24_CONFIRM": "auto"}) as server, admin.connect(portal, server) as session:
        previewed = await preview(session)
        pending = await call(session, "crm_item_delete", delete_arguments(previewed))
    assert previewed["approvalUrl"].startswith(server.public_url + "/approve/")
    assert pending["error"] == "APPROVAL_PENDING"


async def test_a_client_with_url_mode_is_sent_to_the_page_and_the_deletion_follows_the_approval(
    server: SignInServer, portal: Portal, admin: Person, tls: TLSFiles
) -> None:
    sent_to: list[str] = []

    async def person(context: Any, params: ElicitRequestParams) -> ElicitResult:
        assert isinstance(params, ElicitRequestURLParams)
        sent_to.append(params.url)
        async with browser_of(portal, SANDBOX_USER_ID, tls) as browser:
            await browser.decide(params.url, "approve")
        return ElicitResult(action="accept")

    async with admin.connect(portal, server) as session:
        previewed = await preview(session)
    async with admin.connect(portal, server, mode="legacy", elicitation_callback=person) as legacy:
        deleted = await call(legacy, "crm_item_delete", delete_arguments(previewed))
    assert sent_to == [previewed["approvalUrl"]]
    assert (deleted["status"], deleted["confirmation"]) == ("deleted", "page")


async def test_a_client_that_declines_the_url_request_gets_cancelled(
    server: SignInServer, portal: Portal, admin: Person
) -> None:
    async def person(context: Any, params: ElicitRequestParams) -> ElicitResult:
        return ElicitResult(action="decline")

    async with admin.connect(portal, server) as session:
        previewed = await preview(session)
    async with admin.connect(portal, server, mode="legacy", elicitation_callback=person) as legacy:
        cancelled = await call(legacy, "crm_item_delete", delete_arguments(previewed))
    assert cancelled["status"] == "cancelled"
    assert 42 in portal.items[2]


# ------------------------------------------------------------------------------------------------------ settings


def test_page_mode_without_a_public_url_is_refused_in_one_line_naming_b24_confirm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("B24_PUBLIC_URL", raising=False)
    with pytest.raises(SettingsError) as refused:
        load_settings(confirm="page", webhook_url=None)
    lines = [line for line in refused.value.lines if "B24_CONFIRM" in line]
    assert len(lines) == 1 and lines[0].startswith("B24_CONFIRM=page needs sign-in")


@pytest.mark.process
def test_check_reports_the_mode_and_the_approval_page(env: dict[str, str]) -> None:
    checked = run_b24(env, "check")
    assert "confirmation: page (B24_CONFIRM)" in checked.stdout
    assert f"approval page: {env['B24_PUBLIC_URL']}/approve/" in checked.stdout


# ------------------------------------------------------------------------------------------------------ replicas


async def test_replicas_share_approvals_so_one_previews_another_approves_and_deletes(
    portal: Portal, https_origin: str, tls: TLSFiles, database_url: str, tmp_path: Path, admin: Person
) -> None:
    env = signin_env(portal, https_origin, tls.ca_bundle, tmp_path / "state", tmp_path / "audit.jsonl", free_port())
    env |= {"B24_CONFIRM": "page", "B24_DATABASE_URL": database_url, "B24_CONFIRM_SECRET": "s" * 40}
    async with (
        signin_server(env, "--stateless") as one,
        signin_server(env, "--stateless", port=free_port()) as other,
    ):
        async with admin.connect(portal, one) as session:
            previewed = await preview(session)
        on_other = other.public_url + urlsplit(previewed["approvalUrl"]).path
        async with browser_of(portal, SANDBOX_USER_ID, tls) as browser:
            page = await browser.open(on_other)  # signed in through the portal, back at the public address
            _, token = approval_form(page.text)
            decided = await browser.http.post(
                on_other, data={"form_token": token, "decision": "approve"}, headers={"origin": one.public_url}
            )
        async with admin.connect(portal, other) as session:
            deleted = await call(session, "crm_item_delete", delete_arguments(previewed))
    assert decided.status_code == 200 and "Approved" in decided.text
    assert (deleted["status"], deleted["confirmation"]) == ("deleted", "page")
    assert not (tmp_path / "state" / "people.sqlite3").exists()


async def test_a_preview_of_a_set_by_ids_carries_the_approval_link_too(
    server: SignInServer, portal: Portal, admin: Person
) -> None:
    async with admin.connect(portal, server) as session:
        previewed = await preview(session, "crm_item_delete_batch", entityTypeId=2, ids=[42, 43])
    assert previewed["approvalUrl"].startswith(server.public_url + "/approve/")
    assert previewed["approvalUrl"] in previewed["message"]


async def test_a_2026_client_with_url_mode_gets_the_link_in_the_result_instead(
    server: SignInServer, portal: Portal, admin: Person
) -> None:
    asked: list[ElicitRequestParams] = []

    async def person(context: Any, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params)
        return ElicitResult(action="accept")

    async with admin.connect(portal, server) as session:
        previewed = await preview(session)
    async with admin.connect(portal, server, elicitation_callback=person) as modern:
        pending = await call(modern, "crm_item_delete", delete_arguments(previewed))
    assert (pending["error"], pending["approvalUrl"]) == ("APPROVAL_PENDING", previewed["approvalUrl"])
    assert asked == []  # the SDK's resolvers cannot carry URL mode on 2026-07-28
    assert 42 in portal.items[2]


async def test_auto_still_asks_a_client_that_answers_forms(
    env: dict[str, str], tmp_path: Path, portal: Portal, admin: Person
) -> None:
    async def person(context: Any, params: ElicitRequestParams) -> ElicitResult:
        return ElicitResult(action="accept", content={"delete": True})

    async with (
        signin_server(env | {"B24_CONFIRM": "auto"}) as server,
        admin.connect(portal, server, elicitation_callback=person) as asking,
    ):
        previewed = await preview(asking)
        deleted = await call(asking, "crm_item_delete", DEAL | {"dryRun": False})
    assert "approvalUrl" not in previewed
    assert (deleted["status"], deleted["confirmation"]) == ("deleted", "elicitation")
