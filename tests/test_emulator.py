"""Behaviour of the Bitrix24 portal emulator, exercised over HTTP through its ASGI app."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import anyio
import httpx2
import pytest

from b24_mcp.sandbox.emulator import Call, Fault, Portal, Webhook, create_app, parse_php_query
from b24_mcp.sandbox.seed import (
    CONTRACTS_TYPE_ID,
    EXTRANET_USER_ID,
    EXTRANET_WEBHOOK_CODE,
    NOSCOPE_USER_ID,
    NOSCOPE_WEBHOOK_CODE,
    PROJECTS_TYPE_ID,
    READONLY_USER_ID,
    READONLY_WEBHOOK_CODE,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_HOST,
    SANDBOX_USER_ID,
    SANDBOX_WEBHOOK_CODE,
    seeded_portal,
)

BASE_URL = f"https://{SANDBOX_HOST}"
HOOK = f"/rest/{SANDBOX_USER_ID}/{SANDBOX_WEBHOOK_CODE}/"
READONLY_HOOK = f"/rest/{READONLY_USER_ID}/{READONLY_WEBHOOK_CODE}/"
EXTRANET_HOOK = f"/rest/{EXTRANET_USER_ID}/{EXTRANET_WEBHOOK_CODE}/"
NOSCOPE_HOOK = f"/rest/{NOSCOPE_USER_ID}/{NOSCOPE_WEBHOOK_CODE}/"

ITEM_NOT_FOUND = {"error": "NOT_FOUND", "error_description": "Item was not found."}
TYPE_NOT_FOUND = {"error": "NOT_FOUND", "error_description": "Smart Process Automation was not found"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def portal() -> Portal:
    return seeded_portal(rate_limit=None)


def make_client(portal: Portal, base_url: str = BASE_URL) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(create_app(portal)), base_url=base_url)


@pytest.fixture
async def client(portal: Portal) -> AsyncIterator[httpx2.AsyncClient]:
    async with make_client(portal) as c:
        yield c


async def call(
    client: httpx2.AsyncClient, method: str, params: dict[str, Any] | None = None, hook: str = HOOK
) -> httpx2.Response:
    return await client.post(hook + method, json=params or {})


pytestmark = pytest.mark.anyio


# ---------------------------------------------------------------------- success envelope


async def test_delete_answers_empty_array_result_with_time(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42})
    assert response.status_code == 200
    body = response.json()
    assert body["result"] == []
    assert list(body) == ["result", "time"]


async def test_time_block_has_floats_iso_dates_and_operating(client: httpx2.AsyncClient) -> None:
    before = time.time()
    timing = (await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42})).json()["time"]
    assert list(timing) == [
        "start",
        "finish",
        "duration",
        "processing",
        "date_start",
        "date_finish",
        "operating_reset_at",
        "operating",
    ]
    assert isinstance(timing["start"], float)
    assert before - 1 <= timing["start"] <= timing["finish"]
    assert timing["duration"] == pytest.approx(timing["finish"] - timing["start"])
    assert datetime.fromisoformat(timing["date_start"]).utcoffset() is not None
    assert timing["date_start"].endswith("+03:00")
    assert timing["operating_reset_at"] == int(timing["start"]) + 600
    assert timing["operating"] == 0


async def test_responses_carry_json_and_cors_headers(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42})
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["access-control-allow-headers"] == "origin, content-type, accept"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_error_body_has_no_time(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.get", {"entityTypeId": 2, "id": 999})
    assert response.status_code == 400
    assert response.json() == ITEM_NOT_FOUND
    assert response.headers["content-type"] == "application/json; charset=utf-8"


async def test_get_returns_item_in_camel_case(client: httpx2.AsyncClient) -> None:
    item = (await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42})).json()["result"]["item"]
    assert item["id"] == 42
    assert item["title"] == "Acme renewal"
    assert item["currencyId"] == "USD"
    assert item["entityTypeId"] == 2
    for key in ("createdTime", "updatedTime", "createdBy", "updatedBy", "assignedById", "stageId", "opportunity"):
        assert key in item
    assert item["createdTime"].endswith("+03:00")


async def test_contact_has_names_and_multifields_but_no_title(client: httpx2.AsyncClient) -> None:
    item = (await call(client, "crm.item.get", {"entityTypeId": 3, "id": 21})).json()["result"]["item"]
    assert "title" not in item
    assert item["name"]
    assert item["lastName"]
    assert {value["typeId"] for value in item["fm"]} == {"PHONE", "EMAIL"}


# ---------------------------------------------------------------------- crm.item.delete semantics


async def test_delete_removes_the_item(client: httpx2.AsyncClient, portal: Portal) -> None:
    await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42})
    assert 42 not in portal.items[2]
    response = await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42})
    assert response.json() == ITEM_NOT_FOUND


async def test_delete_twice_gives_not_found(client: httpx2.AsyncClient) -> None:
    await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42})
    response = await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42})
    assert response.status_code == 400
    assert response.json() == ITEM_NOT_FOUND


async def test_deleting_a_deal_moves_it_to_the_recycle_bin(client: httpx2.AsyncClient, portal: Portal) -> None:
    await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42})
    assert [(entry["entityTypeId"], entry["id"], entry["title"]) for entry in portal.recycle_bin] == [
        (2, 42, "Acme renewal")
    ]


async def test_deleting_from_a_type_without_bin_erases_outright(client: httpx2.AsyncClient, portal: Portal) -> None:
    response = await call(client, "crm.item.delete", {"entityTypeId": CONTRACTS_TYPE_ID, "id": 1})
    assert response.json()["result"] == []
    assert 1 not in portal.items[CONTRACTS_TYPE_ID]
    assert portal.recycle_bin == []


async def test_deleting_from_a_smart_process_with_bin_keeps_it_there(
    client: httpx2.AsyncClient, portal: Portal
) -> None:
    await call(client, "crm.item.delete", {"entityTypeId": PROJECTS_TYPE_ID, "id": 2})
    assert [(entry["entityTypeId"], entry["id"]) for entry in portal.recycle_bin] == [(PROJECTS_TYPE_ID, 2)]


async def test_item_in_recycle_bin_is_not_found(client: httpx2.AsyncClient) -> None:
    await call(client, "crm.item.delete", {"entityTypeId": PROJECTS_TYPE_ID, "id": 2})
    response = await call(client, "crm.item.get", {"entityTypeId": PROJECTS_TYPE_ID, "id": 2})
    assert response.json() == ITEM_NOT_FOUND


async def test_missing_entity_type_id_is_error_100_as_a_json_number(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.delete", {"id": 42})
    assert response.status_code == 400
    assert '"error":100,' in response.text
    body = response.json()
    assert type(body["error"]) is int
    assert body == {"error": 100, "error_description": "Could not find value for parameter {entityTypeId}"}


async def test_missing_id_is_error_100(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.delete", {"entityTypeId": 2})
    assert response.status_code == 400
    assert response.json() == {"error": 100, "error_description": "Could not find value for parameter {id}"}


async def test_both_missing_reports_entity_type_id_first(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.delete", {})
    assert response.json()["error_description"] == "Could not find value for parameter {entityTypeId}"


async def test_upper_case_param_names_do_not_bind(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.delete", {"ENTITY_TYPE_ID": 2, "ID": 42})
    assert response.json()["error_description"] == "Could not find value for parameter {entityTypeId}"


@pytest.mark.parametrize(
    ("value", "shown"),
    [("abc", "abc"), ("", ""), (None, ""), (False, ""), (True, "1"), ([1, 2], "Array"), ({"a": 1}, "Array")],
)
async def test_non_numeric_id_is_error_100_with_php_rendering(
    client: httpx2.AsyncClient, value: Any, shown: str
) -> None:
    response = await call(client, "crm.item.delete", {"entityTypeId": 2, "id": value})
    assert response.status_code == 400
    assert response.json() == {
        "error": 100,
        "error_description": f"Invalid value {{{shown}}} to match with parameter {{id}}. Should be value of type int.",
    }


async def test_non_numeric_entity_type_id_is_error_100(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.delete", {"entityTypeId": "deal", "id": "abc"})
    assert response.json() == {
        "error": 100,
        "error_description": (
            "Invalid value {deal} to match with parameter {entityTypeId}. Should be value of type int."
        ),
    }


@pytest.mark.parametrize("value", [42, "42", " 42", "42 ", "42.0", 42.9, "4.2e1", "+42"])
async def test_php_numeric_values_bind_as_int(client: httpx2.AsyncClient, value: Any) -> None:
    response = await call(client, "crm.item.get", {"entityTypeId": "2", "id": value})
    assert response.status_code == 200
    assert response.json()["result"]["item"]["id"] == 42


async def test_exponent_string_binds_to_its_integer_value(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.add_item(2, {"id": 1000, "title": "Thousand"})
    response = await call(client, "crm.item.get", {"entityTypeId": 2, "id": "1e3"})
    assert response.json()["result"]["item"]["title"] == "Thousand"


async def test_binding_happens_before_the_type_lookup(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.delete", {"entityTypeId": 999999, "id": "abc"})
    assert response.json()["error"] == 100


@pytest.mark.parametrize("entity_type_id", [999999, 0, -2, 5, 6, 8, 14])
async def test_unknown_entity_type_is_smart_process_not_found(client: httpx2.AsyncClient, entity_type_id: int) -> None:
    response = await call(client, "crm.item.delete", {"entityTypeId": entity_type_id, "id": 1})
    assert response.status_code == 400
    assert response.json() == TYPE_NOT_FOUND


@pytest.mark.parametrize("item_id", [0, -5, 999])
async def test_zero_negative_or_absent_id_is_item_not_found(client: httpx2.AsyncClient, item_id: int) -> None:
    response = await call(client, "crm.item.delete", {"entityTypeId": 2, "id": item_id})
    assert response.status_code == 400
    assert response.json() == ITEM_NOT_FOUND


async def test_item_of_another_type_is_not_found(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 11})
    assert response.json() == ITEM_NOT_FOUND


async def test_delete_without_permission_is_access_denied_and_keeps_item(
    client: httpx2.AsyncClient, portal: Portal
) -> None:
    response = await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42}, hook=READONLY_HOOK)
    assert response.status_code == 400
    assert response.json() == {"error": "ACCESS_DENIED", "error_description": "Access denied"}
    assert 42 in portal.items[2]


async def test_missing_item_is_not_found_even_without_delete_permission(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 999}, hook=READONLY_HOOK)
    assert response.json() == ITEM_NOT_FOUND


async def test_read_only_webhook_can_get(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42}, hook=READONLY_HOOK)
    assert response.status_code == 200


async def test_get_without_read_permission_is_access_denied_with_view_text(
    client: httpx2.AsyncClient, portal: Portal
) -> None:
    portal.add_webhook(Webhook(5, "blind", can_read=False))
    response = await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42}, hook="/rest/5/blind/")
    assert response.status_code == 400
    assert response.json() == {
        "error": "ACCESS_DENIED",
        "error_description": "You don't have permission to view this item.",
    }


async def test_extranet_user_gets_403_allowed_only_intranet_user(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42}, hook=EXTRANET_HOOK)
    assert response.status_code == 403
    assert response.json() == {
        "error": "allowed_only_intranet_user",
        "error_description": "This action is available only to Intranet users",
    }


async def test_intranet_prefilter_runs_before_binding(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.delete", {}, hook=EXTRANET_HOOK)
    assert response.json()["error"] == "allowed_only_intranet_user"


async def test_russian_portal_localizes_not_found_texts() -> None:
    portal = seeded_portal(language="ru", rate_limit=None)
    async with make_client(portal) as client:
        missing_item = await call(client, "crm.item.get", {"entityTypeId": 2, "id": 999})
        missing_type = await call(client, "crm.item.get", {"entityTypeId": 999, "id": 1})
    assert missing_item.json() == {"error": "NOT_FOUND", "error_description": "Элемент не найден"}
    assert missing_type.json() == {"error": "NOT_FOUND", "error_description": "Смарт-процесс не найден"}


# ---------------------------------------------------------------------- request formats


async def test_form_encoded_body_binds(client: httpx2.AsyncClient) -> None:
    response = await client.post(HOOK + "crm.item.get", data={"entityTypeId": "2", "id": "42"})
    assert response.json()["result"]["item"]["id"] == 42


async def test_get_with_query_string_works(client: httpx2.AsyncClient) -> None:
    response = await client.get(HOOK + "crm.item.get", params={"entityTypeId": 2, "id": 42})
    assert response.json()["result"]["item"]["id"] == 42


async def test_body_overrides_the_query_string(client: httpx2.AsyncClient) -> None:
    response = await client.post(HOOK + "crm.item.get?entityTypeId=2&id=999", json={"id": 42})
    assert response.json()["result"]["item"]["id"] == 42


async def test_malformed_json_body_is_silently_empty(client: httpx2.AsyncClient) -> None:
    response = await client.post(
        HOOK + "crm.item.delete", content=b'{"entityTypeId": 2, "id":', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {"error": 100, "error_description": "Could not find value for parameter {entityTypeId}"}


async def test_method_name_is_case_insensitive_and_may_end_in_json(client: httpx2.AsyncClient, portal: Portal) -> None:
    response = await call(client, "CRM.Item.Get.json", {"entityTypeId": 2, "id": 42})
    assert response.status_code == 200
    assert portal.calls[-1].method == "crm.item.get"


def test_php_query_parser_builds_nested_arrays() -> None:
    parsed = parse_php_query("filter%5B%40id%5D%5B%5D=1&filter[@id][]=2&filter[%3DstageId]=NEW&select[]=id&a=x+y")
    assert parsed == {"filter": {"@id": ["1", "2"], "=stageId": "NEW"}, "select": ["id"], "a": "x y"}


def test_php_query_parser_keeps_unclosed_bracket_as_underscore() -> None:
    assert parse_php_query("a[b=1&c[d]=2") == {"a_b": "1", "c": {"d": "2"}}


# ---------------------------------------------------------------------- auth, scope, routing


async def test_unknown_method_is_404_method_not_found(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.nuke", {})
    assert response.status_code == 404
    assert response.json() == {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}


@pytest.mark.parametrize("hook", [f"/rest/{SANDBOX_USER_ID}/wrong-code/", f"/rest/77/{SANDBOX_WEBHOOK_CODE}/"])
async def test_unknown_webhook_is_401_invalid_credentials(client: httpx2.AsyncClient, hook: str) -> None:
    response = await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42}, hook=hook)
    assert response.status_code == 401
    assert response.json() == {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}


async def test_webhook_path_without_user_id_is_method_not_found(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42}, hook=f"/rest/{SANDBOX_WEBHOOK_CODE}/")
    assert response.status_code == 404
    assert response.json()["error"] == "ERROR_METHOD_NOT_FOUND"


async def test_plain_http_webhook_gets_https_required(portal: Portal) -> None:
    async with make_client(portal, base_url=f"http://{SANDBOX_HOST}") as client:
        response = await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42})
    assert response.status_code == 401
    assert response.json() == {"error": "INVALID_REQUEST", "error_description": "Https required."}


async def test_plain_http_is_served_when_https_is_not_required() -> None:
    portal = seeded_portal(require_https=False, rate_limit=None)
    async with make_client(portal, base_url=f"http://{SANDBOX_HOST}") as client:
        response = await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42})
    assert response.status_code == 200


async def test_oauth_route_without_token_is_no_auth_found(client: httpx2.AsyncClient) -> None:
    response = await client.post("/rest/crm.item.delete", json={"entityTypeId": 2, "id": 42})
    assert response.status_code == 401
    assert response.json() == {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({"auth": "tok"}, {}),
        ({"access_token": "tok"}, {}),
        ({}, {"authorization": "Bearer tok"}),
    ],
)
async def test_oauth_route_with_any_token_is_invalid_token(
    client: httpx2.AsyncClient, portal: Portal, body: dict[str, Any], headers: dict[str, str]
) -> None:
    response = await client.post("/rest/crm.item.delete", json={"entityTypeId": 2, "id": 42, **body}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_token", "error_description": "Unable to get application by token"}
    assert 42 in portal.items[2]


async def test_webhook_without_crm_scope_gets_insufficient_scope(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42}, hook=NOSCOPE_HOOK)
    assert response.status_code == 401
    assert response.json() == {
        "error": "insufficient_scope",
        "error_description": "The request requires higher privileges than provided by the webhook token",
    }


async def test_scope_method_lists_the_webhook_scopes_without_crm(client: httpx2.AsyncClient) -> None:
    assert (await call(client, "scope", hook=HOOK)).json()["result"] == ["crm"]
    assert (await call(client, "scope", hook=NOSCOPE_HOOK)).json()["result"] == ["user"]


async def test_profile_describes_the_webhook_user(client: httpx2.AsyncClient) -> None:
    result = (await call(client, "profile")).json()["result"]
    assert result["ID"] == "1"
    assert result["ADMIN"] is True
    assert result["NAME"]
    assert result["LAST_NAME"]


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


# ---------------------------------------------------------------------- batch


async def test_batch_with_map_cmd_splits_results_and_errors(client: httpx2.AsyncClient) -> None:
    response = await call(
        client,
        "batch",
        {
            "halt": 0,
            "cmd": {
                "del_1": "crm.item.delete?entityTypeId=2&id=42",
                "del_2": "crm.item.delete?entityTypeId=2&id=999999",
            },
        },
    )
    assert response.status_code == 200
    result = response.json()["result"]
    assert list(result) == ["result", "result_error", "result_total", "result_next", "result_time"]
    assert result["result"] == {"del_1": []}
    assert result["result_error"] == {"del_2": ITEM_NOT_FOUND}
    assert result["result_total"] == []
    assert result["result_next"] == []
    assert list(result["result_time"]) == ["del_1"]
    assert "operating" in result["result_time"]["del_1"]


async def test_batch_with_list_cmd_answers_lists(client: httpx2.AsyncClient) -> None:
    result = (
        await call(
            client,
            "batch",
            {"cmd": ["crm.item.get?entityTypeId=2&id=42", "crm.item.get?entityTypeId=2&id=40"]},
        )
    ).json()["result"]
    assert [entry["item"]["id"] for entry in result["result"]] == [42, 40]
    assert result["result_error"] == []
    assert isinstance(result["result_time"], list)


async def test_batch_list_cmd_with_gaps_answers_objects(client: httpx2.AsyncClient) -> None:
    result = (
        await call(
            client,
            "batch",
            {"cmd": ["crm.item.get?entityTypeId=2&id=42", "crm.item.get?entityTypeId=2&id=0"]},
        )
    ).json()["result"]
    assert isinstance(result["result"], list)
    assert result["result_error"] == {"1": ITEM_NOT_FOUND}


async def test_batch_with_empty_cmd_answers_empty_arrays(client: httpx2.AsyncClient) -> None:
    result = (await call(client, "batch", {"cmd": {}})).json()["result"]
    assert result == {"result": [], "result_error": [], "result_total": [], "result_next": [], "result_time": []}


@pytest.mark.parametrize(("halt", "stops"), [(1, True), (True, True), ("false", True), ("0", False), ("", False)])
async def test_batch_halt_uses_php_bool(client: httpx2.AsyncClient, portal: Portal, halt: Any, stops: bool) -> None:
    cmd = {"a": "crm.item.delete?entityTypeId=2&id=999", "b": "crm.item.delete?entityTypeId=2&id=42"}
    result = (await call(client, "batch", {"halt": halt, "cmd": cmd})).json()["result"]
    assert list(result["result_error"]) == ["a"]
    assert ("b" in result["result"]) is not stops
    assert (42 in portal.items[2]) is stops


async def test_batch_executes_at_most_fifty_commands(client: httpx2.AsyncClient, portal: Portal) -> None:
    for item_id in range(100, 151):
        portal.add_item(CONTRACTS_TYPE_ID, {"id": item_id})
    cmd = {f"c{i}": f"crm.item.delete?entityTypeId={CONTRACTS_TYPE_ID}&id={i}" for i in range(100, 151)}
    result = (await call(client, "batch", {"halt": 1, "cmd": cmd})).json()["result"]
    assert len(result["result"]) == 50
    assert result["result_error"] == {
        "c150": {"error": "ERROR_BATCH_LENGTH_EXCEEDED", "error_description": "Max batch length exceeded"}
    }
    assert 150 in portal.items[CONTRACTS_TYPE_ID]


async def test_batch_refuses_nested_batch(client: httpx2.AsyncClient) -> None:
    result = (await call(client, "batch", {"cmd": {"inner": "batch?cmd[x]=scope"}})).json()["result"]
    assert result["result_error"] == {
        "inner": {
            "error": "ERROR_BATCH_METHOD_NOT_ALLOWED",
            "error_description": "Method is not allowed for batch usage",
        }
    }


async def test_batch_checks_scope_per_command_with_empty_description(client: httpx2.AsyncClient) -> None:
    response = await call(
        client, "batch", {"cmd": {"a": "crm.item.get?entityTypeId=2&id=42", "b": "scope"}}, hook=NOSCOPE_HOOK
    )
    assert response.status_code == 200
    result = response.json()["result"]
    assert result["result_error"] == {"a": {"error": "insufficient_scope", "error_description": ""}}
    assert result["result"] == {"b": ["user"]}


async def test_batch_substitutes_earlier_results(client: httpx2.AsyncClient, portal: Portal) -> None:
    cmd = {
        "find": "crm.item.list?entityTypeId=2&filter[title]=Acme renewal&select[]=id",
        "drop": "crm.item.delete?entityTypeId=2&id=$result[find][items][0][id]",
    }
    result = (await call(client, "batch", {"cmd": cmd})).json()["result"]
    assert result["result"]["drop"] == []
    assert 42 not in portal.items[2]


async def test_batch_keys_are_case_insensitive(client: httpx2.AsyncClient) -> None:
    result = (await call(client, "batch", {"HALT": 0, "CMD": {"a": "crm.item.get?entityTypeId=2&id=42"}})).json()
    assert result["result"]["result"]["a"]["item"]["id"] == 42


async def test_batch_moves_list_total_and_next_into_containers(client: httpx2.AsyncClient, portal: Portal) -> None:
    for _ in range(60):
        portal.add_item(CONTRACTS_TYPE_ID, {"title": "bulk"})
    result = (
        await call(client, "batch", {"cmd": {"l": f"crm.item.list?entityTypeId={CONTRACTS_TYPE_ID}&select[]=id"}})
    ).json()["result"]
    assert result["result_total"] == {"l": 63}
    assert result["result_next"] == {"l": 50}
    assert len(result["result"]["l"]["items"]) == 50


async def test_batch_in_form_encoded_body(client: httpx2.AsyncClient) -> None:
    response = await client.post(
        HOOK + "batch", data={"halt": "0", "cmd[a]": "crm.item.get?entityTypeId=2&id=42", "cmd[b]": "profile"}
    )
    result = response.json()["result"]
    assert result["result"]["a"]["item"]["id"] == 42
    assert result["result"]["b"]["ID"] == "1"


async def test_batch_logs_sub_commands_before_the_outer_call(client: httpx2.AsyncClient, portal: Portal) -> None:
    await call(client, "batch", {"cmd": {"a": "crm.item.delete?entityTypeId=2&id=42", "b": "crm.item.get?id=1"}})
    assert [(c.method, c.status, c.error, c.via_batch) for c in portal.calls] == [
        ("crm.item.delete", 200, None, True),
        ("crm.item.get", 400, "100", True),
        ("batch", 200, None, False),
    ]
    assert portal.calls[0].params == {"entityTypeId": "2", "id": "42"}


async def test_batch_extranet_command_fails_inside_result_error(client: httpx2.AsyncClient) -> None:
    result = (
        await call(client, "batch", {"cmd": {"a": "crm.item.get?entityTypeId=2&id=42"}}, hook=EXTRANET_HOOK)
    ).json()["result"]
    assert result["result_error"]["a"]["error"] == "allowed_only_intranet_user"


# ---------------------------------------------------------------------- rate limit


async def test_fifty_first_request_in_a_burst_gets_query_limit_exceeded() -> None:
    portal = seeded_portal()
    async with make_client(portal) as client:
        statuses = [(await call(client, "scope")).status_code for _ in range(51)]
        response = await call(client, "scope")
    assert statuses[:50] == [200] * 50
    assert statuses[50] == 503
    assert response.json() == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
    assert portal.calls[-1].error == "QUERY_LIMIT_EXCEEDED"


async def test_bucket_drains_over_time() -> None:
    portal = seeded_portal(rate_limit=(3, 20.0))
    async with make_client(portal) as client:
        burst = [(await call(client, "scope")).status_code for _ in range(4)]
        await anyio.sleep(0.11)
        later = (await call(client, "scope")).status_code
    assert burst == [200, 200, 200, 503]
    assert later == 200


async def test_refused_requests_do_not_fill_the_bucket() -> None:
    portal = seeded_portal(rate_limit=(2, 20.0))
    async with make_client(portal) as client:
        for _ in range(2):
            await call(client, "scope")
        refused = [(await call(client, "scope")).status_code for _ in range(20)]
        await anyio.sleep(0.06)
        after = (await call(client, "scope")).status_code
    assert set(refused) == {503}
    assert after == 200


async def test_batch_counts_as_one_request() -> None:
    portal = seeded_portal(rate_limit=(2, 0.001))
    cmd = {f"c{i}": "crm.item.get?entityTypeId=2&id=42" for i in range(10)}
    async with make_client(portal) as client:
        batch = await call(client, "batch", {"cmd": cmd})
        single = await call(client, "scope")
        refused = await call(client, "scope")
    assert len(batch.json()["result"]["result"]) == 10
    assert single.status_code == 200
    assert refused.status_code == 503


async def test_auth_failures_do_not_reach_the_bucket() -> None:
    portal = seeded_portal(rate_limit=(1, 0.001))
    async with make_client(portal) as client:
        for _ in range(3):
            await call(client, "scope", hook="/rest/1/wrong/")
        response = await call(client, "scope")
    assert response.status_code == 200


async def test_rate_limit_none_disables_the_bucket(client: httpx2.AsyncClient) -> None:
    statuses = {(await call(client, "scope")).status_code for _ in range(60)}
    assert statuses == {200}


# ---------------------------------------------------------------------- faults


async def test_fault_answers_its_status_and_json_once(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.inject(
        "crm.item.delete", Fault(status=500, json={"error": "INTERNAL_SERVER_ERROR", "error_description": "x"})
    )
    faulty = await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42})
    normal = await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42})
    assert faulty.status_code == 500
    assert faulty.json()["error"] == "INTERNAL_SERVER_ERROR"
    assert normal.status_code == 200


async def test_fault_without_perform_leaves_state_alone(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.inject("crm.item.delete", Fault(status=503, json={"error": "QUERY_LIMIT_EXCEEDED"}))
    await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42})
    assert 42 in portal.items[2]


async def test_fault_can_answer_a_raw_html_body(client: httpx2.AsyncClient, portal: Portal) -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    portal.inject("crm.item.get", Fault(status=502, body=page, content_type="text/html"))
    response = await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42})
    assert response.status_code == 502
    assert response.content == page
    assert response.headers["content-type"] == "text/html"


async def test_fault_can_answer_truncated_json(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.inject("crm.item.get", Fault(status=200, body=b'{"result": {"it'))
    response = await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42})
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


async def test_fault_can_redirect_with_extra_headers(client: httpx2.AsyncClient, portal: Portal) -> None:
    location = "https://new.bitrix24.test/rest/1/code/crm.item.delete"
    portal.inject("crm.item.delete", Fault(status=302, body=b"", headers={"Location": location}))
    response = await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42})
    assert response.status_code == 302
    assert response.headers["location"] == location
    assert 42 in portal.items[2]


async def test_faults_queue_fifo_per_method_case_insensitively(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.inject("CRM.ITEM.GET", Fault(status=500, body=b""))
    portal.inject("crm.item.get", Fault(status=502, body=b""))
    statuses = [(await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42})).status_code for _ in range(3)]
    assert statuses == [500, 502, 200]


async def test_fault_delays_the_answer(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.inject("scope", Fault(status=200, json={"result": []}, delay=0.15))
    started = time.monotonic()
    await call(client, "scope")
    assert time.monotonic() - started >= 0.15


async def test_fault_with_perform_deletes_then_fails(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.inject("crm.item.delete", Fault(status=504, body=b"<html>Gateway Timeout</html>", perform=True))
    response = await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42})
    assert response.status_code == 504
    assert 42 not in portal.items[2]
    retry = await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42})
    assert retry.json() == ITEM_NOT_FOUND


async def test_fault_is_not_consumed_by_failed_auth(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.inject("scope", Fault(status=500, body=b""))
    await call(client, "scope", hook="/rest/1/wrong/")
    assert (await call(client, "scope")).status_code == 500


async def test_fault_with_delay_and_perform_runs_the_method_before_answering_late(
    client: httpx2.AsyncClient, portal: Portal
) -> None:
    portal.inject("crm.item.delete", Fault(status=504, body=b"", delay=0.3, perform=True))
    responses: list[httpx2.Response] = []

    async def delete() -> None:
        responses.append(await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42}))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(delete)
        await anyio.sleep(0.1)
        deleted_while_unanswered = 42 not in portal.items[2] and not responses
    assert deleted_while_unanswered
    assert responses[0].status_code == 504


async def test_dropped_answer_raises_a_transport_error_in_process(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.inject("crm.item.delete", Fault(status=200, json={"result": []}, drop=True))
    with pytest.raises(httpx2.TransportError):
        await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42})
    assert 42 in portal.items[2]
    assert (portal.calls[-1].method, portal.calls[-1].dropped) == ("crm.item.delete", True)
    assert (await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42})).status_code == 200


async def test_dropped_answer_with_perform_deletes_first(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.inject("crm.item.delete", Fault(status=200, json={"result": []}, drop=True, perform=True))
    with pytest.raises(httpx2.TransportError):
        await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42})
    assert 42 not in portal.items[2]


# ---------------------------------------------------------------------- status overrides


async def test_status_overrides_change_only_the_http_status(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.status_overrides["INVALID_CREDENTIALS"] = 403
    response = await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42}, hook="/rest/1/wrong/")
    assert response.status_code == 403
    assert response.json() == {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}
    assert portal.calls[-1].status == 403


async def test_status_overrides_key_numeric_codes_as_strings(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.status_overrides["100"] = 422
    response = await call(client, "crm.item.delete", {"entityTypeId": 2})
    assert response.status_code == 422
    assert response.json()["error"] == 100


async def test_status_overrides_leave_other_codes_alone(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.status_overrides["INVALID_CREDENTIALS"] = 403
    response = await call(client, "crm.item.get", {"entityTypeId": 2, "id": 999})
    assert response.status_code == 400


async def test_status_overrides_apply_to_token_errors(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.status_overrides["expired_token"] = 400
    access, _ = portal.issue_tokens(SANDBOX_CLIENT_ID, 1)
    portal.expire_access_tokens()
    response = await client.post("/rest/scope", json={"auth": access})
    assert (response.status_code, response.json()["error"]) == (400, "expired_token")


async def test_status_overrides_apply_to_the_token_endpoint(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.status_overrides["invalid_grant"] = 401
    response = await refresh(client, "no-such-token")
    assert (response.status_code, response.json()["error"]) == (401, "invalid_grant")


# ---------------------------------------------------------------------- operating-time limit


def limited_portal(window: float = 60.0) -> Portal:
    portal = seeded_portal(rate_limit=None, operating_limit=1.0, operating_window=window)
    portal.method_cost["crm.item.get"] = 0.6
    return portal


GET_42 = {"entityTypeId": 2, "id": 42}
OPERATION_TIME_LIMIT = {
    "error": "OPERATION_TIME_LIMIT",
    "error_description": "Method is blocked due to operation time limit.",
}


async def test_operating_limit_blocks_a_method_once_its_time_is_exceeded() -> None:
    portal = limited_portal()
    async with make_client(portal) as client:
        responses = [await call(client, "crm.item.get", GET_42) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[2].json() == OPERATION_TIME_LIMIT
    assert (portal.calls[-1].status, portal.calls[-1].error) == (429, "OPERATION_TIME_LIMIT")


async def test_operating_limit_leaves_other_methods_working() -> None:
    portal = limited_portal()
    async with make_client(portal) as client:
        for _ in range(2):
            await call(client, "crm.item.get", GET_42)
        blocked = await call(client, "crm.item.get", GET_42)
        other = await call(client, "crm.item.list", {"entityTypeId": 2})
    assert (blocked.status_code, other.status_code) == (429, 200)


async def test_operating_limit_leaves_other_credentials_working() -> None:
    portal = limited_portal()
    access, _ = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    async with make_client(portal) as client:
        for _ in range(2):
            await call(client, "crm.item.get", GET_42)
        blocked = await call(client, "crm.item.get", GET_42)
        other_webhook = await call(client, "crm.item.get", GET_42, hook=READONLY_HOOK)
        same_user_via_oauth = await client.post("/rest/crm.item.get", json={**GET_42, "auth": access})
    assert (blocked.status_code, other_webhook.status_code, same_user_via_oauth.status_code) == (429, 200, 200)


async def test_time_operating_accumulates_per_method_and_credential() -> None:
    portal = limited_portal()
    async with make_client(portal) as client:
        before = time.time()
        timings = [(await call(client, "crm.item.get", GET_42)).json()["time"] for _ in range(2)]
        other_method = (await call(client, "crm.item.list", {"entityTypeId": 2})).json()["time"]
        other_webhook = (await call(client, "crm.item.get", GET_42, hook=READONLY_HOOK)).json()["time"]
    assert [t["operating"] for t in timings] == [pytest.approx(0.6), pytest.approx(1.2)]
    assert int(before + 60) <= timings[1]["operating_reset_at"] <= int(time.time() + 60)
    assert other_method["operating"] == 0
    assert other_webhook["operating"] == pytest.approx(0.6)


async def test_operating_limit_lifts_once_the_window_has_passed() -> None:
    portal = limited_portal(window=0.3)
    async with make_client(portal) as client:
        for _ in range(2):
            await call(client, "crm.item.get", GET_42)
        blocked = await call(client, "crm.item.get", GET_42)
        await anyio.sleep(0.35)
        later = await call(client, "crm.item.get", GET_42)
    assert (blocked.status_code, later.status_code) == (429, 200)
    assert later.json()["time"]["operating"] == pytest.approx(0.6)


async def test_reset_operating_lifts_the_block() -> None:
    portal = limited_portal()
    async with make_client(portal) as client:
        for _ in range(2):
            await call(client, "crm.item.get", GET_42)
        portal.reset_operating()
        response = await call(client, "crm.item.get", GET_42)
    assert response.status_code == 200


async def test_calls_cheaper_than_a_tenth_of_a_second_are_not_recorded() -> None:
    portal = limited_portal()
    portal.method_cost["crm.item.get"] = 0.09
    async with make_client(portal) as client:
        responses = [await call(client, "crm.item.get", GET_42) for _ in range(20)]
    assert {r.status_code for r in responses} == {200}
    assert responses[-1].json()["time"]["operating"] == 0


async def test_failed_calls_are_not_charged() -> None:
    portal = limited_portal()
    async with make_client(portal) as client:
        statuses = [(await call(client, "crm.item.get", {"entityTypeId": 2, "id": 999})).status_code for _ in range(4)]
    assert statuses == [400] * 4


async def test_batch_is_not_charged_but_its_commands_are() -> None:
    portal = limited_portal()
    portal.method_cost["batch"] = 5.0
    cmd = {"a": "crm.item.get?entityTypeId=2&id=42", "b": "crm.item.get?entityTypeId=2&id=40"}
    async with make_client(portal) as client:
        batch = (await call(client, "batch", {"cmd": cmd})).json()
        another_batch = await call(client, "batch", {"cmd": {}})
        single = await call(client, "crm.item.get", GET_42)
    assert batch["time"]["operating"] == 0
    assert batch["result"]["result_time"]["b"]["operating"] == pytest.approx(1.2)
    assert another_batch.status_code == 200
    assert single.json() == OPERATION_TIME_LIMIT


async def test_blocked_batch_command_fails_inside_result_error() -> None:
    portal = limited_portal()
    cmd = {c: "crm.item.get?entityTypeId=2&id=42" for c in "abc"}
    async with make_client(portal) as client:
        result = (await call(client, "batch", {"cmd": cmd})).json()["result"]
    assert list(result["result"]) == ["a", "b"]
    assert result["result_error"] == {"c": OPERATION_TIME_LIMIT}


async def test_rate_limit_is_checked_before_the_operating_limit() -> None:
    portal = seeded_portal(rate_limit=(2, 0.001), operating_limit=1.0)
    portal.method_cost["crm.item.get"] = 0.6
    async with make_client(portal) as client:
        statuses = [(await call(client, "crm.item.get", GET_42)).status_code for _ in range(3)]
    assert statuses == [200, 200, 503]


async def test_blocked_call_does_not_consume_a_queued_fault() -> None:
    portal = limited_portal()
    async with make_client(portal) as client:
        for _ in range(2):
            await call(client, "crm.item.get", GET_42)
        portal.inject("crm.item.get", Fault(status=502, body=b""))
        blocked = await call(client, "crm.item.get", GET_42)
        portal.reset_operating()
        faulty = await call(client, "crm.item.get", GET_42)
    assert (blocked.status_code, faulty.status_code) == (429, 502)


# ---------------------------------------------------------------------- OAuth calls


@pytest.mark.parametrize(
    ("body", "headers"),
    [({"auth": "{token}"}, {}), ({"access_token": "{token}"}, {}), ({}, {"authorization": "Bearer {token}"})],
)
async def test_live_token_calls_as_its_user(
    client: httpx2.AsyncClient, portal: Portal, body: dict[str, str], headers: dict[str, str]
) -> None:
    access, _ = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    body = {key: value.format(token=access) for key, value in body.items()}
    headers = {key: value.format(token=access) for key, value in headers.items()}
    response = await client.post("/rest/crm.item.delete", json={"entityTypeId": 2, "id": 42, **body}, headers=headers)
    assert response.status_code == 200
    assert response.json()["result"] == []
    assert 42 not in portal.items[2]
    assert portal.calls[-1] == Call("crm.item.delete", {"entityTypeId": 2, "id": 42}, SANDBOX_USER_ID, 200, None)


async def test_token_in_the_query_string_authenticates(client: httpx2.AsyncClient, portal: Portal) -> None:
    access, _ = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    response = await client.get("/rest/profile.json", params={"auth": access})
    assert response.json()["result"]["ID"] == "1"


async def test_token_acts_with_the_rights_of_its_users_webhook(client: httpx2.AsyncClient, portal: Portal) -> None:
    access, _ = portal.issue_tokens(SANDBOX_CLIENT_ID, READONLY_USER_ID)
    response = await client.post("/rest/crm.item.delete", json={"entityTypeId": 2, "id": 42, "auth": access})
    assert response.json() == {"error": "ACCESS_DENIED", "error_description": "Access denied"}


async def test_token_scopes_limit_its_calls(client: httpx2.AsyncClient, portal: Portal) -> None:
    access, _ = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID, frozenset({"user"}))
    denied = await client.post("/rest/crm.item.get", json={**GET_42, "auth": access})
    listed = await client.post("/rest/scope", json={"auth": access})
    assert denied.status_code == 401
    assert denied.json() == {
        "error": "insufficient_scope",
        "error_description": "The request requires higher privileges than provided by the access token",
    }
    assert listed.json()["result"] == ["user"]


async def test_expired_token_is_401_expired_token(client: httpx2.AsyncClient, portal: Portal) -> None:
    access, _ = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    portal.expire_access_tokens()
    response = await client.post("/rest/crm.item.delete", json={"entityTypeId": 2, "id": 42, "auth": access})
    assert response.status_code == 401
    assert response.json() == {"error": "expired_token", "error_description": "The access token provided has expired"}
    assert 42 in portal.items[2]


async def test_access_token_expires_after_its_ttl() -> None:
    portal = seeded_portal(rate_limit=None, access_ttl=0.05)
    access, _ = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    async with make_client(portal) as client:
        fresh = await client.post("/rest/scope", json={"auth": access})
        await anyio.sleep(0.1)
        stale = await client.post("/rest/scope", json={"auth": access})
    assert (fresh.status_code, stale.json()["error"]) == (200, "expired_token")


async def test_issue_tokens_refuses_an_unknown_app(portal: Portal) -> None:
    with pytest.raises(ValueError, match="unknown OAuth application"):
        portal.issue_tokens("local.nope", SANDBOX_USER_ID)


# ---------------------------------------------------------------------- OAuth token endpoint


def refresh_params(refresh_token: str, **overrides: str) -> dict[str, str]:
    params = {
        "grant_type": "refresh_token",
        "client_id": SANDBOX_CLIENT_ID,
        "client_secret": SANDBOX_CLIENT_SECRET,
        "refresh_token": refresh_token,
    }
    params.update(overrides)
    return params


async def refresh(client: httpx2.AsyncClient, refresh_token: str, **overrides: str) -> httpx2.Response:
    return await client.get("/oauth/token/", params=refresh_params(refresh_token, **overrides))


async def test_token_endpoint_answers_the_oauth_shape(client: httpx2.AsyncClient, portal: Portal) -> None:
    _, refresh_token = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID, frozenset({"crm", "user"}))
    before = time.time()
    response = await refresh(client, refresh_token)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "access_token",
        "client_endpoint",
        "domain",
        "expires",
        "expires_in",
        "member_id",
        "refresh_token",
        "scope",
        "server_endpoint",
        "status",
        "user_id",
    }
    assert body["client_endpoint"] == f"https://{SANDBOX_HOST}/rest/"
    assert (body["expires_in"], body["scope"], body["user_id"]) == (3600, "crm,user", SANDBOX_USER_ID)
    assert int(before) + 3600 <= body["expires"] <= time.time() + 3600
    assert body["refresh_token"] != refresh_token
    assert isinstance(body["member_id"], str)


async def test_refreshed_access_token_works(client: httpx2.AsyncClient, portal: Portal) -> None:
    _, refresh_token = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    portal.expire_access_tokens()
    access = (await refresh(client, refresh_token)).json()["access_token"]
    response = await client.post("/rest/crm.item.get", json={**GET_42, "auth": access})
    assert response.status_code == 200


@pytest.mark.parametrize("encoding", ["data", "json"])
async def test_token_endpoint_takes_a_post_body(client: httpx2.AsyncClient, portal: Portal, encoding: str) -> None:
    _, refresh_token = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    params = refresh_params(refresh_token)
    if encoding == "json":
        response = await client.post("/oauth/token/", json=params)
    else:
        response = await client.post("/oauth/token/", data=params)
    assert response.status_code == 200
    assert response.json()["user_id"] == SANDBOX_USER_ID


async def test_refresh_token_rotates_and_the_old_one_is_invalid_grant(
    client: httpx2.AsyncClient, portal: Portal
) -> None:
    _, first = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    second = (await refresh(client, first)).json()["refresh_token"]
    reused = await refresh(client, first)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    assert (await refresh(client, second)).status_code == 200


async def test_unknown_refresh_token_is_invalid_grant(client: httpx2.AsyncClient) -> None:
    response = await refresh(client, "0123456789abcdef")
    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


@pytest.mark.parametrize(
    "overrides", [{"client_secret": "wrong"}, {"client_id": "local.unknown"}], ids=["secret", "client_id"]
)
async def test_wrong_client_credentials_are_invalid_client(
    client: httpx2.AsyncClient, portal: Portal, overrides: dict[str, str]
) -> None:
    _, refresh_token = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    response = await refresh(client, refresh_token, **overrides)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert (await refresh(client, refresh_token)).status_code == 200


@pytest.mark.parametrize("missing", ["grant_type", "client_id", "client_secret", "refresh_token"])
async def test_missing_token_parameter_is_invalid_request(
    client: httpx2.AsyncClient, portal: Portal, missing: str
) -> None:
    _, refresh_token = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    params = refresh_params(refresh_token)
    del params[missing]
    response = await client.get("/oauth/token/", params=params)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "error_description": f'No "{missing}" parameter found'}


async def test_other_grant_type_is_invalid_request(client: httpx2.AsyncClient, portal: Portal) -> None:
    _, refresh_token = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    response = await refresh(client, refresh_token, grant_type="authorization_code")
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


async def test_client_endpoint_follows_the_request_origin(portal: Portal) -> None:
    _, refresh_token = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    async with make_client(portal, base_url="http://127.0.0.1:8443") as client:
        body = (await refresh(client, refresh_token)).json()
    assert body["client_endpoint"] == "http://127.0.0.1:8443/rest/"


async def test_token_requests_are_counted_and_logged_with_secrets_masked(
    client: httpx2.AsyncClient, portal: Portal
) -> None:
    _, refresh_token = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    await refresh(client, refresh_token)
    await refresh(client, refresh_token)
    assert portal.token_requests == 2
    assert [(c.method, c.user_id, c.status, c.error) for c in portal.calls_to("oauth.token")] == [
        ("oauth.token", SANDBOX_USER_ID, 200, None),
        ("oauth.token", None, 400, "invalid_grant"),
    ]
    assert portal.calls[0].params == refresh_params("***", client_secret="***")


async def test_token_endpoint_fault_with_perform_rotates_but_loses_the_answer(
    client: httpx2.AsyncClient, portal: Portal
) -> None:
    _, refresh_token = portal.issue_tokens(SANDBOX_CLIENT_ID, SANDBOX_USER_ID)
    portal.inject("oauth.token", Fault(status=502, body=b"<html>Bad Gateway</html>", perform=True))
    lost = await refresh(client, refresh_token)
    again = await refresh(client, refresh_token)
    assert (lost.status_code, again.json()["error"]) == (502, "invalid_grant")


def test_seed_registers_the_sandbox_app() -> None:
    assert seeded_portal().apps == {SANDBOX_CLIENT_ID: SANDBOX_CLIENT_SECRET}


# ---------------------------------------------------------------------- request log


async def test_log_records_failed_auth_without_user(client: httpx2.AsyncClient, portal: Portal) -> None:
    await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42}, hook="/rest/1/wrong/")
    assert portal.calls == [
        Call(
            method="crm.item.delete",
            params={"entityTypeId": 2, "id": 42},
            user_id=None,
            status=401,
            error="INVALID_CREDENTIALS",
        )
    ]


async def test_log_records_successes_and_errors_with_user(client: httpx2.AsyncClient, portal: Portal) -> None:
    await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42}, hook=READONLY_HOOK)
    await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42})
    await call(client, "crm.item.get", {"entityTypeId": 2, "id": 40})
    deletes = portal.calls_to("crm.item.delete")
    assert [(c.user_id, c.status, c.error) for c in deletes] == [(7, 400, "ACCESS_DENIED"), (1, 200, None)]
    assert len(portal.calls) == 3


async def test_log_records_fault_status(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.inject("crm.item.get", Fault(status=502, body=b"bad gateway", content_type="text/plain"))
    await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42})
    assert (portal.calls[-1].status, portal.calls[-1].error) == (502, None)


# ---------------------------------------------------------------------- state helpers and seed


def test_add_item_assigns_next_id_and_timestamps() -> None:
    portal = seeded_portal()
    item = portal.add_item(2, {"title": "New deal"})
    assert item["id"] == 46
    assert item["entityTypeId"] == 2
    assert datetime.fromisoformat(item["createdTime"]).utcoffset() is not None
    assert portal.items[2][46] is item


def test_deleted_ids_are_not_reused() -> None:
    portal = seeded_portal()
    portal.items[2].pop(45)
    assert portal.add_item(2, {"title": "again"})["id"] == 46


def test_touch_moves_updated_time_strictly_forward() -> None:
    portal = seeded_portal()
    portal.add_item(2, {"id": 70, "title": "t", "updatedTime": "2099-01-01T00:00:00+03:00"})
    portal.touch(2, 70, title="t2")
    first = portal.items[2][70]["updatedTime"]
    portal.touch(2, 70)
    second = portal.items[2][70]["updatedTime"]
    assert portal.items[2][70]["title"] == "t2"
    assert datetime.fromisoformat(first) > datetime.fromisoformat("2099-01-01T00:00:00+03:00")
    assert datetime.fromisoformat(second) > datetime.fromisoformat(first)


def test_webhook_url_has_user_id_and_code() -> None:
    portal = seeded_portal()
    hook = portal.webhooks[(SANDBOX_USER_ID, SANDBOX_WEBHOOK_CODE)]
    assert portal.webhook_url(hook) == f"https://{SANDBOX_HOST}/rest/1/{SANDBOX_WEBHOOK_CODE}/"
    assert portal.webhook_url(hook, "http", 8080) == f"http://{SANDBOX_HOST}:8080/rest/1/{SANDBOX_WEBHOOK_CODE}/"


def test_seed_has_stable_ids() -> None:
    portal = seeded_portal()
    assert sorted(portal.items[1]) == [11, 12, 13, 14]
    assert sorted(portal.items[2]) == [40, 41, 42, 43, 44, 45]
    assert sorted(portal.items[3]) == [21, 22, 23, 24]
    assert sorted(portal.items[4]) == [31, 32, 33]
    assert sorted(portal.items[7]) == [51]
    assert sorted(portal.items[31]) == [61]
    assert sorted(portal.items[CONTRACTS_TYPE_ID]) == [1, 2, 3]
    assert sorted(portal.items[PROJECTS_TYPE_ID]) == [1, 2]
    assert portal.types[CONTRACTS_TYPE_ID].recycle_bin is False
    assert portal.types[PROJECTS_TYPE_ID].recycle_bin is True
    assert portal.items[2][42]["updatedTime"] == seeded_portal().items[2][42]["updatedTime"]
