"""batch: containers, halt, the 50-command cap, and `$result[...]` references (batch.py)."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from b24_mcp.sandbox.batch import substitute
from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.seed import (
    CONTRACTS_TYPE_ID,
)
from emulator.emulator_helpers import EXTRANET_HOOK, HOOK, ITEM_NOT_FOUND, NOSCOPE_HOOK, call

pytestmark = pytest.mark.anyio


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


# ---------------------------------------------------------------------- references to earlier results


@pytest.fixture
def contracts_123(portal: Portal) -> Portal:
    for _ in range(120):
        portal.add_item(CONTRACTS_TYPE_ID, {"title": "bulk"})
    return portal


def list_command(query: str) -> str:
    return f"crm.item.list?entityTypeId={CONTRACTS_TYPE_ID}&order[id]=ASC&select[0]=id&{query}"


def ids_of(result: dict[str, Any], key: str) -> list[int]:
    return [item["id"] for item in result["result"][key]["items"]]


@pytest.mark.usefixtures("contracts_123")
async def test_reference_to_the_last_id_of_a_page_pages_by_id(client: httpx2.AsyncClient) -> None:
    cmd = {
        "page0": list_command("start=-1"),
        "page1": list_command("start=-1&filter[>id]=$result[page0][items][49][id]"),
        "page2": list_command("start=-1&filter[>id]=$result[page1][items][49][id]"),
    }
    result = (await call(client, "batch", {"cmd": cmd})).json()["result"]
    assert ids_of(result, "page0") == list(range(1, 51))
    assert ids_of(result, "page1") == list(range(51, 101))
    assert ids_of(result, "page2") == list(range(101, 124))
    assert result["result_total"] == []


@pytest.mark.usefixtures("contracts_123")
async def test_reference_to_next_pages_by_offset(client: httpx2.AsyncClient) -> None:
    cmd = {"first": list_command(""), "second": list_command("start=$next[first]")}
    result = (await call(client, "batch", {"cmd": cmd})).json()["result"]
    assert ids_of(result, "second") == list(range(51, 101))
    assert result["result_next"] == {"first": 50, "second": 100}


async def test_reference_inside_a_longer_value_is_replaced_by_its_text(client: httpx2.AsyncClient) -> None:
    cmd = {
        "deal": "crm.item.get?entityTypeId=2&id=42",
        "quote": "crm.item.list?entityTypeId=7&select[]=id&filter[%title]=for $result[deal][item][title]",
    }
    result = (await call(client, "batch", {"cmd": cmd})).json()["result"]
    assert result["result"]["quote"]["items"] == [{"id": 51}]


async def test_reference_to_an_error_of_an_earlier_command(client: httpx2.AsyncClient) -> None:
    cmd = {
        "missing": "crm.item.get?entityTypeId=2&id=999",
        "echo": "crm.item.list?entityTypeId=2&filter[title]=$error[missing][error]",
    }
    result = (await call(client, "batch", {"cmd": cmd})).json()["result"]
    assert result["result"]["echo"]["items"] == []
    assert result["result_total"] == {"echo": 0}


def test_reference_that_is_the_whole_value_keeps_the_type_it_points_to() -> None:
    containers: dict[str, dict[Any, Any]] = {"result": {"a": {"items": [{"id": 7}]}}}
    assert substitute({"id": "$result[a][items][0][id]"}, containers) == {"id": 7}


def test_reference_past_the_end_of_a_page_yields_what_the_walk_reached() -> None:
    items = [{"id": 1}, {"id": 2}]
    containers: dict[str, dict[Any, Any]] = {"result": {"a": {"items": items}}}
    assert substitute("$result[a][items][49][id]", containers) == items


def test_reference_in_text_renders_like_php() -> None:
    containers: dict[str, dict[Any, Any]] = {"result": {"a": {"ids": [1, 2], "ok": True, "none": None}}}
    assert substitute("x=$result[a][ids] y", containers) == "x=Array y"
    assert substitute("ok=$result[a][ok] ", containers) == "ok=1 "


def test_reference_takes_everything_up_to_whitespace() -> None:
    containers: dict[str, dict[Any, Any]] = {"result": {"a": {"id": 7}}}
    assert substitute("$result[a][id],8 9", containers) == "7 9"


def test_upper_case_reference_does_not_resolve() -> None:
    containers: dict[str, dict[Any, Any]] = {"result": {"a": {"id": 7}}}
    assert substitute("$RESULT[a][id]", containers) is None


# ---------------------------------------------------------------------- clean-up shapes


async def test_list_by_fifty_ids_in_a_php_query_string_command(client: httpx2.AsyncClient, portal: Portal) -> None:
    ids = [portal.add_item(CONTRACTS_TYPE_ID, {"title": f"old {n}"})["id"] for n in range(60)][5:55]
    query = "&".join(f"filter[@id][{index}]={item_id}" for index, item_id in enumerate(ids))
    cmd = {"pick": f"crm.item.list?entityTypeId={CONTRACTS_TYPE_ID}&{query}&select[0]=*"}
    result = (await call(client, "batch", {"cmd": cmd})).json()["result"]
    assert ids_of(result, "pick") == ids
    assert result["result"]["pick"]["items"][0] == portal.items[CONTRACTS_TYPE_ID][ids[0]]
    assert result["result_total"] == {"pick": 50}


async def test_batch_deletes_what_a_list_by_filter_found(client: httpx2.AsyncClient, portal: Portal) -> None:
    cmd = {"find": "crm.item.list?entityTypeId=2&filter[assignedById]=7&select[]=id"}
    cmd |= {f"del{n}": f"crm.item.delete?entityTypeId=2&id=$result[find][items][{n}][id]" for n in range(2)}
    result = (await call(client, "batch", {"cmd": cmd})).json()["result"]
    assert result["result"] == {"find": {"items": [{"id": 41}, {"id": 43}]}, "del0": [], "del1": []}
    assert sorted(portal.items[2]) == [40, 42, 44, 45]
