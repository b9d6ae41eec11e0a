"""Behaviour of the Bitrix24 portal emulator, exercised over HTTP through its ASGI app: the envelope, crm.item.delete,
request formats, credentials and routing, faults, status overrides, state helpers.

The other ``test_emulator_*`` files hold one part of the emulator each; their shared constants and ``call``/
``make_client`` are in ``emulator_helpers``, their fixtures in this folder's ``conftest.py``.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import anyio
import httpx2
import pytest

from b24_mcp.sandbox.emulator import Fault, Portal, Webhook, parse_php_query
from b24_mcp.sandbox.seed import (
    CONTRACTS_TYPE_ID,
    PROJECTS_TYPE_ID,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_HOST,
    SANDBOX_USER_ID,
    SANDBOX_WEBHOOK_CODE,
    seeded_portal,
)
from emulator.emulator_helpers import (
    EXTRANET_HOOK,
    HOOK,
    ITEM_NOT_FOUND,
    NOSCOPE_HOOK,
    READONLY_HOOK,
    TYPE_NOT_FOUND,
    call,
    make_client,
)

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
    # No operating_reset_at: the method has not been charged (data-types.md#time, spec section 10).
    assert list(timing) == ["start", "finish", "duration", "processing", "date_start", "date_finish", "operating"]
    assert isinstance(timing["start"], float)
    assert before - 1 <= timing["start"] <= timing["finish"]
    assert timing["duration"] == pytest.approx(timing["finish"] - timing["start"])
    assert datetime.fromisoformat(timing["date_start"]).utcoffset() is not None
    assert timing["date_start"].endswith("+03:00")
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
async def test_unknown_webhook_is_403_invalid_credentials(client: httpx2.AsyncClient, hook: str) -> None:
    response = await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42}, hook=hook)
    assert response.status_code == 403
    assert response.json() == {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}


async def test_webhook_path_without_user_id_is_method_not_found(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42}, hook=f"/rest/{SANDBOX_WEBHOOK_CODE}/")
    assert response.status_code == 404
    assert response.json()["error"] == "ERROR_METHOD_NOT_FOUND"


async def test_plain_http_webhook_gets_400_https_required(portal: Portal) -> None:
    async with make_client(portal, base_url=f"http://{SANDBOX_HOST}") as client:
        response = await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42})
    assert response.status_code == 400
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


async def test_webhook_without_crm_scope_gets_403_insufficient_scope(client: httpx2.AsyncClient) -> None:
    response = await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42}, hook=NOSCOPE_HOOK)
    assert response.status_code == 403
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
    portal.status_overrides["INVALID_CREDENTIALS"] = 401
    response = await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42}, hook="/rest/1/wrong/")
    assert response.status_code == 401
    assert response.json() == {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}
    assert portal.calls[-1].status == 401


async def test_status_overrides_key_numeric_codes_as_strings(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.status_overrides["100"] = 422
    response = await call(client, "crm.item.delete", {"entityTypeId": 2})
    assert response.status_code == 422
    assert response.json()["error"] == 100


async def test_status_overrides_leave_other_codes_alone(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.status_overrides["INVALID_CREDENTIALS"] = 401
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
    params = {"client_id": SANDBOX_CLIENT_ID, "client_secret": SANDBOX_CLIENT_SECRET, "refresh_token": "nope"}
    response = await client.get("/oauth/token/", params={"grant_type": "refresh_token", **params})
    assert (response.status_code, response.json()["error"]) == (401, "invalid_grant")


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
