"""The person in the loop: each B24_CONFIRM mode, on both protocol eras, with a person who accepts, declines or
cancels, and with a client that cannot ask."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult

from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.seed import SANDBOX_HOST
from helpers import Connect, journal_events

pytestmark = pytest.mark.anyio

ERAS = ["legacy", "default"]


class Person:
    """An elicitation callback that records each question and gives one answer."""

    def __init__(self, action: str, content: dict[str, Any] | None = None) -> None:
        self.action = action
        self.content = content
        self.questions: list[str] = []

    async def __call__(self, context: Any, params: ElicitRequestParams) -> ElicitResult:
        self.questions.append(getattr(params, "message", ""))
        return ElicitResult(action=self.action, content=self.content)  # type: ignore[arg-type]


def client_options(era: str, person: Person | None) -> dict[str, Any]:
    options: dict[str, Any] = {} if era == "default" else {"mode": "legacy"}
    if person is not None:
        options["elicitation_callback"] = person
    return options


async def delete(
    connect: Connect,
    era: str,
    person: Person | None,
    arguments: dict[str, Any] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    args = {"entityTypeId": 2, "id": 42, "dryRun": False} | (arguments or {})
    async with connect(client=client_options(era, person), **settings) as client:
        result: CallToolResult = await client.call_tool("crm_item_delete", args)
    assert result.structured_content is not None
    data: dict[str, Any] = {**result.structured_content, "isError": result.is_error}
    return data


@pytest.mark.parametrize("era", ERAS)
async def test_auto_asks_the_person_and_deletes_on_yes(
    connect: Connect, portal: Portal, journal_path: Path, era: str
) -> None:
    person = Person("accept", {"delete": True})
    result = await delete(connect, era, person, confirm="auto")
    assert (result["status"], result["confirmation"], result["isError"]) == ("deleted", "elicitation", False)
    assert set(person.questions) == {
        f"Delete deal #42 from {SANDBOX_HOST} (last changed 2026-03-08T14:05:00+03:00)? "
        "It goes to the CRM recycle bin if the portal keeps one; it can be restored there, not through this server. "
        "Title: «Acme renewal»."
    }
    assert 42 not in portal.items[2]
    assert journal_events(journal_path) == ["intent", "deleted"]


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("action", ["decline", "cancel"])
async def test_auto_cancels_when_the_person_says_no(
    connect: Connect, portal: Portal, journal_path: Path, era: str, action: str
) -> None:
    result = await delete(connect, era, Person(action), confirm="auto")
    assert (result["status"], result["isError"]) == ("cancelled", False)
    assert 42 in portal.items[2] and portal.calls_to("crm.item.delete") == []
    assert journal_events(journal_path) == ["cancelled"]


@pytest.mark.parametrize("era", ERAS)
async def test_an_accepted_form_without_the_tick_deletes_nothing(connect: Connect, portal: Portal, era: str) -> None:
    result = await delete(connect, era, Person("accept", {"delete": False}), confirm="auto")
    assert result["status"] == "cancelled"
    assert 42 in portal.items[2]


@pytest.mark.parametrize("era", ERAS)
async def test_auto_without_the_capability_falls_back_to_the_token(connect: Connect, portal: Portal, era: str) -> None:
    refused = await delete(connect, era, None, confirm="auto")
    assert refused["error"] == "CONFIRMATION_REQUIRED"
    async with connect(client=client_options(era, None), confirm="auto") as client:
        preview = await client.call_tool("crm_item_delete", {"entityTypeId": 2, "id": 42})
        assert preview.structured_content is not None
        assert "confirmationToken from a preview" in preview.structured_content["message"]
        token = preview.structured_content["confirmationToken"]
        done = await client.call_tool(
            "crm_item_delete", {"entityTypeId": 2, "id": 42, "dryRun": False, "confirmationToken": token}
        )
    assert done.structured_content is not None and done.structured_content["confirmation"] == "token"


@pytest.mark.parametrize("era", ERAS)
async def test_auto_with_the_capability_asks_even_when_a_token_is_given(
    connect: Connect, portal: Portal, era: str
) -> None:
    person = Person("decline")
    result = await delete(connect, era, person, {"confirmationToken": "b24c1.x.y"}, confirm="auto")
    assert result["status"] == "cancelled"
    assert person.questions


@pytest.mark.parametrize("era", ERAS)
async def test_elicit_refuses_a_client_that_cannot_ask(connect: Connect, portal: Portal, era: str) -> None:
    result = await delete(connect, era, None, confirm="elicit")
    assert (result["error"], result["isError"]) == ("ELICITATION_UNSUPPORTED", True)
    assert portal.calls_to("crm.item.delete") == []


@pytest.mark.parametrize("era", ERAS)
async def test_elicit_asks_a_client_that_can(connect: Connect, portal: Portal, era: str) -> None:
    result = await delete(connect, era, Person("accept", {"delete": True}), confirm="elicit")
    assert result["status"] == "deleted"


@pytest.mark.parametrize("era", ERAS)
async def test_token_mode_never_asks(connect: Connect, portal: Portal, era: str) -> None:
    person = Person("accept", {"delete": True})
    result = await delete(connect, era, person, confirm="token")
    assert result["error"] == "CONFIRMATION_REQUIRED"
    assert person.questions == [] and 42 in portal.items[2]


@pytest.mark.parametrize("era", ERAS)
async def test_none_mode_deletes_without_asking(connect: Connect, portal: Portal, era: str) -> None:
    person = Person("decline")
    result = await delete(connect, era, person, confirm="none")
    assert (result["status"], result["confirmation"]) == ("deleted", "none")
    assert person.questions == []


@pytest.mark.parametrize("era", ERAS)
async def test_a_missing_item_is_reported_without_asking(connect: Connect, era: str) -> None:
    person = Person("accept", {"delete": True})
    result = await delete(connect, era, person, {"id": 999}, confirm="auto")
    assert result["error"] == "NOT_FOUND"
    assert person.questions == []


@pytest.mark.parametrize("era", ERAS)
async def test_read_only_refuses_without_asking(connect: Connect, portal: Portal, era: str) -> None:
    person = Person("accept", {"delete": True})
    result = await delete(connect, era, person, confirm="auto", read_only=True)
    assert result["error"] == "READ_ONLY"
    assert person.questions == [] and portal.calls == []


@pytest.mark.parametrize("era", ERAS)
async def test_a_type_outside_the_allowed_list_is_refused_without_asking(
    connect: Connect, portal: Portal, era: str
) -> None:
    person = Person("accept", {"delete": True})
    result = await delete(connect, era, person, {"entityTypeId": 3, "id": 21}, confirm="auto", allowed_entity_types="2")
    assert result["error"] == "ENTITY_TYPE_NOT_ALLOWED"
    assert person.questions == [] and portal.calls == []


@pytest.mark.parametrize("era", ERAS)
async def test_a_preview_tells_the_assistant_the_person_will_be_asked(connect: Connect, era: str) -> None:
    async with connect(client=client_options(era, Person("accept", {"delete": True})), confirm="auto") as client:
        preview = await client.call_tool("crm_item_delete", {"entityTypeId": 2, "id": 42})
    assert preview.structured_content is not None
    assert "the person is asked to confirm" in preview.structured_content["message"]


class ChangingPerson(Person):
    """Accepts, but while they think, someone edits the item on the portal (once)."""

    def __init__(self, portal: Portal) -> None:
        super().__init__("accept", {"delete": True})
        self.portal = portal

    async def __call__(self, context: Any, params: ElicitRequestParams) -> ElicitResult:
        if not self.questions:
            self.portal.touch(2, 42, title="Acme renewal (renegotiated)")
        return await super().__call__(context, params)


async def test_legacy_an_item_changed_while_the_person_was_asked_is_not_deleted(
    connect: Connect, portal: Portal
) -> None:
    result = await delete(connect, "legacy", ChangingPerson(portal), confirm="auto")
    assert (result["status"], result["error"]) == ("error", "ITEM_CHANGED")
    assert 42 in portal.items[2]


async def test_modern_an_item_changed_while_the_person_was_asked_is_asked_about_again(
    connect: Connect, portal: Portal
) -> None:
    person = ChangingPerson(portal)
    result = await delete(connect, "default", person, confirm="auto")
    assert len(set(person.questions)) == 2
    assert "renegotiated" in person.questions[-1]
    assert result["status"] == "deleted"
    assert result["item"]["title"] == "Acme renewal (renegotiated)"
