"""The `crm_item_delete` tool through the SDK's in-memory client: its contract, strict input, and results."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client
from mcp.types import CallToolResult, Tool

from b24_mcp.sandbox.emulator import Fault, Portal
from helpers import Connect, assert_no_secret

pytestmark = pytest.mark.anyio

TOOL = "crm_item_delete"


async def delete_tool(client: Client) -> Tool:
    (tool,) = [tool for tool in (await client.list_tools()).tools if tool.name == TOOL]
    return tool


async def call(connect: Connect, arguments: dict[str, Any], **settings: Any) -> CallToolResult:
    async with connect(**settings) as client:
        return await client.call_tool(TOOL, arguments)


async def test_the_delete_tool_is_listed_with_its_title_and_hints(connect: Connect) -> None:
    async with connect() as client:
        tool = await delete_tool(client)
    assert (tool.name, tool.title) == (TOOL, "Delete CRM item")
    assert tool.annotations is not None
    hints = tool.annotations
    assert (hints.destructive_hint, hints.read_only_hint, hints.idempotent_hint, hints.open_world_hint) == (
        True,
        False,
        True,
        True,
    )


async def test_the_input_schema_is_strict_and_bounded(connect: Connect) -> None:
    async with connect() as client:
        tool = await delete_tool(client)
    schema = tool.input_schema
    assert schema["required"] == ["entityTypeId", "id"]
    assert schema["additionalProperties"] is False
    for name in ("entityTypeId", "id"):
        assert (schema["properties"][name]["type"], schema["properties"][name]["minimum"]) == ("integer", 1)
        assert schema["properties"][name]["maximum"] == 2_147_483_647
    assert schema["properties"]["dryRun"] == schema["properties"]["dryRun"] | {"type": "boolean", "default": True}
    assert "consent" not in schema["properties"]


async def test_the_output_schema_describes_every_outcome(connect: Connect) -> None:
    async with connect() as client:
        tool = await delete_tool(client)
    assert tool.output_schema is not None
    properties = tool.output_schema["properties"]
    assert properties["status"]["enum"] == ["preview", "deleted", "cancelled", "error"]
    for name in (
        "entityTypeId",
        "id",
        "message",
        "item",
        "confirmationToken",
        "confirmationExpiresAt",
        "error",
        "error_description",
        "retryable",
        "httpStatus",
    ):
        assert name in properties


async def test_the_description_guides_the_assistant(connect: Connect) -> None:
    async with connect(confirm="token", read_only=True) as client:
        tool = await delete_tool(client)
    assert tool.description is not None
    for words in ("dryRun", "crm_entity_types", "confirmationToken", "read-only", "recycle bin"):
        assert words in tool.description or words in str(tool.input_schema)


async def test_every_tool_description_hedges_the_recycle_bin_and_promises_no_restore(connect: Connect) -> None:
    async with connect() as client:
        tools = (await client.list_tools()).tools
    for tool in tools:
        assert tool.description is not None
        assert "recycle bin (restorable)" not in tool.description, tool.name
        assert "if the portal keeps one" in tool.description, tool.name
        assert "through this server" in tool.description, tool.name


async def test_a_preview_is_structured_and_said_in_one_line(connect: Connect, portal: Portal) -> None:
    result = await call(connect, {"entityTypeId": 2, "id": 42})
    data = result.structured_content
    assert data is not None and result.is_error is False
    assert (data["status"], data["entityTypeId"], data["id"], data["item"]["title"]) == (
        "preview",
        2,
        42,
        "Acme renewal",
    )
    assert data["confirmationToken"].startswith("b24c1.")
    (text,) = result.content
    assert text.type == "text" and "deal #42 «Acme renewal»" in text.text and "\n" not in text.text
    assert portal.calls_to("crm.item.delete") == []


async def test_an_error_carries_the_portals_code_status_and_retryability(connect: Connect) -> None:
    result = await call(connect, {"entityTypeId": 2, "id": 999})
    assert result.is_error is True
    data = result.structured_content
    assert data is not None
    assert {key: data[key] for key in ("status", "error", "error_description", "retryable", "httpStatus")} == {
        "status": "error",
        "error": "NOT_FOUND",
        "error_description": "Item was not found.",
        "retryable": False,
        "httpStatus": 400,
    }
    assert result.content[0].type == "text" and result.content[0].text.startswith("NOT_FOUND:")


async def test_own_errors_have_a_null_http_status(connect: Connect) -> None:
    result = await call(connect, {"entityTypeId": 2, "id": 42, "dryRun": False})
    assert result.structured_content is not None
    assert (result.structured_content["error"], result.structured_content["httpStatus"]) == (
        "CONFIRMATION_REQUIRED",
        None,
    )


async def test_preview_then_confirmed_delete_through_mcp(connect: Connect, portal: Portal) -> None:
    async with connect() as client:
        preview = await client.call_tool(TOOL, {"entityTypeId": 2, "id": 42})
        assert preview.structured_content is not None
        token = preview.structured_content["confirmationToken"]
        deleted = await client.call_tool(
            TOOL, {"entityTypeId": 2, "id": 42, "dryRun": False, "confirmationToken": token}
        )
    assert deleted.structured_content is not None
    assert (deleted.is_error, deleted.structured_content["status"]) == (False, "deleted")
    assert deleted.structured_content["item"]["title"] == "Acme renewal"
    assert 42 not in portal.items[2]
    assert_no_secret(str(preview) + str(deleted))


BAD_ARGUMENTS = [
    ({"entityTypeId": "2", "id": 42}, "entityTypeId"),
    ({"entityTypeId": 2, "id": "101"}, "id"),
    ({"entityTypeId": 2.0, "id": 42}, "entityTypeId"),
    ({"entityTypeId": 2, "id": 42.5}, "id"),
    ({"entityTypeId": True, "id": 42}, "entityTypeId"),
    ({"entityTypeId": 2, "id": False}, "id"),
    ({"entityTypeId": 2, "id": 42, "dryRun": "false"}, "dryRun"),
    ({"entityTypeId": 2, "id": 42, "dryRun": 0}, "dryRun"),
    ({"entityTypeId": 2, "id": 42, "dryRun": None}, "dryRun"),
    ({"entityTypeId": 2, "id": 42, "dryRun": False, "confirmationToken": 12345}, "confirmationToken"),
    ({"entityTypeId": 2, "id": 42, "dryRun": False, "confirmationToken": ""}, "confirmationToken"),
    ({"entityTypeId": 2, "id": 42, "dryRun": False, "confirmationToken": "x" * 513}, "confirmationToken"),
    ({"entityTypeId": 0, "id": 42}, "entityTypeId"),
    ({"entityTypeId": -2, "id": 42}, "entityTypeId"),
    ({"entityTypeId": 2, "id": 2_147_483_648}, "id"),
    ({"entityTypeId": 2**70, "id": 42}, "entityTypeId"),
    ({"entityTypeId": 2}, "id"),
    ({"id": 42}, "entityTypeId"),
    ({"entityTypeId": 2, "id": 42, "force": True}, "force"),
    ({"entityTypeId": 2, "id": 42, "ID": 43}, "ID"),
    ({"entityTypeId": [2], "id": 42}, "entityTypeId"),
    ({"entityTypeId": {"$gt": 0}, "id": 42}, "entityTypeId"),
    ({"entityTypeId": "[2]", "id": 42}, "entityTypeId"),
]


@pytest.mark.parametrize(("arguments", "named"), BAD_ARGUMENTS)
async def test_bad_input_is_refused_naming_the_argument_and_never_reaches_the_portal(
    connect: Connect, portal: Portal, arguments: dict[str, Any], named: str
) -> None:
    result = await call(connect, arguments, confirm="none")
    assert result.is_error is True
    assert result.structured_content is not None
    assert (result.structured_content["status"], result.structured_content["error"]) == ("error", "INVALID_ARGUMENTS")
    assert named in result.structured_content["message"]
    assert named in result.content[0].text  # type: ignore[union-attr]
    assert portal.calls == []


async def test_an_argument_error_says_what_the_argument_must_be_without_a_link(connect: Connect) -> None:
    result = await call(connect, {"entityTypeId": "2", "id": 42, "force": True})
    assert result.structured_content is not None
    description = result.structured_content["error_description"]
    assert description == (
        "entityTypeId: Input should be a valid integer; force: unknown argument (the arguments are entityTypeId, "
        "id, dryRun, confirmationToken)"
    )
    assert "http" not in result.structured_content["message"]


# crm_entity_types


async def test_the_types_tool_is_read_only(connect: Connect) -> None:
    async with connect() as client:
        (tool,) = [tool for tool in (await client.list_tools()).tools if tool.name == "crm_entity_types"]
    assert tool.annotations is not None
    assert (tool.annotations.read_only_hint, tool.annotations.destructive_hint) == (True, False)
    assert tool.input_schema.get("properties", {}) == {}


async def test_the_types_tool_lists_system_types_and_smart_processes(connect: Connect) -> None:
    async with connect() as client:
        result = await client.call_tool("crm_entity_types", {})
    assert result.structured_content is not None and result.is_error is False
    types = {entry["entityTypeId"]: entry for entry in result.structured_content["types"]}
    assert {1, 2, 3, 4, 7, 31, 1038, 1046} <= set(types)
    assert (types[2]["kind"], types[2]["recycleBin"]) == ("system", True)
    assert (types[1038]["title"], types[1038]["kind"], types[1038]["recycleBin"]) == (
        "Contracts",
        "smart-process",
        False,
    )
    assert types[1046]["recycleBin"] is True


async def test_the_types_tool_is_cached(connect: Connect, portal: Portal) -> None:
    async with connect() as client:
        for _ in range(3):
            await client.call_tool("crm_entity_types", {})
    assert len(portal.calls_to("crm.type.list")) == 1


async def test_the_types_tool_shows_only_allowed_types(connect: Connect) -> None:
    async with connect(allowed_entity_types="2,1038") as client:
        result = await client.call_tool("crm_entity_types", {})
    assert result.structured_content is not None
    assert [entry["entityTypeId"] for entry in result.structured_content["types"]] == [2, 1038]


async def test_without_rights_to_list_smart_processes_system_types_still_come(connect: Connect, portal: Portal) -> None:
    portal.inject(
        "crm.type.list", Fault(status=400, json={"error": "ACCESS_DENIED", "error_description": "Access denied"})
    )
    async with connect() as client:
        result = await client.call_tool("crm_entity_types", {})
    assert result.structured_content is not None and result.is_error is False
    assert result.structured_content["error"] == "ACCESS_DENIED"
    assert [entry["entityTypeId"] for entry in result.structured_content["types"]] == [1, 2, 3, 4, 7, 31]


async def test_the_types_tool_refuses_arguments(connect: Connect, portal: Portal) -> None:
    async with connect() as client:
        result = await client.call_tool("crm_entity_types", {"entityTypeId": 2})
    assert result.is_error is True
    assert portal.calls == []


async def test_an_error_of_our_own_wording_names_its_code_once_in_the_text(connect: Connect, portal: Portal) -> None:
    portal.inject("crm.item.get", Fault(drop=True))
    result = await call(connect, {"entityTypeId": 2, "id": 42}, max_retries=0)
    assert result.structured_content is not None and result.structured_content["error"] == "PORTAL_UNREACHABLE"
    assert result.content[0].type == "text" and result.content[0].text.count("PORTAL_UNREACHABLE") == 1
