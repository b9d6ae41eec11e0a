"""Every outcome of every tool validates against the `outputSchema` the server lists, errors included: what a
strict client (the TypeScript SDK's 1.x) requires, or it replaces our result with a -32602 error.

conftest.py checks every result of the whole suite the same way; these tests name each kind of outcome."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult

from b24_mcp.sandbox.emulator import Fault, Portal
from conformance import assert_conforms, output_validators
from helpers import Connect

pytestmark = pytest.mark.anyio

DELETE, BATCH, TYPES = "crm_item_delete", "crm_item_delete_batch", "crm_entity_types"


def answering(action: str) -> dict[str, Any]:
    """Client options: a person who gives `action` (a yes when accepting) to every question."""

    async def person(context: Any, params: ElicitRequestParams) -> ElicitResult:
        content = {"delete": True} if action == "accept" else None
        return ElicitResult(action=action, content=content)  # type: ignore[arg-type]

    return {"elicitation_callback": person}


async def conforming(client: Client, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    """Call `tool` and assert its result validates against the schema this server lists for it."""
    result = await client.call_tool(tool, arguments)
    assert_conforms(tool, result, (await output_validators(client.session))[tool])
    return result


def outcome(result: CallToolResult) -> tuple[str, str | None, bool]:
    assert result.structured_content is not None
    return result.structured_content["status"], result.structured_content.get("error"), result.is_error


REFUSED_ARGUMENTS = [
    (TYPES, {"entityTypeId": 2}),
    (DELETE, {"entityTypeId": "2", "id": 42}),
    (DELETE, {"entityTypeId": 2}),
    (DELETE, {"entityTypeId": 2, "id": 42, "force": True}),
    (DELETE, {}),
    (BATCH, {"entityTypeId": 2, "ids": "[40, 41]"}),
    (BATCH, {"entityTypeId": 2, "ids": [40, 40]}),
    (BATCH, {"entityTypeId": 2, "filter": {"logic": "OR"}}),
    (BATCH, {"entityTypeId": 2, "ids": [40], "filter": {"stageId": "NEW"}}),
    (BATCH, {"entityTypeId": 2}),
    (BATCH, {"ids": [40]}),
]


@pytest.mark.parametrize(("tool", "arguments"), REFUSED_ARGUMENTS)
async def test_a_refused_argument_conforms_to_the_tools_output_schema(
    connect: Connect, portal: Portal, tool: str, arguments: dict[str, Any]
) -> None:
    async with connect() as client:
        result = await conforming(client, tool, arguments)
    assert outcome(result) == ("error", "INVALID_ARGUMENTS", True)
    assert portal.calls == []


async def test_refusing_both_ids_and_filter_still_says_the_type(connect: Connect) -> None:
    async with connect() as client:
        result = await conforming(client, BATCH, {"entityTypeId": 2, "ids": [40], "filter": {"stageId": "NEW"}})
    assert result.structured_content is not None
    assert result.structured_content["entityTypeId"] == 2


def case(
    name: str,
    tool: str,
    arguments: dict[str, Any],
    status: str,
    error: str | None = None,
    answer: str = "accept",
    **settings: Any,
) -> Any:
    """One outcome: `tool` called with `arguments` under `settings`, the person answering `answer` when asked."""
    expected = (status, error, status == "error")
    return pytest.param(tool, arguments, settings, answer, expected, id=name)


ITEM = {"entityTypeId": 2, "id": 42}
DEALS = {"entityTypeId": 2, "ids": [40, 41, 999]}
OUTCOMES = [
    case("types-listed", TYPES, {}, "listed"),
    case("preview", DELETE, ITEM, "preview"),
    case("not-found", DELETE, {"entityTypeId": 2, "id": 999}, "error", "NOT_FOUND"),
    case("no-token", DELETE, ITEM | {"dryRun": False}, "error", "CONFIRMATION_REQUIRED"),
    case(
        "bad-token", DELETE, ITEM | {"dryRun": False, "confirmationToken": "x"}, "error", "INVALID_CONFIRMATION_TOKEN"
    ),
    case("read-only", DELETE, ITEM | {"dryRun": False}, "error", "READ_ONLY", read_only=True),
    case("type-not-allowed", DELETE, ITEM, "error", "ENTITY_TYPE_NOT_ALLOWED", allowed_entity_types="1"),
    case("declined", DELETE, ITEM | {"dryRun": False}, "cancelled", answer="decline", confirm="auto"),
    case("cancelled", DELETE, ITEM | {"dryRun": False}, "cancelled", answer="cancel", confirm="auto"),
    case("deleted", DELETE, ITEM | {"dryRun": False}, "deleted", confirm="auto"),
    case("batch-preview", BATCH, DEALS, "preview"),
    case("filter-preview", BATCH, {"entityTypeId": 2, "filter": {"@stageId": ["NEW", "WON"]}}, "preview"),
    case("batch-no-token", BATCH, DEALS | {"dryRun": False}, "error", "CONFIRMATION_REQUIRED"),
    case("batch-declined", BATCH, DEALS | {"dryRun": False}, "cancelled", answer="decline", confirm="auto"),
    case("batch-deleted-one-missing", BATCH, DEALS | {"dryRun": False}, "deleted", confirm="auto"),
    case(
        "batch-none-found",
        BATCH,
        {"entityTypeId": 2, "ids": [998, 999], "dryRun": False},
        "error",
        "NOT_FOUND",
        confirm="none",
    ),
    case(
        "filter-deleted",
        BATCH,
        {"entityTypeId": 2, "filter": {"stageId": "WON"}, "dryRun": False},
        "deleted",
        confirm="auto",
    ),
]


@pytest.mark.parametrize(("tool", "arguments", "settings", "answer", "expected"), OUTCOMES)
async def test_each_outcome_conforms_to_the_tools_output_schema(
    connect: Connect,
    tool: str,
    arguments: dict[str, Any],
    settings: dict[str, Any],
    answer: str,
    expected: tuple[str, str | None, bool],
) -> None:
    async with connect(client=answering(answer), **settings) as client:
        result = await conforming(client, tool, arguments)
    assert outcome(result) == expected


PORTAL_ERRORS = [
    Fault(status=401, json={"error": "ACCESS_DENIED", "error_description": "Access denied"}),
    Fault(status=500, json={"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal error"}),
    Fault(status=200, body=b"<html>maintenance</html>", content_type="text/html"),
]


@pytest.mark.parametrize("fault", PORTAL_ERRORS, ids=["refused", "failing", "not-a-rest-answer"])
@pytest.mark.parametrize("tool", [DELETE, BATCH])
async def test_a_portal_error_conforms_to_the_tools_output_schema(
    connect: Connect, portal: Portal, tool: str, fault: Fault
) -> None:
    method, arguments = ("crm.item.get", {"id": 42}) if tool == DELETE else ("batch", {"ids": [42]})
    for _ in range(5):  # every retry meets the fault
        portal.inject(method, fault)
    async with connect() as client:
        result = await conforming(client, tool, {"entityTypeId": 2} | arguments)
    status, error, is_error = outcome(result)
    assert (status, is_error) == ("error", True)
    assert error


async def test_the_types_tool_conforms_when_smart_processes_cannot_be_listed(connect: Connect, portal: Portal) -> None:
    portal.inject("crm.type.list", Fault(status=400, json={"error": "ACCESS_DENIED", "error_description": "Denied"}))
    async with connect() as client:
        result = await conforming(client, TYPES, {})
    assert outcome(result) == ("listed", "ACCESS_DENIED", False)


@pytest.mark.parametrize(
    ("tool", "content"),
    [
        (DELETE, {"status": "error", "message": "m", "error": "NOT_FOUND", "entityTypeId": 2}),
        (DELETE, {"status": "preview", "message": "m"}),
        (BATCH, {"status": "error", "message": "m", "error": "ACCESS_DENIED"}),
        (TYPES, {"status": "listed", "message": "m"}),
    ],
)
async def test_only_refused_arguments_may_leave_out_what_the_call_names(
    connect: Connect, tool: str, content: dict[str, Any]
) -> None:
    async with connect() as client:
        validator = (await output_validators(client.session))[tool]
    assert validator is not None
    assert not validator.is_valid(content)
    assert validator.is_valid(content | {"error": "INVALID_ARGUMENTS"})


async def test_a_partial_clean_up_conforms_to_the_batch_tools_output_schema(connect: Connect, portal: Portal) -> None:
    portal.undeletable[(2, 41)] = ("ACCESS_DENIED", "Access denied")
    async with connect(client=answering("accept"), confirm="auto") as client:
        result = await conforming(client, BATCH, DEALS | {"dryRun": False})
    assert outcome(result) == ("partial", None, False)
