"""crm.item.list and crm.type.list: filters, order, select, paging (listing.py), over the ASGI app."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.seed import (
    CONTRACTS_TYPE_ID,
)
from emulator.emulator_helpers import HOOK, TYPE_NOT_FOUND, call

pytestmark = pytest.mark.anyio


# ---------------------------------------------------------------------- crm.item.list / crm.type.list


async def test_list_returns_items_and_total(client: httpx2.AsyncClient) -> None:
    body = (await call(client, "crm.item.list", {"entityTypeId": 2})).json()
    assert [item["id"] for item in body["result"]["items"]] == [40, 41, 42, 43, 44, 45]
    assert body["total"] == 6
    assert "next" not in body
    assert list(body) == ["result", "total", "time"]


async def test_list_pages_by_fifty_with_next(client: httpx2.AsyncClient, portal: Portal) -> None:
    for _ in range(120):
        portal.add_item(CONTRACTS_TYPE_ID, {"title": "bulk"})
    first = (await call(client, "crm.item.list", {"entityTypeId": CONTRACTS_TYPE_ID})).json()
    last = (await call(client, "crm.item.list", {"entityTypeId": CONTRACTS_TYPE_ID, "start": 100})).json()
    assert (len(first["result"]["items"]), first["total"], first["next"]) == (50, 123, 50)
    assert (len(last["result"]["items"]), last["total"]) == (23, 123)
    assert "next" not in last


async def test_list_start_minus_one_omits_total_and_next(client: httpx2.AsyncClient) -> None:
    body = (await call(client, "crm.item.list", {"entityTypeId": 2, "start": -1})).json()
    assert len(body["result"]["items"]) == 6
    assert "total" not in body
    assert "next" not in body


@pytest.mark.parametrize(
    ("filter_", "ids"),
    [
        ({"id": 42}, [42]),
        ({"=id": "42"}, [42]),
        ({"@id": [40, 44, 999]}, [40, 44]),
        ({">id": 43}, [44, 45]),
        ({"<id": 41}, [40]),
        ({">=id": 41, "<=id": 42}, [41, 42]),
        ({"!@id": [40, 41, 42, 43]}, [44, 45]),
        ({"=stageId": "WON"}, [44]),
        ({"assignedById": 7}, [41, 43]),
    ],
)
async def test_list_filter(client: httpx2.AsyncClient, filter_: dict[str, Any], ids: list[int]) -> None:
    body = (await call(client, "crm.item.list", {"entityTypeId": 2, "filter": filter_})).json()
    assert [item["id"] for item in body["result"]["items"]] == ids
    assert body["total"] == len(ids)


async def test_list_filter_in_php_bracket_query(client: httpx2.AsyncClient) -> None:
    response = await client.get(HOOK + "crm.item.list?entityTypeId=2&filter[@id][]=41&filter[@id][]=45")
    assert [item["id"] for item in response.json()["result"]["items"]] == [41, 45]


async def test_list_select_always_includes_id(client: httpx2.AsyncClient) -> None:
    body = (await call(client, "crm.item.list", {"entityTypeId": 2, "select": ["title"], "filter": {"id": 42}})).json()
    assert body["result"]["items"] == [{"id": 42, "title": "Acme renewal"}]


async def test_list_select_star_returns_all_fields(client: httpx2.AsyncClient) -> None:
    body = (await call(client, "crm.item.list", {"entityTypeId": 3, "select": ["*"], "filter": {"id": 21}})).json()
    assert "fm" in body["result"]["items"][0]


async def test_list_orders_by_one_field(client: httpx2.AsyncClient) -> None:
    body = (await call(client, "crm.item.list", {"entityTypeId": 2, "order": {"opportunity": "DESC"}})).json()
    amounts = [item["opportunity"] for item in body["result"]["items"]]
    assert amounts == sorted(amounts, reverse=True)


async def test_list_hides_deleted_items(client: httpx2.AsyncClient) -> None:
    await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42})
    body = (await call(client, "crm.item.list", {"entityTypeId": 2})).json()
    assert 42 not in [item["id"] for item in body["result"]["items"]]


async def test_list_of_unknown_type_is_not_found(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.list", {"entityTypeId": 999})
    assert response.json() == TYPE_NOT_FOUND


async def test_type_list_renders_smart_processes_with_y_n_flags(client: httpx2.AsyncClient) -> None:
    body = (await call(client, "crm.type.list")).json()
    assert body["total"] == 2
    contracts, projects = body["result"]["types"]
    assert set(contracts) == {
        "id",
        "title",
        "code",
        "createdBy",
        "entityTypeId",
        "customSectionId",
        "isCategoriesEnabled",
        "isStagesEnabled",
        "isRecyclebinEnabled",
        "isAutomationEnabled",
        "createdTime",
        "updatedTime",
        "updatedBy",
    }
    assert (contracts["entityTypeId"], contracts["title"], contracts["isRecyclebinEnabled"]) == (1038, "Contracts", "N")
    assert (projects["entityTypeId"], projects["title"], projects["isRecyclebinEnabled"]) == (1046, "Projects", "Y")
    assert contracts["id"] != contracts["entityTypeId"]


# ---------------------------------------------------------------------- filters for clean-ups
# Seeded deals: 40 "Northwind pilot" NEW 3000 (user 1), 41 "Globex licences" PREPARATION 12500 (user 7),
# 42 "Acme renewal" EXECUTING 18900.5 (user 1), 43 "Initech support plan" FINAL_INVOICE 4200 (user 7),
# 44 "Umbrella expansion" WON 27000 (user 1), 45 "Stark audit" LOSE 990 (user 1); created 2026-03-05 .. 03-10 at
# 09:30+03:00. User fields (camelCase ufCrm_<id>) are set on 40-42 by the fixture below.

SOURCE_FIELD = "ufCrm_1720019876534"
SCORE_FIELD = "ufCrm_1720019999999"


@pytest.fixture
def deals_with_user_fields(portal: Portal) -> Portal:
    portal.add_user_field(2, SOURCE_FIELD, "string")
    portal.add_user_field(2, SCORE_FIELD, "integer")
    for item_id, source, score in [(40, "legacy-import", 5), (41, "manual", 10), (42, "legacy-import", 15)]:
        portal.items[2][item_id] |= {SOURCE_FIELD: source, SCORE_FIELD: score}
    return portal


async def listed_ids(client: httpx2.AsyncClient, params: dict[str, Any]) -> list[int]:
    body = (await call(client, "crm.item.list", {"entityTypeId": 2, **params})).json()
    return [item["id"] for item in body["result"]["items"]]


@pytest.mark.usefixtures("deals_with_user_fields")
@pytest.mark.parametrize(
    ("filter_", "ids"),
    [
        pytest.param({">=createdTime": "2026-03-09T09:30:00+03:00"}, [44, 45], id=">= on a date-time"),
        pytest.param({">createdTime": "2026-03-09T09:30:00+03:00"}, [45], id="> on a date-time"),
        pytest.param({"<=createdTime": "2026-03-06"}, [40], id="<= on a date alone, midnight portal time"),
        pytest.param({"<createdTime": "2026-03-06T06:30:00Z"}, [40], id="< on a date-time in another offset"),
        pytest.param({">id": 43}, [44, 45], id="> on id"),
        pytest.param({"<=opportunity": "3000"}, [40, 45], id="<= on a number given as text"),
        pytest.param({"@stageId": ["WON", "LOSE"]}, [44, 45], id="@ with a list"),
        pytest.param({"@id": "40, 41"}, [40, 41], id="@ with a comma-separated string"),
        pytest.param({"!@assignedById": [1]}, [41, 43], id="!@ with a list"),
        pytest.param({"%title": "an"}, [43, 44], id="% contains"),
        pytest.param({"%title": "ACME"}, [42], id="% ignores case"),
        pytest.param({"=%title": "%pilot"}, [40], id="=% LIKE ending with"),
        pytest.param({"=%title": "acme%"}, [42], id="=% LIKE starting with, any case"),
        pytest.param({"%=title": "G_obex%"}, [41], id="%= LIKE with the one-character wildcard"),
        pytest.param({"!%title": "e"}, [40, 45], id="!% does not contain"),
        pytest.param({"!=%title": "%on"}, [40, 41, 42, 43, 45], id="!=% NOT LIKE"),
        pytest.param({"!%=title": "%a%"}, [40, 41], id="!%= NOT LIKE"),
        pytest.param({"=stageId": "WON"}, [44], id="= equal"),
        pytest.param({"=stageId": "won"}, [44], id="= on text ignores case"),
        pytest.param({"!=stageId": "WON"}, [40, 41, 42, 43, 45], id="!= not equal"),
        pytest.param({"!stageId": ["WON", "LOSE"]}, [40, 41, 42, 43], id="! with a list is NOT IN"),
        pytest.param({"assignedById": "7"}, [41, 43], id="plain key is equality"),
        pytest.param({"id": [40, 41]}, [40, 41], id="plain key with a list is IN"),
        pytest.param({"ASSIGNED_BY_ID": 7}, [41, 43], id="UPPER_SNAKE field name"),
        pytest.param({SOURCE_FIELD: "legacy-import"}, [40, 42], id="user field equality"),
        pytest.param({"UF_CRM_1720019876534": "manual"}, [41], id="user field by its original name"),
        pytest.param({f">{SCORE_FIELD}": 5}, [41, 42], id="> on a user field"),
        pytest.param({f"!@{SOURCE_FIELD}": ["manual"]}, [40, 42], id="!@ leaves out items without the field"),
        pytest.param({">=id": 41, "<=id": 43, "!stageId": "EXECUTING"}, [41, 43], id="conditions join with AND"),
        pytest.param({"logic": "OR", "0": {"=stageId": "WON"}, "1": {"<opportunity": 1000}}, [44, 45], id="logic OR"),
        pytest.param(
            {"0": {"logic": "OR", "0": {"=stageId": "WON"}, "1": {"=stageId": "LOSE"}}, "assignedById": 1},
            [44, 45],
            id="nested OR group inside AND",
        ),
    ],
)
async def test_list_filter_operator(client: httpx2.AsyncClient, filter_: dict[str, Any], ids: list[int]) -> None:
    assert await listed_ids(client, {"filter": filter_}) == ids


async def test_list_filter_and_order_in_a_php_query_string(client: httpx2.AsyncClient) -> None:
    # "=" inside a key must be encoded (%3D): parse_str splits a pair at its first "=".
    query = "entityTypeId=2&filter[%3E%3DcreatedTime]=2026-03-07&filter[!stageId]=WON&order[opportunity]=DESC"
    response = await client.get(HOOK + "crm.item.list?" + query)
    assert [item["id"] for item in response.json()["result"]["items"]] == [42, 43, 45]


async def test_list_filtered_total_counts_only_matching_items(client: httpx2.AsyncClient) -> None:
    body = (await call(client, "crm.item.list", {"entityTypeId": 2, "filter": {"assignedById": 1}})).json()
    assert body["total"] == 4


async def test_list_filter_that_is_not_an_array_is_error_100(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.list", {"entityTypeId": 2, "filter": "id=42"})
    assert response.status_code == 400
    assert response.json() == {
        "error": 100,
        "error_description": "Invalid value {id=42} to match with parameter {filter}. Should be value of type array.",
    }


# ---------------------------------------------------------------------- order


async def test_list_orders_by_id_ascending(client: httpx2.AsyncClient) -> None:
    assert await listed_ids(client, {"order": {"id": "ASC"}}) == [40, 41, 42, 43, 44, 45]


async def test_list_orders_by_id_descending(client: httpx2.AsyncClient) -> None:
    assert await listed_ids(client, {"order": {"id": "desc"}}) == [45, 44, 43, 42, 41, 40]


async def test_list_orders_by_several_fields_in_priority_order(client: httpx2.AsyncClient) -> None:
    assert await listed_ids(client, {"order": {"assignedById": "DESC", "createdTime": "DESC"}}) == [
        43,
        41,
        45,
        44,
        42,
        40,
    ]


async def test_list_order_with_another_direction_is_invalid_arg_value(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.list", {"entityTypeId": 2, "order": {"id": "UP"}})
    assert response.status_code == 400
    assert response.json() == {
        "error": "INVALID_ARG_VALUE",
        "error_description": "Invalid order: allowed sort directions are ASC, DESC. But got 'UP' for field 'id'",
    }


# ---------------------------------------------------------------------- select


async def listed(client: httpx2.AsyncClient, select: Any, entity_type_id: int = 2) -> dict[str, Any]:
    params = {"entityTypeId": entity_type_id, "select": select, "filter": {"@id": [40, 21]}}
    items = (await call(client, "crm.item.list", params)).json()["result"]["items"]
    assert len(items) == 1
    item: dict[str, Any] = items[0]
    return item


@pytest.mark.usefixtures("deals_with_user_fields")
@pytest.mark.parametrize("select", [["*"], ["*", "uf_*"], ["uf_*", "*"], ["*", "UF_*"]])
async def test_list_select_with_star_returns_every_field_user_fields_included(
    client: httpx2.AsyncClient, portal: Portal, select: list[str]
) -> None:
    assert await listed(client, select) == portal.items[2][40]


async def test_list_without_select_returns_every_field(client: httpx2.AsyncClient, portal: Portal) -> None:
    item = (await call(client, "crm.item.list", {"entityTypeId": 3, "filter": {"id": 21}})).json()["result"]
    assert item["items"] == [portal.items[3][21]]


async def test_list_select_star_includes_multifields(client: httpx2.AsyncClient) -> None:
    assert "fm" in await listed(client, ["*"], entity_type_id=3)


@pytest.mark.usefixtures("deals_with_user_fields")
@pytest.mark.parametrize("spelling", ["uf_*", "UF_*"])
async def test_list_select_uf_star_adds_every_user_field(client: httpx2.AsyncClient, spelling: str) -> None:
    item = await listed(client, ["title", spelling])
    assert item == {"id": 40, "title": "Northwind pilot", SOURCE_FIELD: "legacy-import", SCORE_FIELD: 5}


@pytest.mark.usefixtures("deals_with_user_fields")
async def test_list_select_names_one_user_field(client: httpx2.AsyncClient) -> None:
    assert await listed(client, ["UF_CRM_1720019876534"]) == {"id": 40, SOURCE_FIELD: "legacy-import"}


async def test_list_select_accepts_upper_snake_names_and_ignores_unknown_ones(client: httpx2.AsyncClient) -> None:
    assert await listed(client, ["ASSIGNED_BY_ID", "noSuchField"]) == {"id": 40, "assignedById": 1}


async def test_list_select_without_star_leaves_out_multifields(client: httpx2.AsyncClient) -> None:
    assert await listed(client, ["name", "fm"], entity_type_id=3) == {"id": 21, "name": "Anna"}


# ---------------------------------------------------------------------- paging


@pytest.fixture
def contracts_123(portal: Portal) -> Portal:
    for _ in range(120):
        portal.add_item(CONTRACTS_TYPE_ID, {"title": "bulk"})
    return portal


@pytest.mark.usefixtures("contracts_123")
async def test_list_start_minus_one_gives_the_first_fifty_without_counting(client: httpx2.AsyncClient) -> None:
    body = (await call(client, "crm.item.list", {"entityTypeId": CONTRACTS_TYPE_ID, "start": -1})).json()
    assert len(body["result"]["items"]) == 50
    assert list(body) == ["result", "time"]


@pytest.mark.usefixtures("contracts_123")
async def test_list_start_selects_the_page_and_next_points_to_the_following_one(client: httpx2.AsyncClient) -> None:
    body = (await call(client, "crm.item.list", {"entityTypeId": CONTRACTS_TYPE_ID, "start": 50})).json()
    assert [item["id"] for item in body["result"]["items"]] == list(range(51, 101))
    assert (body["total"], body["next"]) == (123, 100)


@pytest.mark.usefixtures("contracts_123")
async def test_following_next_visits_every_item_once(client: httpx2.AsyncClient) -> None:
    seen: list[int] = []
    start: int | None = 0
    while start is not None:
        params = {"entityTypeId": CONTRACTS_TYPE_ID, "start": start, "select": ["id"]}
        body = (await call(client, "crm.item.list", params)).json()
        seen += [item["id"] for item in body["result"]["items"]]
        start = body.get("next")
    assert seen == list(range(1, 124))
