"""crm.item.list names only the fields a type has (fields.py), and reads a boolean as the portal does: the system's
Y/N fields with Y/N, a user field of type boolean as its number column (spec §10)."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.seed import PROJECTS_TYPE_ID
from emulator.emulator_helpers import call

pytestmark = pytest.mark.anyio

VERIFIED = "ufCrm9_Verified"


def unknown_field(name: str) -> dict[str, str]:
    text = f"Invalid filter: field '{name}' is not allowed in filter"
    return {"error": "INVALID_ARG_VALUE", "error_description": text}


async def listed(client: httpx2.AsyncClient, filter_: Any, entity_type_id: int = 2) -> httpx2.Response:
    return await call(client, "crm.item.list", {"entityTypeId": entity_type_id, "filter": filter_})


def ids(response: httpx2.Response) -> list[int]:
    return [item["id"] for item in response.json()["result"]["items"]]


@pytest.mark.parametrize(
    ("filter_", "name"),
    [
        pytest.param({"!stagId": "WON"}, "stagId", id="a typo under a negation"),
        pytest.param({"title": "x", "noSuchField": 1}, "noSuchField", id="beside a known field"),
        pytest.param({"0": {"logic": "OR", "0": {"stageId": "WON"}, "1": {">=amount": 5}}}, "amount", id="nested"),
        pytest.param({"ufCrm_404": "x"}, "ufCrm_404", id="a user field never declared"),
        pytest.param({"accountNumber": "INV-1"}, "accountNumber", id="another type's field"),
    ],
)
async def test_a_filter_naming_a_field_the_type_lacks_is_refused(
    client: httpx2.AsyncClient, filter_: dict[str, Any], name: str
) -> None:
    response = await listed(client, filter_)
    assert response.status_code == 400
    assert response.json() == unknown_field(name)


async def test_an_unknown_field_is_refused_even_when_no_row_could_match(
    client: httpx2.AsyncClient, portal: Portal
) -> None:
    portal.items[2].clear()
    assert (await listed(client, {"stagId": "WON"})).json() == unknown_field("stagId")


async def test_an_unknown_field_inside_a_batch_fails_that_command(client: httpx2.AsyncClient, portal: Portal) -> None:
    cmd = {
        "l": "crm.item.list?entityTypeId=2&filter[!stagId]=WON",
        "d": "crm.item.delete?entityTypeId=2&id=$result[l][items][0][id]",
    }
    result = (await call(client, "batch", {"halt": 1, "cmd": cmd})).json()["result"]
    assert result["result_error"] == {"l": unknown_field("stagId")}
    assert len(portal.items[2]) == 6


@pytest.mark.parametrize(
    "filter_",
    [
        {"STAGE_ID": "WON"},
        {"=stageId": "WON", ">=createdTime": "2026-01-01", "parentId1046": 0, "!%title": "zzz"},
        {"@id": [44], "isManualOpportunity": "N", "closed": "N", "utmSource": ""},
    ],
)
async def test_the_fields_of_the_type_in_either_spelling_are_accepted(
    client: httpx2.AsyncClient, filter_: dict[str, Any]
) -> None:
    response = await listed(client, filter_)
    assert response.status_code == 200, response.json()


async def test_a_smart_process_has_the_smart_process_fields(client: httpx2.AsyncClient) -> None:
    assert (await listed(client, {"previousStageId": "", "mycompanyId": 0}, PROJECTS_TYPE_ID)).status_code == 200
    assert (await listed(client, {"leadId": 1}, PROJECTS_TYPE_ID)).json() == unknown_field("leadId")


async def test_an_order_by_a_field_the_type_lacks_is_refused(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.list", {"entityTypeId": 2, "order": {"amount": "DESC"}})
    assert response.status_code == 400
    assert response.json() == {
        "error": "INVALID_ARG_VALUE",
        "error_description": "Invalid order: field 'amount' is not allowed in order",
    }


# ---------------------------------------------------------------------- booleans


@pytest.fixture
def verified(portal: Portal) -> Portal:
    """Deals 40-42 with the user boolean on, 43-45 with it off."""
    portal.add_user_field(2, VERIFIED, "boolean")
    for item_id in range(40, 46):
        portal.touch(2, item_id, **{VERIFIED: item_id <= 42})
    return portal


@pytest.mark.usefixtures("verified")
async def test_a_user_boolean_is_answered_as_y_or_n(client: httpx2.AsyncClient) -> None:
    items = (await call(client, "crm.item.list", {"entityTypeId": 2, "select": [VERIFIED]})).json()["result"]["items"]
    assert [item[VERIFIED] for item in items] == ["Y", "Y", "Y", "N", "N", "N"]


@pytest.mark.usefixtures("verified")
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("1", [40, 41, 42], id="1 is on"),
        pytest.param("0", [43, 44, 45], id="0 is off"),
        pytest.param("Y", [43, 44, 45], id="Y reads as the number 0: off"),
        pytest.param("N", [43, 44, 45], id="N reads as the number 0: off"),
    ],
)
async def test_a_user_boolean_filter_compares_its_number_column(
    client: httpx2.AsyncClient, value: str, expected: list[int]
) -> None:
    assert ids(await listed(client, {VERIFIED: value})) == expected


@pytest.mark.usefixtures("verified")
async def test_a_user_boolean_by_its_original_name_and_in_a_list(client: httpx2.AsyncClient) -> None:
    assert ids(await listed(client, {"UF_CRM_9_VERIFIED": 1})) == [40, 41, 42]
    assert ids(await listed(client, {f"@{VERIFIED}": ["1", "Y"]})) == [40, 41, 42, 43, 44, 45]


async def test_a_system_y_n_field_compares_y_and_n(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.touch(2, 45, opened="N")
    assert ids(await listed(client, {"opened": "N"})) == [45]
    assert ids(await listed(client, {"opened": "Y"})) == [40, 41, 42, 43, 44]
    assert ids(await listed(client, {"opened": "1"})) == []


def test_an_item_added_with_a_json_boolean_declares_a_user_boolean(portal: Portal) -> None:
    item = portal.add_item(2, {"title": "Flagged", "ufCrm9_Checked": True})
    assert item["ufCrm9_Checked"] == "Y"
    assert portal.types[2].fields.is_user_boolean("UF_CRM_9_CHECKED")


def test_a_user_field_must_be_named_like_one(portal: Portal) -> None:
    with pytest.raises(ValueError, match="ufCrm"):
        portal.add_user_field(2, "verified", "boolean")


def test_every_seeded_item_has_only_fields_its_type_has(portal: Portal) -> None:
    strays = {
        (entity_type_id, key)
        for entity_type_id, items in portal.items.items()
        for item in items.values()
        for key in item
        if not portal.types[entity_type_id].fields.knows(key)
    }
    assert strays == set()


def test_a_json_boolean_on_a_system_y_n_field_is_kept_as_y_or_n(portal: Portal) -> None:
    assert portal.add_item(2, {"title": "Manual", "isManualOpportunity": True, "opened": False})["opened"] == "N"
    assert portal.items[2][46]["isManualOpportunity"] == "Y"
