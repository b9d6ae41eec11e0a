"""The leaky bucket and the per-method operating-time budget (limits.py)."""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx2
import pytest

from b24_mcp.sandbox.emulator import Fault, Portal
from b24_mcp.sandbox.seed import (
    CONTRACTS_TYPE_ID,
    SANDBOX_CLIENT_ID,
    SANDBOX_USER_ID,
    seeded_portal,
)
from emulator.emulator_helpers import GET_42, READONLY_HOOK, call, make_client

pytestmark = pytest.mark.anyio


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


# ---------------------------------------------------------------------- operating-time limit


def limited_portal(window: float = 60.0) -> Portal:
    portal = seeded_portal(rate_limit=None, operating_limit=1.0, operating_window=window)
    portal.method_cost["crm.item.get"] = 0.6
    return portal


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


# ---------------------------------------------------------------------- per-method cost, a long clean-up


def cleanup_portal(items: int = 300) -> tuple[Portal, list[int]]:
    """The real budget (480 s per method per 10 min) with each delete costing 2 s, and `items` contracts."""
    portal = seeded_portal(rate_limit=None, operating_cost={"crm.item.delete": 2.0})
    ids = [portal.add_item(CONTRACTS_TYPE_ID, {"title": "stale"})["id"] for _ in range(items)]
    return portal, ids


def delete_batch(ids: list[int]) -> dict[str, Any]:
    return {"halt": 0, "cmd": {f"d{i}": f"crm.item.delete?entityTypeId={CONTRACTS_TYPE_ID}&id={i}" for i in ids}}


def test_portal_budget_defaults_to_480_seconds_per_ten_minutes() -> None:
    portal = Portal()
    assert (portal.operating_limit, portal.operating_window) == (480.0, 600.0)


async def test_a_long_clean_up_exhausts_the_delete_budget() -> None:
    portal, ids = cleanup_portal()
    async with make_client(portal) as client:
        answers = [(await call(client, "batch", delete_batch(ids[i : i + 50]))).json() for i in range(0, 300, 50)]
    deleted = sum(len(answer["result"]["result"]) for answer in answers)
    refused = [error for answer in answers for error in dict(answer["result"]["result_error"] or {}).values()]
    # 240 deletes use exactly 480 s; the check comes before a call, so the 241st still runs.
    assert deleted == 241
    assert refused == [OPERATION_TIME_LIMIT] * 59
    assert len(portal.items[CONTRACTS_TYPE_ID]) == 3 + 59


async def test_an_exhausted_method_is_429_at_the_top_level_with_other_methods_working() -> None:
    portal, ids = cleanup_portal()
    async with make_client(portal) as client:
        for i in range(0, 250, 50):
            await call(client, "batch", delete_batch(ids[i : i + 50]))
        blocked = await call(client, "crm.item.delete", {"entityTypeId": CONTRACTS_TYPE_ID, "id": ids[-1]})
        listed = await call(client, "crm.item.list", {"entityTypeId": CONTRACTS_TYPE_ID})
    assert (blocked.status_code, blocked.json()) == (429, OPERATION_TIME_LIMIT)
    assert listed.status_code == 200


async def test_batch_commands_are_charged_to_their_own_method_and_batch_to_nothing() -> None:
    portal, ids = cleanup_portal()
    async with make_client(portal) as client:
        before = time.time()
        answer = (await call(client, "batch", delete_batch(ids[:10]))).json()
        single = (await call(client, "crm.item.delete", {"entityTypeId": CONTRACTS_TYPE_ID, "id": ids[10]})).json()
    assert answer["time"]["operating"] == 0
    assert "operating_reset_at" not in answer["time"]  # the outer batch is never charged
    assert answer["result"]["result_time"][f"d{ids[9]}"]["operating"] == pytest.approx(20.0)
    assert single["time"]["operating"] == pytest.approx(22.0)
    assert int(before) + 600 <= single["time"]["operating_reset_at"] <= int(time.time()) + 600


async def test_operating_cost_can_be_set_per_method_after_construction() -> None:
    portal = seeded_portal(rate_limit=None, operating_limit=1.0)
    portal.set_operating_cost("CRM.Item.Get", 0.6)
    async with make_client(portal) as client:
        statuses = [(await call(client, "crm.item.get", GET_42)).status_code for _ in range(3)]
        other = await call(client, "crm.item.list", {"entityTypeId": 2})
    assert statuses == [200, 200, 429]
    assert other.json()["time"]["operating"] == 0


def test_operating_cost_cannot_be_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        Portal().set_operating_cost("crm.item.delete", -1.0)


async def test_operating_limit_none_never_blocks() -> None:
    portal = seeded_portal(rate_limit=None, operating_limit=None, operating_cost={"crm.item.get": 100.0})
    async with make_client(portal) as client:
        responses = [await call(client, "crm.item.get", GET_42) for _ in range(6)]
    assert {r.status_code for r in responses} == {200}
    assert responses[-1].json()["time"]["operating"] == pytest.approx(600.0)
